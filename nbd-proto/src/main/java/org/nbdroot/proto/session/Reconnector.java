package org.nbdroot.proto.session;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;
import java.util.logging.Logger;
import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.NbdException;
import org.nbdroot.proto.NbdOptionException;
import org.nbdroot.proto.NbdUnsupportedException;
import org.nbdroot.proto.wire.Command;
import org.nbdroot.proto.wire.OptionReplyType;
import org.nbdroot.proto.wire.TransmissionFlag;

/**
 * Gets a session's lost connections back. The requests a lost connection had not answered,
 * and any submitted while no connection is usable, wait here (in the order they were first
 * submitted) and are sent again once a connection is back; the caller sees no error, only a
 * late answer. A FLUSH is sent again only after every request sent again before it has been
 * answered: it must cover those writes. What the reconnected export can no longer do (it
 * shrank, became read-only, dropped a flag) fails, with a log line; nothing is sent that it
 * would misread.
 */
final class Reconnector implements NbdConnection.LossListener {
    private static final Logger LOG = Logger.getLogger(Reconnector.class.getName());

    private final NbdSession session;
    private final ReconnectPolicy policy;
    private final Deque<NbdRequest> waiting = new ArrayDeque<>();
    private final boolean[] reconnecting;
    /** When each slot's connection was last put back (System.nanoTime()), and at which attempt. */
    private final long[] adoptedAt;
    private final int[] adoptedAtAttempt;
    /** How many requests each slot's connection had answered when it was put back: its journal replay's. */
    private final long[] answeredAtAdoption;
    /**
     * Per slot, the backoff step its current outage's first attempt took less the connections in a
     * row that broke soon after coming back (or without answering anything): step minus this is
     * the attempts the outage counts against {@code maxAttempts}. A quick drop continues the
     * backoff but counts as one attempt, so a server that drops now and then does not use up the
     * attempts of the outages before.
     */
    private final int[] budgetOffset;
    private final int[] quickDrops;
    private final AtomicLong reconnects = new AtomicLong();
    private volatile Consumer<ExportInfo> growth = e -> { };
    private boolean closed;
    /** Why reconnecting was given up (with bounded attempts); from then on a request with no connection fails at once. */
    private NbdException gaveUp;
    /*
     * With several connections, a journal replay on a reconnected one must not race the others:
     * a write they sent meanwhile could land before an older journalled write to the same blocks
     * is written again over it, and a read could see the older bytes for a moment. So while a
     * replay is due the gate is closed: new requests wait here, and the replay starts once every
     * request that got past the gate before has been answered. Replays take turns.
     */
    /** Requests between their look at the gate and their connection's queue. */
    private final AtomicInteger passingGate = new AtomicInteger();
    private volatile boolean gateClosed;
    /** Reconnected connections whose replay is due or running (guarded by this). */
    private int replaysDue;
    /** Completes when the last replay to have its turn is over (guarded by this). */
    private CompletableFuture<Void> replayTurns = CompletableFuture.completedFuture(null);

    Reconnector(NbdSession session, ReconnectPolicy policy) {
        this.session = session;
        this.policy = policy;
        this.reconnecting = new boolean[Math.max(1, session.connectionCount())];
        this.adoptedAt = new long[reconnecting.length];
        this.adoptedAtAttempt = new int[reconnecting.length];
        this.answeredAtAdoption = new long[reconnecting.length];
        this.budgetOffset = new int[reconnecting.length];
        this.quickDrops = new int[reconnecting.length];
    }

    long reconnects() {
        return reconnects.get();
    }

    void onGrowth(Consumer<ExportInfo> listener) {
        growth = listener;
    }

    /** A request submitted while no connection is usable. */
    void hold(NbdRequest request) {
        NbdException cause;
        synchronized (this) {
            if (!closed && session.anyUsable()) {
                // A connection came back after the caller found none: its adoption has already taken
                // what waited here, so this request would wait for the next outage. It goes on instead.
                cause = null;
            } else if (!closed && (gaveUp == null || anyReconnecting())) {
                waiting.addLast(request);
                return;
            } else {
                // Nothing is reconnecting any more: waiting would be for ever.
                cause = closed ? new NbdException("the session is closed") : gaveUp;
            }
        }
        if (cause == null) {
            session.submit(request);
        } else {
            fail(List.of(request), cause);
        }
    }

