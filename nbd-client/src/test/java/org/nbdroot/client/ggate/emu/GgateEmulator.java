package org.nbdroot.client.ggate.emu;

import static java.nio.charset.StandardCharsets.UTF_8;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.stream.Stream;
import jnr.constants.platform.Errno;

/**
 * The GEOM Gate kernel emulator ({@code src/test/c/ggate-emu}) for tests: starts a
 * {@code ggate-kernel} process on a fresh socket and speaks its test-control protocol
 * (README.md there gives it byte by byte). The daemon under test reaches the same kernel
 * through {@code libggate-emu.so}: see {@link #configureBinding()}.
 *
 * <p>The binaries come from the directory named by {@code -Dggate.emu.dir} (default
 * {@code target/ggate-emu}, relative to the module, where the Maven build puts them).
 * Errno values in replies are the host's (Linux), so compare them with
 * {@link Errno#intValue()}.
 *
 * <p>Thread-safe: every request uses its own connection, so a blocking {@link #awaitBio}
 * or {@link #runLoad} does not hold up the others.
 */
public final class GgateEmulator implements AutoCloseable {
    public static final int BIO_READ = 1;
    public static final int BIO_WRITE = 2;
    public static final int BIO_DELETE = 3;
    public static final int BIO_GETATTR = 4;
    public static final int BIO_FLUSH = 5;
    public static final int BIO_SPEEDUP = 10;

    public static final int FLAG_READONLY = 0x0001;
    public static final int FLAG_WRITEONLY = 0x0002;
    public static final int FLAG_DESTROYING = 0x1000;

    private static final int PROTOCOL_VERSION = 1;
    private static final int OP_HELLO = 32;
    private static final int OP_QUEUE_BIO = 33;
    private static final int OP_AWAIT_BIO = 34;
    private static final int OP_LIST_UNITS = 35;
    private static final int OP_SET_ACCESS = 36;
    private static final int OP_RUN_LOAD = 37;
    private static final int HEADER = 16;

    /** How long a reply may be late before a request gives up (beyond what it waits for itself). */
    private static final Duration REPLY_SLACK = Duration.ofSeconds(30);
    private static final Duration STARTUP = Duration.ofSeconds(10);
    private static final Duration SHUTDOWN = Duration.ofSeconds(10);

    private static final ScheduledExecutorService WATCHDOG = Executors.newSingleThreadScheduledExecutor(r -> {
        Thread t = new Thread(r, "ggate-emu-watchdog");
        t.setDaemon(true);
        return t;
    });

    private final Path directory;
    private final Path socket;
    private final Path logFile;
    private final Process process;
    private final OutputStream stdin;
    private volatile boolean closed;

    private GgateEmulator(Path directory, Path socket, Path logFile, Process process) {
        this.directory = directory;
        this.socket = socket;
        this.logFile = logFile;
        this.process = process;
        this.stdin = process.getOutputStream(); // kept open: EOF there stops the kernel
    }

    /** Where the binaries are: {@code -Dggate.emu.dir}, default {@code target/ggate-emu}. */
    public static Path binaryDirectory() {
        return Path.of(System.getProperty("ggate.emu.dir", "target/ggate-emu")).toAbsolutePath().normalize();
    }

    public static Path kernelPath() {
        return binaryDirectory().resolve("ggate-kernel");
    }

    /** The library the binding loads instead of the C library ({@code -Dnbd.ggate.libc}). */
    public static Path libraryPath() {
        return binaryDirectory().resolve("libggate-emu.so");
    }

    /** Whether the C part has been built (by {@code make}, run from the Maven build). */
    public static boolean isBuilt() {
        return Files.isExecutable(kernelPath()) && Files.isRegularFile(libraryPath());
    }

