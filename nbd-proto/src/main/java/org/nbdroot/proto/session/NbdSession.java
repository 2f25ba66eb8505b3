package org.nbdroot.proto.session;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.CompositeByteBuf;
import io.netty.channel.ChannelHandlerContext;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReferenceArray;
import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.Extent;
import org.nbdroot.proto.NbdException;
import org.nbdroot.proto.NbdUnsupportedException;
import org.nbdroot.proto.NbdWritesLostException;
import org.nbdroot.proto.handshake.HandshakeResult;
import org.nbdroot.proto.transport.NbdConnector;
import org.nbdroot.proto.transport.NbdUri;
import org.nbdroot.proto.wire.Command;
import org.nbdroot.proto.wire.CommandFlag;
import org.nbdroot.proto.wire.NbdConstants;
import org.nbdroot.proto.wire.ReplyDecoder;
import org.nbdroot.proto.wire.TransmissionFlag;

/**
 * An open export: the asynchronous API the daemon, the benchmark and the tests all use.
 *
 * <p>Every operation is checked against what the server advertised before anything is sent
 * (a command or flag it did not offer fails with {@link NbdUnsupportedException}; a range that
 * is out of bounds or misaligned with {@link IllegalArgumentException}), and split when it is
 * longer than one request may be. Futures complete on a connection's event loop: callers
 * that block or work long must move elsewhere first. A READ's buffer belongs to the caller,
 * who releases it; a WRITE takes ownership of the buffer it is given, bytes included (the session
 * may keep it until a later FLUSH; {@link #writeBorrowed} for memory the caller reuses).
 */
public final class NbdSession implements AutoCloseable {
    /** Requests without payload (TRIM, WRITE_ZEROES, CACHE, BLOCK_STATUS) are cut at 1 GiB: aligned to any block size. */
    static final int MAX_NON_PAYLOAD_LENGTH = 1 << 30;

    private volatile ExportInfo export;
    private volatile int maxPayload;
    private final AtomicReferenceArray<NbdConnection> connections;
    private final AtomicInteger next = new AtomicInteger();
    // What reconnecting needs; null fields when the session does not reconnect.
    private final NbdConnector connector;
    private final NbdUri uri;
    private final SessionOptions options;
    private final Reconnector reconnector;
    /** Hears each READ, WRITE, FLUSH, TRIM, WRITE_ZEROES and CACHE of readOne and simple: see {@link ObserverCalls}. */
    private final RequestObserver observer;
    /** Completes once connections retired by {@link #refreshExport} have flushed what they wrote and closed. */
    private volatile CompletableFuture<Void> retirements = CompletableFuture.completedFuture(null);
    private final LossReport losses = new LossReport();
    /** A loss still unreported at close is logged once, however many times the session is closed. */
    private final java.util.concurrent.atomic.AtomicBoolean lossLoggedAtClose = new java.util.concurrent.atomic.AtomicBoolean();
    /** Completes once connections retired by {@link #refreshExport} are closed: they answer nothing more. */
    private volatile CompletableFuture<Void> retiredClosed = CompletableFuture.completedFuture(null);
    private final java.util.concurrent.atomic.AtomicBoolean refreshing = new java.util.concurrent.atomic.AtomicBoolean();
    /** Writes acknowledged since the last FLUSH, for replay after a reconnect; null when not kept. */
    private volatile WriteJournal journal;
    private final java.util.concurrent.atomic.AtomicBoolean journalFlushing = new java.util.concurrent.atomic.AtomicBoolean();
    /** The session's own FLUSHes that failed in a row (one is out at a time); the second gives the journal up. */
    private int journalFlushFailures;
    /**
     * Writes held back, in order, while the journal is at its limit and its own FLUSH is out (a
     * server that acknowledges writes faster than it flushes): sent when that FLUSH completes.
     * Without this the journal would overflow and keep nothing until the next FLUSH.
     */
    private final java.util.ArrayDeque<NbdRequest> heldForJournal = new java.util.ArrayDeque<>(); // guarded by itself
    /** What the journalled requests sent and not yet answered will count in the journal. */
    private final java.util.concurrent.atomic.AtomicLong journalInFlight = new java.util.concurrent.atomic.AtomicLong();

    /** A session over connections that are already open, which does not reconnect. */
    private NbdSession(ExportInfo export, List<NbdConnection> connections) {
        this(null, null, SessionOptions.DEFAULT, connections.size());
        for (int i = 0; i < connections.size(); i++) {
            this.connections.set(i, connections.get(i));
        }
        exportChanged(export);
    }

    private NbdSession(NbdConnector connector, NbdUri uri, SessionOptions options, int slots) {
        this.connector = connector;
        this.uri = uri;
        this.options = options;
        this.observer = options.observer();
        this.connections = new AtomicReferenceArray<>(slots);
        this.reconnector = options.reconnect() == null ? null : new Reconnector(this, options.reconnect());
    }

    private void exportChanged(ExportInfo e) {
        this.export = e;
        this.maxPayload = e.blockSize().maximumPayload();
    }

