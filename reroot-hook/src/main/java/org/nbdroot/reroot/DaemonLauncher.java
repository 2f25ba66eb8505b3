package org.nbdroot.reroot;

import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * Starts one daemon from the staged copy, through the staged runtime linker with a library
 * path inside the staging directory, so that nothing it maps comes from the old root. It
 * waits for the daemon's line naming the device on stdout, which it prints once the device
 * serves (the same handshake {@code nbd-client} uses to put itself in the background).
 */
public final class DaemonLauncher {
    /** Exit status of the daemon for a command line that does not parse: trying again cannot help. */
    static final int EXIT_USAGE = 2;
    /** The main class inside the runtime image. */
    static final String MAIN = "org.nbdroot.client/org.nbdroot.client.Main";

    private final StagedImage staged;
    private final boolean freebsd;
    private final boolean rescue;
    private final PrintStream err;

    private final java.util.function.Predicate<RerootConfig.Device> leftAttached;

    /** {@code rescue}: the daemons take over units whose daemons died ({@code nbd-client rescue}) instead of creating them. */
    public DaemonLauncher(StagedImage staged, boolean freebsd, boolean rescue, PrintStream err) {
        this(staged, freebsd, rescue, err, d -> leftAttached(d, freebsd));
    }

    /** {@code leftAttached}: whether a device is attached already (tests stand in for the kernel). */
    DaemonLauncher(StagedImage staged, boolean freebsd, boolean rescue, PrintStream err,
            java.util.function.Predicate<RerootConfig.Device> leftAttached) {
        this.staged = staged;
        this.freebsd = freebsd;
        this.rescue = rescue;
        this.err = err;
        this.leftAttached = leftAttached;
    }

    /**
     * A unit attached before any daemon of this reroot started: an earlier attempt left it when it
     * failed (a second device that did not come up, a root that would not mount) and init then
     * killed its daemon. Creating it again would fail (FreeBSD: EEXIST; Linux: already connected).
     */
    static boolean leftAttached(RerootConfig.Device device, boolean freebsd) {
        return freebsd ? java.nio.file.Files.exists(java.nio.file.Path.of(device.devicePath(true)))
                : java.nio.file.Files.exists(java.nio.file.Path.of("/sys/block/nbd" + device.unit() + "/pid"));
    }

    /** A daemon serving its device. */
    public record Started(RerootConfig.Device device, String devicePath, long pid) {}

    /** The command line: runtime linker, staged java, the options the launcher script would give, the daemon's arguments. */
    List<String> command(RerootConfig.Device device, List<String> javaOptions) throws IOException {
        return command(device, javaOptions, rescue);
    }

    private List<String> command(RerootConfig.Device device, List<String> javaOptions, boolean rescue) throws IOException {
        List<String> command = new ArrayList<>();
        command.add(staged.runtimeLinker().toString());
        if (!freebsd) {
            // glibc's linker would otherwise consult the old root's /etc/ld.so.cache for a later dlopen.
            command.add("--inhibit-cache");
        }
        command.add(staged.java().toString());
        command.add("-XX:-UsePerfData");
        command.add("-Dfile.encoding=UTF-8");
        // Resolve the server's name once, now: after the reroot the resolver's files and
        // libraries are those of whatever root the daemon is left with.
        command.add("-Dsun.net.inetaddr.ttl=-1");
        // jnr looks here first for the libraries it loads by name (libc): the staged copies, not the old root's.
        command.add("-Djnr.ffi.library.path=" + staged.libraries());
        command.add("-Djffi.boot.library.path=" + staged.image().resolve("lib"));
        command.add("-Dnbd.rundir=" + staged.runDirectory());
        command.addAll(javaOptions);
        command.add("-m");
        command.add(MAIN);
        if (rescue) {
            command.add("rescue");
        }
        command.add("--foreground");
        command.add("--detached");
        if (!freebsd) {
            // systemd's shutdown then spares it until the root is read-only (RootStorageMark).
            command.add("--root-storage");
        }
        command.addAll(device.options());
        command.addAll(device.server());
        command.add(device.devicePath(freebsd));
        return command;
    }

    /**
     * Starts the daemon for {@code device}, trying again while it fails until {@code timeout}
     * has passed (the server may still be coming up), unless its command line is wrong.
     */
    public Started start(RerootConfig.Device device, Duration timeout, List<String> javaOptions)
            throws IOException, InterruptedException {
        return start(device, timeout, timeout, javaOptions);
    }