    /**
     * Starts a kernel on a new socket.
     *
     * @param options extra {@code ggate-kernel} flags: {@code -v} logs every ioctl, {@code -o}
     *     plays a FreeBSD 13 kernel (no resizing)
     */
    public static GgateEmulator start(String... options) throws IOException {
        Path kernel = kernelPath();
        if (!isBuilt()) {
            throw new IllegalStateException("the ggate emulator is not built in " + binaryDirectory()
                    + ": run make -C nbd-client/src/test/c/ggate-emu O=" + binaryDirectory() + " (or set -Dggate.emu.dir)");
        }
        Path dir = Files.createTempDirectory(shortTempRoot(), "ggate-emu");
        Path socket = dir.resolve("ggctl.sock");
        Path log = dir.resolve("ggate-kernel.log");
        List<String> command = new ArrayList<>();
        command.add(kernel.toString());
        command.addAll(List.of(options));
        command.add(socket.toString());
        Process process = new ProcessBuilder(command)
                .redirectError(ProcessBuilder.Redirect.appendTo(log.toFile()))
                .start();
        GgateEmulator emulator = new GgateEmulator(dir, socket, log, process);
        try {
            emulator.awaitReady();
            int[] hello = emulator.hello();
            if (hello[0] != PROTOCOL_VERSION) {
                throw new IOException("ggate-kernel speaks protocol " + hello[0] + ", not " + PROTOCOL_VERSION);
            }
        } catch (IOException | RuntimeException e) {
            process.destroyForcibly();
            deleteTree(dir);
            throw e;
        }
        return emulator;
    }

    /** A Unix socket path must stay under ~107 bytes: prefer a short temporary directory. */
    private static Path shortTempRoot() {
        Path tmp = Path.of(System.getProperty("java.io.tmpdir"));
        return tmp.toString().length() > 60 && Files.isDirectory(Path.of("/tmp")) ? Path.of("/tmp") : tmp;
    }

    private void awaitReady() throws IOException {
        BufferedReader out = new BufferedReader(new InputStreamReader(process.getInputStream(), UTF_8));
        ScheduledFuture<?> watchdog = WATCHDOG.schedule(process::destroyForcibly, STARTUP.toMillis(), TimeUnit.MILLISECONDS);
        try {
            String line = out.readLine();
            if (line == null || !line.startsWith("ready ")) {
                throw new IOException("ggate-kernel did not start (" + line + "): " + log());
            }
        } finally {
            watchdog.cancel(false);
        }
    }

    /** The kernel's socket: give it to the binding as {@code -Dnbd.ggate.ctl}. */
    public Path socketPath() {
        return socket;
    }

    /** The kernel's process id. */
    public long pid() {
        return process.pid();
    }

    /**
     * Points the binding ({@code GgateControl}) at this kernel: sets {@code nbd.ggate.libc} to
     * {@link #libraryPath()} and {@code nbd.ggate.ctl} to {@link #socketPath()}. The binding
     * loads its library once per JVM, so the library must be set before its first use (it is
     * the same file for every emulator); the control device is read at every open.
     */
    public void configureBinding() {
        System.setProperty("nbd.ggate.libc", libraryPath().toString());
        System.setProperty("nbd.ggate.ctl", socketPath().toString());
    }

    /** What the kernel logged on stderr so far. */
    public String log() {
        try {
            return Files.exists(logFile) ? Files.readString(logFile) : "";
        } catch (IOException e) {
            return "(cannot read " + logFile + ": " + e.getMessage() + ")";
        }
    }

    // ---------------------------------------------------------------- test control

    /** Protocol version and pid. */
    private int[] hello() throws IOException {
        ByteBuffer reply = call(OP_HELLO, empty(), Duration.ZERO).body();
        return new int[] {reply.getInt(0), reply.getInt(4)};
    }

    /**
     * Queues a bio as a GEOM consumer would; returns its id for {@link #awaitBio}. A bio the
     * kernel refuses at once (READONLY, queue full, misaligned) still gets an id: awaiting it
     * gives the error.
     *
     * @param data a WRITE's payload ({@code length} bytes), else null
     * @throws GgateEmulatorException ENXIO when there is no such unit
     */
    public long queueBio(int unit, int cmd, long offset, long length, byte[] data) throws IOException {
        int payload = cmd == BIO_WRITE ? Math.toIntExact(length) : 0;
        if (cmd == BIO_WRITE && (data == null || data.length != payload)) {
            throw new IllegalArgumentException("a WRITE needs exactly " + length + " bytes of data");
        }
        ByteBuffer body = buffer(24 + payload);
        body.putInt(unit).putInt(cmd).putLong(offset).putLong(length);
        if (payload > 0) {
            body.put(data);
        }
        return checked("QUEUE_BIO", call(OP_QUEUE_BIO, body.flip(), Duration.ZERO)).getLong(0);
    }