    /**
     * Connects to the export, with as many connections as asked when the server allows
     * several (CAN_MULTI_CONN), else one. With a {@link ReconnectPolicy} in the options, a
     * lost connection is opened again and its unanswered requests are sent again on it.
     */
    public static CompletableFuture<NbdSession> connect(NbdConnector connector, NbdUri uri, SessionOptions options) {
        try {
            options = options.forUri(uri); // TLS material read now, never at a reconnect
        } catch (NbdException e) {
            return CompletableFuture.failedFuture(e);
        }
        return connectResolved(connector, uri, options);
    }

    private static CompletableFuture<NbdSession> connectResolved(NbdConnector connector, NbdUri uri,
            SessionOptions options) {
        int[] wanted = {1};
        NbdSession[] session = {null};
        return openConnection(connector, uri, options, null).thenCompose(first -> {
            ExportInfo export = first.export();
            wanted[0] = export.has(TransmissionFlag.CAN_MULTI_CONN) ? options.connections() : 1;
            session[0] = new NbdSession(connector, uri, options, wanted[0]);
            session[0].exportChanged(export);
            session[0].journal = journalFor(options.reconnect(), export);
            session[0].connections.set(0, first);
            first.setLossListener(session[0].reconnector);
            session[0].reconnectIfLostBeforeSlot(first);
            List<CompletableFuture<NbdConnection>> more = new ArrayList<>();
            for (int i = 1; i < wanted[0]; i++) {
                more.add(openConnection(connector, uri, options, session[0].reconnector));
            }
            return CompletableFuture.allOf(more.toArray(CompletableFuture[]::new)).handle((v, error) -> {
                List<NbdConnection> all = new ArrayList<>();
                all.add(first);
                more.forEach(f -> {
                    if (!f.isCompletedExceptionally()) {
                        all.add(f.join());
                    }
                });
                if (error != null) {
                    all.forEach(NbdConnection::disconnect);
                    throw new java.util.concurrent.CompletionException(unwrap(error));
                }
                for (int i = 1; i < all.size(); i++) {
                    NbdConnection c = all.get(i);
                    if (c.export().size() != export.size() || c.export().flags() != export.flags()) {
                        all.forEach(NbdConnection::disconnect);
                        throw new java.util.concurrent.CompletionException(new NbdException(
                                "the server described the export differently on a second connection"));
                    }
                    session[0].connections.set(i, c);
                    session[0].reconnectIfLostBeforeSlot(c);
                }
                return session[0];
            });
        });
    }

    /**
     * A journal of unflushed writes when the session reconnects, the export is writable and has
     * FLUSH (without it nothing ever empties the journal). With several connections (the
     * server sets can_multi_conn, so a FLUSH on one covers the writes answered on all) there is
     * one journal for all of them, and a replay holds the others back (see {@link Reconnector}).
     */
    private static WriteJournal journalFor(ReconnectPolicy policy, ExportInfo export) {
        if (policy == null || policy.replayLimit() == 0 || export.readOnly() || !export.has(TransmissionFlag.SEND_FLUSH)) {
            return null;
        }
        return new WriteJournal(policy.replayLimit());
    }

    java.time.Duration requestTimeout() {
        return options.requestTimeout();
    }

    /** The reconnector, or null without reconnects (for tests of its races). */
    Reconnector reconnector() {
        return reconnector;
    }

    /** Whether any connection in a slot can take requests now. */
    boolean anyUsable() {
        return usableConnection() != null;
    }

    /** The first connection in a slot that can take requests now; null if none. */
    NbdConnection usableConnection() {
        for (int i = 0; i < connections.length(); i++) {
            NbdConnection c = connections.get(i);
            if (c != null && c.isUsable()) {
                return c;
            }
        }
        return null;
    }

    /**
     * Whether every connection retired by {@link #refreshExport} is closed. Not whether its last
     * FLUSH was answered: if it broke first, that FLUSH is sent again through the session, and a
     * replay's gate may be what holds it.
     */
    boolean retiredConnectionsClosed() {
        return retiredClosed.isDone();
    }

    /** Whether acknowledged writes are kept until flushed, to be written again after a reconnect. */
    boolean keepsJournal() {
        return journal != null;
    }

    /** The journal's writes to send again, oldest first; empty when none are kept, null when some were not. */
    List<WriteJournal.Entry> journalReplay() {
        WriteJournal j = journal;
        return j == null ? List.of() : j.replay();
    }

    /**
     * Why writes acknowledged earlier may be missing on the server, when no caller's FLUSH has
     * reported it yet; else null. The next {@link #flush()} reports it.
     */
    public String unreportedLoss() {
        return losses.pending();
    }

    /** Writes acknowledged so far may be missing on the server: the callers' FLUSHes say so (see {@link LossReport}). */
    void recordLoss(String why) {
        losses.lost(why);
    }

    /** A FLUSH that covers every journal entry up to {@code seq} succeeded. */
    void journalFlushed(long seq) {
        WriteJournal j = journal;
        if (j != null) {
            j.flushed(seq);
        }
    }

    /** Writes acknowledged since the last FLUSH and kept for replay (0 when the session keeps none). */
    public long unflushedBytes() {
        WriteJournal j = journal;
        return j == null ? 0 : j.bytes();
    }

    /** Opens one more connection like the others: for a reconnect. */
    CompletableFuture<NbdConnection> reopen() {
        return openConnection(connector, uri, options, reconnector);
    }