    /** {@code left}: what remains of {@code timeout}, the configured wait shared by all devices. */
    public Started start(RerootConfig.Device device, Duration left, Duration timeout, List<String> javaOptions)
            throws IOException, InterruptedException {
        long deadline = System.nanoTime() + left.toNanos();
        String path = device.devicePath(freebsd);
        boolean takeOver = rescue;
        int attempt = 0;
        while (true) {
            attempt++;
            // Asked again on every attempt: one that attached the unit, then died, leaves it attached too.
            if (!takeOver && leftAttached.test(device)) {
                err.println("nbd-client reroot: " + path + " is still attached from an earlier attempt, its daemon gone:"
                        + " taking it over (nbd-client rescue)");
                takeOver = true;
            }
            ProcessBuilder pb = new ProcessBuilder(command(device, javaOptions, takeOver))
                    // not the old root's /, which the reroot takes away
                    .directory(staged.root().toFile())
                    .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                    .redirectError(ProcessBuilder.Redirect.INHERIT);
            environment(pb.environment());
            Process daemon = pb.start();
            String name = java.nio.file.Path.of(path).getFileName().toString();
            CompletableFuture<String> ready = CompletableFuture.supplyAsync(() -> readyLine(daemon, name));
            long remaining = deadline - System.nanoTime();
            String line;
            try {
                line = ready.get(Math.max(remaining, 0), TimeUnit.NANOSECONDS);
            } catch (TimeoutException e) {
                daemon.destroyForcibly();
                throw new IOException(path + " not ready within nbdroot.timeout (" + timeout.toSeconds() + " s for all devices; "
                        + Math.max(0, left.toSeconds()) + " s were left for this one) (" + String.join(" ", device.server())
                        + "): giving up");
            } catch (ExecutionException e) {
                line = null;
            }
            if (line != null) {
                protectFromOomKiller(daemon.pid());
                return new Started(device, path, daemon.pid());
            }
            int status = daemon.waitFor();
            if (status == EXIT_USAGE) {
                throw new IOException("the daemon for " + path + " refused its command line (exit status 2): check nbdroot."
                        + device.unit() + ".server and nbdroot." + device.unit() + ".options");
            }
            if (System.nanoTime() + TimeUnit.SECONDS.toNanos(1) > deadline) {
                throw new IOException("the daemon for " + path + " failed " + attempt + " time(s) (last exit status " + status
                        + ") within " + timeout.toSeconds() + " s: giving up");
            }
            err.println("nbd-client reroot: the daemon for " + path + " exited with status " + status + "; trying again");
            Thread.sleep(1000);
        }
    }

    /**
     * A fixed, small environment: the copied libraries come first for the linker and for jnr's
     * dlopen("libc"), and the C locale, which glibc serves with no files (another locale maps
     * /usr/lib/locale from the old root). Files a daemon would otherwise read from the root
     * later, once the root may be gone or served by nobody (FreeBSD's rc.final): the time zone
     * (UTC, not /etc/localtime, for the log's first line) and FreeBSD's libmap.conf.
     */
    void environment(java.util.Map<String, String> env) {
        env.clear();
        env.put("LD_LIBRARY_PATH", staged.libraries().toString());
        env.put("LC_ALL", "C");
        env.put("TZ", "UTC");
        if (freebsd) {
            env.put("LD_LIBMAP_DISABLE", "1");
        }
        env.put("PATH", "/sbin:/bin:/usr/sbin:/usr/bin");
    }

    /**
     * Linux: the kernel's OOM killer must never pick the process the root disk depends on;
     * killing it would hang every process that touches the disk, the OOM killer included.
     */
    void protectFromOomKiller(long pid) {
        if (freebsd) {
            return;
        }
        java.nio.file.Path adj = java.nio.file.Path.of("/proc", Long.toString(pid), "oom_score_adj");
        try {
            java.nio.file.Files.writeString(adj, "-1000\n");
        } catch (IOException e) {
            err.println("nbd-client reroot: warning: cannot write " + adj + ": " + e.getMessage());
        }
    }

    /**
     * The daemon's line naming its device, once it serves; null when it exits first. Other lines
     * (the JVM's own, with -Xlog or -verbose:gc in nbdroot.java.options) are passed on: taken for
     * readiness, they would name a root no daemon serves yet.
     */
    private String readyLine(Process daemon, String deviceName) {
        try {
            BufferedReader out = new BufferedReader(new InputStreamReader(daemon.getInputStream(), StandardCharsets.UTF_8));
            for (String line = out.readLine(); line != null; line = out.readLine()) {
                if (line.equals(deviceName)) {
                    return line;
                }
                err.println(line);
            }
        } catch (IOException e) {
            // the daemon closed its output: what it exits with says why
        }
        return null;
    }
}