    /** Sends {@code request} on through {@code route}, or holds it while the replay gate is closed. */
    void submitThroughGate(NbdRequest request, Consumer<NbdRequest> route) {
        passingGate.incrementAndGet();
        try {
            if (gateClosed) {
                synchronized (this) {
                    if (closed) {
                        // falls through to route: the session's connections refuse it, closing
                    } else if (gateClosed) { // opening it and taking what waits happen together, under this lock
                        waiting.addLast(request);
                        return;
                    }
                }
            }
            route.accept(request);
        } finally {
            passingGate.decrementAndGet();
        }
    }

    private boolean anyReconnecting() {
        return anyReconnectingBut(-1);
    }

    private boolean anyReconnectingBut(int slot) {
        for (int i = 0; i < reconnecting.length; i++) {
            if (i != slot && reconnecting[i]) {
                return true;
            }
        }
        return false;
    }

    @Override
    public void connectionLost(NbdConnection connection, Throwable cause, List<NbdRequest> lost) {
        List<NbdRequest> unanswered = lost;
        if (lost.stream().anyMatch(r -> r.replay)) {
            fail(lost.stream().filter(r -> r.replay).toList(), cause); // their replay starts over, not they
            unanswered = lost.stream().filter(r -> !r.replay).toList();
        }
        int slot = session.slotOf(connection);
        boolean start;
        boolean failNow;
        int first = 0;
        boolean quick = false;
        boolean fruitless = false;
        synchronized (this) {
            failNow = closed || slot < 0;
            if (failNow) {
                start = false;
            } else {
                // Unanswered requests were submitted before anything still waiting: they go first.
                for (int i = unanswered.size() - 1; i >= 0; i--) {
                    waiting.addFirst(unanswered.get(i));
                }
                start = !reconnecting[slot];
                reconnecting[slot] = true;
                // A connection that breaks soon after it came back (a server that misbehaves on every
                // request) continues the backoff instead of starting over: no reconnect loop at full speed.
                // So does one that came back and answered nothing it was sent beyond its journal replay,
                // breaking about when the request timeout would catch that (a server that accepts
                // connections, then stalls): else each break would be a new outage at attempt 0 and
                // bounded attempts would never run out.
                long sinceAdoption = System.nanoTime() - adoptedAt[slot];
                quick = adoptedAt[slot] != 0 && sinceAdoption < policy.maxDelay().toNanos();
                long timeout = session.requestTimeout().toNanos();
                fruitless = adoptedAt[slot] != 0 && timeout > 0 && sinceAdoption < 2 * timeout + policy.maxDelay().toNanos()
                        && !unanswered.isEmpty() && connection.answered() == answeredAtAdoption[slot];
                boolean soon = quick || fruitless;
                first = soon ? adoptedAtAttempt[slot] + 1 : 0;
                if (start) {
                    quickDrops[slot] = soon ? quickDrops[slot] + 1 : 0;
                    budgetOffset[slot] = first - quickDrops[slot];
                }
            }
        }
        if (failNow) {
            if (!closedNow() && slot < 0) {
                // A connection already replaced (its requests were picked just before it broke, and the
                // reconnect was quicker than their sending): its successor takes them, FLUSH last.
                resend(unanswered);
            } else {
                fail(unanswered, cause);
            }
            return;
        }
        if (start) {
            LOG.warning("connection " + slot + " to " + session.uri() + " lost (" + cause.getMessage() + "): "
                    + unanswered.size() + " requests wait while it reconnects"
                    + (quick ? " (it broke again soon after reconnecting: backing off)"
                            : fruitless ? " (it broke again without answering anything since reconnecting: backing off)"
                            : ""));
            attempt(slot, first, cause);
        }
    }

    /**
     * What waits, once {@code slot} cannot take it (it gave up, or the export vanished): left for
     * another connection coming back (a replay's gate may be all that holds it), sent on to a
     * usable one, or failed with {@code cause}.
     */
    private void settleWaiting(int slot, Throwable cause) {
        List<NbdRequest> abandoned = List.of();
        List<NbdRequest> onward = List.of();
        synchronized (this) {
            if (replaysDue > 0 || anyReconnectingBut(slot)) {
                return;
            }
            if (session.anyUsable()) {
                onward = takeWaiting();
            } else {
                abandoned = takeWaiting();
            }
        }
        fail(abandoned, cause);
        resend(onward);
    }

