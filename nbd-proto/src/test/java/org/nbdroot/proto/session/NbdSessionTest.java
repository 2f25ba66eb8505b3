package org.nbdroot.proto.session;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.nbdroot.proto.WireBytes.REQUEST_MAGIC;
import static org.nbdroot.proto.WireBytes.simpleReply;
import static org.nbdroot.proto.session.SessionFixture.dataAt;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.CompositeByteBuf;
import io.netty.buffer.Unpooled;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import org.junit.jupiter.api.Test;
import org.nbdroot.proto.BlockSize;
import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.NbdServerErrorException;
import org.nbdroot.proto.NbdUnsupportedException;
import org.nbdroot.proto.session.SessionFixture.Request;

/**
 * The session's checks and request splitting, without a network (see {@link SessionFixture}).
 * Everything refused must be refused before a byte is sent.
 */
class NbdSessionTest {
    // Transmission flags (proto.md).
    private static final int HAS_FLAGS = 1;
    private static final int READ_ONLY = 1 << 1;
    private static final int SEND_FLUSH = 1 << 2;
    private static final int SEND_TRIM = 1 << 5;
    // Commands.
    private static final int CMD_READ = 0;
    private static final int CMD_WRITE = 1;
    private static final int CMD_TRIM = 4;
    private static final int CMD_BLOCK_STATUS = 7;
    private static final int CMD_FLAG_FUA = 1;
    private static final int CMD_FLAG_DF = 1 << 2;
    private static final int CMD_FLAG_REQ_ONE = 1 << 3;

    private static final int MAX = 64 * 1024;
    private static final long SIZE = 1 << 24;

    private static ExportInfo export(int flags, long size, boolean structured) {
        return new ExportInfo("disk", null, size, HAS_FLAGS | flags, new BlockSize(512, 4096, MAX), true, structured,
                structured ? Map.of(3, "base:allocation") : Map.of());
    }

    @Test
    void readUpToTheMaximumIsOneRequest() {
        SessionFixture f = new SessionFixture(export(0, SIZE, false));
        CompletableFuture<ByteBuf> read = f.session.read(512, MAX);
        List<Request> sent = f.sent();
        assertEquals(1, sent.size());
        assertEquals(new Request(0, CMD_READ, sent.get(0).handle(), 512, MAX, null), sent.get(0));

        f.reply(simpleReply(0, sent.get(0).handle(), dataAt(512, MAX)));
        ByteBuf data = read.join();
        assertArrayEquals(dataAt(512, MAX), org.nbdroot.proto.WireBytes.toArray(data));
        data.release();
        f.finishWithoutLeaks();
    }

    @Test
    void longerReadIsSplitAndReassembledInOrderWhateverTheReplyOrder() {
        SessionFixture f = new SessionFixture(export(0, SIZE, false));
        int length = 2 * MAX + 512;
        CompletableFuture<ByteBuf> read = f.session.read(4096, length);
        List<Request> sent = f.sent();
        assertEquals(List.of(4096L, 4096L + MAX, 4096L + 2 * MAX), sent.stream().map(Request::offset).toList());
        assertEquals(List.of((long) MAX, (long) MAX, 512L), sent.stream().map(Request::length).toList());

        for (int i = sent.size() - 1; i >= 0; i--) {
            Request r = sent.get(i);
            f.reply(simpleReply(0, r.handle(), dataAt(r.offset(), (int) r.length())));
        }
        ByteBuf data = read.join();
        assertArrayEquals(dataAt(4096, length), org.nbdroot.proto.WireBytes.toArray(data));
        data.release();
        f.finishWithoutLeaks();
    }

    @Test
    void aSplitReadFailsWhenOnePieceFailsAndTheOtherPiecesAreReleased() {
        SessionFixture f = new SessionFixture(export(0, SIZE, false));
        CompletableFuture<ByteBuf> read = f.session.read(0, 3 * MAX);
        List<Request> sent = f.sent();
        f.reply(simpleReply(0, sent.get(0).handle(), dataAt(0, MAX)),
                simpleReply(5, sent.get(1).handle(), null),
                simpleReply(0, sent.get(2).handle(), dataAt(2 * MAX, MAX)));

        CompletionException e = org.junit.jupiter.api.Assertions.assertThrows(CompletionException.class, read::join);
        assertInstanceOf(NbdServerErrorException.class, e.getCause());
        f.finishWithoutLeaks(); // the pieces that arrived were released
    }