    private static CompletableFuture<NbdConnection> openConnection(NbdConnector connector, NbdUri uri,
            SessionOptions options, NbdConnection.LossListener listener) {
        return connector.connect(uri.endpoint(), options.plan(uri),
                (ctx, result) -> installTransmission(ctx, result, listener, options.requestTimeout()), result -> null);
    }

    /** Puts the transmission handlers behind the handshake; runs on the event loop. */
    private static NbdConnection installTransmission(ChannelHandlerContext ctx, HandshakeResult result,
            NbdConnection.LossListener listener, java.time.Duration requestTimeout) {
        NbdConnection connection = new NbdConnection(ctx.channel(), result.export(), listener);
        connection.watchReplies(requestTimeout);
        ctx.pipeline().addLast("replies", new ReplyDecoder(connection.expectations(),
                result.export().headerStyle()));
        ctx.pipeline().addLast("connection", connection);
        return connection;
    }

    static Throwable unwrap(Throwable t) {
        while ((t instanceof java.util.concurrent.CompletionException
                || t instanceof java.util.concurrent.ExecutionException) && t.getCause() != null) {
            t = t.getCause();
        }
        return t;
    }

    NbdConnector connector() {
        return connector;
    }

    NbdUri uri() {
        return uri;
    }

    int slotOf(NbdConnection connection) {
        for (int i = 0; i < connections.length(); i++) {
            if (connections.get(i) == connection) {
                return i;
            }
        }
        return -1;
    }

    /** A reconnected connection takes the lost one's place; the export may have changed. */
    void replace(int slot, NbdConnection connection, ExportInfo newExport) {
        connections.set(slot, connection);
        exportChanged(newExport);
    }

    /**
     * What {@link #refreshExport} found.
     *
     * @param before  the export as the session knew it
     * @param now     the export as a fresh handshake describes it
     * @param adopted whether the session now works with {@code now} (its connections were replaced)
     */
    public record ExportRefresh(ExportInfo before, ExportInfo now, boolean adopted) {
        public boolean changed() {
            return before.size() != now.size() || before.flags() != now.flags();
        }
    }

    /**
     * Asks the server what the export is like now. NBD has no notice of a size change and a
     * server fixes size and flags per connection, so this opens a fresh connection (a whole
     * handshake, GO). When the export changed and {@code adopt} accepts the new description,
     * fresh connections replace every current one: requests from then on go to them, while the
     * old ones answer what was already sent, FLUSH what they wrote and close (a FLUSH
     * submitted meanwhile completes only after that). Otherwise the fresh connection is closed
     * and nothing changes. Fails, changing nothing, while a connection is being reconnected.
     */
    public CompletableFuture<ExportRefresh> refreshExport(java.util.function.Predicate<ExportInfo> adopt) {
        if (connector == null) {
            return CompletableFuture.failedFuture(new NbdException("this session cannot open new connections"));
        }
        if (!refreshing.compareAndSet(false, true)) {
            return CompletableFuture.failedFuture(new NbdException("the export is already being refreshed"));
        }
        ExportInfo before = export;
        CompletableFuture<ExportRefresh> result = openConnection(connector, uri, options, reconnector).thenCompose(first -> {
            ExportInfo now = first.export();
            ExportRefresh unchanged = new ExportRefresh(before, now, false);
            if (!unchanged.changed() || !adopt.test(now)) {
                return first.disconnect().thenApply(v -> unchanged);
            }
            List<CompletableFuture<NbdConnection>> fresh = new ArrayList<>();
            fresh.add(CompletableFuture.completedFuture(first));
            for (int i = 1; i < connections.length(); i++) {
                fresh.add(openConnection(connector, uri, options, reconnector));
            }
            return CompletableFuture.allOf(fresh.toArray(CompletableFuture[]::new)).handle((v, error) -> {
                List<NbdConnection> opened = new ArrayList<>();
                fresh.stream().filter(f -> !f.isCompletedExceptionally()).forEach(f -> opened.add(f.join()));
                String problem = error != null ? unwrap(error).getMessage() : null;
                for (NbdConnection c : opened) {
                    if (problem == null && (c.export().size() != now.size() || c.export().flags() != now.flags())) {
                        problem = "the server described the export differently on another connection";
                    }
                }
                for (int i = 0; problem == null && i < connections.length(); i++) {
                    if (!connections.get(i).isUsable()) {
                        problem = "connection " + i + " is down and being reconnected; try again once it is back";
                    }
                }
                if (problem != null) {
                    opened.forEach(NbdConnection::disconnect);
                    throw new java.util.concurrent.CompletionException(new NbdException(
                            "cannot switch to the export's new description: " + problem));
                }
                swap(opened, now);
                return new ExportRefresh(before, now, true);
            });
        });
        return result.whenComplete((r, e) -> refreshing.set(false));
    }

    /**
     * A connection just put in its slot that broke after its handshake, before that: its loss was
     * reported while it had no slot, so nothing heard it, and without this it would stay in its slot
     * dead, with no reconnect (with one connection, every later request would wait for ever).
     */
    private void reconnectIfLostBeforeSlot(NbdConnection connection) {
        if (reconnector != null && !connection.isUsable()) {
            reconnector.connectionLost(connection, new NbdException("connection lost before it was put in use"), List.of());
        }
    }