    public long queueRead(int unit, long offset, int length) throws IOException {
        return queueBio(unit, BIO_READ, offset, length, null);
    }

    public long queueWrite(int unit, long offset, byte[] data) throws IOException {
        return queueBio(unit, BIO_WRITE, offset, data.length, data);
    }

    /**
     * Waits for a queued bio to complete; its id is forgotten then.
     *
     * @throws TimeoutException when it has not completed in time (the id stays valid)
     * @throws GgateEmulatorException ENOENT for an unknown (or already awaited) id
     */
    public BioResult awaitBio(long id, Duration timeout) throws IOException, TimeoutException {
        return await(id, timeout, false).orElseThrow(
                () -> new TimeoutException("bio " + id + " not completed within " + timeout));
    }

    /** Whether the bio is still in the kernel's hands (queued, or taken by a daemon); consumes nothing. */
    public boolean isPending(long id) throws IOException {
        return await(id, Duration.ZERO, true).isEmpty();
    }

    /** The result if the bio has completed, without consuming it (a later {@link #awaitBio} still gets it). */
    public Optional<BioResult> peekBio(long id) throws IOException {
        return await(id, Duration.ZERO, true);
    }

    /** AWAIT_BIO; a peek never waits and leaves a completed bio for a later await. */
    private Optional<BioResult> await(long id, Duration timeout, boolean peek) throws IOException {
        ByteBuffer body = buffer(24).putLong(id).putLong(timeout.toMillis()).putInt(peek ? 1 : 0).putInt(0).flip();
        Reply reply = call(OP_AWAIT_BIO, body, timeout);
        if (reply.status() == Errno.ETIMEDOUT.intValue()) {
            return Optional.empty();
        }
        ByteBuffer r = checked("AWAIT_BIO", reply);
        int error = r.getInt(0);
        int cmd = r.getInt(4);
        byte[] data = new byte[Math.toIntExact(r.getLong(8))];
        r.get(16, data);
        return Optional.of(new BioResult(error, cmd, data));
    }

    /** Every unit, by number. */
    public List<Unit> units() throws IOException {
        return listUnits().units();
    }

    public Optional<Unit> unit(int unit) throws IOException {
        return units().stream().filter(u -> u.unit() == unit).findFirst();
    }

    /** How many ioctls so far passed a request number with bits above 31 set (a sign-extended int). */
    public int signExtensionWarnings() throws IOException {
        return listUnits().signWarnings();
    }

    private record UnitList(List<Unit> units, int signWarnings) {}

    private UnitList listUnits() throws IOException {
        ByteBuffer r = checked("LIST_UNITS", call(OP_LIST_UNITS, empty(), Duration.ZERO));
        int count = r.getInt();
        int warnings = r.getInt();
        List<Unit> units = new ArrayList<>(count);
        for (int i = 0; i < count; i++) {
            int unit = r.getInt();
            int flags = r.getInt();
            long mediaSize = r.getLong();
            int sectorSize = r.getInt();
            int timeout = r.getInt();
            int queueSize = r.getInt();
            int queueCount = r.getInt();
            int queued = r.getInt();
            int taken = r.getInt();
            long nextSeq = r.getLong();
            int acr = r.getInt();
            int acw = r.getInt();
            int ace = r.getInt();
            int refs = r.getInt();
            byte[] name = new byte[r.getInt()];
            byte[] info = new byte[r.getInt()];
            r.get(name).get(info);
            units.add(new Unit(unit, new String(name, UTF_8), flags, mediaSize, sectorSize, timeout, queueSize,
                    queueCount, queued, taken, nextSeq, acr, acw, ace, refs, new String(info, UTF_8)));
        }
        return new UnitList(List.copyOf(units), warnings);
    }

    /** Opens (read-write) or closes the provider: while open, DESTROY without force is EBUSY. */
    public void setProviderOpen(int unit, boolean open) throws IOException {
        int n = open ? 1 : 0;
        setProviderAccess(unit, n, n, 0);
    }

    /** Sets the provider's access counts; reading a WRITEONLY unit is EPERM, as in g_gate_access. */
    public void setProviderAccess(int unit, int read, int write, int exclusive) throws IOException {
        ByteBuffer body = buffer(16).putInt(unit).putInt(read).putInt(write).putInt(exclusive).flip();
        checked("SET_ACCESS", call(OP_SET_ACCESS, body, Duration.ZERO));
    }