    @Test
    void longerWriteIsSplitWithThePayloadCutAccordingly() {
        SessionFixture f = new SessionFixture(export(0, SIZE, false));
        int length = 2 * MAX + 1024;
        ByteBuf data = Unpooled.wrappedBuffer(dataAt(8192, length));
        CompletableFuture<Void> write = f.session.write(8192, data, false);
        List<Request> sent = f.sent();
        assertEquals(3, sent.size());
        long at = 8192;
        for (Request r : sent) {
            assertEquals(CMD_WRITE, r.type());
            assertEquals(at, r.offset());
            assertArrayEquals(dataAt(at, (int) r.length()), r.payload());
            at += r.length();
            f.reply(simpleReply(0, r.handle(), null));
        }
        assertEquals(8192 + length, at);
        write.join();
        assertEquals(0, data.refCnt(), "the session took ownership of the buffer and released it");
        f.finishWithoutLeaks();
    }

    @Test
    void trimLongerThanOneGibibyteIsSplitAtOneGibibyte() {
        SessionFixture f = new SessionFixture(export(SEND_TRIM, 1L << 34, false));
        CompletableFuture<Void> trim = f.session.trim(512, (3L << 30) + 512, false);
        List<Request> sent = f.sent();
        assertEquals(List.of(512L, 512L + (1L << 30), 512L + (2L << 30), 512L + (3L << 30)),
                sent.stream().map(Request::offset).toList());
        assertEquals(List.of(1L << 30, 1L << 30, 1L << 30, 512L), sent.stream().map(Request::length).toList());
        sent.forEach(r -> assertEquals(CMD_TRIM, r.type()));
        sent.forEach(r -> f.reply(simpleReply(0, r.handle(), null)));
        trim.join();
        f.finishWithoutLeaks();
    }

    @Test
    void blockStatusAsksForOneExtentWhenToldAndIsCappedAtOneGibibyte() {
        SessionFixture f = new SessionFixture(export(0, 1L << 34, true));
        f.session.blockStatus(0, 1L << 33, true);
        List<Request> sent = f.sent();
        assertEquals(1, sent.size());
        assertEquals(CMD_BLOCK_STATUS, sent.get(0).type());
        assertEquals(CMD_FLAG_REQ_ONE, sent.get(0).flags());
        assertEquals(1L << 30, sent.get(0).length());
        f.ch.close(); // the request fails with the connection
        f.finishWithoutLeaks();
    }

    // ---- Refused before anything is sent ----

    @Test
    void misalignedRead() {
        SessionFixture f = new SessionFixture(export(0, SIZE, false));
        assertRefused(f, f.session.read(100, 512), IllegalArgumentException.class,
                "NBD_CMD_READ of 512 bytes at offset 100 is not aligned to the export's minimum block size 512");
        assertRefused(f, f.session.read(0, 700), IllegalArgumentException.class, "not aligned");
    }

    @Test
    void readOutsideTheExport() {
        SessionFixture f = new SessionFixture(export(0, SIZE, false));
        assertRefused(f, f.session.read(SIZE - 512, 1024), IllegalArgumentException.class, "outside the export");
        assertRefused(f, f.session.read(-512, 512), IllegalArgumentException.class, "outside the export");
        assertRefused(f, f.session.read(Long.MAX_VALUE - 511, 1024), IllegalArgumentException.class, "outside the export");
    }

    @Test
    void readOfLengthZero() {
        SessionFixture f = new SessionFixture(export(0, SIZE, false));
        assertRefused(f, f.session.read(0, 0), IllegalArgumentException.class, "NBD_CMD_READ of length 0");
    }

    @Test
    void writeToAReadOnlyExportReleasesTheBuffer() {
        SessionFixture f = new SessionFixture(export(READ_ONLY, SIZE, false));
        ByteBuf data = Unpooled.wrappedBuffer(new byte[512]);
        assertRefused(f, f.session.write(0, data, false), NbdUnsupportedException.class, "read-only");
        assertEquals(0, data.refCnt());
    }

