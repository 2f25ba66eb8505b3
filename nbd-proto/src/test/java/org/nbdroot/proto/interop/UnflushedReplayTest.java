package org.nbdroot.proto.interop;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.session.ReconnectPolicy;
import org.nbdroot.proto.session.SessionOptions;
import org.nbdroot.proto.testing.ScriptedNbdServer;
import org.nbdroot.proto.transport.NbdUri;

/**
 * A server with a volatile write cache restarts and loses every write it acknowledged but
 * never flushed. The session kept them (its journal) and writes them again, in order, on the
 * new connection before anything else: the export ends up holding every acknowledged write.
 * Without the journal the same crash visibly loses writes, so the scenario is a real one.
 */
class UnflushedReplayTest {
    @RegisterExtension
    static final EngineExtension engine = new EngineExtension(2);

    static final int DISK = 4 << 20;
    static final int BLOCK = 4096;

    private static SessionOptions options(long replayLimit) {
        return SessionOptions.DEFAULT.withReconnect(
                new ReconnectPolicy(Duration.ofMillis(20), Duration.ofMillis(200), 0, replayLimit));
    }

    private static ScriptedNbdServer server() throws Exception {
        return ScriptedNbdServer.builder().size(DISK).volatileWriteCache().start();
    }

    private static NbdSession connect(ScriptedNbdServer server, SessionOptions options) throws Exception {
        return NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()), options).get(10, TimeUnit.SECONDS);
    }

    private static void write(NbdSession session, byte[] model, long offset, byte[] data) throws Exception {
        session.write(offset, Unpooled.wrappedBuffer(data.clone()), false).get(10, TimeUnit.SECONDS);
        System.arraycopy(data, 0, model, (int) offset, data.length);
    }

    private static byte[] random(Random random, int length) {
        byte[] b = new byte[length];
        random.nextBytes(b);
        return b;
    }

    /** Waits until the session has reconnected {@code n} times and a request goes through. */
    private static void awaitReconnects(NbdSession session, int n) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (session.reconnects() < n && System.nanoTime() < deadline) {
            Thread.sleep(10);
        }
        assertEquals(n, session.reconnects(), "the session reconnected after the crash");
        session.read(0, BLOCK).get(10, TimeUnit.SECONDS).release();
    }

    private static void assertReadsBack(NbdSession session, byte[] model) throws Exception {
        ByteBuf back = session.read(0, DISK).get(10, TimeUnit.SECONDS);
        byte[] got = new byte[DISK];
        back.readBytes(got);
        back.release();
        assertEquals(-1, Arrays.mismatch(model, got), "what the session reads back");
    }

    @Test
    void unflushedWritesLostInACrashAreWrittenAgainInOrder() throws Exception {
        Random random = new Random(31);
        byte[] model = new byte[DISK];
        try (ScriptedNbdServer server = server();
                NbdSession session = connect(server, options(1 << 20))) {
            write(session, model, 0, random(random, 256 << 10));
            session.flush().get(10, TimeUnit.SECONDS);
            assertEquals(0, session.unflushedBytes(), "a flush empties the journal");
            byte[] flushed = model.clone();

            // Unflushed: the same block written twice (order matters), a write across flushed data, a trim, a zero.
            write(session, model, 8192, random(random, BLOCK));
            write(session, model, 8192, random(random, BLOCK));
            write(session, model, 100 << 10, random(random, 200 << 10));
            session.trim(16384, 8192, false).get(10, TimeUnit.SECONDS);
            Arrays.fill(model, 16384, 16384 + 8192, (byte) 0);
            session.writeZeroes(1 << 20, 65536, 0).get(10, TimeUnit.SECONDS);
            Arrays.fill(model, 1 << 20, (1 << 20) + 65536, (byte) 0);
            write(session, model, 16384 + 4096, random(random, BLOCK)); // into the trimmed range, after the trim
            assertEquals(3 * BLOCK + (200 << 10), session.unflushedBytes(), "three writes' data kept (trim and zero have none)");

            byte[] afterCrash = server.crash(); // the session writes again at once: contents() would race it
            assertNotEquals(-1, Arrays.mismatch(model, afterCrash), "the crash lost acknowledged writes");
            assertEquals(-1, Arrays.mismatch(flushed, afterCrash), "the server went back to what was flushed");

            awaitReconnects(session, 1);
            assertEquals(-1, Arrays.mismatch(model, server.contents()), "every acknowledged write is back, in order");
            assertReadsBack(session, model);
            assertEquals(List.of(), server.violations());

            session.flush().get(10, TimeUnit.SECONDS);
            assertEquals(0, session.unflushedBytes());
            server.crash(); // nothing unflushed: nothing to lose, nothing written again
            awaitReconnects(session, 2);
            assertEquals(-1, Arrays.mismatch(model, server.contents()));
        }
    }

    @Test
    void aCrashInTheMiddleOfAWriteLoadLosesNothing() throws Exception {
        byte[] model = new byte[DISK];
        try (ScriptedNbdServer server = server();
                NbdSession session = connect(server, options(64 << 20))) {
            int count = DISK / BLOCK; // each block once: writes in flight together may land in any order
            WriteLoad load = new WriteLoad(session, model, 32)
                    .at(count / 3, () -> session.flush().get(10, TimeUnit.SECONDS)) // some of it durable, the rest not
                    .at(2 * count / 3, server::crash)
                    .run(count, Duration.ofSeconds(30));
            assertEquals(List.of(), load.failures());
            assertEquals(1, session.reconnects());
            assertEquals(-1, Arrays.mismatch(model, server.contents()), "the export holds every acknowledged write");
            assertReadsBack(session, model);
        }
    }

    /**
     * A replay ends with a FLUSH: what was written again is durable, and the journal lets go of it.
     * A second restart, with no FLUSH from the caller in between, then loses nothing.
     */
    @Test
    void aReplayEndsWithAFlushThatMakesItDurableAndEmptiesTheJournal() throws Exception {
        Random random = new Random(36);
        byte[] model = new byte[DISK];
        try (ScriptedNbdServer server = server();
                NbdSession session = connect(server, options(1 << 20))) {
            for (int i = 0; i < 8; i++) {
                write(session, model, (long) i * 65536, random(random, BLOCK));
            }
            assertEquals(8 * BLOCK, session.unflushedBytes());
            server.crash();
            awaitReconnects(session, 1);
            assertEquals(0, session.unflushedBytes(), "the FLUSH after the replay emptied the journal");
            byte[] left = server.crash(); // the disk as a second restart leaves it: what was made durable
            assertEquals(-1, Arrays.mismatch(model, left), "what was written again was flushed");
            awaitReconnects(session, 2);
            assertReadsBack(session, model);
        }
    }

    /**
     * A replayed write the server refuses was not written again, and a refused FLUSH made nothing
     * durable: either way the journal keeps everything, so the next replay writes it all again.
     * {@code refused}: which request after the crash gets EIO (1: the first replayed write;
     * 3: the FLUSH after both).
     */
    @ParameterizedTest
    @ValueSource(ints = {1, 3})
    void aReplayWithARequestTheServerRefusedKeepsTheJournal(int refused) throws Exception {
        Random random = new Random(38);
        byte[] model = new byte[DISK];
        try (ScriptedNbdServer server = server();
                NbdSession session = connect(server, options(1 << 20))) {
            crashWithAReplayRefused(server, session, model, random, refused);
            assertEquals(2 * BLOCK, session.unflushedBytes(), "both writes still kept for replay");
            server.crash();
            awaitReconnects(session, 2);
            assertEquals(-1, Arrays.mismatch(model, server.contents()), "the next replay wrote everything again");
        }
    }

    /** Two writes, then a crash whose replay gets EIO for request {@code refused} after it (not executed). */
    private static void crashWithAReplayRefused(ScriptedNbdServer server, NbdSession session, byte[] model, Random random,
            int refused) throws Exception {
        write(session, model, 0, random(random, BLOCK));
        write(session, model, 65536, random(random, BLOCK));
        server.armFault(ScriptedNbdServer.Fault.SIMPLE_ERROR, refused);
        server.crash();
        awaitReconnects(session, 1);
        assertEquals(List.of(ScriptedNbdServer.Fault.SIMPLE_ERROR), server.firedFaults());
    }

    /**
     * What the replay could not put back must not be called durable: after a replayed write (1)
     * or the replay's FLUSH (3) was refused, the caller's next FLUSH fails naming the loss, as a
     * kernel reports a lost write at the next fsync. Once: the FLUSH after it succeeds.
     */
    @ParameterizedTest
    @ValueSource(ints = {1, 3})
    void aReplayTheServerRefusedFailsTheNextFlushOnce(int refused) throws Exception {
        Random random = new Random(39);
        byte[] model = new byte[DISK];
        try (ScriptedNbdServer server = server();
                NbdSession session = connect(server, options(1 << 20))) {
            crashWithAReplayRefused(server, session, model, random, refused);
            Throwable failure = EngineExtension.failureOf(session.flush());
            assertTrue(failure.getMessage().startsWith("writes acknowledged before this flush may be missing on the server: "),
                    failure.getMessage());
            assertTrue(failure.getMessage().contains(refused == 1 ? "refused to write again" : "failed the FLUSH"),
                    failure.getMessage());
            session.flush().get(10, TimeUnit.SECONDS); // reported once
            // Without the loss, the FLUSH succeeds: a crash with nothing refused reports nothing.
            write(session, model, 8192, random(random, BLOCK));
            server.crash();
            awaitReconnects(session, 2);
            session.flush().get(10, TimeUnit.SECONDS);
        }
    }

    /**
     * A server whose disk fails every FLUSH, with writes held for room in the journal: they
     * used to wait for ever while the session sent FLUSH after FLUSH as fast as the server
     * refused them. Now the journal lets go, the writes complete, no FLUSH goes out while
     * nothing is written, and the caller's next FLUSH fails saying why.
     */
    @Test
    void aServerThatFailsEveryFlushNeitherHangsWritesNorGetsAFlushStorm() throws Exception {
        Random random = new Random(40);
        byte[] model = new byte[DISK];
        long limit = 256 << 10;
        try (ScriptedNbdServer server = server();
                NbdSession session = connect(server, options(limit))) {
            server.failFlushes(true);
            List<CompletableFuture<Void>> writes = new java.util.ArrayList<>();
            for (int i = 0; i < 256; i++) { // 1 MiB: four times the limit, 32 in flight
                byte[] data = random(random, BLOCK);
                System.arraycopy(data, 0, model, i * BLOCK, BLOCK);
                writes.add(session.write((long) i * BLOCK, Unpooled.wrappedBuffer(data), false));
                if (writes.size() >= 32) {
                    writes.remove(0).get(10, TimeUnit.SECONDS);
                }
            }
            for (CompletableFuture<Void> w : writes) {
                w.get(10, TimeUnit.SECONDS);
            }
            // The last acknowledgement may have sent one more; after that, none while nothing is written.
            long before;
            long after = flushes(server);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
            do {
                before = after;
                Thread.sleep(300);
                after = flushes(server);
            } while (after != before && System.nanoTime() < deadline);
            assertEquals(before, after, "no FLUSH is sent again and again while nothing is written");
            assertTrue(after >= 1 && after < 64, after + " FLUSHes of the session's own for 256 writes");
            server.failFlushes(false);
            Throwable failure = EngineExtension.failureOf(session.flush());
            assertTrue(failure.getMessage().contains("the server failed a FLUSH"), failure.getMessage());
            session.flush().get(10, TimeUnit.SECONDS);
            assertReadsBack(session, model);
            assertEquals(List.of(), server.violations());
        }
    }

    private static long flushes(ScriptedNbdServer server) {
        return server.requests().stream().filter(r -> r.type() == 3 /* NBD_CMD_FLUSH */).count();
    }

    /** With two connections, the one that comes back second finds the journal empty: nothing is written a third time. */
    @Test
    void withTwoConnectionsTheJournalIsWrittenAgainOnceAfterACrash() throws Exception {
        Random random = new Random(37);
        byte[] model = new byte[DISK];
        try (ScriptedNbdServer server = server();
                NbdSession session = connect(server, options(1 << 20).withConnections(2))) {
            assertEquals(2, session.connectionCount());
            List<Long> offsets = new java.util.ArrayList<>();
            for (int i = 0; i < 8; i++) {
                offsets.add((long) i * 65536);
                write(session, model, (long) i * 65536, random(random, BLOCK));
            }
            server.crash();
            awaitReconnects(session, 2);
            assertEquals(-1, Arrays.mismatch(model, server.contents()));
            for (long offset : offsets) {
                long writes = server.requests().stream().filter(r -> r.type() == 1 && r.offset() == offset).count();
                assertEquals(2, writes, "written, then written again once, at offset " + offset);
            }
            assertEquals(0, session.unflushedBytes());
        }
    }

    /**
     * Two connections (the server sets can_multi_conn): one journal for both, and the crash,
     * in the second pass over the disk (every block written twice, some of it flushed), breaks
     * both. The first back writes the journal again (the other waits its turn); nothing
     * acknowledged is lost.
     */
    @Test
    void withTwoConnectionsACrashInTheMiddleOfAWriteLoadLosesNothing() throws Exception {
        byte[] model = new byte[DISK];
        try (ScriptedNbdServer server = server();
                NbdSession session = connect(server, options(64 << 20).withConnections(2))) {
            assertEquals(2, session.connectionCount());
            int count = DISK / BLOCK;
            WriteLoad load = new WriteLoad(session, model, 36)
                    .readEvery(4)
                    .at(count / 2, () -> session.flush().get(10, TimeUnit.SECONDS))
                    .at(count + count / 3, server::crash)
                    .run(2 * count, Duration.ofSeconds(60));
            assertEquals(List.of(), load.failures());
            assertEquals(List.of(), load.mismatches());
            assertTrue(session.reconnects() >= 2, "both connections came back: " + session.reconnects());
            assertEquals(-1, Arrays.mismatch(model, server.contents()), "the export holds every acknowledged write");
            assertReadsBack(session, model);
        }
    }

    /**
     * Two connections, and now and then one of them drops (the server stays up) while the other
     * goes on writing the same blocks again. The reconnected one writes the journal again; were
     * the other let on meanwhile, a write it had answered could be overwritten by an older one
     * from the journal, and a read could see it. Reads along the way and the export at the end
     * must hold only the newest acknowledged bytes.
     */
    @Test
    void withTwoConnectionsAReplayAfterOneDropsNeverPutsOlderBytesOverNewer() throws Exception {
        byte[] model = new byte[DISK];
        try (ScriptedNbdServer server = server();
                NbdSession session = connect(server, options(64 << 20).withConnections(2))) {
            int count = DISK / BLOCK;
            for (int k = 1; k <= 5; k++) {
                server.armFault(ScriptedNbdServer.Fault.CLOSE_MID_REPLY, k * count / 2);
            }
            WriteLoad load = new WriteLoad(session, model, 37).readEvery(3).run(3 * count, Duration.ofSeconds(60));
            assertEquals(List.of(), load.failures());
            assertEquals(List.of(), load.mismatches());
            assertEquals(5, server.firedFaults().size(), "a connection dropped five times");
            // A drop during a replay (the replay's own writes count as requests) makes that replay start over.
            assertTrue(session.reconnects() >= 2, "connections came back: " + session.reconnects());
            assertEquals(-1, Arrays.mismatch(model, server.contents()), "the export holds the newest acknowledged bytes");
            assertReadsBack(session, model);
        }
    }

    @Test
    void withoutAJournalTheSameCrashLosesWrites() throws Exception {
        Random random = new Random(33);
        byte[] model = new byte[DISK];
        try (ScriptedNbdServer server = server();
                NbdSession session = connect(server, options(0))) {
            write(session, model, 0, random(random, 64 << 10));
            assertEquals(0, session.unflushedBytes(), "nothing kept");
            server.crash();
            awaitReconnects(session, 1);
            assertNotEquals(-1, Arrays.mismatch(model, server.contents()), "lost: what the journal is for");
        }
    }

    @Test
    void theJournalStaysBoundedByFlushesOfItsOwnAndIsDroppedWholeWhenItOverflows() throws Exception {
        Random random = new Random(34);
        byte[] model = new byte[DISK];
        int limit = 256 << 10;
        try (ScriptedNbdServer server = server();
                NbdSession session = connect(server, options(limit))) {
            // Past half the limit, the session flushes by itself.
            for (int i = 0; i < 48; i++) {
                write(session, model, (long) i * BLOCK, random(random, BLOCK));
            }
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (session.unflushedBytes() > limit / 2 && System.nanoTime() < deadline) {
                Thread.sleep(5);
            }
            assertTrue(session.unflushedBytes() <= limit / 2, "kept " + session.unflushedBytes() + " bytes");
            assertTrue(server.requests().stream().anyMatch(r -> r.type() == 3 /* NBD_CMD_FLUSH */),
                    "the session sent a FLUSH of its own");

            // One write larger than the whole limit: the journal is dropped, not kept in part.
            write(session, model, 1 << 20, random(random, 2 * limit));
            assertEquals(0, session.unflushedBytes(), "overflowed: nothing kept");
            session.flush().get(10, TimeUnit.SECONDS); // complete again from here
            byte[] last = random(random, BLOCK);
            write(session, model, 3 << 20, last);
            assertEquals(BLOCK, session.unflushedBytes(), "kept again after a flush");
            server.crash();
            awaitReconnects(session, 1);
            assertEquals(-1, Arrays.mismatch(model, server.contents()), "the write after the flush was written again");
        }
    }
    @Test
    void aBorrowedWriteIsReplayedAsWrittenThoughItsBufferWasReused() throws Exception {
        Random random = new Random(35);
        byte[] model = new byte[DISK];
        try (ScriptedNbdServer server = server();
                NbdSession session = connect(server, options(1 << 20))) {
            // Like a device bridge: one buffer, each request read into it once the previous one completed.
            ByteBuf reused = Unpooled.buffer(BLOCK, BLOCK);
            for (int i = 0; i < 8; i++) {
                byte[] block = random(random, BLOCK);
                reused.clear().writeBytes(block);
                session.writeBorrowed((long) i * BLOCK, reused.retainedSlice(0, BLOCK), false).get(10, TimeUnit.SECONDS);
                System.arraycopy(block, 0, model, i * BLOCK, BLOCK);
            }
            reused.clear().writeBytes(random(random, BLOCK)); // and once more, written nowhere
            assertEquals(1, reused.refCnt(), "the session holds no reference to the reused buffer");
            assertEquals(8 * BLOCK, session.unflushedBytes());

            server.crash();
            awaitReconnects(session, 1);
            assertEquals(-1, Arrays.mismatch(model, server.contents()), "each write again with the bytes it had");
            reused.release();
        }
    }
}
