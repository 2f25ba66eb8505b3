package org.nbdroot.proto.testing;

import static java.nio.charset.StandardCharsets.UTF_8;
import static org.nbdroot.proto.testing.ScriptedNbdProtocol.*;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.Closeable;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.net.URI;
import java.net.URISyntaxException;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Deque;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Objects;
import java.util.Random;
import java.util.Set;
import java.util.concurrent.CopyOnWriteArraySet;
import java.util.function.BooleanSupplier;
import java.util.function.Predicate;

/**
 * An in-process NBD server for tests: fixed newstyle handshake, option haggling and the
 * transmission phase over plain blocking sockets, backed by a {@code byte[]} disk.
 *
 * <p>It is written from {@code doc/proto.md} alone and shares nothing with the client engine,
 * so that it can serve as an independent oracle. By default it behaves correctly; knobs make it
 * split, shuffle and reorder replies (all legal, to exercise the client's reassembly and handle
 * matching), and {@link Fault}s make it misbehave once, on a chosen request or handshake.
 *
 * <p>Everything the client does is recorded: options, requests, {@code NBD_CMD_DISC}, and every
 * breach of the spec on the client's side in {@link #violations()} (such requests are answered
 * with an error, never executed). One platform daemon thread serves each connection.
 *
 * <p>Deterministic choices, so tests can rely on them:
 * <ul>
 *   <li>Block status ({@code base:allocation}) reports one extent per granule
 *       ({@link Builder#blockStatusGranularity}, default: the whole request), merged when equal:
 *       {@code NBD_STATE_HOLE | NBD_STATE_ZERO} if every byte is zero, otherwise 0 (data).</li>
 *   <li>Structured reads send pieces of {@link Builder#readChunkSize} bytes (default: one piece);
 *       an all-zero piece goes as {@code NBD_REPLY_TYPE_OFFSET_HOLE} unless {@link Builder#sendHoles}
 *       is off. Under {@code NBD_CMD_FLAG_DF} the read is one piece. The last chunk
 *       sent carries {@code NBD_REPLY_FLAG_DONE} (or a trailing {@code NBD_REPLY_TYPE_NONE} with
 *       {@link Builder#finalNoneChunk}). Shuffling uses a seeded {@link Random}.</li>
 *   <li>Successful non-read replies are simple replies, even with structured replies negotiated
 *       (the spec allows both), unless {@link Builder#structuredSuccessReplies}. Errors go as an
 *       {@code NBD_REPLY_TYPE_ERROR} chunk with a message when structured replies are on.</li>
 *   <li>Commands execute in arrival order; only their replies are held back by the reorder window.
 *       {@code NBD_CMD_TRIM} zeroes its range.</li>
 *   <li>All exports share the one disk; the empty name selects the first export.</li>
 * </ul>
 */
public final class ScriptedNbdServer implements AutoCloseable {

    /**
     * Ways to misbehave. Arm one with {@link #armFault(Fault, int)}; it fires once.
     *
     * <p>Transmission faults fire on the Nth transmission request received after arming (counted
     * over all connections; {@code NBD_CMD_DISC} and requests the server rejects as invalid are not
     * counted as candidates), or on the first later request they can apply to: read-shaped faults
     * wait for a read, structured ones for a connection that negotiated structured replies.
     * Handshake faults fire during the handshake of the Nth connection accepted after arming; a
     * connection claims its fault when accepted, so arm before connecting.
     */
    public enum Fault {
        /** A reply whose magic is neither the simple nor the structured reply magic. */
        BAD_REPLY_MAGIC(false),
        /** Before the real reply, a reply (simple, or an {@code NBD_REPLY_TYPE_NONE} chunk) for a handle never sent. */
        UNKNOWN_HANDLE(false),
        /** The whole reply, sent twice. */
        DUPLICATE_REPLY(false),
        /** Reads, structured: one {@code OFFSET_DATA} chunk one byte longer than the request. */
        STRUCTURED_CHUNK_LONGER_THAN_REQUEST(false),
        /**
         * Reads, structured: {@code OFFSET_DATA} starting one byte before the request (right after
         * its end when the request starts at 0).
         */
        CHUNK_OUTSIDE_REQUEST(false),
        /** Reads, structured: two {@code OFFSET_DATA} chunks covering the request and overlapping by one byte. */
        OVERLAPPING_CHUNKS(false),
        /** Reads, structured: data for the first half only, then {@code NBD_REPLY_TYPE_NONE} with DONE. */
        MISSING_DATA(false),
        /** Only when structured replies were not negotiated: a structured reply anyway. */
        STRUCTURED_REPLY_NOT_NEGOTIATED(false),
        /** Structured: a chunk of an unknown non-error type (0x1234, no DONE), then the real reply. */
        BAD_CHUNK_TYPE(false),
        /** Structured: a proper {@code NBD_REPLY_TYPE_ERROR} chunk, {@code NBD_EIO} with a message; not executed. */
        ERROR_CHUNK(false),
        /** Structured: a proper {@code NBD_REPLY_TYPE_ERROR_OFFSET} chunk at the request's offset, EIO; not executed. */
        ERROR_OFFSET_CHUNK(false),
        /** A simple reply with {@code NBD_EIO} (never for a structured read, where that is illegal); not executed. */
        SIMPLE_ERROR(false),
        /** The first 8 bytes of the reply header, then the socket closes. */
        CLOSE_MID_REPLY(false),
        /** No reply to this request nor any later one (queued replies are dropped); the socket stays open. */
        STALL(false),
        /**
         * {@code NBD_ESHUTDOWN} (a server going down; an error chunk for a structured read, else
         * a simple reply), not executed, then the socket closes.
         */
        SHUTTING_DOWN(false),

        /** The first {@code NBD_REP_SERVER} name, or an {@code NBD_INFO_NAME} (sent even unasked), of 5000 bytes. */
        OVERLONG_STRING(true),
        /**
         * The export size advertised is one byte more than a multiple of the minimum block size
         * (512 when the configured minimum is 1), and {@code NBD_INFO_BLOCK_SIZE} is sent even unasked.
         */
        SIZE_NOT_MULTIPLE_OF_MIN_BLOCK(true),
        /** The first option reply carries a wrong magic. */
        BAD_OPTION_REPLY_MAGIC(true),
        /** The first option reply names an option other than the one sent. */
        OPTION_REPLY_FOR_OTHER_OPTION(true),
        /** The first option reply header claims a length of 2^31; nothing follows, the socket stays open. */
        HUGE_OPTION_REPLY_LENGTH(true),
        /** An oldstyle greeting ({@code NBDMAGIC}, {@code 0x00420281861253}, size, flags, 124 zeroes). */
        OLDSTYLE_GREETING(true),
        /** The newstyle greeting, then silence with the socket open. */
        STALL_HANDSHAKE(true),
        /** The greeting 700 ms late, then a normal handshake. */
        SLOW_HANDSHAKE(true),
        /** A normal handshake, then the socket closes before any request. */
        CLOSE_AFTER_HANDSHAKE(true);

        private final boolean handshake;

        Fault(boolean handshake) {
            this.handshake = handshake;
        }

        /** Whether it fires during the handshake rather than on a transmission request. */
        public boolean duringHandshake() {
            return handshake;
        }
    }

    /** An export name and its optional description, sent in {@code NBD_REP_SERVER} and {@code NBD_INFO_DESCRIPTION}. */
    public record Export(String name, String description) {
        public Export {
            Objects.requireNonNull(name, "name");
        }
    }

    /**
     * The metadata context ID handed out for {@code base:allocation}. Deliberately neither 0 nor 1,
     * so a client that assumes an ID instead of reading it fails.
     */
    public static final int BASE_ALLOCATION_CONTEXT_ID = 42;

    /** Transmission flags advertised unless configured otherwise. */
    public static final int DEFAULT_TRANSMISSION_FLAGS = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH
            | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_CACHE
            | NBD_FLAG_SEND_DF | NBD_FLAG_CAN_MULTI_CONN | NBD_FLAG_SEND_FAST_ZERO;

    public static final String DEFAULT_EXPORT_NAME = "scripted";

    /** Options are small (names and queries of at most 4096 bytes); anything larger is an attack or a bug. */
    private static final int MAX_OPTION_LENGTH = 64 * 1024;
    private static final int OVERLONG_LENGTH = 5000;
    private static final int BAD_MAGIC = 0x0badf00d;
    private static final int UNKNOWN_CHUNK_TYPE = 0x1234;
    private static final String FAULT_MESSAGE = "scripted I/O error";

    // Configuration, fixed at start.
    private final List<Export> exports;
    private final int transmissionFlags;
    private final int minimumBlockSize;
    private final int preferredBlockSize;
    private final long maximumBlockSize;
    private final boolean blockSizeRequired;
    private final boolean supportsGo;
    private final boolean supportsStructuredReplies;
    private final boolean supportsMetaContexts;
    private final boolean supportsExtendedHeaders;
    private final boolean compactRepliesDespiteExtendedHeaders;
    private final boolean advertiseNoZeroes;
    private final int readChunkSize;
    private final boolean shuffleChunks;
    private final boolean sendHoles;
    private final boolean finalNoneChunk;
    private final boolean structuredSuccessReplies;
    private final int reorderWindow;
    private final int reorderLingerMillis;
    private final int blockStatusGranularity;
    private final long seed;

