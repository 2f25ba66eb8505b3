package org.nbdroot.client.image;

import static java.nio.charset.StandardCharsets.UTF_8;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.Random;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.nbdroot.client.ggate.emu.GgateEmulator;
import org.nbdroot.client.ggate.emu.GgateEmulator.BioResult;
import org.nbdroot.proto.interop.PeerServer;
import org.nbdroot.proto.testing.TestCertificates;
import org.nbdroot.proto.testing.TestCertificates.KeyType;

/**
 * The runtime image as built by {@code mvn package} (run after it, in the integration-test
 * phase): copied elsewhere, as reroot copies it, and run from there through its launcher,
 * under strace. Every class must come from the image's {@code lib/modules} (or its CDS
 * archive), no jar may be touched, the native libraries must be the image's own, and
 * nothing may be created or written under {@code /tmp}.
 */
class RuntimeImageTest {
    static final Path BUILT = Path.of(System.getProperty("image.dir", "target/image")).toAbsolutePath();
    static final Path WORK = BUILT.resolveSibling("image-test");
    /** Where the image is run from: not where it was built, as after a reroot. */
    static final Path IMAGE = WORK.resolve("copy/nbd-client");
    static final Duration WAIT = Duration.ofSeconds(30);
    /** The daemons' run directory: not in /tmp (the test looks for writes there). */
    static Path runDir;
    static final Pattern STRACE_PATH = Pattern.compile("^\\d+\\s+(\\w+)\\((?:AT_FDCWD|-?\\d+)?,?\\s*\"([^\"]*)\"(.*)$");
    static final Pattern CLASS_LOAD = Pattern.compile("\\[class,load\\s*\\] (\\S+) source: (.*)$");

    @BeforeAll
    static void copyTheImage() throws Exception {
        assertTrue(Files.isExecutable(BUILT.resolve("bin/nbd-client")), "no runtime image at " + BUILT + ": run mvn package");
        run(List.of("rm", "-rf", WORK.toString()));
        Files.createDirectories(IMAGE.getParent());
        run(List.of("cp", "-a", BUILT.toString(), IMAGE.toString()));
        // A control socket's path must stay under ~107 bytes: a deep checkout gets /dev/shm.
        runDir = WORK.resolve("run");
        if (runDir.resolve("ggate999.sock").toString().length() > 100) {
            runDir = Files.createTempDirectory(Path.of("/dev/shm"), "nbd-image-test");
        }
        Files.createDirectories(runDir);
    }

    @Test
    void theImageHoldsOnlyModulesAndItsNativeLibraries() throws Exception {
        try (Stream<Path> files = Files.walk(IMAGE)) {
            List<Path> jars = files.filter(p -> p.toString().endsWith(".jar")).collect(Collectors.toList());
            assertEquals(List.of(), jars, "no jar in the image: every class is in lib/modules");
        }
        assertTrue(Files.size(IMAGE.resolve("lib/modules")) > 1 << 20, "lib/modules holds the classes");
        assertTrue(Files.isExecutable(IMAGE.resolve("lib/jspawnhelper")), "the daemon starts itself again through jspawnhelper");
        assertTrue(Files.isRegularFile(IMAGE.resolve("lib/libjffi-1.2.so")), "jffi's library is pre-extracted");
        assertTrue(Files.isRegularFile(IMAGE.resolve("lib/" + nettyEpollLibrary())), "Netty's epoll library is pre-extracted");
        assertEquals(Boolean.getBoolean("image.cds"), Files.isRegularFile(IMAGE.resolve("lib/server/classes.jsa")),
                "the CDS archive is there when the build was asked for it (image.cds)");

        Set<String> modules = new TreeSet<>(List.of(run(List.of(IMAGE.resolve("bin/java").toString(), "--list-modules"))
                .replaceAll("@\\S*", "").split("\\s+")));
        Set<String> jdk = modules.stream().filter(m -> m.startsWith("java.") || m.startsWith("jdk."))
                .collect(Collectors.toCollection(TreeSet::new));
        Set<String> expected = new TreeSet<>(Set.of("java.base", "java.logging", "jdk.crypto.ec", "jdk.net", "jdk.unsupported"));
        if (Boolean.getBoolean("image.psk")) {
            // BouncyCastle's provider module requires these (TLS-PSK, -Dimage.psk=true)
            expected.addAll(Set.of("java.naming", "java.security.sasl", "java.sql", "java.transaction.xa", "java.xml"));
        }
        assertEquals(expected, jdk, "only the JDK modules the daemon needs");
        assertTrue(modules.containsAll(List.of("org.nbdroot.client", "org.nbdroot.proto", "io.netty.transport.classes.epoll",
                "info.picocli", "org.jnrproject.posix", "org.jnrproject.ffi", "org.jnrproject.jffi")), "linked: " + modules);
    }