    /** Puts fresh connections in the slots, then retires the old ones (see {@link NbdConnection#retire}). */
    private void swap(List<NbdConnection> fresh, ExportInfo now) {
        boolean flushes = !export.readOnly() && export.has(TransmissionFlag.SEND_FLUSH);
        // Published before the slots change: a FLUSH that finds a fresh connection in a slot also
        // finds this, and waits for the old connections' last FLUSH (see flush()).
        CompletableFuture<Void> retired = new CompletableFuture<>();
        retirements = CompletableFuture.allOf(retirements, retired);
        try {
            retireAll(fresh, now, flushes, retired);
        } catch (RuntimeException | Error e) {
            retired.complete(null); // never left pending: every later FLUSH would wait for it
            throw e;
        }
    }

    /** Fills the slots, takes the new export, retires each old connection with its last FLUSH; then completes {@code retired}. */
    private void retireAll(List<NbdConnection> fresh, ExportInfo now, boolean flushes, CompletableFuture<Void> retired) {
        List<NbdConnection> old = new ArrayList<>();
        for (int i = 0; i < fresh.size(); i++) {
            old.add(connections.getAndSet(i, fresh.get(i)));
        }
        // Slots first, then the size: a request checked against the new size never goes to an old connection.
        exportChanged(now);
        fresh.forEach(this::reconnectIfLostBeforeSlot);
        List<CompletableFuture<Void>> done = new ArrayList<>();
        List<CompletableFuture<Void>> closings = new ArrayList<>();
        WriteJournal j = journal;
        long mark = j != null ? j.mark() : -1;
        for (NbdConnection o : old) {
            CompletableFuture<Void> flushed = new CompletableFuture<>();
            NbdRequest flush = !flushes ? null : new NbdRequest(Command.FLUSH, 0, 0, 0, null, (r, failure) -> {
                if (failure == null && j != null) {
                    j.flushed(mark);
                }
                if (failure != null) {
                    java.util.logging.Logger.getLogger(NbdSession.class.getName()).warning(
                            "the FLUSH ending a replaced connection failed: " + failure.getMessage());
                    recordLoss("the FLUSH ending a connection replaced by an export refresh failed ("
                            + failure.getMessage() + ")");
                }
                flushed.complete(null);
            });
            CompletableFuture<Void> closedNow = o.retire(this::submit, flush);
            done.add(flush == null ? closedNow : flushed);
            closings.add(closedNow);
        }
        retiredClosed = CompletableFuture.allOf(retiredClosed, CompletableFuture.allOf(closings.toArray(CompletableFuture[]::new)));
        CompletableFuture.allOf(done.toArray(CompletableFuture[]::new)).whenComplete((v, e) -> retired.complete(null));
    }

    /** Connections lost and opened again since the session started. */
    public long reconnects() {
        return reconnector == null ? 0 : reconnector.reconnects();
    }

    /** Called with the export's new description when a reconnect finds it grew. */
    public void onExportGrowth(java.util.function.Consumer<ExportInfo> listener) {
        if (reconnector != null) {
            reconnector.onGrowth(listener);
        }
    }

    public ExportInfo export() {
        return export;
    }

    public int connectionCount() {
        return connections.length();
    }

    // ---- Operations ----

    /** Reads {@code length} bytes at {@code offset}; the caller releases the buffer. */
    public CompletableFuture<ByteBuf> read(long offset, int length) {
        return read(offset, length, 0);
    }

    /** Reads with flags: {@link CommandFlag#DF} (needs SEND_DF and structured replies). */
    public CompletableFuture<ByteBuf> read(long offset, int length, int flags) {
        try {
            checkRange(Command.READ, offset, length);
            checkFlags(flags, CommandFlag.DF);
        } catch (NbdException | IllegalArgumentException e) {
            return CompletableFuture.failedFuture(e);
        }
        if (length <= maxPayload) {
            return readOne(offset, length, flags);
        }
        int parts = (int) ((length + (long) maxPayload - 1) / maxPayload);
        List<CompletableFuture<ByteBuf>> pieces = new ArrayList<>(parts);
        for (long done = 0; done < length; done += maxPayload) {
            pieces.add(readOne(offset + done, (int) Math.min(maxPayload, length - done), flags));
        }
        return CompletableFuture.allOf(pieces.toArray(CompletableFuture[]::new)).handle((v, error) -> {
            if (error != null) {
                pieces.forEach(p -> p.thenAccept(ByteBuf::release));
                throw new java.util.concurrent.CompletionException(unwrap(error));
            }
            CompositeByteBuf whole = io.netty.buffer.ByteBufAllocator.DEFAULT.compositeDirectBuffer(parts);
            pieces.forEach(p -> whole.addComponent(true, p.join()));
            return whole;
        });
    }

    private CompletableFuture<ByteBuf> readOne(long offset, int length, int flags) {
        ReadCompletion future = new ReadCompletion(observer, ObserverCalls.started(observer, Command.READ));
        submit(new NbdRequest(Command.READ, flags, offset, length, null, future));
        return future;
    }