    /** Attempt number {@code attempt} of the backoff (its delay); what it counts against the limit is less after quick drops. */
    private void attempt(int slot, int attempt, Throwable lastError) {
        if (closedNow()) {
            return; // what waited was failed by close()
        }
        int counted = attempt - budgetOffset[slot];
        if (policy.exhausted(counted)) {
            LOG.severe("giving up reconnecting to " + session.uri() + " after " + counted + " attempts");
            NbdException cause = new NbdException("gave up reconnecting after " + counted + " attempts: "
                    + lastError.getMessage(), lastError);
            synchronized (this) {
                reconnecting[slot] = false;
                gaveUp = cause;
            }
            settleWaiting(slot, cause);
            return;
        }
        long delay = policy.delayBefore(attempt).toMillis();
        session.connector().transport().group().next().schedule(() -> session.reopen().whenComplete((connection, error) -> {
            if (error != null) {
                Throwable cause = NbdSession.unwrap(error);
                if (attempt == 0 || Long.bitCount(attempt) == 1) { // log the 1st, 2nd, 4th, 8th... failure
                    LOG.warning("reconnect attempt " + (attempt + 1) + " to " + session.uri() + " failed: " + cause.getMessage());
                }
                if (cause instanceof NbdOptionException o && o.is(OptionReplyType.ERR_UNKNOWN)
                        || cause.getMessage() != null && cause.getMessage().startsWith("no such export")) {
                    // The export vanished: what waits for it fails (unless another connection takes it);
                    // later requests wait for it to come back.
                    settleWaiting(slot, cause);
                }
                attempt(slot, attempt + 1, cause);
                return;
            }
            if (closedNow()) {
                connection.disconnect();
                return;
            }
            reconnected(slot, connection, attempt);
        }), delay, TimeUnit.MILLISECONDS);
    }

    /**
     * A connection is back. Before it takes any request, the writes acknowledged since the last
     * FLUSH are written again, in order: a server that restarted may have lost them. Until that
     * is done the connection is not in its slot, so new requests keep waiting here.
     */
    private void reconnected(int slot, NbdConnection connection, int attempt) {
        if (session.connectionCount() == 1 || !session.keepsJournal()) {
            replayThenAdopt(slot, connection, attempt, null); // nothing else sends meanwhile, or no replay: no gate
            return;
        }
        CompletableFuture<Void> previous;
        CompletableFuture<Void> mine = new CompletableFuture<>();
        Turn turn = new Turn();
        synchronized (this) {
            replaysDue++;
            gateClosed = true;
            previous = replayTurns;
            replayTurns = mine;
        }
        previous.thenCompose(v -> othersQuiet(slot, connection))
                .thenCompose(v -> replayThenAdopt(slot, connection, attempt, turn))
                .handle((v, e) -> {
                    if (e == null) {
                        return CompletableFuture.<Void>completedFuture(null);
                    }
                    LOG.log(java.util.logging.Level.SEVERE, "a journal replay failed unexpectedly", e);
                    return session.slotOf(connection) != slot && !closedNow()
                            ? notAdopted(slot, connection, attempt, turn, NbdSession.unwrap(e), true)
                            : CompletableFuture.<Void>completedFuture(null);
                })
                .thenCompose(f -> f)
                .whenComplete((v, e) -> {
                    release(turn); // whatever happened, the gate must not stay closed for it
                    mine.complete(null);
                });
    }

    /** One reconnected connection's turn at the gate; given back once. */
    private static final class Turn {
        boolean released; // guarded by the reconnector
    }

    /**
     * Completes once no request is passing the (closed) gate and every other connection has
     * answered all it was sent (or ended).
     */
    private CompletableFuture<Void> othersQuiet(int slot, NbdConnection connection) {
        CompletableFuture<Void> quiet = new CompletableFuture<>();
        checkQuiet(slot, connection, quiet, 1);
        return quiet;
    }

