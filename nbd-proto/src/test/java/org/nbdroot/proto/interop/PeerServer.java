package org.nbdroot.proto.interop;

import java.io.IOException;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.function.UnaryOperator;
import org.nbdroot.proto.transport.NbdUri;

/**
 * A real NBD server (nbdkit, nbd-server, qemu-nbd) started by a test on a free loopback
 * port, killed when the test closes it. A missing binary fails the test: the test command
 * installs the Debian packages, so a skip would hide a broken setup.
 */
public final class PeerServer implements AutoCloseable {
    public final String name;
    public final NbdUri uri;
    public final Path backing;
    private volatile ProcessHandle process;
    private final Path log;
    private Restart restart;
    /**
     * Where {@link #restartLater} starts the server: a thread that lives until {@link #close},
     * since nbdkit's --exit-with-parent fires when the thread that started it exits, not the process.
     */
    private ExecutorService restarter;

    /** How to start the same server again on the same port. */
    private record Restart(String packageName, List<String> command, int port, String export, Path dir, Path pidFile) {}

    private PeerServer(String name, NbdUri uri, Path backing, ProcessHandle process, Path log) {
        this.name = name;
        this.uri = uri;
        this.backing = backing;
        this.process = process;
        this.log = log;
    }

    /**
     * Kills the server with SIGKILL, as a crash would, and waits until it is gone; with it the
     * processes it forked (nbd-server serves each client in a child of its own, which would
     * otherwise go on serving the connection).
     */
    public void kill9() throws Exception {
        List<ProcessHandle> children = process.descendants().toList();
        process.destroyForcibly();
        children.forEach(ProcessHandle::destroyForcibly);
        process.onExit().get(10, TimeUnit.SECONDS);
        for (ProcessHandle child : children) {
            child.onExit().get(10, TimeUnit.SECONDS);
        }
    }

    public boolean isAlive() {
        return process.isAlive();
    }

    /** SIGSTOP: the server keeps its sockets open (the kernel even accepts new connections) but answers nothing. */
    public void freeze() throws Exception {
        signal("STOP");
    }

    /** SIGCONT after {@link #freeze}. */
    public void thaw() throws Exception {
        signal("CONT");
    }

    private void signal(String name) throws Exception {
        Process kill = new ProcessBuilder("kill", "-" + name, String.valueOf(process.pid())).inheritIO().start();
        if (!kill.waitFor(10, TimeUnit.SECONDS) || kill.exitValue() != 0) {
            throw new AssertionError("kill -" + name + " " + process.pid() + " failed");
        }
    }

    /** Starts the server again, same command, same port, same files. */
    public void restart() throws Exception {
        restart(command -> command);
    }

    /**
     * Starts the server again on the same port and files, with its command changed by
     * {@code edit} for this start only (for nbdkit, {@link #withNbdkitOptions} adds options
     * such as -r or a filter).
     */
    public void restart(UnaryOperator<List<String>> edit) throws Exception {
        Restart r = restart;
        if (r.pidFile != null) {
            Files.deleteIfExists(r.pidFile); // the killed daemon's: not to be taken for the new one's
        }
        PeerServer again = start(name, r.packageName, edit.apply(r.command), r.port, r.export, backing, r.dir, r.pidFile);
        process = again.process;
    }

    /**
     * {@link #restart(UnaryOperator)} after {@code delay}, on a thread that outlives the call
     * (see {@link #restarter}); completes with {@link System#nanoTime} once the server listens.
     */
    public synchronized CompletableFuture<Long> restartLater(java.time.Duration delay, UnaryOperator<List<String>> edit) {
        if (restarter == null) {
            restarter = Executors.newSingleThreadExecutor(r -> {
                Thread t = new Thread(r, "restart " + name);
                t.setDaemon(true);
                return t;
            });
        }
        return CompletableFuture.supplyAsync(() -> {
            try {
                Thread.sleep(delay.toMillis());
                restart(edit);
                return System.nanoTime();
            } catch (Exception e) {
                throw new IllegalStateException(name + " did not start again", e);
            }
        }, restarter);
    }

    public CompletableFuture<Long> restartLater(java.time.Duration delay) {
        return restartLater(delay, command -> command);
    }

    /** For {@link #restart(UnaryOperator)}: nbdkit's command with {@code options} before the plugin. */
    public static UnaryOperator<List<String>> withNbdkitOptions(String... options) {
        return command -> {
            List<String> changed = new ArrayList<>(command);
            changed.addAll(changed.indexOf("-p") + 2, List.of(options));
            return changed;
        };
    }