    /** A READ's future and its completion: one object per read. */
    private static final class ReadCompletion extends CompletableFuture<ByteBuf> implements NbdRequest.Completion {
        private final RequestObserver observer;
        private final long started;

        ReadCompletion(RequestObserver observer, long started) {
            this.observer = observer;
            this.started = started;
        }

        @Override
        public void complete(NbdRequest request, Throwable failure) {
            ObserverCalls.completed(observer, request, started, failure);
            if (failure != null) {
                completeExceptionally(failure);
                return;
            }
            ByteBuf data = request.data;
            request.data = null;
            if (!complete(data)) {
                data.release(); // the caller completed or cancelled it already: nobody takes the data
            }
        }
    }

    /**
     * Writes the buffer's readable bytes at {@code offset}. Takes ownership of the buffer and of
     * its bytes: the session releases it, and may keep it (for a replay after a reconnect) until
     * a later FLUSH succeeds, so the caller must not change those bytes after this call, not even
     * through another buffer over the same memory. A caller that reuses its memory once the write
     * completes uses {@link #writeBorrowed} instead.
     */
    public CompletableFuture<Void> write(long offset, ByteBuf data, boolean fua) {
        return write(offset, data, fua, false);
    }

    /**
     * Writes like {@link #write}, for a caller that changes the buffer's memory again once the
     * returned future completes (a device bridge with one buffer it reads every request into).
     * The session still takes ownership of this reference and releases it; what it keeps of
     * the bytes beyond the reply, it copies.
     */
    public CompletableFuture<Void> writeBorrowed(long offset, ByteBuf data, boolean fua) {
        return write(offset, data, fua, true);
    }

    private CompletableFuture<Void> write(long offset, ByteBuf data, boolean fua, boolean lent) {
        int length = data.readableBytes();
        try {
            checkWritable(Command.WRITE);
            checkRange(Command.WRITE, offset, length);
            checkFlags(fua ? CommandFlag.FUA : 0, 0);
        } catch (NbdException | IllegalArgumentException e) {
            data.release();
            return CompletableFuture.failedFuture(e);
        }
        int flags = fua ? CommandFlag.FUA : 0;
        if (length <= maxPayload) {
            return simple(Command.WRITE, flags, offset, length, data, lent);
        }
        List<CompletableFuture<Void>> pieces = new ArrayList<>();
        for (long done = 0; done < length; done += maxPayload) {
            int part = (int) Math.min(maxPayload, length - done);
            pieces.add(simple(Command.WRITE, flags, offset + done, part,
                    data.retainedSlice(data.readerIndex() + (int) done, part), lent));
        }
        data.release();
        return CompletableFuture.allOf(pieces.toArray(CompletableFuture[]::new));
    }

    /**
     * Asks the server to persist every write completed so far (NBD_CMD_FLUSH). Fails when
     * writes acknowledged earlier may be missing on the server (see {@link LossReport}).
     */
    public CompletableFuture<Void> flush() {
        return flush(true);
    }

    /**
     * {@code reportsLoss}: false for a FLUSH that must not take the report of a loss from the
     * callers who should hear of it (the session's own; one before a destroy).
     */
    public CompletableFuture<Void> flush(boolean reportsLoss) {
        if (!export.has(TransmissionFlag.SEND_FLUSH)) {
            return CompletableFuture.failedFuture(unsupported("NBD_CMD_FLUSH", "send_flush"));
        }
        long number = reportsLoss ? losses.flushSent() : 0;
        CompletableFuture<Void> flush = simple(Command.FLUSH, 0, 0, 0, null);
        // Writes answered on a connection being retired are covered by its own last FLUSH: wait for
        // that too. Read once the FLUSH is answered: whichever connection took it in the end (a
        // retiring one hands what it holds to a fresh one), a refresh that put a fresh connection
        // in a slot before then has published its retirement (swap).
        CompletableFuture<Void> covered = flush.thenCompose(v -> retirements);
        if (!reportsLoss) {
            return covered;
        }
        // Asked once all is done: a retired connection's last FLUSH may have failed meanwhile.
        return covered.thenApply(v -> {
            String loss = losses.flushed(number);
            if (loss != null) {
                throw new java.util.concurrent.CompletionException(new NbdWritesLostException(loss));
            }
            return v;
        });
    }

    /** Discards a range (NBD_CMD_TRIM); it may read back as anything afterwards. */
    public CompletableFuture<Void> trim(long offset, long length, boolean fua) {
        return ranged(Command.TRIM, TransmissionFlag.SEND_TRIM, fua ? CommandFlag.FUA : 0, offset, length);
    }

    /**
     * Writes zeroes (NBD_CMD_WRITE_ZEROES) with flags {@link CommandFlag#FUA},
     * {@link CommandFlag#NO_HOLE} and {@link CommandFlag#FAST_ZERO}.
     */
    public CompletableFuture<Void> writeZeroes(long offset, long length, int flags) {
        return ranged(Command.WRITE_ZEROES, TransmissionFlag.SEND_WRITE_ZEROES, flags, offset, length);
    }

    /** Asks the server to pull a range into its cache (NBD_CMD_CACHE). */
    public CompletableFuture<Void> cache(long offset, long length) {
        return ranged(Command.CACHE, TransmissionFlag.SEND_CACHE, 0, offset, length);
    }

