package org.nbdroot.proto.session;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import org.junit.jupiter.api.Test;
import org.nbdroot.proto.wire.Command;

/**
 * How the journal keeps a write's data: the payload itself when the caller handed its bytes
 * over, a copy when they were only lent or when keeping the payload would hold far more memory
 * than the write; and, over random loads, that what it holds never exceeds its limit.
 */
class WriteJournalTest {
    private static final int OVERHEAD = 64;

    private static NbdRequest write(long offset, ByteBuf payload) {
        return new NbdRequest(Command.WRITE, 0, offset, payload.readableBytes(), payload, (r, f) -> { });
    }

    private static byte[] bytes(ByteBuf b) {
        byte[] out = new byte[b.readableBytes()];
        b.getBytes(b.readerIndex(), out);
        return out;
    }

    private static void releaseAll(List<WriteJournal.Entry> replay) {
        replay.forEach(e -> {
            if (e.data() != null) {
                e.data().release();
            }
        });
    }

    @Test
    void aHandedOverPayloadIsKeptWithoutACopyUntilAFlushCoversIt() {
        WriteJournal journal = new WriteJournal(1 << 20);
        ByteBuf payload = Unpooled.buffer(4096).writeZero(4096);
        NbdRequest request = write(0, payload);
        journal.acknowledged(request, false);
        assertNull(request.payload, "the journal took the request's reference");
        assertEquals(1, payload.refCnt(), "and holds it: nothing released the buffer");
        payload.setByte(0, 7); // only visible in the journal if it kept this very memory (the caller may not do this)
        List<WriteJournal.Entry> replay = journal.replay();
        assertEquals(7, replay.get(0).data().getByte(0));
        releaseAll(replay);
        journal.flushed(journal.mark());
        assertEquals(0, payload.refCnt(), "released once a FLUSH covers it");
        assertEquals(0, journal.counted());
    }

    @Test
    void aLentPayloadIsCopiedSoTheCallerMayReuseItsMemory() {
        WriteJournal journal = new WriteJournal(1 << 20);
        ByteBuf reused = Unpooled.buffer(8192).writeBytes(new byte[8192]);
        reused.setByte(100, 1);
        NbdRequest request = write(0, reused.retainedSlice(0, 4096));
        journal.acknowledged(request, true);
        assertNotNull(request.payload, "the request keeps its reference, for the session to release");
        request.releaseBuffers();
        reused.setByte(100, 2); // the next request read into the same memory
        List<WriteJournal.Entry> replay = journal.replay();
        byte[] expected = new byte[4096];
        expected[100] = 1;
        assertArrayEquals(expected, bytes(replay.get(0).data()), "the journal has the bytes as they were written");
        releaseAll(replay);
        assertEquals(1, reused.refCnt(), "the journal holds nothing of the caller's buffer");
        assertEquals(4096 + OVERHEAD, journal.counted());
        journal.clear();
    }

    @Test
    void aSmallSliceOfALargeBufferIsCopiedRatherThanHoldingTheWholeBuffer() {
        WriteJournal journal = new WriteJournal(1 << 20);
        ByteBuf large = Unpooled.buffer(256 << 10).writeZero(256 << 10);
        NbdRequest request = write(0, large.retainedSlice(4096, 4096));
        journal.acknowledged(request, false);
        assertNotNull(request.payload, "copied: the request keeps its reference");
        request.releaseBuffers();
        large.release();
        assertEquals(0, large.refCnt(), "nothing holds the large buffer");
        assertEquals(4096 + OVERHEAD, journal.counted());
        journal.clear();
    }

    @Test
    void slicesOfOneBufferCountItsMemoryOnceAndStillCountItWhenTheFirstIsFlushed() {
        WriteJournal journal = new WriteJournal(1 << 20);
        ByteBuf buffer = Unpooled.buffer(12288).writeZero(12288);
        NbdRequest first = write(0, buffer.retainedSlice(0, 8192)); // most of the buffer: kept
        journal.acknowledged(first, false);
        long mark = journal.mark();
        NbdRequest second = write(8192, buffer.retainedSlice(8192, 4096)); // the rest: the same memory, kept too
        journal.acknowledged(second, false);
        assertNull(first.payload);
        assertNull(second.payload);
        assertEquals(8192 + 4096 + (12288 - 8192) + 2 * OVERHEAD, journal.counted(),
                "each write's data, the rest of the buffer once, two entries");
        journal.flushed(mark);
        assertEquals(12288 + OVERHEAD, journal.counted(), "the second entry still holds the whole buffer");
        buffer.release();
        assertEquals(1, buffer.refCnt(), "held by the second entry");
        journal.flushed(journal.mark());
        assertEquals(0, buffer.refCnt());
        assertEquals(0, journal.counted());
    }