    /** Runs a load inside the kernel and returns when it is over (duration plus at most the grace). */
    public LoadResult runLoad(LoadSpec spec) throws IOException {
        ByteBuffer body = buffer(48)
                .putInt(spec.unit())
                .putInt(spec.cmd())
                .putInt(spec.depth())
                .putInt(spec.random() ? 1 : 0)
                .putLong(spec.bioLength())
                .putLong(spec.duration().toMillis())
                .putLong(spec.seed())
                .putLong(spec.grace().toMillis())
                .flip();
        ByteBuffer r = checked("RUN_LOAD", call(OP_RUN_LOAD, body, spec.duration().plus(spec.grace())));
        return new LoadResult(r.getLong(), r.getLong(), r.getLong(), Duration.ofNanos(r.getLong()),
                Duration.ofNanos(r.getLong()), Duration.ofNanos(r.getLong()), Duration.ofNanos(r.getLong()),
                r.getLong());
    }

    // ---------------------------------------------------------------- the wire

    private record Reply(int status, ByteBuffer body) {}

    private static ByteBuffer buffer(int size) {
        return ByteBuffer.allocate(size).order(ByteOrder.LITTLE_ENDIAN);
    }

    private static ByteBuffer empty() {
        return buffer(0);
    }

    private static ByteBuffer checked(String op, Reply reply) throws GgateEmulatorException {
        if (reply.status() != 0) {
            throw new GgateEmulatorException(op, reply.status());
        }
        return reply.body();
    }