    private CompletableFuture<Void> ranged(Command command, TransmissionFlag needed, int flags, long offset, long length) {
        try {
            if (!export.has(needed)) {
                throw unsupported("NBD_CMD_" + command, needed.displayName());
            }
            if (command != Command.CACHE) {
                checkWritable(command);
            }
            checkRange(command, offset, length);
            checkFlags(flags, command == Command.WRITE_ZEROES ? CommandFlag.NO_HOLE | CommandFlag.FAST_ZERO : 0);
        } catch (NbdException | IllegalArgumentException e) {
            return CompletableFuture.failedFuture(e);
        }
        if (length <= MAX_NON_PAYLOAD_LENGTH) {
            return simple(command, flags, offset, (int) length, null);
        }
        List<CompletableFuture<Void>> pieces = new ArrayList<>();
        for (long done = 0; done < length; done += MAX_NON_PAYLOAD_LENGTH) {
            pieces.add(simple(command, flags, offset + done, (int) Math.min(MAX_NON_PAYLOAD_LENGTH, length - done), null));
        }
        return CompletableFuture.allOf(pieces.toArray(CompletableFuture[]::new));
    }

    /**
     * Reports allocation (base:allocation) from {@code offset}: extents that together cover at
     * least a prefix of the range (the server may report less than asked, and with
     * {@code onlyOne} a single extent).
     */
    public CompletableFuture<List<Extent>> blockStatus(long offset, long length, boolean onlyOne) {
        int contextId = export.metaContextId(NbdConstants.BASE_ALLOCATION);
        int request = (int) Math.min(length, MAX_NON_PAYLOAD_LENGTH);
        try {
            if (contextId < 0) {
                throw new NbdUnsupportedException("block status needs the meta context base:allocation, "
                        + "which the server did not agree to" + (export.structuredReplies() ? "" : " (no structured replies)"));
            }
            checkRange(Command.BLOCK_STATUS, offset, request);
        } catch (NbdException | IllegalArgumentException e) {
            return CompletableFuture.failedFuture(e);
        }
        CompletableFuture<List<Extent>> future = new CompletableFuture<>();
        NbdRequest r = new NbdRequest(Command.BLOCK_STATUS, onlyOne ? CommandFlag.REQ_ONE : 0, offset, request, null,
                (done, failure) -> {
                    if (failure != null) {
                        future.completeExceptionally(failure);
                    } else {
                        future.complete(List.copyOf(done.extents));
                    }
                });
        r.metaContextId = contextId;
        submit(r);
        return future;
    }

    private CompletableFuture<Void> simple(Command command, int flags, long offset, int length, ByteBuf payload) {
        return simple(command, flags, offset, length, payload, false);
    }

    private CompletableFuture<Void> simple(Command command, int flags, long offset, int length, ByteBuf payload,
            boolean lent) {
        WriteJournal j = journal;
        long started = ObserverCalls.started(observer, command);
        Acknowledgement ack;
        boolean journalled = j != null && (command == Command.WRITE || command == Command.TRIM || command == Command.WRITE_ZEROES);
        if (journalled) {
            ack = new Acknowledgement(j, lent, -1, started, WriteJournal.cost(command, length, lent));
        } else if (j != null && command == Command.FLUSH) {
            ack = new Acknowledgement(j, false, j.mark(), started, 0);
        } else {
            ack = new Acknowledgement(null, false, -1, started, 0);
        }
        NbdRequest request = new NbdRequest(command, flags, offset, length, payload, ack);
        if (!journalled || !holdForJournal(j, request, ack.journalCost)) {
            submit(request);
        }
        return ack;
    }

    /**
     * Holds {@code request} back when the journal has no room left for it (counting what is in
     * flight), asking for the journal's FLUSH if none is out; else counts it in flight.
     */
    private boolean holdForJournal(WriteJournal j, NbdRequest request, long cost) {
        synchronized (heldForJournal) {
            if (heldForJournal.isEmpty() && j.hasRoom(journalInFlight.get(), cost)) {
                journalInFlight.addAndGet(cost);
                return false;
            }
            heldForJournal.addLast(request);
        }
        flushForJournal(); // does nothing while one is out: its completion releases
        return true;
    }

    /**
     * Once the journal's FLUSH is done (or failed): the writes held back go out, in order, as far
     * as there is room; a write larger than the whole limit goes alone once nothing else is kept
     * or in flight (and overflows it, with its log line). What is left waits for another FLUSH,
     * which covers what was acknowledged since. {@code all}: every held write goes, room or not
     * (the journal's FLUSH failed, and the journal let go of what it kept).
     */
    private void releaseHeldForJournal(boolean all) {
        WriteJournal j = journal;
        List<NbdRequest> release = new ArrayList<>();
        boolean left;
        synchronized (heldForJournal) {
            while (!heldForJournal.isEmpty()) {
                long cost = ((Acknowledgement) heldForJournal.peekFirst().completion).journalCost;
                boolean alone = release.isEmpty() && journalInFlight.get() == 0 && (j == null || j.counted() == 0);
                if (j != null && !all && !alone && !j.hasRoom(journalInFlight.get(), cost)) {
                    break;
                }
                release.add(heldForJournal.pollFirst());
                journalInFlight.addAndGet(cost);
            }
            left = !heldForJournal.isEmpty();
        }
        release.forEach(this::submit);
        if (left) {
            flushForJournal();
        }
    }

