package org.nbdroot.proto.session;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.nbdroot.proto.WireBytes.simpleReply;
import static org.nbdroot.proto.session.SessionFixture.dataAt;

import io.netty.buffer.Unpooled;
import java.lang.reflect.Field;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import org.junit.jupiter.api.Test;
import org.nbdroot.proto.BlockSize;
import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.session.SessionFixture.Request;

/**
 * A server that acknowledges writes faster than it flushes: while the journal's own FLUSH is
 * out and the journal has no room left, further writes wait instead of overflowing it (which
 * would keep nothing for a replay until the next FLUSH).
 */
class JournalBackpressureTest {
    private static final int HAS_FLAGS = 1;
    private static final int SEND_FLUSH = 1 << 2;
    private static final int CMD_WRITE = 1;
    private static final int CMD_FLUSH = 3;
    private static final int BLOCK = 4096;
    /** Room for 16 kept 4 KiB writes (each counts its data and 64 bytes); its own FLUSH after 9. */
    private static final long LIMIT = 16L * (BLOCK + 64);

    private final ExportInfo export = new ExportInfo("disk", null, 1 << 20, HAS_FLAGS | SEND_FLUSH,
            new BlockSize(512, 4096, 64 * 1024), true, false, Map.of());
    private final SessionFixture f = new SessionFixture(export);
    private final WriteJournal journal = new WriteJournal(LIMIT);

    JournalBackpressureTest() throws ReflectiveOperationException {
        Field j = NbdSession.class.getDeclaredField("journal");
        j.setAccessible(true);
        j.set(f.session, journal);
    }

    /** Lent writes count exactly their data and 64 bytes (kept ones reserve for up to twice their buffer). */
    private CompletableFuture<Void> write(int block) {
        return f.session.writeBorrowed((long) block * BLOCK, Unpooled.wrappedBuffer(dataAt((long) block * BLOCK, BLOCK)),
                false);
    }

    private static List<Request> of(List<Request> sent, int type) {
        return sent.stream().filter(r -> r.type() == type).toList();
    }

    /** Nine writes answered: the journal passes half its limit and sends its FLUSH, left unanswered here. */
    private Request fillToTheJournalsFlush(List<CompletableFuture<Void>> writes) {
        for (int i = 0; i < 9; i++) {
            writes.add(write(i));
            Request w = f.sent().get(0);
            f.reply(simpleReply(0, w.handle(), null));
        }
        List<Request> flush = of(f.sent(), CMD_FLUSH);
        assertEquals(1, flush.size(), "past half its limit the journal sends a FLUSH of its own");
        return flush.get(0);
    }

    @Test
    void writesWaitForTheJournalsFlushInsteadOfOverflowingIt() {
        List<CompletableFuture<Void>> writes = new ArrayList<>();
        Request flush = fillToTheJournalsFlush(writes);
        for (int i = 9; i < 21; i++) {
            writes.add(write(i));
        }
        List<Request> sent = of(f.sent(), CMD_WRITE);
        assertEquals(7, sent.size(), "only what the journal still has room for goes out while its FLUSH is out");
        sent.forEach(r -> f.reply(simpleReply(0, r.handle(), null)));
        assertTrue(journal.isComplete(), "the journal kept every acknowledged write");
        assertEquals(16, journal.size());

        f.reply(simpleReply(0, flush.handle(), null));
        List<Request> rest = of(f.sent(), CMD_WRITE);
        assertEquals(5, rest.size(), "the FLUSH done, the writes held back go out");
        for (int i = 0; i < rest.size(); i++) {
            assertEquals((long) (16 + i) * BLOCK, rest.get(i).offset(), "in the order they were written");
        }
        rest.forEach(r -> f.reply(simpleReply(0, r.handle(), null)));
        writes.forEach(w -> assertTrue(w.isDone() && !w.isCompletedExceptionally()));
        assertTrue(journal.isComplete());
        assertEquals(12, journal.size(), "the FLUSH emptied the journal of what it covered; the 12 after it are kept");
        f.session.disconnect();
        f.finishWithoutLeaks();
    }