    /**
     * Looks again after {@code delayMillis} (doubling up to 50 ms) until quiet. A connection
     * that never answers is closed by the request timeout, which bounds the wait.
     */
    private void checkQuiet(int slot, NbdConnection connection, CompletableFuture<Void> quiet, long delayMillis) {
        if (!session.keepsJournal() || closedNow()) {
            quiet.complete(null); // nothing to write again (the journal was given up), or nothing to do at all
            return;
        }
        // Connections retired by a refresh answer writes too; their journal entries must be in before the replay.
        if (passingGate.get() == 0 && session.retiredConnectionsClosed()) {
            List<CompletableFuture<Boolean>> answers = new ArrayList<>();
            for (NbdConnection other : session.connectionsInSlots()) {
                if (other != null && session.slotOf(other) != slot) {
                    answers.add(other.quiet());
                }
            }
            CompletableFuture.allOf(answers.toArray(CompletableFuture[]::new)).whenComplete((v, e) -> {
                if (answers.stream().allMatch(a -> a.getNow(false))) {
                    quiet.complete(null);
                } else {
                    again(slot, connection, quiet, delayMillis);
                }
            });
            return;
        }
        again(slot, connection, quiet, delayMillis);
    }

    private void again(int slot, NbdConnection connection, CompletableFuture<Void> quiet, long delayMillis) {
        try {
            connection.channel().eventLoop().schedule(() -> checkQuiet(slot, connection, quiet, Math.min(50, 2 * delayMillis)),
                    delayMillis, TimeUnit.MILLISECONDS);
        } catch (java.util.concurrent.RejectedExecutionException e) {
            quiet.complete(null); // shutting down: the replay finds the session closed
        }
    }

    /**
     * The reconnected connection will not be used after all: it is closed and reconnecting goes
     * on. With a turn at the gate, the turn is given back and what the gate held goes on to the
     * other connections (or waits again if none is usable); completes when that is done. If
     * its replay broke off, the server may now hold older bytes from the journal for some
     * blocks: the journal is first written again whole on a connection that works.
     */
    private CompletableFuture<Void> notAdopted(int slot, NbdConnection connection, int attempt, Turn turn,
            Throwable cause, boolean replayBrokeOff) {
        connection.channel().close();
        attempt(slot, attempt + 1, cause);
        if (turn == null) {
            return CompletableFuture.completedFuture(null); // one connection: everything waits for it anyway
        }
        CompletableFuture<Void> before = replayBrokeOff ? replayElsewhere() : CompletableFuture.completedFuture(null);
        return before.handle((v, e) -> {
            List<NbdRequest> held;
            synchronized (this) {
                releaseLocked(turn);
                held = gateClosed ? List.of() : takeWaiting();
            }
            resend(held);
            return null;
        });
    }

    /**
     * Writes the whole journal again on a usable connection (the others are quiet: the gate is
     * closed), trying the next if one breaks. With none usable nothing can be sent before the
     * next connection back writes it again first.
     */
    private CompletableFuture<Void> replayElsewhere() {
        NbdConnection other = session.usableConnection();
        List<WriteJournal.Entry> replay = other == null || closedNow() ? null : session.journalReplay();
        if (replay == null || replay.isEmpty()) {
            return CompletableFuture.completedFuture(null);
        }
        LOG.info("writing again on another connection the " + replay.size() + " writes acknowledged since the last "
                + "flush: a replay broke off");
        return writeAgain(other, replay, other.export()).handle((v, e) -> e == null || closedNow()
                ? CompletableFuture.<Void>completedFuture(null) : replayElsewhere()).thenCompose(f -> f);
    }

    private synchronized void release(Turn turn) {
        releaseLocked(turn);
    }

    /** Gives the turn back (once; null: none was taken); the last one due opens the gate. Under this lock. */
    private void releaseLocked(Turn turn) {
        if (turn != null && !turn.released) {
            turn.released = true;
            if (--replaysDue == 0) {
                gateClosed = false;
            }
        }
    }