    /**
     * The future of a request whose answer carries no data, and its completion: one object per
     * request. A write's acknowledgement goes to the journal before the caller hears of it (the
     * bytes of a {@link #writeBorrowed} are still unchanged then); a FLUSH's success empties it.
     */
    private final class Acknowledgement extends CompletableFuture<Void> implements NbdRequest.Completion {
        /** Null when the request means nothing to a journal. */
        private final WriteJournal journal;
        private final boolean lent;
        /** A FLUSH's mark in the journal; -1 for a write. */
        private final long flushMark;
        /** When it was submitted, for the observer. */
        private final long started;
        /** What a journalled request counts in {@link #journalInFlight} until it is answered; 0 for others. */
        final long journalCost;

        Acknowledgement(WriteJournal journal, boolean lent, long flushMark, long started, long journalCost) {
            this.journal = journal;
            this.lent = lent;
            this.flushMark = flushMark;
            this.started = started;
            this.journalCost = journalCost;
        }

        @Override
        public void complete(NbdRequest request, Throwable failure) {
            ObserverCalls.completed(observer, request, started, failure);
            if (failure != null) {
                journalInFlight.addAndGet(-journalCost);
                completeExceptionally(failure);
                return;
            }
            boolean flushNow = false;
            if (journal != null) {
                if (flushMark >= 0) {
                    journal.flushed(flushMark);
                } else {
                    flushNow = journal.acknowledged(request, lent);
                }
            }
            // Only now: counted in the journal first, so another writer never sees it in neither.
            journalInFlight.addAndGet(-journalCost);
            request.releaseBuffers(); // what the journal did not take: the caller may reuse lent memory from now on
            if (flushNow) {
                flushForJournal();
            }
            complete(null);
        }
    }

    RequestObserver observer() {
        return observer;
    }

    /**
     * The export no longer takes a FLUSH (a reconnect found it so): the journal could never be
     * emptied, and writes held for room in it would wait for ever. It is given up; writes are
     * not kept for replay from now on, which the log says once.
     */
    private void abandonJournal(String why) {
        WriteJournal j = journal;
        journal = null;
        if (j != null) {
            j.abandon();
            java.util.logging.Logger.getLogger(NbdSession.class.getName()).severe("the export no longer takes a FLUSH ("
                    + why + "): writes acknowledged but not flushed are not kept for replay after a reconnect any more");
        }
    }

    /**
     * A FLUSH of the session's own, to empty the journal before it reaches its limit. A failed
     * one means the server could not make the writes durable: the caller's next FLUSH reports
     * it (a FLUSH that succeeds later does not bring back what a failed one may have dropped).
     * It is sent again once; should that fail too (a disk that fails every FLUSH, or a session
     * that is gone), the journal lets go of what it kept and the writes held for room go out,
     * rather than wait while FLUSH after FLUSH fails as fast as the server answers.
     */
    private void flushForJournal() {
        if (journalFlushing.compareAndSet(false, true)) {
            flush(false).whenComplete((v, e) -> {
                boolean giveUp = false;
                if (e == null) {
                    journalFlushFailures = 0;
                } else {
                    Throwable cause = unwrap(e);
                    java.util.logging.Logger.getLogger(NbdSession.class.getName()).warning(
                            "a FLUSH to empty the journal of unflushed writes failed: " + cause.getMessage());
                    WriteJournal j = journal;
                    if (cause instanceof NbdUnsupportedException) {
                        abandonJournal(cause.getMessage());
                    } else if (j != null) {
                        recordLoss("the server failed a FLUSH (" + cause.getMessage() + ")");
                        giveUp = ++journalFlushFailures >= 2;
                        if (giveUp) {
                            journalFlushFailures = 0;
                            j.giveUp();
                        }
                    }
                }
                journalFlushing.set(false);
                releaseHeldForJournal(giveUp);
            });
        }
    }

    void submit(NbdRequest request) {
        if (reconnector != null && connections.length() > 1 && journal != null) {
            reconnector.submitThroughGate(request, this::route); // a journal replay may be due: see Reconnector
            return;
        }
        route(request);
    }

    /** The connections in their slots now (a lost one until its replacement is adopted). */
    List<NbdConnection> connectionsInSlots() {
        List<NbdConnection> all = new ArrayList<>(connections.length());
        for (int i = 0; i < connections.length(); i++) {
            all.add(connections.get(i));
        }
        return all;
    }

    private void route(NbdRequest request) {
        NbdConnection connection = connectionFor(request);
        if (connection == null && reconnector != null) {
            reconnector.hold(request); // every connection is being reconnected: the request waits
            return;
        }
        (connection != null ? connection : connections.get(0)).submit(request);
    }