    /**
     * A FLUSH that fails once empties nothing: the held writes wait for another FLUSH, then go;
     * none fails for it. The caller's next FLUSH reports the failure, once.
     */
    @Test
    void aFailedFlushIsSentAgainAndTheHeldWritesGoAfterIt() {
        List<CompletableFuture<Void>> writes = new ArrayList<>();
        List<Request> next = failTheJournalsFlushWithWritesHeld(writes);
        assertEquals(1, of(next, CMD_FLUSH).size(), "another FLUSH is asked for");
        // The server now answers everything, FLUSHes included, until nothing more is sent.
        for (int round = 0; round < 20 && !next.isEmpty(); round++) {
            next.forEach(r -> f.reply(simpleReply(0, r.handle(), null)));
            next = f.sent();
        }
        writes.forEach(w -> assertTrue(w.isDone() && !w.isCompletedExceptionally(),
                "a write is neither stuck nor failed for its journal's FLUSH"));
        assertEquals("the server failed a FLUSH (NBD_CMD_FLUSH of 0 bytes at offset 0 failed: EIO (input/output error))",
                callersFlushFailure());
        f.session.disconnect();
        f.finishWithoutLeaks();
    }

    /**
     * The journal's FLUSH is out and eleven writes wait for room; the writes sent are answered
     * and the FLUSH gets EIO. Returns what the session sends then.
     */
    private List<Request> failTheJournalsFlushWithWritesHeld(List<CompletableFuture<Void>> writes) {
        Request flush = fillToTheJournalsFlush(writes);
        for (int i = 9; i < 20; i++) {
            writes.add(write(i));
        }
        of(f.sent(), CMD_WRITE).forEach(r -> f.reply(simpleReply(0, r.handle(), null)));
        f.reply(simpleReply(5, flush.handle(), null)); // EIO
        List<Request> next = f.sent();
        assertEquals(List.of(), of(next, CMD_WRITE), "still no room after one failure: the journal is full");
        return next;
    }

    /** A caller's FLUSH, answered at once; the start of its failure's message cut off, or null when it succeeded. */
    private String callersFlushFailure() {
        CompletableFuture<Void> flush = f.session.flush();
        f.sent().forEach(r -> f.reply(simpleReply(0, r.handle(), null)));
        assertTrue(flush.isDone());
        String prefix = "writes acknowledged before this flush may be missing on the server: ";
        return flush.handle((v, e) -> e == null ? null : NbdSession.unwrap(e).getMessage().replace(prefix, "")).join();
    }

    /**
     * The FLUSH sent again fails too (a disk that fails every FLUSH): the journal lets go of what
     * it kept and the held writes go at once, with no third FLUSH they would wait for.
     */
    @Test
    void aFlushThatFailsTwiceInARowLetsTheHeldWritesGo() {
        List<CompletableFuture<Void>> writes = new ArrayList<>();
        List<Request> again = failTheJournalsFlushWithWritesHeld(writes);
        f.reply(simpleReply(5, of(again, CMD_FLUSH).get(0).handle(), null)); // EIO again
        List<Request> released = f.sent();
        assertEquals(0, journal.size(), "the journal let go of what it kept");
        assertTrue(of(released, CMD_WRITE).size() > 0, "the held writes went out");
        for (int round = 0; round < 20 && !released.isEmpty(); round++) {
            released.forEach(r -> f.reply(simpleReply(r.type() == CMD_FLUSH ? 5 : 0, r.handle(), null)));
            released = f.sent();
        }
        writes.forEach(w -> assertTrue(w.isDone() && !w.isCompletedExceptionally(), "no write is stuck or failed"));
        assertTrue(callersFlushFailure().startsWith("the server failed a FLUSH"));
        assertEquals(null, callersFlushFailure(), "reported once");
        f.session.disconnect();
        f.finishWithoutLeaks();
    }