    @Test
    void versionAndInfoRunFromTheImageAlone() throws Exception {
        Traced version = traced("version", List.of("--version"), "");
        assertEquals(0, version.status, version.err);
        assertEquals("nbd-client " + System.getProperty("project.version", "0.1.0-SNAPSHOT"), version.out.strip(),
                "the version comes from the module descriptor (no jar manifest in the image)");
        version.assertFromTheImageOnly();

        try (PeerServer server = PeerServer.nbdkit("nbdkit memory", WORK, null, List.of(), "memory", "size=64M")) {
            Traced info = traced("info", List.of("info", server.uri.toString()), "");
            assertEquals(0, info.status, info.err);
            assertTrue(info.out.contains("67108864 bytes"), "info prints the export's size: " + info.out);
            info.assertFromTheImageOnly();
        }
    }

    /**
     * X.509 TLS from the image, whose JDK is only the modules it links (every other TLS test runs
     * on the full JDK): nbdkit requiring TLS with an ECDSA and with an RSA certificate; the key
     * exchange is ECDHE either way, which needs jdk.crypto.ec. TLS-PSK is refused by the default
     * image, saying how to build it in; an image built with -Dimage.psk=true must do it.
     */
    @Test
    void tlsFromTheImage() throws Exception {
        for (KeyType type : KeyType.values()) {
            TestCertificates certs = TestCertificates.create(Files.createDirectories(WORK.resolve("tls-" + type)), type);
            try (PeerServer server = PeerServer.nbdkit("nbdkit tls " + type, WORK, null,
                    List.of("--tls=require", "--tls-certificates=" + certs.serverDir), "memory", "size=32M")) {
                String nbds = "nbds://127.0.0.1:" + port(server) + "/";
                // The ECDSA one finds the CA through the URI (nbdkit's directory layout), the RSA one through --tls-ca.
                List<String> args = type == KeyType.EC
                        ? List.of("info", "--json", nbds + "?tls-certificates=" + certs.serverDir)
                        : List.of("info", "--json", "--tls-ca", certs.ca.toString(), nbds);
                Traced info = traced("tls-" + type, args, "");
                assertEquals(0, info.status, info.err);
                assertTrue(info.out.contains("\"size\": 33554432"), type + ": info prints the export's size: " + info.out);
                info.assertFromTheImageOnly();
                // x25519, GnuTLS's first choice of group: the key exchange ran in jdk.crypto.ec
                String keyAgreement = info.sourceOf("sun.security.ec.XDHKeyAgreement");
                assertTrue(keyAgreement != null && (keyAgreement.equals("jrt:/jdk.crypto.ec")
                        || keyAgreement.startsWith("shared objects file")), type + ": ECDHE from " + keyAgreement);
            }
        }

        TestCertificates certs = TestCertificates.create(Files.createDirectories(WORK.resolve("tls-psk")));
        try (PeerServer server = PeerServer.nbdkit("nbdkit tls psk", WORK, null,
                List.of("--tls=require", "--tls-psk=" + certs.pskFile), "memory", "size=32M")) {
            Traced psk = traced("tls-psk", List.of("info", "--json", "--tls-psk", certs.pskFile.toString(),
                    "nbds://127.0.0.1:" + port(server) + "/"), "");
            if (Boolean.getBoolean("image.psk")) {
                assertEquals(0, psk.status, psk.err);
                assertTrue(psk.out.contains("\"size\": 33554432"), "PSK from an image built with it: " + psk.out);
            } else {
                assertEquals(1, psk.status, psk.err);
                assertTrue(psk.err.contains("nbd-client: TLS-PSK needs BouncyCastle's TLS, which this runtime image was built "
                        + "without (it adds 11 MiB: build the image with mvn package -Dimage.psk=true)\n"), psk.err);
                assertEquals("", psk.out);
            }
            psk.assertFromTheImageOnly();
        }
    }