    /**
     * A usable connection with the fewest requests outstanding, searched from a rotating start; null if none.
     * With several, one whose export can take the request if the least loaded cannot: after a reconnect
     * brought a grown or more capable export to one of them, the others still have the old one (and
     * would refuse it). Only that one is checked in the common case; its connection checks again as it sends.
     */
    private NbdConnection connectionFor(NbdRequest request) {
        int n = connections.length();
        if (n == 1) {
            NbdConnection only = connections.get(0);
            return only.isUsable() ? only : null;
        }
        int start = Math.floorMod(next.getAndIncrement(), n);
        NbdConnection best = leastLoaded(start, null);
        if (best != null && ExportFit.problem(request, best.export(), -1) != null) {
            NbdConnection fitting = leastLoaded(start, c -> ExportFit.problem(request, c.export(), -1) == null);
            return fitting != null ? fitting : best; // none fits: the connection refuses it, saying why
        }
        return best;
    }

    /** The usable connection, of those {@code eligible} accepts (null: all), with the fewest requests outstanding. */
    private NbdConnection leastLoaded(int start, java.util.function.Predicate<NbdConnection> eligible) {
        int n = connections.length();
        NbdConnection best = null;
        for (int i = 0; i < n; i++) {
            NbdConnection c = connections.get((start + i) % n);
            if (c.isUsable() && (eligible == null || eligible.test(c)) && (best == null || c.load() < best.load())) {
                best = c;
            }
        }
        return best;
    }

    // ---- Checks made before anything is sent ----

    private void checkRange(Command command, long offset, long length) {
        long minimum = export.blockSize().minimum();
        if (offset < 0 || length < 0 || offset + length > export.size() || offset + length < 0) {
            throw new IllegalArgumentException(String.format("NBD_CMD_%s of %d bytes at offset %d is outside the export (size %d)",
                    command, length, offset, export.size()));
        }
        if (length == 0 && command != Command.FLUSH) {
            throw new IllegalArgumentException("NBD_CMD_" + command + " of length 0");
        }
        if (offset % minimum != 0 || length % minimum != 0) {
            throw new IllegalArgumentException(String.format(
                    "NBD_CMD_%s of %d bytes at offset %d is not aligned to the export's minimum block size %d",
                    command, length, offset, minimum));
        }
    }

    private void checkWritable(Command command) throws NbdUnsupportedException {
        if (export.readOnly()) {
            throw new NbdUnsupportedException("NBD_CMD_" + command + " refused: the export is read-only");
        }
    }

    /** Each flag must be one the command may carry and, where the export must offer it, offered. */
    private void checkFlags(int flags, int allowedBeyondFua) throws NbdUnsupportedException {
        if ((flags & ~(CommandFlag.FUA | allowedBeyondFua)) != 0) {
            throw new IllegalArgumentException(String.format("command flags %#x not allowed here", flags));
        }
        if ((flags & CommandFlag.FUA) != 0 && !export.has(TransmissionFlag.SEND_FUA)) {
            throw unsupported("the FUA flag", "send_fua");
        }
        if ((flags & CommandFlag.FAST_ZERO) != 0 && !export.has(TransmissionFlag.SEND_FAST_ZERO)) {
            throw unsupported("the FAST_ZERO flag", "send_fast_zero");
        }
        if ((flags & CommandFlag.DF) != 0 && (!export.has(TransmissionFlag.SEND_DF) || !export.structuredReplies())) {
            throw unsupported("the DF flag", "send_df with structured replies");
        }
    }

    private static NbdUnsupportedException unsupported(String what, String flag) {
        return new NbdUnsupportedException(what + " is not offered by this export (no " + flag + " flag)");
    }

    // ---- Ending ----

    /** Completes outstanding requests, sends NBD_CMD_DISC on every connection and closes them. */
    public CompletableFuture<Void> disconnect() {
        if (reconnector != null) {
            reconnector.close();
        }
        String loss = losses.pending();
        if (loss != null && lossLoggedAtClose.compareAndSet(false, true)) {
            // Nobody is left to hear it from a FLUSH: the log is the last place to say it.
            java.util.logging.Logger.getLogger(NbdSession.class.getName()).severe("closing with writes acknowledged "
                    + "earlier that may be missing on the server, which no FLUSH has reported: " + loss);
        }
        WriteJournal j = journal;
        if (j != null) {
            j.clear();
        }
        List<NbdRequest> held;
        synchronized (heldForJournal) {
            held = new ArrayList<>(heldForJournal);
            heldForJournal.clear();
        }
        for (NbdRequest r : held) {
            journalInFlight.addAndGet(((Acknowledgement) r.completion).journalCost); // its completion takes it off
            r.releaseBuffers();
            r.completion.complete(r, new NbdException("the session was closed before " + r.describe() + " was sent"));
        }
        return CompletableFuture.allOf(allConnections().stream().map(NbdConnection::disconnect)
                .toArray(CompletableFuture[]::new));
    }

    /** Completes when any connection is closed; with its cause when it failed. */
    public CompletableFuture<Void> anyConnectionClosed() {
        return CompletableFuture.anyOf(allConnections().stream().map(NbdConnection::closeFuture)
                .toArray(CompletableFuture[]::new)).thenApply(v -> null);
    }

    private List<NbdConnection> allConnections() {
        List<NbdConnection> all = new ArrayList<>();
        for (int i = 0; i < connections.length(); i++) {
            all.add(connections.get(i));
        }
        return all;
    }

    @Override
    public void close() {
        disconnect().join();
    }
}