    /** Before any FLUSH is out: a write that finds no room asks for one and waits for it. */
    @Test
    void aWriteWithNoRoomAsksForTheFlush() {
        List<CompletableFuture<Void>> writes = new ArrayList<>();
        for (int i = 0; i < 20; i++) {
            writes.add(write(i));
        }
        List<Request> sent = f.sent();
        assertEquals(16, of(sent, CMD_WRITE).size(), "as many as the journal has room for, counting those in flight");
        assertEquals(1, of(sent, CMD_FLUSH).size(), "the 17th asks for the journal's FLUSH");
        Request flush = of(sent, CMD_FLUSH).get(0);
        of(sent, CMD_WRITE).forEach(r -> f.reply(simpleReply(0, r.handle(), null)));
        assertTrue(journal.isComplete());
        f.reply(simpleReply(0, flush.handle(), null));
        List<Request> next = f.sent();
        for (int round = 0; round < 20 && !next.isEmpty(); round++) {
            next.forEach(r -> f.reply(simpleReply(0, r.handle(), null)));
            next = f.sent();
        }
        writes.forEach(w -> assertTrue(w.isDone() && !w.isCompletedExceptionally()));
        assertTrue(journal.isComplete(), "it never overflowed");
        f.session.disconnect();
        f.finishWithoutLeaks();
    }

    /**
     * A reconnect found the export without FLUSH while writes wait for room: nothing could ever
     * empty the journal, so it is given up and the held writes go (they used to wait for ever,
     * the refused FLUSH asking for itself again until the stack overflowed).
     */
    @Test
    void anExportThatNoLongerTakesAFlushReleasesTheHeldWrites() throws Exception {
        List<CompletableFuture<Void>> writes = new ArrayList<>();
        Request flush = fillToTheJournalsFlush(writes);
        for (int i = 9; i < 20; i++) {
            writes.add(write(i));
        }
        of(f.sent(), CMD_WRITE).forEach(r -> f.reply(simpleReply(0, r.handle(), null)));
        ExportInfo withoutFlush = new ExportInfo("disk", null, 1 << 20, HAS_FLAGS, new BlockSize(512, 4096, 64 * 1024),
                true, false, Map.of());
        f.session.replace(0, f.conn, withoutFlush); // as a reconnect adopts it (this connection stands in for the new one)
        f.reply(simpleReply(5, flush.handle(), null)); // the old connection's FLUSH fails: EIO

        List<Request> rest = f.sent();
        assertEquals(List.of(), of(rest, CMD_FLUSH), "no FLUSH is sent to an export that does not take it");
        assertEquals(4, of(rest, CMD_WRITE).size(), "the held writes went");
        rest.forEach(r -> f.reply(simpleReply(0, r.handle(), null)));
        writes.forEach(w -> assertTrue(w.isDone() && !w.isCompletedExceptionally()));
        assertEquals(0, journal.size(), "the journal keeps nothing any more");
        assertEquals(0, f.session.unflushedBytes(), "nor does the session");
        f.session.disconnect();
        f.finishWithoutLeaks();
    }

    @Test
    void writesHeldWhenTheSessionClosesFailSayingSo() {
        List<CompletableFuture<Void>> writes = new ArrayList<>();
        fillToTheJournalsFlush(writes);
        for (int i = 9; i < 17; i++) {
            writes.add(write(i));
        }
        f.sent();
        CompletableFuture<Void> held = writes.get(writes.size() - 1);
        assertFalse(held.isDone());
        f.session.disconnect();
        assertTrue(held.isCompletedExceptionally());
        String message = held.handle((v, e) -> e.getMessage()).join();
        assertTrue(message.contains("closed before") && message.contains("NBD_CMD_WRITE"), message);
        f.finishWithoutLeaks();
    }
}