    private static String port(PeerServer server) {
        return server.uri.endpoint().toString().split(":")[1];
    }

    @Test
    void theDaemonServesADeviceFromTheImage() throws Exception {
        try (GgateEmulator kernel = GgateEmulator.start();
                PeerServer server = PeerServer.nbdkit("nbdkit memory", WORK, null, List.of(), "memory", "size=64M")) {
            String opts = "-Dnbd.ggate.libc=" + GgateEmulator.libraryPath() + " -Dnbd.ggate.ctl=" + kernel.socketPath()
                    + " -Dnbd.rundir=" + runDir;
            // Without -f: the parent JVM starts the daemon again (jspawnhelper), prints the device
            // once the child serves, and exits; strace follows both.
            Traced start = traced("daemon", List.of(server.uri.toString()), opts);
            assertEquals(0, start.status, start.err);
            String device = start.out.strip();
            assertTrue(device.matches("ggate\\d+"), "the daemon prints its device: " + start.out + start.err);
            long daemon = daemonPid();
            try {
                assertServesFromTheImage(kernel, device, daemon, opts);
            } finally {
                ProcessHandle.of(daemon).ifPresent(ProcessHandle::destroyForcibly); // only after a failure
            }
            start.awaitTracer();
            start.assertFromTheImageOnly();
        }
    }

    /** This module's directory: the test's own files (logs, the emulator) may lie in /tmp with a checkout there. */
    private static final String MODULE_DIR = Path.of("").toAbsolutePath() + "/";

    /** Under /tmp, and not one of the test's own files. */
    private static boolean inTmp(String path) {
        return (path.equals("/tmp") || path.startsWith("/tmp/")) && !path.startsWith(MODULE_DIR);
    }

    private static void assertServesFromTheImage(GgateEmulator kernel, String device, long daemon, String opts) throws Exception {
        Path daemonClasses = WORK.resolve("daemon-classes-" + daemon + ".log");
        long loadedWhenServing = Files.readAllLines(daemonClasses).size();
        // It maps the copy's files, and no jar, nothing in /tmp.
        List<String> maps = Files.readAllLines(Path.of("/proc/" + daemon + "/maps"));
        Set<String> mapped = maps.stream().map(l -> l.split("\\s+", 6)).filter(f -> f.length == 6 && f[5].startsWith("/"))
                .map(f -> f[5]).collect(Collectors.toCollection(TreeSet::new));
        for (String file : List.of("lib/modules", "lib/server/libjvm.so", "lib/libjffi-1.2.so", "lib/" + nettyEpollLibrary())) {
            assertTrue(mapped.contains(IMAGE.resolve(file).toString()), "the daemon maps the copy's " + file + ": " + mapped);
        }
        for (String file : mapped) {
            assertFalse(file.endsWith(".jar") || inTmp(file), "the daemon maps " + file);
        }
        assertFalse(Files.exists(Path.of("/tmp/hsperfdata_" + System.getProperty("user.name"), String.valueOf(daemon))),
                "no perf data file (-XX:-UsePerfData)");

        // It really serves: a write through the device reaches nbdkit and reads back.
        int unit = Integer.parseInt(device.substring("ggate".length()));
        byte[] data = new byte[1 << 20];
        new Random(4).nextBytes(data);
        assertTrue(kernel.awaitBio(kernel.queueWrite(unit, 8192, data), WAIT).ok(), "a write through the device");
        BioResult read = kernel.awaitBio(kernel.queueRead(unit, 8192, data.length), WAIT);
        assertTrue(read.ok(), "a read through the device: " + read);
        assertArrayEquals(data, read.data(), "the device reads back what was written");

        // Its meters counted that, read through the control socket; every class they need was
        // loaded before it served (after a reroot none could be).
        Traced stats = traced("stats", List.of("stats", device, "--json"), opts);
        assertEquals(0, stats.status, stats.err);
        for (String command : List.of("write", "read")) {
            assertTrue(stats.out.matches("(?s).*\"" + command + "\": \\{\"count\": [1-9]\\d*, \"errors\": 0, \"bytes\": "
                    + data.length + ",.*"), command + " counted: " + stats.out);
        }
        stats.assertFromTheImageOnly();
        List<String> late = Files.readAllLines(daemonClasses).stream().skip(loadedWhenServing)
                .filter(l -> l.matches(".*\\] (io\\.micrometer|org\\.HdrHistogram|org\\.nbdroot\\.client\\.(metrics|ggate))\\..*"))
                .collect(Collectors.toList());
        // The GEOM Gate completions too: their warm-up ran them before serving.
        assertEquals(List.of(), late, "metrics or GEOM Gate classes the daemon loaded only once serving");

        Traced destroy = traced("destroy", List.of("destroy", device), opts);
        assertEquals(0, destroy.status, destroy.err);
        Optional<ProcessHandle> stillThere = ProcessHandle.of(daemon);
        stillThere.ifPresent(p -> assertDoesNotThrow(() -> p.onExit().get(20, TimeUnit.SECONDS), "the daemon exits after destroy"));
        destroy.assertFromTheImageOnly();
    }