    /**
     * Writes the journal again on {@code connection}, then puts it in its slot; completes when
     * that is done, or the replay failed and reconnecting goes on. {@code turn}: the gate's
     * turn it had (null: none), given back here.
     */
    private CompletableFuture<Void> replayThenAdopt(int slot, NbdConnection connection, int attempt, Turn turn) {
        if (closedNow()) {
            release(turn);
            connection.disconnect();
            return CompletableFuture.completedFuture(null);
        }
        ExportInfo before = session.export();
        ExportInfo now = connection.export();
        List<WriteJournal.Entry> replay = session.journalReplay();
        if (replay == null) {
            LOG.warning("reconnected to " + session.uri() + ", but not every write acknowledged since the last flush "
                    + "was kept: if the server lost some, they are lost; the next flush fails");
            session.recordLoss("more was written since the last flush than the journal keeps, and the connection was lost");
            adopt(slot, connection, attempt, before, now, turn);
            return CompletableFuture.completedFuture(null);
        }
        if (replay.isEmpty()) {
            adopt(slot, connection, attempt, before, now, turn);
            return CompletableFuture.completedFuture(null);
        }
        long bytes = replay.stream().mapToLong(e -> e.data() == null ? 0 : e.length()).sum();
        return writeAgain(connection, replay, now).handle((v, error) -> {
            if (closedNow()) {
                release(turn);
                connection.disconnect();
                return CompletableFuture.<Void>completedFuture(null);
            }
            if (error != null) {
                Throwable cause = NbdSession.unwrap(error);
                LOG.warning("writing again what was not flushed failed (" + cause.getMessage() + "); reconnecting again");
                return notAdopted(slot, connection, attempt, turn, cause, true);
            }
            LOG.info("wrote again " + replay.size() + " writes (" + bytes + " bytes) acknowledged since the last flush");
            adopt(slot, connection, attempt, before, now, turn);
            return CompletableFuture.<Void>completedFuture(null);
        }).thenCompose(f -> f);
    }

    /**
     * Writes {@code replay} (the journal's entries) again on {@code connection}, then FLUSHes there,
     * which makes them durable and lets the journal go of them: connections coming back after this
     * one have nothing to write again, and a second restart of the server finds only what was
     * written since. When the server refused one of the writes (or refuses the FLUSH), the journal
     * keeps them all for the next replay. Fails only when the connection is lost.
     */
    private CompletableFuture<Void> writeAgain(NbdConnection connection, List<WriteJournal.Entry> replay, ExportInfo now) {
        long lastSeq = replay.get(replay.size() - 1).seq();
        AtomicBoolean refused = new AtomicBoolean();
        CompletableFuture<Void> done = new CompletableFuture<>();
        replayBatch(connection, WriteJournal.batches(replay), 0, now, refused, done);
        return done.thenCompose(v -> refused.get() || now.readOnly() || !now.has(TransmissionFlag.SEND_FLUSH)
                ? CompletableFuture.completedFuture(null) : flushReplayed(connection, lastSeq));
    }

    /** The FLUSH that ends a replay; on success the journal lets go of every entry up to {@code lastSeq}. */
    private CompletableFuture<Void> flushReplayed(NbdConnection connection, long lastSeq) {
        CompletableFuture<Void> flushed = new CompletableFuture<>();
        NbdRequest flush = new NbdRequest(Command.FLUSH, 0, 0, 0, null, (r, failure) -> {
            if (failure == null) {
                session.journalFlushed(lastSeq);
                flushed.complete(null);
            } else if (failure instanceof org.nbdroot.proto.NbdServerErrorException || failure instanceof NbdUnsupportedException) {
                LOG.warning("the FLUSH after writing again what was not flushed failed (" + failure.getMessage()
                        + "): the writes stay kept for another replay");
                session.recordLoss("the server failed the FLUSH after writing them again (" + failure.getMessage() + ")");
                flushed.complete(null);
            } else {
                flushed.completeExceptionally(failure);
            }
        });
        flush.replay = true; // fails with its connection, like the replay's writes
        connection.submit(flush);
        return flushed;
    }

    /** Releases the data of journal entries that will not be sent. */
    private static void releaseData(List<List<WriteJournal.Entry>> batches) {
        batches.forEach(b -> b.forEach(e -> {
            if (e.data() != null) {
                e.data().release();
            }
        }));
    }