    private final byte[] disk; // guarded by itself
    /** With a volatile write cache: what survives {@link #crash}, updated by FLUSH and FUA; else null. */
    private final byte[] durable; // guarded by disk
    /** Counts {@link #crash}es: a connection from before the last one changes nothing any more. */
    private int generation; // guarded by disk

    private final ServerSocket serverSocket;
    private final Thread acceptor;
    private final Set<Connection> live = new CopyOnWriteArraySet<>();
    private volatile boolean closed;

    // Everything below is guarded by `lock`; waiters are woken on every change.
    private final Object lock = new Object();
    private int connectionCount;
    private long requestSequence;
    private final List<ArmedFault> armed = new ArrayList<>();
    private final List<Fault> firedFaults = new ArrayList<>();
    private volatile boolean flushesFail;
    private final List<Integer> options = new ArrayList<>();
    private final List<ScriptedRequest> requests = new ArrayList<>();
    private final List<String> violations = new ArrayList<>();
    private int disconnects;

    private record ArmedFault(Fault fault, long target) {}

    private ScriptedNbdServer(Builder b) throws IOException {
        this.exports = b.exports.isEmpty()
                ? List.of(new Export(DEFAULT_EXPORT_NAME, "scripted test export"))
                : List.copyOf(b.exports);
        this.transmissionFlags = b.transmissionFlags;
        this.minimumBlockSize = b.minimumBlockSize;
        this.preferredBlockSize = b.preferredBlockSize;
        this.maximumBlockSize = b.maximumBlockSize;
        this.blockSizeRequired = b.blockSizeRequired;
        this.supportsGo = b.supportsGo;
        this.supportsStructuredReplies = b.supportsStructuredReplies;
        this.supportsMetaContexts = b.supportsMetaContexts;
        this.supportsExtendedHeaders = b.supportsExtendedHeaders;
        this.compactRepliesDespiteExtendedHeaders = b.compactRepliesDespiteExtendedHeaders;
        this.advertiseNoZeroes = b.advertiseNoZeroes;
        this.readChunkSize = b.readChunkSize;
        this.shuffleChunks = b.shuffleChunks;
        this.sendHoles = b.sendHoles;
        this.finalNoneChunk = b.finalNoneChunk;
        this.structuredSuccessReplies = b.structuredSuccessReplies;
        this.reorderWindow = b.reorderWindow;
        this.reorderLingerMillis = (int) Math.max(1, b.reorderLinger.toMillis());
        this.blockStatusGranularity = b.blockStatusGranularity;
        this.seed = b.seed;
        this.disk = new byte[Math.toIntExact(b.size)];
        this.durable = b.volatileWriteCache ? new byte[disk.length] : null;
        for (ArmedFault f : b.faults) {
            armed.add(f);
        }

        this.serverSocket = new ServerSocket();
        serverSocket.bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
        this.acceptor = new Thread(this::acceptLoop, "scripted-nbd-accept-" + serverSocket.getLocalPort());
        acceptor.setDaemon(true);
        acceptor.start();
    }

    public static Builder builder() {
        return new Builder();
    }

    /** A server with every default: a 1 MiB zeroed disk exported as {@value #DEFAULT_EXPORT_NAME}. */
    public static ScriptedNbdServer start() throws IOException {
        return builder().start();
    }

    // ---------------------------------------------------------------------------------------
    // Public API: address, disk, faults, records.

    public int port() {
        return serverSocket.getLocalPort();
    }

    /** {@code nbd://127.0.0.1:PORT/NAME} for the first export. */
    public String uri() {
        return uri(exports.get(0).name());
    }

    /** {@code nbd://127.0.0.1:PORT/NAME}, the name percent-encoded where the URI syntax needs it. */
    public String uri(String exportName) {
        try {
            return new URI("nbd", null, "127.0.0.1", port(), "/" + exportName, null, null).toASCIIString();
        } catch (URISyntaxException e) {
            throw new IllegalArgumentException(exportName, e);
        }
    }

    public List<Export> exports() {
        return exports;
    }

    public long size() {
        return disk.length;
    }

    /** A copy of the whole disk. */
    public byte[] contents() {
        synchronized (disk) {
            return disk.clone();
        }
    }

    public byte[] read(long offset, int length) {
        synchronized (disk) {
            int from = Math.toIntExact(offset);
            return Arrays.copyOfRange(disk, from, Math.addExact(from, length));
        }
    }

    /** Writes behind the client's back, e.g. to prepare contents before it connects. */
    public void write(long offset, byte[] data) {
        synchronized (disk) {
            System.arraycopy(data, 0, disk, Math.toIntExact(offset), data.length);
        }
    }

    /**
     * While set, every {@code NBD_CMD_FLUSH} is answered {@code NBD_EIO} and not executed: a
     * server whose disk fails its fsync, for as long as it does.
     */
    public void failFlushes(boolean fail) {
        flushesFail = fail;
    }

    /**
     * A server restart that loses its volatile write cache ({@link Builder#volatileWriteCache}):
     * every connection is dropped, then the disk goes back to what FLUSH and FUA made durable.
     * The server keeps listening, as if started again. Returns the disk as the crash left it: a
     * client reconnects at once and may write again before {@link #contents} could be asked.
     */
    public byte[] crash() throws InterruptedException {
        if (durable == null) {
            throw new IllegalStateException("crash() needs a server built with volatileWriteCache()");
        }
        byte[] left;
        synchronized (disk) {
            generation++; // no write of a connection from before lands after the revert
            System.arraycopy(durable, 0, disk, 0, disk.length);
            left = disk.clone();
        }
        for (Connection c : live) {
            if (c.generation != generation) {
                closeQuietly(c.socket);
            }
        }
        return left;
    }

    /** Arms a fault for the next request, or the next connection's handshake. */
    public void armFault(Fault fault) {
        armFault(fault, 1);
    }

    /**
     * Arms a fault to fire once: on the {@code n}th transmission request from now (1 = the next
     * one), or during the handshake of the {@code n}th connection accepted from now.
     */
    public void armFault(Fault fault, int n) {
        Objects.requireNonNull(fault, "fault");
        if (n < 1) {
            throw new IllegalArgumentException("n counts from 1: " + n);
        }
        synchronized (lock) {
            long now = fault.duringHandshake() ? connectionCount : requestSequence;
            armed.add(new ArmedFault(fault, now + n));
        }
    }

    /** Faults that have fired, in order. */
    public List<Fault> firedFaults() {
        synchronized (lock) {
            return List.copyOf(firedFaults);
        }
    }

    /** Option codes received ({@code NBD_OPT_*}), over all connections, in order. */
    public List<Integer> options() {
        synchronized (lock) {
            return List.copyOf(options);
        }
    }

    /** Transmission requests received, including {@code NBD_CMD_DISC}, over all connections, in order. */
    public List<ScriptedRequest> requests() {
        synchronized (lock) {
            return List.copyOf(requests);
        }
    }

    /** Whether any connection received {@code NBD_CMD_DISC}. */
    public boolean disconnectReceived() {
        synchronized (lock) {
            return disconnects > 0;
        }
    }

    public int disconnectCount() {
        synchronized (lock) {
            return disconnects;
        }
    }

    /** Breaches of the spec by the client, one human-readable line each. Tests assert this is empty. */
    public List<String> violations() {
        synchronized (lock) {
            return List.copyOf(violations);
        }
    }

    /** Connections accepted so far. */
    public int connectionCount() {
        synchronized (lock) {
            return connectionCount;
        }
    }

    /** Connections open now: accepted, and not yet closed by either side (as the server has noticed). */
    public int openConnections() {
        return live.size();
    }

    /** Waits until an {@code NBD_CMD_DISC} has been seen; it arrives asynchronously to the client's close. */
    public boolean awaitDisconnect(Duration timeout) throws InterruptedException {
        return await(() -> disconnects > 0, timeout);
    }

    /** Waits until at least {@code count} transmission requests have been received. */
    public boolean awaitRequests(int count, Duration timeout) throws InterruptedException {
        return await(() -> requests.size() >= count, timeout);
    }

    /** Waits until every connection has ended (the client closed, or the server dropped it). */
    public boolean awaitIdle(Duration timeout) throws InterruptedException {
        return await(live::isEmpty, timeout);
    }

    /** Stops accepting, drops every connection and waits briefly for the threads. */
    @Override
    public void close() {
        closed = true;
        closeQuietly(serverSocket);
        for (Connection c : live) {
            closeQuietly(c.socket);
        }
        joinQuietly(acceptor);
        for (Connection c : live) {
            joinQuietly(c.thread);
        }
    }

    @Override
    public String toString() {
        return "ScriptedNbdServer" + uri();
    }

    // ---------------------------------------------------------------------------------------
    // Plumbing shared by connections.

    private void acceptLoop() {
        while (!closed) {
            Socket socket;
            try {
                socket = serverSocket.accept();
            } catch (IOException e) {
                return; // closed
            }
            int id;
            synchronized (lock) {
                id = ++connectionCount;
                lock.notifyAll();
            }
            Connection c = new Connection(id, socket);
            live.add(c);
            if (closed) {
                closeQuietly(socket);
            }
            c.thread.start();
        }
    }