    private static String nettyEpollLibrary() {
        String arch = System.getProperty("os.arch");
        return "libnetty_transport_native_epoll_" + (arch.equals("amd64") ? "x86_64" : arch.equals("aarch64") ? "aarch_64" : arch)
                + ".so";
    }

    /** The background daemon started from this test's run directory. */
    private static long daemonPid() throws IOException {
        String run = "-Dnbd.rundir=" + runDir;
        try (Stream<Path> procs = Files.list(Path.of("/proc"))) {
            List<Long> found = new ArrayList<>();
            for (Path p : (Iterable<Path>) procs::iterator) {
                if (!p.getFileName().toString().matches("\\d+")) {
                    continue;
                }
                try {
                    List<String> args = List.of(new String(Files.readAllBytes(p.resolve("cmdline")), UTF_8).split("\0"));
                    if (args.contains("--detached") && args.contains(run) && args.get(0).startsWith(IMAGE.toString())) {
                        found.add(Long.parseLong(p.getFileName().toString()));
                    }
                } catch (IOException gone) {
                    // a process that ended meanwhile
                }
            }
            assertEquals(1, found.size(), "one daemon of the image's java with " + run + ": " + found);
            return found.get(0);
        }
    }

    /** One run of the image's launcher under strace, with its class-loading log. */
    private static final class Traced {
        final String name;
        final Process tracer;
        final Path strace;
        final Path classLog;
        int status;
        String out;
        String err;

        Traced(String name, Process tracer, Path strace, Path classLog) {
            this.name = name;
            this.tracer = tracer;
            this.strace = strace;
            this.classLog = classLog;
        }

        void awaitTracer() throws InterruptedException {
            assertTrue(tracer.waitFor(30, TimeUnit.SECONDS), name + ": strace ends once every process it follows has");
        }

        /** Where the class-loading logs show {@code className} loaded from (jrt:/MODULE); null if it was not. */
        String sourceOf(String className) throws IOException {
            for (Path log : classLogs()) {
                for (String line : Files.readAllLines(log)) {
                    Matcher m = CLASS_LOAD.matcher(line);
                    if (m.find() && m.group(1).equals(className)) {
                        return m.group(2);
                    }
                }
            }
            return null;
        }

        private List<Path> classLogs() throws IOException {
            try (Stream<Path> files = Files.list(classLog.getParent())) {
                String prefix = classLog.getFileName().toString();
                return files.filter(f -> f.getFileName().toString().startsWith(prefix)).collect(Collectors.toList());
            }
        }

