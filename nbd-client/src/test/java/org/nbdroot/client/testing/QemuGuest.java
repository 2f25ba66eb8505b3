package org.nbdroot.client.testing;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Runs a script in a real Linux kernel under qemu through {@code test/qemu/run-guest.sh}
 * (see its README): the guest sees the host's / read-only at /host, the output directory
 * read-write at /out, and the host's loopback at 10.0.2.2. {@link #start()} returns at once,
 * so a test can act on the host while the guest runs (watching files the guest writes to
 * /out); {@link Run#await()} waits for the result.
 */
public final class QemuGuest {
    private final Path script;
    private final Path out;
    private final List<String> extra = new ArrayList<>();
    private int timeoutSeconds = 120;

    public QemuGuest(Path script, Path out) {
        this.script = script;
        this.out = out;
    }

    /** The repository's top directory (where test/qemu lives), found from the working directory up. */
    public static Path repositoryRoot() {
        Path p = Path.of("").toAbsolutePath();
        while (p != null && !Files.exists(p.resolve("test/qemu/run-guest.sh"))) {
            p = p.getParent();
        }
        if (p == null) {
            throw new AssertionError("test/qemu/run-guest.sh not found above " + Path.of("").toAbsolutePath());
        }
        return p;
    }

    /**
     * The class path of the running tests as the guest sees it (under /host): a guest runs
     * the project's classes and their dependencies straight from the host.
     */
    public static String guestClassPath() {
        String cp = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
        List<String> entries = new ArrayList<>();
        for (String e : cp.split(java.io.File.pathSeparator)) {
            if (!e.isEmpty()) {
                entries.add("/host" + Path.of(e).toAbsolutePath());
            }
        }
        return String.join(":", entries);
    }

    /** The JDK running the tests, at the same path in the guest (its /usr is the host's). */
    public static String guestJava() {
        return Path.of(System.getProperty("java.home"), "bin", "java").toString();
    }

    /** Adds a kernel module (and what it depends on) to the base set. */
    public QemuGuest module(String name) {
        extra.add("-m");
        extra.add(name);
        return this;
    }

    /** Copies a host file or directory into the initramfs at {@code guestPath}. */
    public QemuGuest file(Path host, String guestPath) {
        extra.add("-f");
        extra.add(host.toAbsolutePath() + ":" + guestPath);
        return this;
    }

    public QemuGuest timeout(int seconds) {
        this.timeoutSeconds = seconds;
        return this;
    }

    public Run start() throws IOException {
        List<String> command = new ArrayList<>(List.of(repositoryRoot().resolve("test/qemu/run-guest.sh").toString(),
                "-o", out.toString(), "-t", String.valueOf(timeoutSeconds)));
        command.addAll(extra);
        command.add(script.toAbsolutePath().toString());
        Files.createDirectories(out);
        Path log = out.resolve("run-guest.log");
        Process p = new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        return new Run(p, out, log, timeoutSeconds);
    }

    /** A guest that is running or has finished; closing it stops qemu if it still runs. */
    public static final class Run implements AutoCloseable {
        private static final Pattern CHECK = Pattern.compile("^CHECK (\\S+) (ok|FAILED.*)$", Pattern.MULTILINE);
        private final Process process;
        private final Path out;
        private final Path log;
        private final int timeoutSeconds;
        private final long started = System.nanoTime();
        private int exitStatus = -1;
        private long elapsedMillis;

        private Run(Process process, Path out, Path log, int timeoutSeconds) {
            this.process = process;
            this.out = out;
            this.log = log;
            this.timeoutSeconds = timeoutSeconds;
        }

        /** Waits for the guest to power off; returns this. */
        public Run await() throws Exception {
            if (!process.waitFor(timeoutSeconds + 600L, TimeUnit.SECONDS)) { // the kernel download, the first time
                process.destroyForcibly();
                throw new AssertionError("run-guest.sh did not end: " + Files.readString(log));
            }
            exitStatus = process.exitValue();
            elapsedMillis = (System.nanoTime() - started) / 1_000_000;
            return this;
        }

        @Override
        public void close() {
            if (process.isAlive()) {
                process.descendants().forEach(ProcessHandle::destroyForcibly);
                process.destroyForcibly();
            }
        }

        /** Waits up to {@code seconds} for the guest to create {@code /out/<name>}; false if it did not (or ended). */
        public boolean awaitFile(String name, int seconds) throws InterruptedException {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
            while (System.nanoTime() < deadline && process.isAlive()) {
                if (Files.exists(out.resolve(name))) {
                    return true;
                }
                Thread.sleep(20);
            }
            return Files.exists(out.resolve(name));
        }

        /** The directory the guest sees as /out. */
        public Path outDir() {
            return out;
        }

        /** The guest script's exit status (124: timed out, 125: no status, 2: harness usage). */
        public int exitStatus() {
            return exitStatus;
        }

        public long elapsedMillis() {
            return elapsedMillis;
        }

        /** What the guest script printed. */
        public String guestLog() throws IOException {
            Path g = out.resolve("guest.log");
            return Files.exists(g) ? Files.readString(g) : "";
        }

        /** The serial console: kernel messages and the guest's output. */
        public String console() throws IOException {
            Path c = out.resolve("console.log");
            return Files.exists(c) ? Files.readString(c) : "";
        }

        /** The harness's own messages on the host. */
        public String harnessLog() throws IOException {
            return Files.readString(log);
        }

        /** The {@code CHECK name ok|FAILED…} lines the guest printed, in order. */
        public Map<String, String> checks() throws IOException {
            Map<String, String> checks = new LinkedHashMap<>();
            Matcher m = CHECK.matcher(guestLog());
            while (m.find()) {
                checks.put(m.group(1), m.group(2));
            }
            return checks;
        }

        /** Everything worth reading when a guest test fails. */
        public String diagnostics() throws IOException {
            String console = console();
            return "exit status " + exitStatus + " after " + elapsedMillis + " ms\n--- harness\n" + harnessLog()
                    + "--- guest log\n" + guestLog() + "--- console (tail)\n"
                    + console.substring(Math.max(0, console.length() - 4000));
        }
    }
}
