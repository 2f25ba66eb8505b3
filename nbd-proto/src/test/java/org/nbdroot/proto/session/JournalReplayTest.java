package org.nbdroot.proto.session;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.nbdroot.proto.BlockSize;
import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.wire.Command;
import org.nbdroot.proto.wire.CommandFlag;
import org.nbdroot.proto.wire.TransmissionFlag;

/** How an acknowledged, unflushed write is written again on the export a reconnect found. */
class JournalReplayTest {
    static final long SIZE = 1L << 30;
    static final int MAX = 1 << 20;

    private static ExportInfo export(long size, TransmissionFlag... flags) {
        int bits = TransmissionFlag.HAS_FLAGS.mask();
        for (TransmissionFlag f : flags) {
            bits |= f.mask();
        }
        return new ExportInfo("disk", null, size, bits, new BlockSize(512, 4096, MAX), true, true, Map.of());
    }

    private static WriteJournal.Entry zeroes(long offset, int length, int flags) {
        return new WriteJournal.Entry(7, Command.WRITE_ZEROES, flags, offset, length, null);
    }

    @Test
    void anEntryTheExportStillTakesIsWrittenAgainAsItWas() {
        WriteJournal.Entry write = new WriteJournal.Entry(1, Command.WRITE, 0, 4096, 4096, Unpooled.wrappedBuffer(new byte[4096]));
        WriteJournal.Entry zero = zeroes(0, 8192, CommandFlag.NO_HOLE);
        ExportInfo now = export(SIZE, TransmissionFlag.SEND_FLUSH, TransmissionFlag.SEND_WRITE_ZEROES);
        assertSame(write, Reconnector.replayOf(write, now).entries().get(0));
        Reconnector.Replay replay = Reconnector.replayOf(zero, now);
        assertEquals(List.of(zero), replay.entries());
        assertNull(replay.problem());
        write.data().release();
    }

    /**
     * Skipped, the zeroes would leave an older write of the same range, replayed before them, in
     * their place: WRITEs of zeroes instead, each within the maximum payload, FUA kept, NO_HOLE
     * (not a WRITE flag) dropped.
     */
    @Test
    void writeZeroesTheExportNoLongerOffersIsWrittenAgainAsWritesOfZeroes() {
        long offset = 3L << 20;
        int length = 2 * MAX + 8192;
        Reconnector.Replay replay = Reconnector.replayOf(zeroes(offset, length, CommandFlag.FUA | CommandFlag.NO_HOLE),
                export(SIZE, TransmissionFlag.SEND_FLUSH, TransmissionFlag.SEND_FUA));
        assertNull(replay.problem());
        assertEquals(3, replay.entries().size());
        long next = offset;
        for (WriteJournal.Entry e : replay.entries()) {
            assertEquals(Command.WRITE, e.command());
            assertEquals(CommandFlag.FUA, e.flags());
            assertEquals(next, e.offset(), "the pieces cover the range in order");
            assertTrue(e.length() <= MAX, "within the maximum payload: " + e.length());
            ByteBuf data = e.data();
            assertEquals(e.length(), data.readableBytes());
            for (int i = 0; i < data.readableBytes(); i++) {
                assertEquals(0, data.getByte(data.readerIndex() + i), "zeroes");
            }
            data.release();
            next += e.length();
        }
        assertEquals(offset + length, next);
    }

    /** A 1 GiB WRITE_ZEROES on an export with a 32 MiB payload: 1 MiB pieces over one array, not 1 GiB of heap. */
    @Test
    void aLargeWriteZeroesBecomesWritesThatShareOneBufferOfZeroes() {
        ExportInfo now = new ExportInfo("disk", null, 4 * SIZE, TransmissionFlag.HAS_FLAGS.mask(),
                new BlockSize(512, 4096, 32 << 20), true, true, Map.of());
        List<WriteJournal.Entry> writes = Reconnector.replayOf(zeroes(0, 1 << 30, 0), now).entries();
        assertEquals(1024, writes.size());
        byte[] shared = writes.get(0).data().array();
        assertEquals(1 << 20, shared.length);
        for (WriteJournal.Entry e : writes) {
            assertSame(shared, e.data().array(), "one array of zeroes for every piece");
            e.data().release();
        }
    }

    @Test
    void whatTheExportCannotTakeIsNotWrittenAgainAndSaysWhy() {
        WriteJournal.Entry zero = zeroes(SIZE, 8192, 0);
        assertEquals(new Reconnector.Replay(List.of(), "the export shrank to " + SIZE + " bytes"),
                Reconnector.replayOf(zero, export(SIZE, TransmissionFlag.SEND_WRITE_ZEROES)));
        assertEquals(new Reconnector.Replay(List.of(), "the export became read-only"),
                Reconnector.replayOf(zeroes(0, 4096, 0), export(SIZE, TransmissionFlag.READ_ONLY)));
        WriteJournal.Entry trim = new WriteJournal.Entry(2, Command.TRIM, 0, 0, 4096, null);
        assertEquals(new Reconnector.Replay(List.of(), "the export no longer offers send_trim"),
                Reconnector.replayOf(trim, export(SIZE, TransmissionFlag.SEND_WRITE_ZEROES)));
    }

    /**
     * A write across the export's new end: its part below the end is written again. Skipped
     * whole, an older write of the same range (replayed before it) would put older bytes back
     * over the newer ones the server may still hold there.
     */
    @Test
    void aWriteAcrossTheNewEndIsWrittenAgainUpToIt() {
        byte[] bytes = new byte[8192];
        for (int i = 0; i < bytes.length; i++) {
            bytes[i] = (byte) (i * 7 + 3);
        }
        ByteBuf data = Unpooled.wrappedBuffer(bytes);
        WriteJournal.Entry across = new WriteJournal.Entry(5, Command.WRITE, CommandFlag.FUA, SIZE - 4096, 8192, data);
        Reconnector.Replay replay = Reconnector.replayOf(across, export(SIZE, TransmissionFlag.SEND_FUA));

        assertEquals("the export shrank to " + SIZE + " bytes: only its first 4096 bytes are written again",
                replay.problem());
        assertEquals(1, replay.entries().size());
        WriteJournal.Entry below = replay.entries().get(0);
        assertEquals(List.of(5L, Command.WRITE, CommandFlag.FUA, SIZE - 4096, 4096),
                List.of(below.seq(), below.command(), below.flags(), below.offset(), below.length()));
        assertEquals(Unpooled.wrappedBuffer(bytes, 0, 4096), below.data(), "the first 4096 bytes of the write");
        data.release(); // as the replay releases an entry it did not send as it was
        assertEquals(1, below.data().refCnt(), "the piece keeps the bytes alive on its own");
        below.data().release();
        assertEquals(0, data.refCnt());
    }

    /** A WRITE_ZEROES across the new end, on an export that lost WRITE_ZEROES: zeroes up to the end. */
    @Test
    void zeroesAcrossTheNewEndBecomeWritesOfZeroesUpToIt() {
        Reconnector.Replay replay = Reconnector.replayOf(zeroes(SIZE - 8192, 3 * 8192, 0), export(SIZE));
        assertEquals(List.of(8192), replay.entries().stream().map(WriteJournal.Entry::length).toList());
        assertEquals(Command.WRITE, replay.entries().get(0).command());
        assertEquals(SIZE - 8192, replay.entries().get(0).offset());
        replay.entries().get(0).data().release();
    }
}