    @Test
    void fuaWithoutSendFua() {
        SessionFixture f = new SessionFixture(export(SEND_TRIM, SIZE, false));
        ByteBuf data = Unpooled.wrappedBuffer(new byte[512]);
        assertRefused(f, f.session.write(0, data, true), NbdUnsupportedException.class, "send_fua");
        assertEquals(0, data.refCnt());
        assertRefused(f, f.session.trim(0, 512, true), NbdUnsupportedException.class, "send_fua");
    }

    @Test
    void dontFragmentNeedsSendDfAndStructuredReplies() {
        SessionFixture f = new SessionFixture(export(0, SIZE, false));
        assertRefused(f, f.session.read(0, 512, CMD_FLAG_DF), NbdUnsupportedException.class, "DF flag");
        assertRefused(f, f.session.read(0, 512, CMD_FLAG_FUA << 5), IllegalArgumentException.class, "not allowed");
    }

    @Test
    void commandsTheExportDoesNotOffer() {
        SessionFixture f = new SessionFixture(export(0, SIZE, false));
        assertRefused(f, f.session.flush(), NbdUnsupportedException.class, "send_flush");
        assertRefused(f, f.session.trim(0, 512, false), NbdUnsupportedException.class, "send_trim");
        assertRefused(f, f.session.writeZeroes(0, 512, 0), NbdUnsupportedException.class, "send_write_zeroes");
        assertRefused(f, f.session.cache(0, 512), NbdUnsupportedException.class, "send_cache");
        assertRefused(f, f.session.blockStatus(0, 512, false), NbdUnsupportedException.class, "base:allocation");
    }

    @Test
    void flushIsSentWhenOffered() {
        SessionFixture f = new SessionFixture(export(SEND_FLUSH, SIZE, false));
        CompletableFuture<Void> flush = f.session.flush();
        List<Request> sent = f.sent();
        assertEquals(3, sent.get(0).type());
        f.reply(simpleReply(0, sent.get(0).handle(), null));
        flush.join();
        f.finishWithoutLeaks();
    }

    @Test
    void writeOfNearlyTwoGibibytesIsSplitWithoutOverflow() {
        ExportInfo export = new ExportInfo("disk", null, 1L << 32, HAS_FLAGS, new BlockSize(1, 4096, 1 << 25), true,
                false, Map.of());
        SessionFixture f = new SessionFixture(export);
        // Integer.MAX_VALUE bytes without 2 GiB of memory: 64 slices of one 32 MiB buffer.
        ByteBuf block = Unpooled.buffer(1 << 25).writerIndex(1 << 25);
        CompositeByteBuf data = Unpooled.compositeBuffer(64);
        for (int i = 0; i < 63; i++) {
            data.addComponent(true, block.retainedSlice(0, 1 << 25));
        }
        data.addComponent(true, block.retainedSlice(0, (1 << 25) - 1));
        block.release();
        assertEquals(Integer.MAX_VALUE, data.readableBytes());

        CompletableFuture<Void> write = f.session.write(0, data, false);
        f.ch.runPendingTasks();
        long total = 0;
        int requests = 0;
        for (Object msg; (msg = f.ch.readOutbound()) != null; ) {
            ByteBuf buf = (ByteBuf) msg;
            while (buf.readableBytes() >= 28 && buf.getInt(buf.readerIndex()) == REQUEST_MAGIC) {
                buf.skipBytes(4 + 2 + 2 + 8);
                assertEquals(total, buf.readLong());
                total += buf.readUnsignedInt();
                requests++;
            }
            buf.release();
        }
        assertEquals(64, requests);
        assertEquals(Integer.MAX_VALUE, total);
        assertFalse(write.isDone());
    }

    private static void assertRefused(SessionFixture f, CompletableFuture<?> future, Class<? extends Throwable> type,
            String messagePart) {
        assertTrue(future.isCompletedExceptionally(), "refused at once");
        Throwable cause = org.junit.jupiter.api.Assertions.assertThrows(CompletionException.class, future::join).getCause();
        assertInstanceOf(type, cause);
        assertTrue(cause.getMessage().contains(messagePart), () -> "expected \"" + messagePart + "\" in: " + cause.getMessage());
        assertEquals(List.of(), f.sent(), "nothing was sent");
    }
}