    /** Sends one batch of journal entries (none overlapping), then the next once all are answered. */
    private void replayBatch(NbdConnection connection, List<List<WriteJournal.Entry>> batches, int index, ExportInfo now,
            AtomicBoolean refused, CompletableFuture<Void> done) {
        if (index == batches.size()) {
            done.complete(null);
            return;
        }
        if (closedNow()) {
            releaseData(batches.subList(index, batches.size()));
            done.completeExceptionally(new NbdException("the session was closed"));
            return;
        }
        List<WriteJournal.Entry> batch = batches.get(index);
        AtomicInteger remaining = new AtomicInteger(); // set once the batch's requests are known
        java.util.concurrent.atomic.AtomicReference<Throwable> lost = new java.util.concurrent.atomic.AtomicReference<>();
        Runnable oneDone = () -> {
            if (remaining.decrementAndGet() == 0) {
                if (lost.get() == null) {
                    replayBatch(connection, batches, index + 1, now, refused, done);
                } else {
                    releaseData(batches.subList(index + 1, batches.size()));
                    done.completeExceptionally(lost.get());
                }
            }
        };
        List<WriteJournal.Entry> sendable = new ArrayList<>(batch.size());
        for (WriteJournal.Entry e : batch) {
            Replay replay = replayOf(e, now);
            if (replay.problem() != null) {
                LOG.severe("cannot write again the acknowledged " + e.describe() + ": " + replay.problem());
                if (e.command() != Command.TRIM) { // a trimmed range may read back as anything: nothing is lost
                    session.recordLoss("cannot write again the acknowledged " + e.describe() + ": " + replay.problem());
                }
            }
            sendable.addAll(replay.entries());
            if (replay.entries().size() != 1 || replay.entries().get(0) != e) {
                if (e.data() != null) {
                    e.data().release();
                }
            }
        }
        remaining.set(sendable.size() + 1);
        for (WriteJournal.Entry e : sendable) {
            int flags = e.flags() & ~org.nbdroot.proto.wire.CommandFlag.FAST_ZERO;
            if (!now.has(TransmissionFlag.SEND_FUA)) {
                flags &= ~org.nbdroot.proto.wire.CommandFlag.FUA;
            }
            NbdRequest request = new NbdRequest(e.command(), flags, e.offset(), e.length(), e.data(), (r, failure) -> {
                // Refused by the server, or by the connection as its export cannot take it: not a lost connection.
                if (failure instanceof org.nbdroot.proto.NbdServerErrorException || failure instanceof NbdUnsupportedException) {
                    LOG.severe("writing again the acknowledged " + e.describe() + " failed: " + failure.getMessage());
                    refused.set(true); // it stays in the journal: the next replay tries it again
                    session.recordLoss("the server refused to write again the acknowledged " + e.describe() + " ("
                            + failure.getMessage() + ")");
                } else if (failure != null) {
                    lost.compareAndSet(null, failure);
                }
                oneDone.run();
            });
            request.replay = true;
            connection.submit(request);
        }
        oneDone.run(); // the batch's own count: it completes even when nothing in it could be sent
    }

    /**
     * How one acknowledged entry is written again: itself; its part below the export's new end
     * when the export shrank across it (skipping it whole would leave an older write over the
     * same range, replayed before it, over the newer bytes the server still holds); or nothing,
     * with why, when the export as it is now cannot take it. A WRITE_ZEROES the export no longer
     * offers is written again as WRITEs of zeroes, for the same reason.
     */
    record Replay(List<WriteJournal.Entry> entries, String problem) {}

    /** Never written to: the payload of every WRITE that stands in for a WRITE_ZEROES. */
    private static final byte[] ZEROES = new byte[1 << 20];

    static Replay replayOf(WriteJournal.Entry e, ExportInfo now) {
        String problem = e.offset() >= now.size() ? "the export shrank to " + now.size() + " bytes"
                : now.readOnly() ? "the export became read-only"
                : e.command() == Command.TRIM && !now.has(TransmissionFlag.SEND_TRIM) ? "the export no longer offers send_trim"
                : null;
        if (problem != null) {
            return new Replay(List.of(), problem);
        }
        if (e.offset() + e.length() > now.size()) {
            int kept = (int) (now.size() - e.offset());
            WriteJournal.Entry below = new WriteJournal.Entry(e.seq(), e.command(), e.flags(), e.offset(), kept,
                    e.data() == null ? null : e.data().retainedSlice(e.data().readerIndex(), kept));
            Replay rest = replayOf(below, now);
            return new Replay(rest.entries(), "the export shrank to " + now.size() + " bytes: only its first "
                    + kept + " bytes are written again");
        }
        if (e.command() != Command.WRITE_ZEROES || now.has(TransmissionFlag.SEND_WRITE_ZEROES)) {
            return new Replay(List.of(e), null);
        }
        int fua = e.flags() & org.nbdroot.proto.wire.CommandFlag.FUA;
        // Every piece wraps the same zeroes: a 1 GiB WRITE_ZEROES must not become 1 GiB of heap.
        int piece = Math.min(now.blockSize().maximumPayload(), ZEROES.length);
        List<WriteJournal.Entry> writes = new ArrayList<>();
        for (long done = 0; done < e.length(); done += piece) {
            int length = (int) Math.min(piece, e.length() - done);
            writes.add(new WriteJournal.Entry(e.seq(), Command.WRITE, fua, e.offset() + done, length,
                    io.netty.buffer.Unpooled.wrappedBuffer(ZEROES, 0, length)));
        }
        return new Replay(writes, null);
    }