    public static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }

    /**
     * Starts {@code command}, which must listen on {@code port}, and waits until it does. A
     * server that puts itself in the background names its process in {@code pidFile}.
     */
    static PeerServer start(String name, String packageName, List<String> command, int port, String export, Path backing,
            Path dir, Path pidFile) throws IOException, InterruptedException {
        String binary = command.get(0);
        if (!Files.isExecutable(Path.of("/usr/bin", binary)) && !Files.isExecutable(Path.of("/usr/sbin", binary))) {
            throw new AssertionError(binary + " not found: the test command installs the Debian package " + packageName);
        }
        Path log = dir.resolve(name.replaceAll("[^a-zA-Z0-9]", "_") + ".log");
        Process started = new ProcessBuilder(command).redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile())).start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (System.nanoTime() < deadline) {
            if (pidFile == null && !started.isAlive()) {
                throw new AssertionError(name + " exited with status " + started.exitValue() + " at start: " + Files.readString(log));
            }
            ProcessHandle server = pidFile == null ? started.toHandle() : fromPidFile(pidFile);
            if (server != null && isListening(port)) {
                PeerServer peer = new PeerServer(name, NbdUri.parse("nbd://127.0.0.1:" + port + "/" + export), backing,
                        server, log);
                peer.restart = new Restart(packageName, command, port, export, dir, pidFile);
                return peer;
            }
            Thread.sleep(20);
        }
        started.destroyForcibly();
        throw new AssertionError(name + " did not listen on port " + port + " within 10 s: " + Files.readString(log));
    }

    private static ProcessHandle fromPidFile(Path pidFile) throws IOException {
        if (!Files.exists(pidFile)) {
            return null;
        }
        String pid = Files.readString(pidFile).trim();
        return pid.isEmpty() ? null : ProcessHandle.of(Long.parseLong(pid)).orElse(null);
    }

    /**
     * Whether something listens on 127.0.0.1:port, read from /proc/net/tcp rather than probed
     * with a connection: nbd-server in the foreground (-d) exits after a client that hangs up
     * without a handshake.
     */
    static boolean isListening(int port) throws IOException {
        String local = String.format("0100007F:%04X", port);
        for (String line : Files.readAllLines(Path.of("/proc/net/tcp"))) {
            String[] fields = line.trim().split("\\s+");
            if (fields.length > 3 && fields[1].equals(local) && fields[3].equals("0A")) {
                return true;
            }
        }
        return false;
    }

    public static PeerServer nbdkit(String name, Path dir, Path backing, List<String> options, String plugin, String... pluginArgs)
            throws IOException, InterruptedException {
        int port = freePort();
        List<String> command = new ArrayList<>(List.of("nbdkit", "--foreground", "--exit-with-parent",
                "-i", "127.0.0.1", "-p", String.valueOf(port)));
        command.addAll(options);
        command.add(plugin);
        command.addAll(List.of(pluginArgs));
        return start(name, "nbdkit", command, port, "", backing, dir, null);
    }

    public static PeerServer nbdServer(Path dir, Path backing, String export) throws IOException, InterruptedException {
        return nbdServer(dir, backing, export, List.of());
    }

    /** nbd-server with more lines for its [generic] section (force_tls, certfile, ...). */
    public static PeerServer nbdServer(Path dir, Path backing, String export, List<String> generic)
            throws IOException, InterruptedException {
        int port = freePort();
        Path config = dir.resolve("nbd-server.conf");
        Files.writeString(config, String.join("\n",
                "[generic]",
                "port = " + port,
                "listenaddr = 127.0.0.1",
                "allowlist = true",
                String.join("\n", generic),
                "[" + export + "]",
                "exportname = " + backing,
                "trim = true",
                "flush = true",
                "fua = true",
                ""));
        // In the foreground (-d) nbd-server serves one client at a time and drops its listening
        // socket meanwhile, so it runs as the daemon it is meant to be, found through its pid file.
        Path pidFile = dir.resolve("nbd-server.pid");
        return start("nbd-server", "nbd-server", List.of("nbd-server", "-C", config.toString(), "-p", pidFile.toString()),
                port, export, backing, dir, pidFile);
    }

    public static PeerServer qemuNbd(Path dir, Path image, String format, String export) throws IOException, InterruptedException {
        int port = freePort();
        return start("qemu-nbd " + format, "qemu-utils", List.of("qemu-nbd", "--persistent", "--shared=8", "-f", format,
                "--discard=unmap", "-x", export, "-b", "127.0.0.1", "-p", String.valueOf(port), image.toString()),
                port, export, image, dir, null);
    }

    public String logTail() {
        try {
            List<String> lines = Files.readAllLines(log);
            return String.join("\n", lines.subList(Math.max(0, lines.size() - 20), lines.size()));
        } catch (IOException e) {
            return "(no log: " + e.getMessage() + ")";
        }
    }

    @Override
    public void close() throws Exception {
        try {
            stop();
        } finally {
            synchronized (this) {
                if (restarter != null) {
                    restarter.shutdownNow();
                }
            }
        }
    }

    private void stop() throws Exception {
        List<ProcessHandle> children = process.descendants().toList(); // nbd-server's, serving clients
        children.forEach(ProcessHandle::destroy);
        if (process.isAlive()) {
            new ProcessBuilder("kill", "-CONT", String.valueOf(process.pid())).start().waitFor(); // a frozen server ignores SIGTERM
        }
        process.destroy();
        try {
            process.onExit().get(5, TimeUnit.SECONDS);
        } catch (java.util.concurrent.TimeoutException e) {
            process.destroyForcibly();
            try {
                process.onExit().get(5, TimeUnit.SECONDS);
            } catch (java.util.concurrent.TimeoutException again) {
                throw new AssertionError(name + " did not stop after SIGKILL");
            }
        }
    }

    @Override
    public String toString() {
        return name;
    }
}