    /**
     * One request on its own connection. {@code waits} is how long the request may
     * legitimately take; past that plus some slack, the connection is closed and the call
     * fails instead of hanging the test.
     */
    private Reply call(int op, ByteBuffer body, Duration waits) throws IOException {
        if (closed) {
            throw new IllegalStateException("the emulator is closed");
        }
        try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            ch.connect(UnixDomainSocketAddress.of(socket));
            ScheduledFuture<?> watchdog = WATCHDOG.schedule(() -> closeQuietly(ch),
                    waits.plus(REPLY_SLACK).toMillis(), TimeUnit.MILLISECONDS);
            try {
                ByteBuffer header = buffer(HEADER).putInt(op).putInt(0).putLong(body.remaining()).flip();
                ByteBuffer[] request = {header, body};
                do {
                    ch.write(request);
                } while (body.hasRemaining());
                ByteBuffer rh = readFully(ch, buffer(HEADER));
                int rop = rh.getInt(0);
                int status = rh.getInt(4);
                long len = rh.getLong(8);
                if (rop != op || len < 0 || len > Integer.MAX_VALUE) {
                    throw new IOException("bad reply from ggate-kernel: op " + rop + ", length " + len);
                }
                return new Reply(status, readFully(ch, buffer((int) len)));
            } catch (java.nio.channels.AsynchronousCloseException e) {
                throw new IOException("ggate-kernel did not answer op " + op + " in time; log: " + log(), e);
            } finally {
                watchdog.cancel(false);
            }
        }
    }

    private static ByteBuffer readFully(SocketChannel ch, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            if (ch.read(b) < 0) {
                throw new IOException("ggate-kernel closed the connection");
            }
        }
        return b.flip();
    }

    private static void closeQuietly(SocketChannel ch) {
        try {
            ch.close();
        } catch (IOException ignored) {
            // a watchdog: nothing to do about it
        }
    }

    // ---------------------------------------------------------------- shutdown

    /**
     * Stops the kernel (SIGTERM) and removes its directory. Fails loudly if it does not exit
     * in time, exits with an error (a crash), or leaves its socket behind.
     */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        try {
            process.destroy();
            boolean exited = process.waitFor(SHUTDOWN.toMillis(), TimeUnit.MILLISECONDS);
            if (!exited) {
                process.destroyForcibly();
                process.waitFor(SHUTDOWN.toMillis(), TimeUnit.MILLISECONDS);
                throw new IllegalStateException("ggate-kernel (pid " + process.pid() + ") did not exit on SIGTERM within "
                        + SHUTDOWN + "; log: " + log());
            }
            int code = process.exitValue();
            if (code != 0) {
                throw new IllegalStateException("ggate-kernel exited with status " + code + "; log: " + log());
            }
            if (Files.exists(socket)) {
                throw new IllegalStateException("ggate-kernel left its socket " + socket + " behind");
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            process.destroyForcibly();
            throw new IllegalStateException("interrupted while stopping ggate-kernel", e);
        } finally {
            closeQuietly(stdin);
            deleteTree(directory);
        }
    }

    private static void closeQuietly(OutputStream out) {
        try {
            out.close();
        } catch (IOException ignored) {
            // the process is gone
        }
    }

    private static void deleteTree(Path dir) {
        try (Stream<Path> paths = Files.walk(dir)) {
            paths.sorted(Comparator.reverseOrder()).forEach(p -> {
                try {
                    Files.deleteIfExists(p);
                } catch (IOException e) {
                    throw new UncheckedIOException(e);
                }
            });
        } catch (IOException | UncheckedIOException ignored) {
            // a temporary directory: leave what cannot go
        }
    }

    // ---------------------------------------------------------------- values

    /** A completed bio: its errno (0 for success; the host's numbering) and a READ's data. */
    public record BioResult(int error, int cmd, byte[] data) {
        public boolean ok() {
            return error == 0;
        }

        public boolean failedWith(Errno errno) {
            return error == errno.intValue();
        }

        @Override
        public String toString() {
            return "BioResult[cmd=" + cmd + ", error=" + describe(error) + ", " + data.length + " bytes]";
        }
    }

    /**
     * A unit as the kernel sees it.
     *
     * @param queued bios waiting for a START
     * @param taken bios a daemon took and has not finished (the out-queue)
     * @param queueCount queued + taken, the count the queue limit checks
     * @param refs ioctls holding the unit right now: mostly workers asleep in START
     */
    public record Unit(int unit, String name, int flags, long mediaSize, int sectorSize, int timeout, int queueSize,
            int queueCount, int queued, int taken, long nextSeq, int readers, int writers, int exclusive, int refs,
            String info) {
        public boolean readOnly() {
            return (flags & FLAG_READONLY) != 0;
        }

        public boolean writeOnly() {
            return (flags & FLAG_WRITEONLY) != 0;
        }

        public boolean destroying() {
            return (flags & FLAG_DESTROYING) != 0;
        }

        public boolean providerOpen() {
            return readers != 0 || writers != 0 || exclusive != 0;
        }
    }

    /**
     * A load: {@code depth} bios of {@code bioLength} bytes kept outstanding for {@code duration};
     * then the daemon gets {@code grace} to finish what it holds.
     */
    public record LoadSpec(int unit, int cmd, int depth, boolean random, long bioLength, Duration duration, long seed,
            Duration grace) {
        public static LoadSpec of(int unit, int cmd, int depth, long bioLength, Duration duration) {
            return new LoadSpec(unit, cmd, depth, true, bioLength, duration, 0, Duration.ofSeconds(10));
        }

        public LoadSpec sequential() {
            return new LoadSpec(unit, cmd, depth, false, bioLength, duration, seed, grace);
        }

        public LoadSpec withGrace(Duration g) {
            return new LoadSpec(unit, cmd, depth, random, bioLength, duration, seed, g);
        }

        public LoadSpec withSeed(long s) {
            return new LoadSpec(unit, cmd, depth, random, bioLength, duration, s, grace);
        }
    }

    /** What a load achieved; latencies are from queueing to completion, of successful bios. */
    public record LoadResult(long completed, long errors, long bytes, Duration elapsed, Duration p50, Duration p99,
            Duration max, long abandoned) {
        public double iops() {
            return completed / (elapsed.toNanos() / 1e9);
        }

        public double megabytesPerSecond() {
            return bytes / (elapsed.toNanos() / 1e9) / 1e6;
        }
    }

    static String describe(int errno) {
        Errno e = Errno.valueOf(errno);
        return e == null || e == Errno.__UNKNOWN_CONSTANT__ ? "errno " + errno : e.name();
    }

    /** The kernel refused a control request; carries the host's errno. */
    public static final class GgateEmulatorException extends IOException {
        private final int errno;

        GgateEmulatorException(String op, int errno) {
            super(op + " failed: " + describe(errno));
            this.errno = errno;
        }

        public int errno() {
            return errno;
        }

        public boolean is(Errno e) {
            return errno == e.intValue();
        }
    }
}