    private void adopt(int slot, NbdConnection connection, int attempt, ExportInfo before, ExportInfo now, Turn turn) {
        if (closedNow()) {
            release(turn);
            connection.disconnect();
            return;
        }
        if (!connection.isUsable()) {
            // It broke while waiting for its turn; its loss, reported before it had a slot, went unheard.
            // Its replay, if it had one, was answered whole: nothing to write again elsewhere.
            notAdopted(slot, connection, attempt, turn, new NbdException("the connection closed before it was back in use"),
                    false);
            return;
        }
        session.replace(slot, connection, now);
        if (closedNow()) {
            connection.disconnect(); // the session closed its connections just before this one took its slot
        }
        reconnects.incrementAndGet();
        try {
            session.observer().reconnected();
        } catch (RuntimeException e) {
            LOG.log(java.util.logging.Level.WARNING, "the request observer failed", e);
        }
        List<NbdRequest> batch;
        synchronized (this) {
            releaseLocked(turn); // while other replays are due, what is sent again below waits here once more
            reconnecting[slot] = false;
            adoptedAt[slot] = System.nanoTime();
            adoptedAtAttempt[slot] = attempt;
            answeredAtAdoption[slot] = connection.answered();
            batch = new ArrayList<>(waiting);
            waiting.clear();
        }
        LOG.info("reconnected to " + session.uri() + " after " + (attempt + 1) + " attempts; sending " + batch.size()
                + " requests again");
        if (now.size() > before.size()) {
            LOG.info("the export grew from " + before.size() + " to " + now.size() + " bytes");
            try {
                growth.accept(now);
            } catch (RuntimeException e) {
                LOG.log(java.util.logging.Level.WARNING, "the export's growth listener failed", e);
            }
        }
        List<NbdRequest> sendable = new ArrayList<>(batch.size());
        for (NbdRequest r : batch) {
            String problem = ExportFit.problem(r, now, before.size());
            if (problem == null) {
                sendable.add(r);
            } else {
                LOG.severe("after reconnecting, " + r.describe() + " fails: " + problem);
                fail(List.of(r), new NbdUnsupportedException(r.describe() + " fails after reconnecting: " + problem));
            }
        }
        resend(sendable);
        if (!connection.isUsable() && !closedNow()) {
            // It broke just as it took its slot; its loss, reported before, went unheard.
            connectionLost(connection, new NbdException("the connection closed before it was back in use"), List.of());
        }
    }

    /** Sends requests again: everything but FLUSH at once, each FLUSH once all before it are answered. */
    private void resend(List<NbdRequest> batch) {
        List<NbdRequest> flushes = new ArrayList<>();
        List<NbdRequest> others = new ArrayList<>();
        for (NbdRequest r : batch) {
            (r.command == Command.FLUSH ? flushes : others).add(r);
        }
        if (flushes.isEmpty()) {
            others.forEach(session::submit);
            return;
        }
        AtomicInteger remaining = new AtomicInteger(others.size() + 1);
        Runnable oneDone = () -> {
            if (remaining.decrementAndGet() == 0) {
                flushes.forEach(session::submit);
            }
        };
        for (NbdRequest r : others) {
            NbdRequest.Completion original = r.completion;
            r.completion = (request, failure) -> {
                original.complete(request, failure);
                oneDone.run();
            };
            session.submit(r);
        }
        oneDone.run();
    }

    private synchronized List<NbdRequest> takeWaiting() {
        List<NbdRequest> all = new ArrayList<>(waiting);
        waiting.clear();
        return all;
    }

    private synchronized boolean closedNow() {
        return closed;
    }

    /** The session is closing: nothing waits any more. */
    void close() {
        List<NbdRequest> abandoned;
        synchronized (this) {
            closed = true;
            abandoned = takeWaiting();
        }
        fail(abandoned, new NbdException("the session was closed while the request waited for a reconnect"));
    }

    private static void fail(List<NbdRequest> requests, Throwable cause) {
        for (NbdRequest r : requests) {
            r.releaseBuffers();
            r.completion.complete(r, cause);
        }
    }
}