    private boolean await(BooleanSupplier condition, Duration timeout) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        synchronized (lock) {
            while (!condition.getAsBoolean()) {
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    return false;
                }
                lock.wait(Math.max(1, left / 1_000_000));
            }
            return true;
        }
    }

    private void record(Runnable change) {
        synchronized (lock) {
            change.run();
            lock.notifyAll();
        }
    }

    private Fault claimHandshakeFault(int connection) {
        synchronized (lock) {
            for (Iterator<ArmedFault> it = armed.iterator(); it.hasNext(); ) {
                ArmedFault a = it.next();
                if (a.fault().duringHandshake() && a.target() <= connection) {
                    it.remove();
                    return a.fault();
                }
            }
            return null;
        }
    }

    private Fault claimTransmissionFault(long sequence, Predicate<Fault> applies) {
        synchronized (lock) {
            for (Iterator<ArmedFault> it = armed.iterator(); it.hasNext(); ) {
                ArmedFault a = it.next();
                if (!a.fault().duringHandshake() && a.target() <= sequence && applies.test(a.fault())) {
                    it.remove();
                    return a.fault();
                }
            }
            return null;
        }
    }

    private Export findExport(String name) {
        if (name.isEmpty()) {
            return exports.get(0); // the "default" export
        }
        for (Export e : exports) {
            if (e.name().equals(name)) {
                return e;
            }
        }
        return null;
    }

    private static void closeQuietly(Closeable c) {
        try {
            c.close();
        } catch (IOException ignored) {
            // closing anyway
        }
    }

    private static void joinQuietly(Thread t) {
        try {
            t.join(1000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private static String hex(long v) {
        return "0x" + Long.toHexString(v);
    }

    // ---------------------------------------------------------------------------------------
    // One connection: handshake, then transmission, on its own thread.

    /** A reply ready to go: whole frames, or a truncated one followed by a close. */
    private record Reply(long handle, List<byte[]> frames, boolean closeAfter) {}

    /** Why a request is refused: the errno to send and what the client did wrong. */
    private record Invalid(int errno, String why) {}

    private final class Connection {
        final int id;
        final Socket socket;
        final Thread thread;
        /** The server's {@link #crash} count when this connection was accepted. */
        final int generation;
        BufferedInputStream rawIn;
        DataInputStream in;
        DataOutputStream out;

        Fault handshakeFault;
        boolean sizeFault;
        boolean sizeFaultFired;
        Random random;

        // Negotiated during the handshake.
        boolean clientNoZeroes;
        boolean structuredReplies;
        /** NBD_OPT_EXTENDED_HEADERS granted: 32-byte requests, and every reply re-encoded by {@link #extended}. */
        boolean extendedHeaders;
        boolean metaContextSelected;
        String metaContextExport;
        boolean metaContextActive;
        boolean blockSizeAgreed;
        Export export;
        long exportSize;
        int flags;
        int minimum;
        long maximum;

        // Transmission state.
        final Deque<Reply> window = new ArrayDeque<>();
        final Set<Long> inFlight = new HashSet<>();
        final Set<Long> handlesSeen = new HashSet<>();
        /** Each outstanding request's offset, which an extended reply header repeats. */
        final java.util.Map<Long, Long> requestOffsets = new java.util.HashMap<>();
        boolean stalled;

        Connection(int id, Socket socket) {
            this.id = id;
            this.socket = socket;
            // Claimed here, on the accepting thread, in accept order: claimed in run(), the third
            // connection's thread could take the fault armed for the second.
            this.handshakeFault = claimHandshakeFault(id);
            this.thread = new Thread(this::run, "scripted-nbd-" + port() + "-conn-" + id);
            thread.setDaemon(true);
            synchronized (disk) {
                this.generation = ScriptedNbdServer.this.generation;
            }
        }

        void run() {
            try {
                socket.setTcpNoDelay(true);
                rawIn = new BufferedInputStream(socket.getInputStream(), 64 * 1024);
                in = new DataInputStream(rawIn);
                out = new DataOutputStream(new BufferedOutputStream(socket.getOutputStream(), 64 * 1024));
                random = new Random(seed + id);
                if (handshake()) {
                    if (takeHandshakeFault(Fault.CLOSE_AFTER_HANDSHAKE)) {
                        out.flush(); // the client has its export; then the connection ends
                    } else {
                        transmission();
                    }
                }
            } catch (IOException e) {
                // The client went away, the server closed, or a fault ended the session.
            } catch (RuntimeException bug) {
                // Surface bugs of the test double where every test looks.
                violation("scripted server failed: " + bug);
                bug.printStackTrace();
            } finally {
                closeQuietly(socket);
                live.remove(this);
                record(() -> {});
            }
        }

        void violation(String what) {
            record(() -> violations.add("connection " + id + ": " + what));
        }

        void fired(Fault fault) {
            record(() -> firedFaults.add(fault));
        }

        /** Reads and discards until the client closes: used where the server has nothing more to say. */
        void drain() throws IOException {
            out.flush();
            socket.setSoTimeout(0);
            drainInput();
        }

        private void drainInput() throws IOException {
            byte[] sink = new byte[4096];
            while (rawIn.read(sink) >= 0) {
                // discard
            }
        }

        // ---- Handshake ----------------------------------------------------------------------

        /** Runs option haggling; true when transmission begins. */
        boolean handshake() throws IOException {
            minimum = minimumBlockSize;
            maximum = maximumBlockSize;
            if (handshakeFault == Fault.SIZE_NOT_MULTIPLE_OF_MIN_BLOCK) {
                handshakeFault = null; // it lasts the whole handshake; fires when the size is first sent
                sizeFault = true;
                if (minimum < 2) {
                    minimum = 512; // a minimum of 1 divides every size
                }
            }

            if (takeHandshakeFault(Fault.SLOW_HANDSHAKE)) {
                try {
                    Thread.sleep(700);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return false;
                }
            }
            if (handshakeFault == Fault.OLDSTYLE_GREETING) {
                fired(handshakeFault);
                out.writeLong(NBDMAGIC);
                out.writeLong(CLISERV_MAGIC);
                out.writeLong(disk.length);
                out.writeInt(transmissionFlags & ~NBD_FLAG_SEND_DF);
                out.write(new byte[124]);
                drain();
                return false;
            }

            int handshakeFlags = NBD_FLAG_FIXED_NEWSTYLE | (advertiseNoZeroes ? NBD_FLAG_NO_ZEROES : 0);
            out.writeLong(NBDMAGIC);
            out.writeLong(IHAVEOPT);
            out.writeShort(handshakeFlags);
            out.flush();
            if (handshakeFault == Fault.STALL_HANDSHAKE) {
                fired(handshakeFault);
                drain();
                return false;
            }

            int clientFlags = in.readInt();
            int known = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;
            if ((clientFlags & ~known) != 0) {
                violation("client flags " + hex(clientFlags & 0xffffffffL)
                        + " set unknown bits; the server MUST drop the connection");
                return false;
            }
            if ((clientFlags & NBD_FLAG_C_NO_ZEROES) != 0 && !advertiseNoZeroes) {
                violation("client set NBD_FLAG_C_NO_ZEROES although the server did not advertise NBD_FLAG_NO_ZEROES");
                return false;
            }
            if ((clientFlags & NBD_FLAG_C_FIXED_NEWSTYLE) == 0) {
                violation("client did not set NBD_FLAG_C_FIXED_NEWSTYLE (honoured anyway)");
            }
            clientNoZeroes = (clientFlags & NBD_FLAG_C_NO_ZEROES) != 0;

            while (true) {
                long magic = in.readLong();
                if (magic != IHAVEOPT) {
                    violation("option header magic " + hex(magic) + " is not IHAVEOPT");
                    return false;
                }
                int option = in.readInt();
                long length = in.readInt() & 0xffffffffL;
                if (length > MAX_OPTION_LENGTH) {
                    violation(optionName(option) + " with " + length + " bytes of data; dropping the connection");
                    return false;
                }
                byte[] data = new byte[(int) length];
                in.readFully(data);
                record(() -> options.add(option));

                switch (option) {
                    case NBD_OPT_EXPORT_NAME -> {
                        if (extendedHeaders) {
                            violation("NBD_OPT_EXPORT_NAME after extended headers were negotiated; the client MUST NOT");
                        }
                        return exportName(data);
                    }
                    case NBD_OPT_ABORT -> {
                        // Soft disconnect: acknowledge, then the client closes.
                        optionReply(option, NBD_REP_ACK, new byte[0]);
                        drain();
                        return false;
                    }
                    case NBD_OPT_LIST -> list(data);
                    case NBD_OPT_INFO, NBD_OPT_GO -> {
                        if (!supportsGo) {
                            optionError(option, NBD_REP_ERR_UNSUP, "NBD_OPT_INFO and NBD_OPT_GO are switched off");
                        } else if (infoOrGo(option, data) && option == NBD_OPT_GO) {
                            return true;
                        }
                    }
                    case NBD_OPT_EXTENDED_HEADERS -> extendedHeadersOption(data);
                    case NBD_OPT_STRUCTURED_REPLY -> {
                        if (extendedHeaders) {
                            optionError(option, NBD_REP_ERR_EXT_HEADER_REQD,
                                    "extended headers are on, and take precedence over structured replies");
                        } else if (!supportsStructuredReplies) {
                            optionError(option, NBD_REP_ERR_UNSUP, "structured replies are switched off");
                        } else if (data.length != 0) {
                            violation("NBD_OPT_STRUCTURED_REPLY carried " + data.length + " bytes of data");
                            optionError(option, NBD_REP_ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data");
                        } else {
                            structuredReplies = true;
                            optionReply(option, NBD_REP_ACK, new byte[0]);
                        }
                    }
                    case NBD_OPT_LIST_META_CONTEXT, NBD_OPT_SET_META_CONTEXT -> metaContext(option, data);
                    default -> optionError(option, NBD_REP_ERR_UNSUP, optionName(option) + " is not supported");
                }
            }
        }

        /** {@code NBD_OPT_EXTENDED_HEADERS}: granted, it brings structured replies with it. */
        void extendedHeadersOption(byte[] data) throws IOException {
            if (!supportsExtendedHeaders) {
                optionError(NBD_OPT_EXTENDED_HEADERS, NBD_REP_ERR_UNSUP, "extended headers are switched off");
            } else if (data.length != 0) {
                violation("NBD_OPT_EXTENDED_HEADERS carried " + data.length + " bytes of data");
                optionError(NBD_OPT_EXTENDED_HEADERS, NBD_REP_ERR_INVALID, "NBD_OPT_EXTENDED_HEADERS takes no data");
            } else {
                extendedHeaders = true;
                structuredReplies = true;
                optionReply(NBD_OPT_EXTENDED_HEADERS, NBD_REP_ACK, new byte[0]);
            }
        }

        /** {@code NBD_OPT_EXPORT_NAME}: no way to report errors, so refusal is a hard disconnect. */
        boolean exportName(byte[] data) throws IOException {
            Export e = findExport(new String(data, UTF_8));
            if (e == null || blockSizeRequired) {
                return false;
            }
            enterTransmission(e, new String(data, UTF_8), false);
            out.writeLong(exportSize);
            out.writeShort(flags);
            if (!clientNoZeroes) {
                out.write(new byte[124]);
            }
            out.flush();
            return true;
        }

        void list(byte[] data) throws IOException {
            if (data.length != 0) {
                violation("NBD_OPT_LIST carried " + data.length + " bytes of data");
                optionError(NBD_OPT_LIST, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
                return;
            }
            for (Export e : exports) {
                byte[] name = e.name().getBytes(UTF_8);
                if (takeHandshakeFault(Fault.OVERLONG_STRING)) {
                    name = overlongName();
                }
                byte[] description = e.description() == null ? new byte[0] : e.description().getBytes(UTF_8);
                ByteBuffer b = ByteBuffer.allocate(4 + name.length + description.length);
                b.putInt(name.length).put(name).put(description);
                optionReply(NBD_OPT_LIST, NBD_REP_SERVER, b.array());
            }
            optionReply(NBD_OPT_LIST, NBD_REP_ACK, new byte[0]);
        }

        /** {@code NBD_OPT_INFO} and {@code NBD_OPT_GO}; true when the export was accepted. */
        boolean infoOrGo(int option, byte[] data) throws IOException {
            ByteBuffer b = ByteBuffer.wrap(data);
            if (data.length < 6) {
                violation(optionName(option) + " data of " + data.length + " bytes is shorter than 6");
                optionError(option, NBD_REP_ERR_INVALID, "option data too short");
                return false;
            }
            long nameLength = b.getInt() & 0xffffffffL;
            if (nameLength > data.length - 6) {
                violation(optionName(option) + " name length " + nameLength + " exceeds option data length - 6");
                optionError(option, NBD_REP_ERR_INVALID, "name length out of range");
                return false;
            }
            byte[] nameBytes = new byte[(int) nameLength];
            b.get(nameBytes);
            String name = new String(nameBytes, UTF_8);
            int count = b.getShort() & 0xffff;
            if (b.remaining() != 2 * count) {
                violation(optionName(option) + " announces " + count + " information requests but carries "
                        + b.remaining() + " bytes for them");
                optionError(option, NBD_REP_ERR_INVALID, "information request list does not match its length");
                return false;
            }
            Set<Integer> wanted = new LinkedHashSet<>();
            for (int i = 0; i < count; i++) {
                int info = b.getShort() & 0xffff;
                if (!wanted.add(info)) {
                    violation(optionName(option) + " requested information type " + info + " more than once");
                }
            }

            Export e = findExport(name);
            if (e == null) {
                optionError(option, NBD_REP_ERR_UNKNOWN, "no export named '" + name + "'");
                return false;
            }
            boolean wantsBlockSize = wanted.contains(NBD_INFO_BLOCK_SIZE);

            ByteBuffer exportInfo = ByteBuffer.allocate(12);
            exportInfo.putShort((short) NBD_INFO_EXPORT).putLong(advertisedSize()).putShort((short) effectiveFlags());
            optionReply(option, NBD_REP_INFO, exportInfo.array());

            if (takeHandshakeFault(Fault.OVERLONG_STRING)) {
                optionReply(option, NBD_REP_INFO, info(NBD_INFO_NAME, overlongName()));
            } else if (wanted.contains(NBD_INFO_NAME)) {
                optionReply(option, NBD_REP_INFO, info(NBD_INFO_NAME, e.name().getBytes(UTF_8)));
            }
            if (wanted.contains(NBD_INFO_DESCRIPTION) && e.description() != null) {
                optionReply(option, NBD_REP_INFO, info(NBD_INFO_DESCRIPTION, e.description().getBytes(UTF_8)));
            }
            boolean refuse = option == NBD_OPT_GO && blockSizeRequired && !wantsBlockSize;
            if (wantsBlockSize || sizeFault || refuse) {
                ByteBuffer sizes = ByteBuffer.allocate(14);
                sizes.putShort((short) NBD_INFO_BLOCK_SIZE)
                        .putInt(minimum)
                        .putInt(preferredBlockSize)
                        .putInt((int) maximum);
                optionReply(option, NBD_REP_INFO, sizes.array());
            }
            if (refuse) {
                optionError(option, NBD_REP_ERR_BLOCK_SIZE_REQD, "request NBD_INFO_BLOCK_SIZE to use this export");
                return false;
            }
            optionReply(option, NBD_REP_ACK, new byte[0]);
            if (option == NBD_OPT_GO) {
                enterTransmission(e, name, wantsBlockSize);
            }
            return true;
        }

        void metaContext(int option, byte[] data) throws IOException {
            boolean set = option == NBD_OPT_SET_META_CONTEXT;
            if (set) {
                // Issuing it replaces the selection, even when it fails.
                metaContextSelected = false;
                metaContextExport = null;
            }
            if (!supportsMetaContexts) {
                optionError(option, NBD_REP_ERR_UNSUP, "metadata contexts are switched off");
                return;
            }
            if (!structuredReplies) {
                if (set) {
                    violation("NBD_OPT_SET_META_CONTEXT before structured replies were negotiated");
                }
                optionError(option, NBD_REP_ERR_INVALID, "negotiate NBD_OPT_STRUCTURED_REPLY first");
                return;
            }
            List<String> queries = new ArrayList<>();
            String name;
            try {
                ByteBuffer b = ByteBuffer.wrap(data);
                name = string(b, b.getInt());
                int count = b.getInt();
                for (int i = 0; i < count; i++) {
                    queries.add(string(b, b.getInt()));
                }
                if (b.hasRemaining()) {
                    throw new IllegalArgumentException(b.remaining() + " trailing bytes");
                }
            } catch (RuntimeException malformed) {
                violation(optionName(option) + " is malformed: " + malformed);
                optionError(option, NBD_REP_ERR_INVALID, "malformed meta context request");
                return;
            }
            if (findExport(name) == null) {
                optionError(option, NBD_REP_ERR_UNKNOWN, "no export named '" + name + "'");
                return;
            }
            boolean match = false;
            if (set) {
                match = queries.contains(BASE_ALLOCATION); // "base:" selects nothing during SET
            } else {
                match = queries.isEmpty() || queries.contains("base:") || queries.contains(BASE_ALLOCATION);
            }
            if (match) {
                byte[] contextName = BASE_ALLOCATION.getBytes(UTF_8);
                ByteBuffer b = ByteBuffer.allocate(4 + contextName.length);
                // LIST replies carry a reserved ID that SHOULD be zero.
                b.putInt(set ? BASE_ALLOCATION_CONTEXT_ID : 0).put(contextName);
                optionReply(option, NBD_REP_META_CONTEXT, b.array());
            }
            optionReply(option, NBD_REP_ACK, new byte[0]);
            if (set) {
                metaContextSelected = match;
                metaContextExport = name;
            }
        }

        void enterTransmission(Export e, String requestedName, boolean blockSizesAgreed) {
            export = e;
            exportSize = advertisedSize();
            flags = effectiveFlags();
            blockSizeAgreed = blockSizesAgreed;
            // Block status needs a context selected for the very name used to enter transmission.
            metaContextActive = metaContextSelected && requestedName.equals(metaContextExport);
        }

        /** SEND_DF MUST be clear unless structured replies were negotiated. */
        int effectiveFlags() {
            return structuredReplies ? transmissionFlags : transmissionFlags & ~NBD_FLAG_SEND_DF;
        }

        long advertisedSize() {
            if (!sizeFault) {
                return disk.length;
            }
            if (!sizeFaultFired) {
                sizeFaultFired = true;
                fired(Fault.SIZE_NOT_MULTIPLE_OF_MIN_BLOCK);
            }
            // The largest size within the disk that is one byte more than a multiple of the minimum.
            return (disk.length - 1) / minimum * minimum + 1;
        }

        /** Fires the pending handshake fault if it is this one. */
        boolean takeHandshakeFault(Fault fault) {
            if (handshakeFault != fault) {
                return false;
            }
            fired(fault);
            handshakeFault = null;
            return true;
        }

        byte[] overlongName() {
            byte[] name = new byte[OVERLONG_LENGTH];
            Arrays.fill(name, (byte) 'x');
            return name;
        }

        byte[] info(int type, byte[] payload) {
            return ByteBuffer.allocate(2 + payload.length).putShort((short) type).put(payload).array();
        }

        String string(ByteBuffer b, int length) {
            if (length < 0 || length > b.remaining()) {
                throw new IllegalArgumentException("string length " + Integer.toUnsignedString(length)
                        + " exceeds the " + b.remaining() + " bytes left");
            }
            byte[] bytes = new byte[length];
            b.get(bytes);
            return new String(bytes, UTF_8);
        }

        void optionError(int option, int type, String message) throws IOException {
            optionReply(option, type, message.getBytes(UTF_8));
        }

        void optionReply(int option, int type, byte[] data) throws IOException {
            long magic = NBD_REP_MAGIC;
            int replyOption = option;
            if (handshakeFault == Fault.BAD_OPTION_REPLY_MAGIC) {
                takeHandshakeFault(Fault.BAD_OPTION_REPLY_MAGIC);
                magic = NBD_REP_MAGIC ^ 0xff00ff;
            } else if (handshakeFault == Fault.OPTION_REPLY_FOR_OTHER_OPTION) {
                takeHandshakeFault(Fault.OPTION_REPLY_FOR_OTHER_OPTION);
                replyOption = option == NBD_OPT_LIST ? NBD_OPT_STRUCTURED_REPLY : NBD_OPT_LIST;
            } else if (handshakeFault == Fault.HUGE_OPTION_REPLY_LENGTH) {
                takeHandshakeFault(Fault.HUGE_OPTION_REPLY_LENGTH);
                out.writeLong(magic);
                out.writeInt(option);
                out.writeInt(type);
                out.writeInt(1 << 31);
                drain(); // a client must not wait for 2 GiB to arrive
                throw new EOFException("fault ended the session");
            }
            out.writeLong(magic);
            out.writeInt(replyOption);
            out.writeInt(type);
            out.writeInt(data.length);
            out.write(data);
            out.flush();
        }

        // ---- Transmission -------------------------------------------------------------------

        void transmission() throws IOException {
            int windowSize = Math.max(1, reorderWindow);
            while (true) {
                if (!window.isEmpty() && !inputArrivesWithin(reorderLingerMillis)) {
                    flushWindow(); // the client is waiting for us, not sending more
                }
                int magic = in.readInt();
                int expectedMagic = extendedHeaders ? NBD_EXTENDED_REQUEST_MAGIC : NBD_REQUEST_MAGIC;
                if (magic != expectedMagic) {
                    violation("request magic " + hex(magic & 0xffffffffL) + " is not "
                            + (extendedHeaders ? "NBD_EXTENDED_REQUEST_MAGIC" : "NBD_REQUEST_MAGIC"));
                    flushWindow();
                    return;
                }
                int commandFlags = in.readUnsignedShort();
                int type = in.readUnsignedShort();
                long handle = in.readLong();
                long offset = in.readLong();
                long length = extendedHeaders ? in.readLong() : in.readInt() & 0xffffffffL;
                requestOffsets.put(handle, offset);
                ScriptedRequest request = new ScriptedRequest(id, type, commandFlags, handle, offset, length);
                record(() -> requests.add(request));

                if (type == NBD_CMD_DISC) {
                    record(() -> disconnects++);
                    if (offset != 0 || length != 0) {
                        violation("NBD_CMD_DISC with offset " + Long.toUnsignedString(offset) + " and length " + length
                                + "; both MUST be zero");
                    }
                    flushWindow(); // the server MUST handle all outstanding requests first
                    if (rawIn.available() > 0) {
                        violation("client sent data after NBD_CMD_DISC");
                    }
                    return;
                }

                byte[] payload = null;
                boolean payloadLen = extendedHeaders && (commandFlags & NBD_CMD_FLAG_PAYLOAD_LEN) != 0;
                if (extendedHeaders && type == NBD_CMD_WRITE && !payloadLen) {
                    violation("NBD_CMD_WRITE without NBD_CMD_FLAG_PAYLOAD_LEN under extended headers; dropping the "
                            + "connection");
                    return;
                }
                if (payloadLen && type != NBD_CMD_WRITE) {
                    // The server SHOULD consume the payload, then fail the command (validate() refuses the flag).
                    if (length > MAX_OPTION_LENGTH) {
                        violation(commandName(type) + " with a payload of " + Long.toUnsignedString(length)
                                + " bytes; dropping the connection");
                        return;
                    }
                    in.readFully(new byte[(int) length]);
                }
                if (type == NBD_CMD_WRITE) {
                    if (length > Math.max(disk.length, 1 << 25)) {
                        violation("NBD_CMD_WRITE of " + length
                                + " bytes, more than the whole export; dropping the connection");
                        return;
                    }
                    payload = new byte[(int) length];
                    in.readFully(payload);
                }
                Fault fault = null;
                synchronized (lock) {
                    long sequence = ++requestSequence;
                    // Claimed with its number: claimed later, another connection's request, numbered
                    // after this one, could take the fault armed for this one.
                    if (!stalled && validate(request) == null) {
                        fault = claimTransmissionFault(sequence, f -> applies(f, request));
                    }
                }
                if (stalled) {
                    continue;
                }
                if (!inFlight.add(handle)) {
                    violation(commandName(type) + " reuses handle " + hex(handle) + " which is still in flight");
                }
                handlesSeen.add(handle);
                Reply reply = execute(request, payload, fault);
                if (reply != null) {
                    window.addLast(reply);
                }
                if (window.size() >= windowSize || (reply != null && reply.closeAfter())) {
                    flushWindow();
                }
            }
        }

        /** Peeks for the next byte without consuming it, waiting at most {@code millis}. */
        boolean inputArrivesWithin(int millis) throws IOException {
            if (rawIn.available() > 0) {
                return true;
            }
            socket.setSoTimeout(millis);
            try {
                rawIn.mark(1);
                int b = rawIn.read();
                if (b >= 0) {
                    rawIn.reset();
                }
                return true; // data, or EOF which the next read reports
            } catch (SocketTimeoutException idle) {
                return false;
            } finally {
                socket.setSoTimeout(0);
            }
        }

        /** Sends the held replies, newest first, so a client that matches replies by order fails. */
        void flushWindow() throws IOException {
            while (!window.isEmpty()) {
                Reply reply = window.pollLast();
                inFlight.remove(reply.handle());
                if (stalled) {
                    continue;
                }
                for (byte[] frame : reply.frames()) {
                    out.write(extendedHeaders && !compactRepliesDespiteExtendedHeaders ? extended(frame) : frame);
                }
                requestOffsets.remove(reply.handle());
                if (reply.closeAfter()) {
                    // An end of stream, never a reset: closing with requests still unread would send
                    // an RST, and the client would see "connection reset" instead of the close.
                    out.flush();
                    socket.shutdownOutput();
                    socket.setSoTimeout(10_000);
                    try {
                        drainInput();
                    } catch (java.net.SocketTimeoutException e) {
                        // the client kept the connection open; close it anyway
                    }
                    socket.close();
                    throw new EOFException("fault closed the connection");
                }
            }
            out.flush();
        }

        /** Validates, applies the fault claimed for it (if any), executes; null when no reply is to be sent. */
        Reply execute(ScriptedRequest r, byte[] payload, Fault fault) {
            Invalid invalid = validate(r);
            if (invalid != null) {
                violation(commandName(r.type()) + " (handle " + hex(r.handle()) + ", offset "
                        + Long.toUnsignedString(r.offset()) + ", length " + r.length() + "): " + invalid.why());
                return errorReply(r, invalid.errno(), invalid.why());
            }
            if (r.type() == NBD_CMD_FLUSH && flushesFail && fault == null) {
                return new Reply(r.handle(), List.of(simpleReply(NBD_EIO, r.handle(), null)), false);
            }
            if (fault != null) {
                fired(fault);
                switch (fault) {
                    case ERROR_CHUNK -> {
                        byte[] chunk = errorChunk(r.handle(), NBD_EIO, FAULT_MESSAGE, NBD_REPLY_FLAG_DONE);
                        return new Reply(r.handle(), List.of(chunk), false);
                    }
                    case ERROR_OFFSET_CHUNK -> {
                        byte[] chunk = errorOffsetChunk(r.handle(), NBD_EIO, FAULT_MESSAGE, r.offset());
                        return new Reply(r.handle(), List.of(chunk), false);
                    }
                    case SIMPLE_ERROR -> {
                        return new Reply(r.handle(), List.of(simpleReply(NBD_EIO, r.handle(), null)), false);
                    }
                    case SHUTTING_DOWN -> {
                        byte[] frame = structuredReplies && r.type() == NBD_CMD_READ
                                ? errorChunk(r.handle(), NBD_ESHUTDOWN, "server is shutting down", NBD_REPLY_FLAG_DONE)
                                : simpleReply(NBD_ESHUTDOWN, r.handle(), null);
                        return new Reply(r.handle(), List.of(frame), true);
                    }
                    default -> {
                        // Execute normally, then corrupt the reply below.
                    }
                }
            }
            Reply reply = perform(r, payload);
            return fault == null ? reply : corrupt(fault, r, reply);
        }

        /** Whether a transmission fault can apply to this request; otherwise it waits for a later one. */
        boolean applies(Fault fault, ScriptedRequest r) {
            boolean read = r.type() == NBD_CMD_READ;
            return switch (fault) {
                case STRUCTURED_CHUNK_LONGER_THAN_REQUEST, CHUNK_OUTSIDE_REQUEST, OVERLAPPING_CHUNKS, MISSING_DATA ->
                        read && structuredReplies && r.length() > 0;
                case STRUCTURED_REPLY_NOT_NEGOTIATED -> !structuredReplies;
                case BAD_CHUNK_TYPE, ERROR_CHUNK -> structuredReplies;
                case ERROR_OFFSET_CHUNK -> structuredReplies && r.length() > 0
                        && r.type() != NBD_CMD_FLUSH;
                case SIMPLE_ERROR -> !(structuredReplies && read);
                default -> true;
            };
        }

        Invalid validate(ScriptedRequest r) {
            int type = r.type();
            String name = commandName(type);
            if (type > NBD_CMD_BLOCK_STATUS) {
                return new Invalid(NBD_EINVAL, "unknown command type " + type);
            }
            String unadvertised = switch (type) {
                case NBD_CMD_FLUSH -> (flags & NBD_FLAG_SEND_FLUSH) == 0 ? "NBD_FLAG_SEND_FLUSH" : null;
                case NBD_CMD_TRIM -> (flags & NBD_FLAG_SEND_TRIM) == 0 ? "NBD_FLAG_SEND_TRIM" : null;
                case NBD_CMD_WRITE_ZEROES ->
                        (flags & NBD_FLAG_SEND_WRITE_ZEROES) == 0 ? "NBD_FLAG_SEND_WRITE_ZEROES" : null;
                case NBD_CMD_CACHE -> (flags & NBD_FLAG_SEND_CACHE) == 0 ? "NBD_FLAG_SEND_CACHE" : null;
                default -> null;
            };
            if (unadvertised != null) {
                return new Invalid(NBD_EINVAL, name + " sent but " + unadvertised + " was not advertised");
            }
            if (type == NBD_CMD_BLOCK_STATUS && !metaContextActive) {
                return new Invalid(NBD_EINVAL, "NBD_CMD_BLOCK_STATUS without a metadata context selected"
                        + " (by NBD_OPT_SET_META_CONTEXT for the export name used to enter transmission)");
            }

            int allowed = (flags & NBD_FLAG_SEND_FUA) != 0 ? NBD_CMD_FLAG_FUA : 0;
            switch (type) {
                case NBD_CMD_READ -> allowed |= (flags & NBD_FLAG_SEND_DF) != 0 ? NBD_CMD_FLAG_DF : 0;
                case NBD_CMD_WRITE_ZEROES -> allowed |= NBD_CMD_FLAG_NO_HOLE
                        | ((flags & NBD_FLAG_SEND_FAST_ZERO) != 0 ? NBD_CMD_FLAG_FAST_ZERO : 0);
                case NBD_CMD_BLOCK_STATUS -> allowed |= NBD_CMD_FLAG_REQ_ONE;
                case NBD_CMD_WRITE -> allowed |= extendedHeaders ? NBD_CMD_FLAG_PAYLOAD_LEN : 0;
                default -> {}
            }
            int extra = r.flags() & ~allowed;
            if (extra != 0) {
                return new Invalid(NBD_EINVAL, "command flags " + hex(extra) + " are not allowed on " + name
                        + " with transmission flags " + hex(flags));
            }

            boolean writes = type == NBD_CMD_WRITE || type == NBD_CMD_TRIM || type == NBD_CMD_WRITE_ZEROES;
            if (writes && (flags & NBD_FLAG_READ_ONLY) != 0) {
                return new Invalid(NBD_EPERM, name + " on a read-only export");
            }
            if (type == NBD_CMD_FLUSH) {
                if (r.offset() != 0 || r.length() != 0) {
                    return new Invalid(NBD_EINVAL, "NBD_CMD_FLUSH offset and length MUST be zero");
                }
                return null;
            }

            if (Long.compareUnsigned(r.offset(), exportSize) > 0 || r.length() > exportSize - r.offset()) {
                // Writes past the end SHOULD fail with ENOSPC; everything else with EINVAL.
                int errno = type == NBD_CMD_WRITE || type == NBD_CMD_WRITE_ZEROES ? NBD_ENOSPC : NBD_EINVAL;
                return new Invalid(errno, "range runs past the end of the export (size " + exportSize + ")");
            }
            String agreed = blockSizeAgreed ? "" : " (the client did not request NBD_INFO_BLOCK_SIZE with NBD_OPT_GO)";
            if (r.offset() % minimum != 0 || r.length() % minimum != 0) {
                return new Invalid(NBD_EINVAL, "offset or length not a multiple of the minimum block size "
                        + minimum + agreed);
            }
            boolean capped = type == NBD_CMD_READ || type == NBD_CMD_WRITE || type == NBD_CMD_CACHE
                    || (type == NBD_CMD_WRITE_ZEROES && !r.hasFlag(NBD_CMD_FLAG_FAST_ZERO));
            if (capped && r.length() > maximum) {
                return new Invalid(NBD_EINVAL, "length exceeds the maximum block size " + maximum + agreed);
            }
            return null;
        }

        Reply perform(ScriptedRequest r, byte[] payload) {
            synchronized (disk) { // the check and the change at once: a crash comes before or after both
                if (generation != ScriptedNbdServer.this.generation) {
                    stalled = true; // a connection of the server before its crash: it does nothing more
                    return null;
                }
                return performNow(r, payload);
            }
        }

        Reply performNow(ScriptedRequest r, byte[] payload) {
            int from = (int) r.offset();
            int length = (int) r.length();
            switch (r.type()) {
                case NBD_CMD_READ -> {
                    byte[] data;
                    synchronized (disk) {
                        data = Arrays.copyOfRange(disk, from, from + length);
                    }
                    return structuredReplies
                            ? new Reply(r.handle(), readChunks(r, data), false)
                            : new Reply(r.handle(), List.of(simpleReply(0, r.handle(), data)), false);
                }
                case NBD_CMD_WRITE -> {
                    synchronized (disk) {
                        System.arraycopy(payload, 0, disk, from, length);
                        if (durable != null && r.hasFlag(NBD_CMD_FLAG_FUA)) {
                            System.arraycopy(payload, 0, durable, from, length);
                        }
                    }
                }
                case NBD_CMD_TRIM, NBD_CMD_WRITE_ZEROES -> {
                    synchronized (disk) {
                        Arrays.fill(disk, from, from + length, (byte) 0);
                        if (durable != null && r.hasFlag(NBD_CMD_FLAG_FUA)) {
                            Arrays.fill(durable, from, from + length, (byte) 0);
                        }
                    }
                }
                case NBD_CMD_FLUSH -> {
                    if (durable != null) {
                        synchronized (disk) {
                            System.arraycopy(disk, 0, durable, 0, disk.length);
                        }
                    }
                }
                case NBD_CMD_BLOCK_STATUS -> {
                    if (length == 0) {
                        // A descriptor MUST have a nonzero length, so there is nothing valid to say.
                        return errorReply(r, NBD_EINVAL, "zero-length NBD_CMD_BLOCK_STATUS");
                    }
                    return new Reply(r.handle(), List.of(blockStatusChunk(r)), false);
                }
                default -> {
                    // NBD_CMD_FLUSH and NBD_CMD_CACHE: a RAM disk has nothing to do.
                }
            }
            return successReply(r);
        }

        Reply successReply(ScriptedRequest r) {
            byte[] frame = structuredReplies && structuredSuccessReplies
                    ? chunk(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, r.handle(), new byte[0])
                    : simpleReply(0, r.handle(), null);
            return new Reply(r.handle(), List.of(frame), false);
        }

        Reply errorReply(ScriptedRequest r, int errno, String message) {
            byte[] frame = structuredReplies
                    ? errorChunk(r.handle(), errno, message, NBD_REPLY_FLAG_DONE)
                    : simpleReply(errno, r.handle(), null);
            return new Reply(r.handle(), List.of(frame), false);
        }

        List<byte[]> readChunks(ScriptedRequest r, byte[] data) {
            List<byte[]> content = new ArrayList<>();
            boolean dontFragment = r.hasFlag(NBD_CMD_FLAG_DF);
            int piece = dontFragment || readChunkSize <= 0 ? Math.max(1, data.length) : readChunkSize;
            for (int pos = 0; pos < data.length; pos += piece) {
                int n = Math.min(piece, data.length - pos);
                long at = r.offset() + pos;
                if (sendHoles && allZero(data, pos, n)) {
                    content.add(holeChunk(0, r.handle(), at, n));
                } else {
                    content.add(dataChunk(0, r.handle(), at, data, pos, n));
                }
            }
            if (shuffleChunks) {
                Collections.shuffle(content, random);
            }
            return finish(r.handle(), content);
        }

        /** Marks the last chunk DONE, or appends NBD_REPLY_TYPE_NONE to do so. */
        List<byte[]> finish(long handle, List<byte[]> chunks) {
            if (chunks.isEmpty() || finalNoneChunk) {
                chunks.add(chunk(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, handle, new byte[0]));
            } else {
                byte[] last = chunks.get(chunks.size() - 1);
                ByteBuffer.wrap(last).putShort(4, (short) NBD_REPLY_FLAG_DONE);
            }
            return chunks;
        }

        byte[] blockStatusChunk(ScriptedRequest r) {
            List<long[]> extents = new ArrayList<>(); // {length, status}
            long end = r.offset() + r.length();
            synchronized (disk) {
                for (long pos = r.offset(); pos < end; ) {
                    long n = blockStatusGranularity <= 0
                            ? end - pos
                            : Math.min(blockStatusGranularity - pos % blockStatusGranularity, end - pos);
                    int status = allZero(disk, (int) pos, (int) n) ? NBD_STATE_HOLE | NBD_STATE_ZERO : 0;
                    long[] last = extents.isEmpty() ? null : extents.get(extents.size() - 1);
                    if (last != null && last[1] == status) {
                        last[0] += n;
                    } else {
                        extents.add(new long[] {n, status});
                    }
                    pos += n;
                }
            }
            if (r.hasFlag(NBD_CMD_FLAG_REQ_ONE)) {
                extents = extents.subList(0, 1);
            }
            ByteBuffer b = ByteBuffer.allocate(4 + 8 * extents.size());
            b.putInt(BASE_ALLOCATION_CONTEXT_ID);
            for (long[] e : extents) {
                b.putInt((int) e[0]).putInt((int) e[1]);
            }
            return chunk(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, r.handle(), b.array());
        }

        /**
         * One compact frame as an extended reply: a simple reply becomes {@code NBD_REPLY_TYPE_NONE} or
         * an error chunk (the spec allows no simple replies then), a chunk gets the 32-byte header with
         * its request's offset, and {@code NBD_REPLY_TYPE_BLOCK_STATUS} becomes {@code _EXT}. A frame
         * that is not whole (a fault's) goes as it is.
         */
        byte[] extended(byte[] frame) {
            ByteBuffer b = ByteBuffer.wrap(frame);
            if (frame.length == SIMPLE_REPLY_HEADER_LENGTH && b.getInt(0) == NBD_SIMPLE_REPLY_MAGIC) {
                int error = b.getInt(4);
                long handle = b.getLong(8);
                byte[] payload = error == 0 ? new byte[0] : ByteBuffer.allocate(6).putInt(error).putShort((short) 0).array();
                return extendedChunk(NBD_REPLY_FLAG_DONE, error == 0 ? NBD_REPLY_TYPE_NONE : NBD_REPLY_TYPE_ERROR,
                        handle, payload);
            }
            if (frame.length < SIMPLE_REPLY_HEADER_LENGTH && frame.length >= 4
                    && (b.getInt(0) == NBD_SIMPLE_REPLY_MAGIC || b.getInt(0) == NBD_STRUCTURED_REPLY_MAGIC)) {
                // The start of a header cut short (CLOSE_MID_REPLY): as much of an extended one.
                byte[] cut = frame.clone();
                ByteBuffer.wrap(cut).putInt(0, NBD_EXTENDED_REPLY_MAGIC);
                return cut;
            }
            if (frame.length < STRUCTURED_REPLY_HEADER_LENGTH || b.getInt(0) != NBD_STRUCTURED_REPLY_MAGIC
                    || frame.length != STRUCTURED_REPLY_HEADER_LENGTH + b.getInt(16)) {
                return frame;
            }
            int flags = b.getShort(4) & 0xffff;
            int type = b.getShort(6) & 0xffff;
            long handle = b.getLong(8);
            byte[] payload = Arrays.copyOfRange(frame, STRUCTURED_REPLY_HEADER_LENGTH, frame.length);
            if (type == NBD_REPLY_TYPE_BLOCK_STATUS) {
                ByteBuffer narrow = ByteBuffer.wrap(payload);
                int count = (payload.length - 4) / 8;
                ByteBuffer wide = ByteBuffer.allocate(8 + 16 * count).putInt(narrow.getInt()).putInt(count);
                for (int i = 0; i < count; i++) {
                    wide.putLong(narrow.getInt() & 0xffffffffL).putLong(narrow.getInt() & 0xffffffffL);
                }
                type = NBD_REPLY_TYPE_BLOCK_STATUS_EXT;
                payload = wide.array();
            }
            return extendedChunk(flags, type, handle, payload);
        }

        byte[] extendedChunk(int flags, int type, long handle, byte[] payload) {
            return ByteBuffer.allocate(EXTENDED_REPLY_HEADER_LENGTH + payload.length)
                    .putInt(NBD_EXTENDED_REPLY_MAGIC)
                    .putShort((short) flags)
                    .putShort((short) type)
                    .putLong(handle)
                    .putLong(requestOffsets.getOrDefault(handle, 0L))
                    .putLong(payload.length)
                    .put(payload)
                    .array();
        }

        /** Turns a correct reply into the faulty one. */
        Reply corrupt(Fault fault, ScriptedRequest r, Reply reply) {
            long handle = r.handle();
            List<byte[]> frames = new ArrayList<>();
            switch (fault) {
                case BAD_REPLY_MAGIC -> {
                    frames.addAll(reply.frames());
                    byte[] first = frames.get(0).clone();
                    ByteBuffer.wrap(first).putInt(0, BAD_MAGIC);
                    frames.set(0, first);
                }
                case UNKNOWN_HANDLE -> {
                    long bogus = 0x5ca1ab1e_0000_0000L ^ handle;
                    while (handlesSeen.contains(bogus)) {
                        bogus++;
                    }
                    frames.add(structuredReplies
                            ? chunk(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, bogus, new byte[0])
                            : simpleReply(0, bogus, null));
                    frames.addAll(reply.frames());
                }
                case DUPLICATE_REPLY -> {
                    frames.addAll(reply.frames());
                    frames.addAll(reply.frames());
                }
                case STRUCTURED_CHUNK_LONGER_THAN_REQUEST -> {
                    byte[] data = readDisk(r.offset(), r.length() + 1);
                    frames.add(dataChunk(NBD_REPLY_FLAG_DONE, handle, r.offset(), data, 0, data.length));
                }
                case CHUNK_OUTSIDE_REQUEST -> {
                    long at = r.offset() > 0 ? r.offset() - 1 : r.offset() + r.length();
                    byte[] data = readDisk(at, r.length());
                    frames.add(dataChunk(NBD_REPLY_FLAG_DONE, handle, at, data, 0, data.length));
                }
                case OVERLAPPING_CHUNKS -> {
                    int length = (int) r.length();
                    byte[] data = readDisk(r.offset(), length);
                    int firstEnd = length / 2 + 1; // [0, len/2 + 1) and [len/2, len) share one byte
                    int secondStart = length / 2;
                    frames.add(dataChunk(0, handle, r.offset(), data, 0, firstEnd));
                    frames.add(dataChunk(NBD_REPLY_FLAG_DONE, handle, r.offset() + secondStart, data, secondStart,
                            length - secondStart));
                }
                case MISSING_DATA -> {
                    int half = (int) (r.length() / 2);
                    if (half > 0) {
                        byte[] data = readDisk(r.offset(), half);
                        frames.add(dataChunk(0, handle, r.offset(), data, 0, half));
                    }
                    frames.add(chunk(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, handle, new byte[0]));
                }
                case STRUCTURED_REPLY_NOT_NEGOTIATED -> {
                    if (r.type() == NBD_CMD_READ && r.length() > 0) {
                        byte[] data = readDisk(r.offset(), r.length());
                        frames.add(dataChunk(NBD_REPLY_FLAG_DONE, handle, r.offset(), data, 0, data.length));
                    } else {
                        frames.add(chunk(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, handle, new byte[0]));
                    }
                }
                case BAD_CHUNK_TYPE -> {
                    frames.add(chunk(0, UNKNOWN_CHUNK_TYPE, handle, new byte[4]));
                    frames.addAll(reply.frames());
                }
                case CLOSE_MID_REPLY -> {
                    frames.add(Arrays.copyOf(reply.frames().get(0), 8));
                    return new Reply(handle, frames, true);
                }
                case STALL -> {
                    stalled = true;
                    return null;
                }
                default -> throw new AssertionError(fault);
            }
            return new Reply(handle, frames, false);
        }

        byte[] readDisk(long offset, long length) {
            byte[] data = new byte[(int) length];
            synchronized (disk) {
                int available = (int) Math.max(0, Math.min(length, disk.length - offset));
                if (available > 0) {
                    System.arraycopy(disk, (int) offset, data, 0, available);
                }
            }
            return data;
        }
    }

    // ---------------------------------------------------------------------------------------
    // Wire encodings.

    private static byte[] simpleReply(int error, long handle, byte[] data) {
        int dataLength = data == null ? 0 : data.length;
        ByteBuffer b = ByteBuffer.allocate(SIMPLE_REPLY_HEADER_LENGTH + dataLength);
        b.putInt(NBD_SIMPLE_REPLY_MAGIC).putInt(error).putLong(handle);
        if (data != null) {
            b.put(data);
        }
        return b.array();
    }

    private static byte[] chunk(int flags, int type, long handle, byte[] payload) {
        ByteBuffer b = ByteBuffer.allocate(STRUCTURED_REPLY_HEADER_LENGTH + payload.length);
        b.putInt(NBD_STRUCTURED_REPLY_MAGIC)
                .putShort((short) flags)
                .putShort((short) type)
                .putLong(handle)
                .putInt(payload.length)
                .put(payload);
        return b.array();
    }

    private static byte[] dataChunk(int flags, long handle, long offset, byte[] data, int from, int length) {
        ByteBuffer payload = ByteBuffer.allocate(8 + length);
        payload.putLong(offset).put(data, from, length);
        return chunk(flags, NBD_REPLY_TYPE_OFFSET_DATA, handle, payload.array());
    }

    private static byte[] holeChunk(int flags, long handle, long offset, int length) {
        ByteBuffer payload = ByteBuffer.allocate(12);
        payload.putLong(offset).putInt(length);
        return chunk(flags, NBD_REPLY_TYPE_OFFSET_HOLE, handle, payload.array());
    }

    private static byte[] errorChunk(long handle, int errno, String message, int flags) {
        byte[] text = message.getBytes(UTF_8);
        ByteBuffer payload = ByteBuffer.allocate(6 + text.length);
        payload.putInt(errno).putShort((short) text.length).put(text);
        return chunk(flags, NBD_REPLY_TYPE_ERROR, handle, payload.array());
    }

    private static byte[] errorOffsetChunk(long handle, int errno, String message, long offset) {
        byte[] text = message.getBytes(UTF_8);
        ByteBuffer payload = ByteBuffer.allocate(14 + text.length);
        payload.putInt(errno).putShort((short) text.length).put(text).putLong(offset);
        return chunk(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR_OFFSET, handle, payload.array());
    }

    private static boolean allZero(byte[] data, int from, int length) {
        for (int i = from; i < from + length; i++) {
            if (data[i] != 0) {
                return false;
            }
        }
        return true;
    }

    // ---------------------------------------------------------------------------------------

    /** Configuration; every knob has a correct default. */
    public static final class Builder {
        private long size = 1 << 20;
        private final List<Export> exports = new ArrayList<>();
        private int transmissionFlags = DEFAULT_TRANSMISSION_FLAGS;
        private int minimumBlockSize = DEFAULT_MINIMUM_BLOCK_SIZE;
        private int preferredBlockSize = DEFAULT_PREFERRED_BLOCK_SIZE;
        private long maximumBlockSize = 32 * 1024 * 1024;
        private boolean blockSizeRequired;
        private boolean supportsGo = true;
        private boolean supportsStructuredReplies = true;
        private boolean supportsMetaContexts = true;
        private boolean supportsExtendedHeaders;
        private boolean compactRepliesDespiteExtendedHeaders;
        private boolean advertiseNoZeroes = true;
        private int readChunkSize;
        private boolean shuffleChunks;
        private boolean sendHoles = true;
        private boolean finalNoneChunk;
        private boolean structuredSuccessReplies;
        private int reorderWindow = 1;
        private Duration reorderLinger = Duration.ofMillis(50);
        private int blockStatusGranularity;
        private long seed = 0x5eed;
        private boolean volatileWriteCache;
        private final List<ArmedFault> faults = new ArrayList<>();

        /** Writes are durable only once flushed (or written with FUA): {@link #crash} loses the rest. */
        public Builder volatileWriteCache() {
            volatileWriteCache = true;
            return this;
        }

        private Builder() {}

        /** Disk size in bytes (zero-filled); default 1 MiB. */
        public Builder size(long bytes) {
            if (bytes < 0 || bytes > Integer.MAX_VALUE - 8) {
                throw new IllegalArgumentException("size must fit a byte[]: " + bytes);
            }
            this.size = bytes;
            return this;
        }

        /** Adds an export name (all share the disk); the first one added is the default export. */
        public Builder export(String name) {
            return export(name, null);
        }

        public Builder export(String name, String description) {
            exports.add(new Export(name, description));
            return this;
        }

        /** Transmission flags advertised as given (SEND_DF is still cleared without structured replies). */
        public Builder transmissionFlags(int flags) {
            this.transmissionFlags = flags;
            return this;
        }

        /**
         * Block size constraints, sent in {@code NBD_INFO_BLOCK_SIZE} when asked and enforced on every
         * request. Not checked against the spec, so tests can advertise invalid ones. Default 1/4096/32 MiB.
         */
        public Builder blockSizes(int minimum, int preferred, long maximum) {
            this.minimumBlockSize = minimum;
            this.preferredBlockSize = preferred;
            this.maximumBlockSize = maximum;
            return this;
        }

        /**
         * Refuse {@code NBD_OPT_GO} without an {@code NBD_INFO_BLOCK_SIZE} request
         * ({@code NBD_REP_ERR_BLOCK_SIZE_REQD}), and drop the connection on {@code NBD_OPT_EXPORT_NAME}.
         */
        public Builder blockSizeRequired(boolean required) {
            this.blockSizeRequired = required;
            return this;
        }

        /** When off, {@code NBD_OPT_INFO}/{@code NBD_OPT_GO} get {@code NBD_REP_ERR_UNSUP}, as from an old server. */
        public Builder supportsGo(boolean supported) {
            this.supportsGo = supported;
            return this;
        }

        /** When off, {@code NBD_OPT_STRUCTURED_REPLY} gets {@code NBD_REP_ERR_UNSUP}. */
        public Builder supportsStructuredReplies(boolean supported) {
            this.supportsStructuredReplies = supported;
            return this;
        }

        /** When off, the meta context options get {@code NBD_REP_ERR_UNSUP}. */
        public Builder supportsMetaContexts(boolean supported) {
            this.supportsMetaContexts = supported;
            return this;
        }

        /**
         * When on, {@code NBD_OPT_EXTENDED_HEADERS} is granted (with structured replies implied): requests
         * must then be extended, and every reply goes as an extended chunk, block status as
         * {@code NBD_REPLY_TYPE_BLOCK_STATUS_EXT}. Default off: {@code NBD_REP_ERR_UNSUP}, as from the
         * servers of Debian 12.
         */
        public Builder supportsExtendedHeaders(boolean supported) {
            this.supportsExtendedHeaders = supported;
            return this;
        }

        /**
         * Misbehave: grant extended headers and read extended requests, but answer with the compact
         * headers (simple replies and 20-byte structured chunks) as if they had not been agreed.
         */
        public Builder compactRepliesDespiteExtendedHeaders(boolean compact) {
            this.compactRepliesDespiteExtendedHeaders = compact;
            return this;
        }

        /** Whether the greeting advertises {@code NBD_FLAG_NO_ZEROES}; default on. */
        public Builder advertiseNoZeroes(boolean advertise) {
            this.advertiseNoZeroes = advertise;
            return this;
        }

        /** Split structured reads into content chunks of this many bytes; 0 (default) sends one chunk. */
        public Builder readChunkSize(int bytes) {
            this.readChunkSize = bytes;
            return this;
        }

        /** Send a read's content chunks in a seeded random order. */
        public Builder shuffleChunks(boolean shuffle) {
            this.shuffleChunks = shuffle;
            return this;
        }

        /** Send all-zero pieces of a structured read as {@code NBD_REPLY_TYPE_OFFSET_HOLE}; default on. */
        public Builder sendHoles(boolean holes) {
            this.sendHoles = holes;
            return this;
        }

        /** End structured reads with a separate {@code NBD_REPLY_TYPE_NONE} chunk, not a DONE content chunk. */
        public Builder finalNoneChunk(boolean none) {
            this.finalNoneChunk = none;
            return this;
        }

        /** With structured replies, answer successful non-reads with {@code NBD_REPLY_TYPE_NONE}, not a simple reply. */
        public Builder structuredSuccessReplies(boolean structured) {
            this.structuredSuccessReplies = structured;
            return this;
        }

        /**
         * Hold up to {@code n} replies and send them newest first. A partly filled window is sent once
         * the client pauses for {@link #reorderLinger}, so a client waiting for replies never deadlocks.
         */
        public Builder reorderWindow(int n) {
            this.reorderWindow = n;
            return this;
        }

        public Builder reorderLinger(Duration linger) {
            this.reorderLinger = linger;
            return this;
        }

        /** Report block status in extents of this granule (merged when equal); 0 (default) reports the range as one. */
        public Builder blockStatusGranularity(int bytes) {
            this.blockStatusGranularity = bytes;
            return this;
        }

        /** Seed for chunk shuffling (each connection derives its own from it). */
        public Builder seed(long seed) {
            this.seed = seed;
            return this;
        }

        /** Arms a fault from the start: the {@code n}th request, or the {@code n}th connection's handshake. */
        public Builder fault(Fault fault, int n) {
            faults.add(new ArmedFault(Objects.requireNonNull(fault), n));
            return this;
        }

        public ScriptedNbdServer start() throws IOException {
            return new ScriptedNbdServer(this);
        }
    }
}