        /** No class from anywhere but the image, no jar opened, nothing created or written in /tmp. */
        void assertFromTheImageOnly() throws IOException {
            List<Path> logs = classLogs();
            assertFalse(logs.isEmpty(), name + ": a class-loading log (-Xlog in JAVA_OPTS reaches the JVM)");
            int classes = 0;
            boolean ours = false;
            for (Path log : logs) {
                for (String line : Files.readAllLines(log)) {
                    Matcher m = CLASS_LOAD.matcher(line);
                    if (!m.find()) {
                        continue;
                    }
                    classes++;
                    String source = m.group(2);
                    // jrt:/MODULE is lib/modules, "shared objects file" the CDS archive; the rest
                    // are classes the JVM spins (lambdas, proxies: named by their host or __X__).
                    boolean fromImage = source.startsWith("jrt:/") || source.startsWith("shared objects file")
                            || source.matches("__\\w+__") || source.matches("[\\w.$]+");
                    assertTrue(fromImage, name + ": " + m.group(1) + " loaded from " + source);
                    if (m.group(1).equals("org.nbdroot.client.Main")) {
                        ours = source.equals("jrt:/org.nbdroot.client") || source.startsWith("shared objects file");
                        assertTrue(ours, name + ": our Main from " + source);
                    }
                }
            }
            assertTrue(classes > 500 && ours, name + ": the log shows the classes loaded (" + classes + "), ours among them");

            List<String> bad = new ArrayList<>();
            int paths = 0;
            for (String line : Files.readAllLines(strace)) {
                Matcher m = STRACE_PATH.matcher(line);
                if (!m.matches()) {
                    continue;
                }
                paths++;
                String call = m.group(1);
                String path = m.group(2);
                String rest = m.group(3);
                if (path.endsWith(".jar")) {
                    bad.add(line);
                }
                boolean writes = call.matches("mkdir.*|unlink.*|rmdir|rename.*|link.*|symlink.*|creat|truncate|chmod.*|chown.*|mknod.*")
                        || call.startsWith("open") && rest.matches(".*(O_WRONLY|O_RDWR|O_CREAT|O_TRUNC).*");
                if (writes && inTmp(path)) {
                    bad.add(line);
                }
            }
            assertTrue(paths > 50, name + ": strace saw the file system calls (" + paths + ")");
            assertEquals(List.of(), bad, name + ": no jar read, nothing written in /tmp");
        }
    }

    /**
     * Runs {@code bin/nbd-client ARGS} of the copied image under strace (file system calls, every
     * process), with {@code -Xlog:class+load} in JAVA_OPTS; returns once the launcher's own
     * process has printed its output and exited (a daemon it started may go on).
     */
    private static Traced traced(String name, List<String> args, String javaOpts) throws Exception {
        Path strace = WORK.resolve(name + ".strace");
        Path classLog = WORK.resolve(name + "-classes");
        List<String> command = new ArrayList<>(List.of("strace", "-f", "-q", "--seccomp-bpf", "-e", "trace=%file",
                "-o", strace.toString(), IMAGE.resolve("bin/nbd-client").toString()));
        command.addAll(args);
        if (!Files.isExecutable(Path.of("/usr/bin/strace"))) {
            fail("strace not found: the test command installs the Debian package strace");
        }
        ProcessBuilder pb = new ProcessBuilder(command).redirectError(WORK.resolve(name + ".err").toFile());
        pb.environment().put("JAVA_OPTS", (javaOpts + " -Xlog:class+load=info:file=" + classLog + "-%p.log").strip());
        Process tracer = pb.start();
        Traced t = new Traced(name, tracer, strace, classLog.resolveSibling(classLog.getFileName() + "-"));
        if (!name.equals("daemon")) {
            t.out = new String(tracer.getInputStream().readAllBytes(), UTF_8);
            t.awaitTracer();
            t.status = tracer.exitValue();
        } else {
            // strace holds the output pipe and lives on with the daemon: read the device line,
            // then the launcher's exit status from strace's log (its first process).
            BufferedReader lines = new BufferedReader(new InputStreamReader(tracer.getInputStream(), UTF_8));
            String line = lines.readLine();
            t.out = line == null ? "" : line + "\n";
            t.status = exitStatusOfFirstProcess(strace);
        }
        t.err = name + " stderr: " + Files.readString(WORK.resolve(name + ".err"));
        return t;
    }

    private static int exitStatusOfFirstProcess(Path strace) throws Exception {
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (System.nanoTime() < deadline) {
            List<String> lines = Files.exists(strace) ? Files.readAllLines(strace) : List.of();
            if (!lines.isEmpty()) {
                String pid = lines.get(0).split("\\s+", 2)[0];
                for (String line : lines) {
                    Matcher m = Pattern.compile("^" + pid + "\\s+\\+\\+\\+ exited with (\\d+) \\+\\+\\+").matcher(line);
                    if (m.find()) {
                        return Integer.parseInt(m.group(1));
                    }
                }
            }
            Thread.sleep(50);
        }
        throw new AssertionError("the launcher did not exit within " + WAIT + ": " + strace);
    }

    private static String run(List<String> command) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), UTF_8);
        assertTrue(p.waitFor(60, TimeUnit.SECONDS), String.join(" ", command) + " did not end");
        assertEquals(0, p.exitValue(), String.join(" ", command) + ": " + out);
        return out;
    }

}