    @Test
    void writesIntoOneSharedBufferKeepOneBufferAlive() {
        WriteJournal journal = new WriteJournal(1 << 20);
        ByteBuf template = Unpooled.directBuffer(4096).writeZero(4096);
        for (int i = 0; i < 10; i++) {
            NbdRequest r = write((long) i * 4096, template.retainedDuplicate());
            journal.acknowledged(r, false);
            assertNull(r.payload);
        }
        assertEquals(10 * (4096 + OVERHEAD), journal.counted(), "each write counts its data: the limit bounds a replay too");
        assertEquals(11, template.refCnt());
        journal.clear();
        assertEquals(1, template.refCnt(), "clear releases what was kept");
        template.release();
    }

    /**
     * Random writes of slices of shared buffers of random sizes, some lent, with FLUSHes at
     * random marks: the memory the journal holds (whole buffers it keeps alive, plus its
     * copies) never exceeds what it counts, nor its limit; and whatever it stops holding is
     * released.
     */
    @Property(tries = 200)
    void theMemoryHeldStaysWithinTheLimit(@ForAll long seed) {
        Random random = new Random(seed);
        int limit = 64 << 10;
        WriteJournal journal = new WriteJournal(limit);
        // A model of the journal: seq, the buffer kept alive (null for a copy), the write's length.
        record Kept(long seq, ByteBuf root, int length) { }
        ArrayDeque<Kept> model = new ArrayDeque<>();
        List<ByteBuf> buffers = new ArrayList<>();
        List<Long> marks = new ArrayList<>();
        ByteBuf current = null;
        int used = 0;
        for (int step = 0; step < 200; step++) {
            int action = random.nextInt(10);
            if (action == 0 && !marks.isEmpty()) {
                long mark = marks.get(random.nextInt(marks.size()));
                journal.flushed(mark);
                while (!model.isEmpty() && model.peekFirst().seq() <= mark) {
                    model.removeFirst();
                }
                continue;
            }
            if (action <= 3) {
                marks.add(journal.mark());
            }
            int length = 512 * (1 + random.nextInt(32));
            if (current == null || used + length > current.capacity() || random.nextInt(8) == 0) {
                if (current != null) {
                    current.release(); // the caller's own reference
                }
                current = Unpooled.buffer(length * (1 + random.nextInt(4))).writeZero(0);
                current.writerIndex(current.capacity());
                buffers.add(current);
                used = 0;
            }
            if (used + length > current.capacity()) {
                length = current.capacity() - used;
            }
            boolean lent = random.nextInt(5) == 0;
            NbdRequest r = write(random.nextInt(1000) * 512L, current.retainedSlice(used, length));
            used += length;
            boolean wasComplete = journal.isComplete();
            journal.acknowledged(r, lent);
            if (!journal.isComplete()) {
                model.clear(); // overflowed, or still incomplete: nothing kept
            } else {
                assertTrue(wasComplete);
                if (lent) {
                    assertNotNull(r.payload, "a lent payload is copied");
                }
                model.addLast(new Kept(journal.mark(), r.payload == null ? current : null, length));
            }
            r.releaseBuffers();

            Set<ByteBuf> held = Collections.newSetFromMap(new IdentityHashMap<>());
            long copies = 0;
            for (Kept k : model) {
                if (k.root() != null) {
                    held.add(k.root());
                } else {
                    copies += k.length();
                }
            }
            long memory = copies + held.stream().mapToLong(ByteBuf::capacity).sum();
            assertTrue(memory <= journal.counted(), "holds " + memory + " bytes but counts " + journal.counted());
            assertTrue(journal.counted() <= limit, "counts " + journal.counted() + " over the limit " + limit);
            assertEquals(model.size(), journal.size());
            for (ByteBuf b : buffers) {
                boolean callers = b == current;
                if (!callers && !held.contains(b)) {
                    assertEquals(0, b.refCnt(), "a buffer nothing should hold is released");
                }
            }
        }
        journal.clear();
        if (current != null) {
            current.release();
        }
        for (ByteBuf b : buffers) {
            assertEquals(0, b.refCnt(), "clear releases everything");
        }
    }

    @Test
    void aLentWriteOfAnOverflowingJournalKeepsNothing() {
        WriteJournal journal = new WriteJournal(8192);
        NbdRequest big = write(0, Unpooled.buffer(16384).writeZero(16384));
        journal.acknowledged(big, false);
        assertSame(null, journal.replay(), "overflowed: incomplete");
        assertNotNull(big.payload, "nothing taken");
        big.releaseBuffers();
        assertEquals(0, journal.counted());
    }
}
