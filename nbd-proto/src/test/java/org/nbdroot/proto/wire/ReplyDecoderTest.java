package org.nbdroot.proto.wire;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.nbdroot.proto.WireBytes.FLAG_DONE;
import static org.nbdroot.proto.WireBytes.STRUCTURED_REPLY_MAGIC;
import static org.nbdroot.proto.WireBytes.TYPE_BLOCK_STATUS;
import static org.nbdroot.proto.WireBytes.TYPE_ERROR;
import static org.nbdroot.proto.WireBytes.TYPE_NONE;
import static org.nbdroot.proto.WireBytes.TYPE_OFFSET_DATA;
import static org.nbdroot.proto.WireBytes.TYPE_OFFSET_HOLE;
import static org.nbdroot.proto.WireBytes.blockStatus;
import static org.nbdroot.proto.WireBytes.bytes;
import static org.nbdroot.proto.WireBytes.chunk;
import static org.nbdroot.proto.WireBytes.concat;
import static org.nbdroot.proto.WireBytes.errorChunk;
import static org.nbdroot.proto.WireBytes.none;
import static org.nbdroot.proto.WireBytes.offsetData;
import static org.nbdroot.proto.WireBytes.offsetHole;
import static org.nbdroot.proto.WireBytes.oneByteEach;
import static org.nbdroot.proto.WireBytes.pattern;
import static org.nbdroot.proto.WireBytes.simpleReply;
import static org.nbdroot.proto.WireBytes.split;
import static org.nbdroot.proto.WireBytes.toArray;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.nbdroot.proto.NbdProtocolException;
import org.nbdroot.proto.TrackingAllocator;

class ReplyDecoderTest {
    private final FakeExpectations expect = new FakeExpectations();
    private final TrackingAllocator alloc = new TrackingAllocator();
    /** Every buffer handed to the decoder: each must end with refCnt 0 once the replies are released. */
    private final List<ByteBuf> fed = new ArrayList<>();

    @AfterEach
    void nothingLeaks() {
        for (ByteBuf buf : fed) {
            assertEquals(0, buf.refCnt(), "an inbound buffer was not released");
        }
        assertEquals(List.of(), alloc.unreleased(), "buffers the decoder allocated were not released");
    }

    // ---- Simple replies ----

    @Test
    void simpleReplyWithoutData() {
        expect.command(0x11);
        EmbeddedChannel ch = channel(false);
        feed(ch, simpleReply(0, 0x11, null));

        Reply.Simple reply = ch.readInbound();
        assertEquals(0x11, reply.handle());
        assertEquals(0, reply.error());
        assertNull(reply.payload());
        assertFalse(ch.finish());
    }

    @Test
    void simpleReplyToReadCarriesItsData() {
        byte[] data = pattern(512, 1);
        expect.read(7, data.length);
        EmbeddedChannel ch = channel(false);
        feed(ch, simpleReply(0, 7, data));

        Reply.Simple reply = ch.readInbound();
        assertEquals(7, reply.handle());
        assertArrayEquals(data, toArray(reply.payload()));
        reply.payload().release();
        assertFalse(ch.finish());
    }

    @Test
    void simpleErrorReplyToReadHasNoDataAndTheNextReplyFollowsAtOnce() {
        // proto.md: the data follows only "if the request is of type NBD_CMD_READ and error is zero".
        expect.read(1, 4096);
        expect.command(2);
        EmbeddedChannel ch = channel(false);
        feed(ch, concat(simpleReply(5, 1, null), simpleReply(0, 2, null)));

        Reply.Simple failed = ch.readInbound();
        assertEquals(1, failed.handle());
        assertEquals(5, failed.error());
        assertNull(failed.payload());
        Reply.Simple next = ch.readInbound();
        assertEquals(2, next.handle());
        assertFalse(ch.finish());
    }

    // ---- Structured reply chunks ----

    @Test
    void offsetDataChunk() {
        byte[] data = pattern(100, 2);
        expect.read(3, 4096);
        EmbeddedChannel ch = channel(true);
        feed(ch, offsetData(0, 3, 8192, data));

        Reply.Chunk c = ch.readInbound();
        assertEquals(3, c.handle());
        assertEquals(TYPE_OFFSET_DATA, c.type());
        assertFalse(c.isDone());
        // The raw payload: the 64-bit offset, then the data.
        assertArrayEquals(bytes().u64(8192).raw(data).array(), toArray(c.payload()));
        c.payload().release();
        assertFalse(ch.finish());
    }

    @Test
    void offsetHoleChunk() {
        expect.read(4, 4096);
        EmbeddedChannel ch = channel(true);
        feed(ch, offsetHole(FLAG_DONE, 4, 512, 1024));

        Reply.Chunk c = ch.readInbound();
        assertEquals(TYPE_OFFSET_HOLE, c.type());
        assertTrue(c.isDone());
        assertArrayEquals(bytes().u64(512).u32(1024).array(), toArray(c.payload()));
        c.payload().release();
        assertFalse(ch.finish());
    }

    @Test
    void blockStatusChunk() {
        expect.chunkMax(5, 1000);
        EmbeddedChannel ch = channel(true);
        feed(ch, blockStatus(FLAG_DONE, 5, 1, 4096, 3, 8192, 0));

        Reply.Chunk c = ch.readInbound();
        assertEquals(TYPE_BLOCK_STATUS, c.type());
        assertArrayEquals(bytes().u32(1).u32(4096).u32(3).u32(8192).u32(0).array(), toArray(c.payload()));
        c.payload().release();
        assertFalse(ch.finish());
    }

    @Test
    void noneChunkHasNoPayload() {
        expect.command(6);
        EmbeddedChannel ch = channel(true);
        feed(ch, none(6));

        Reply.Chunk c = ch.readInbound();
        assertEquals(TYPE_NONE, c.type());
        assertTrue(c.isDone());
        assertNull(c.payload());
        assertFalse(ch.finish());
    }

    @Test
    void errorChunkCarriesErrorAndMessage() {
        expect.command(8);
        EmbeddedChannel ch = channel(true);
        feed(ch, errorChunk(FLAG_DONE, 8, 28, "disk full"));

        Reply.Chunk c = ch.readInbound();
        assertEquals(TYPE_ERROR, c.type());
        assertTrue(c.isDone());
        assertArrayEquals(bytes().u32(28).u16(9).utf8("disk full").array(), toArray(c.payload()));
        c.payload().release();
        assertFalse(ch.finish());
    }

    // ---- Re-entry: data and headers split across reads ----

    @Test
    void readDataSplitAcrossManySmallReadsIsOneReplyWithTheRightBytes() {
        byte[] data = pattern(4096, 3);
        expect.read(9, data.length);
        EmbeddedChannel ch = channel(true);
        byte[] wire = offsetData(FLAG_DONE, 9, 0, data);
        int[] cuts = new int[wire.length / 37];
        for (int i = 0; i < cuts.length; i++) {
            cuts[i] = (i + 1) * 37; // 37 does not divide the header lengths: headers are split too
        }
        for (ByteBuf piece : split(wire, cuts)) {
            feed(ch, piece);
        }

        Reply.Chunk c = ch.readInbound();
        assertArrayEquals(bytes().u64(0).raw(data).array(), toArray(c.payload()));
        assertNull(ch.readInbound(), "exactly one reply");
        c.payload().release();
        assertFalse(ch.finish());
    }

    @Test
    void everyByteBoundaryOfAStreamOfRepliesDecodesTheSame() {
        expect.command(1);
        expect.read(2, 5);
        expect.read(3, 64);
        expect.command(4);
        byte[] wire = concat(
                simpleReply(0, 1, null),
                simpleReply(0, 2, new byte[] {1, 2, 3, 4, 5}),
                offsetData(0, 3, 0, pattern(16, 4)),
                offsetHole(0, 3, 16, 48),
                errorChunk(0, 4, 5, "oops"),
                none(4));
        List<String> expected = decodeAll(channel(true), List.of(Unpooled.wrappedBuffer(wire)));
        assertEquals(6, expected.size());

        for (int cut = 1; cut < wire.length; cut++) {
            assertEquals(expected, decodeAll(channel(true), split(wire, cut)), "split at byte " + cut);
        }
        assertEquals(expected, decodeAll(channel(true), oneByteEach(wire)), "one byte per read");
    }

    @Test
    void payloadOfANonFinalChunkMayEndExactlyWhereTheNextHeaderBegins() {
        expect.read(1, 8);
        EmbeddedChannel ch = channel(true);
        byte[] first = offsetData(0, 1, 0, pattern(4, 0));
        byte[] second = offsetData(FLAG_DONE, 1, 4, pattern(4, 1));
        feed(ch, first);
        feed(ch, second);

        Reply.Chunk a = ch.readInbound();
        Reply.Chunk b = ch.readInbound();
        assertFalse(a.isDone());
        assertTrue(b.isDone());
        a.payload().release();
        b.payload().release();
        assertFalse(ch.finish());
    }

    @Test
    void aPayloadStillArrivingAtCloseIsReleased() {
        expect.read(1, 1024);
        EmbeddedChannel ch = channel(true);
        byte[] wire = offsetData(FLAG_DONE, 1, 0, pattern(1024, 5));
        feed(ch, split(wire, 20, 300, 600).subList(0, 3)); // header, then part of the data: never completed

        assertNull(ch.readInbound());
        assertTrue(alloc.allocatedCount() > 0, "the decoder gathered the pieces in a buffer of its own");
        assertFalse(ch.finish());
        // nothingLeaks() checks the slices and the composite gathering them were released.
    }

    @Test
    void aHeaderStillArrivingAtCloseIsReleased() {
        expect.command(1);
        EmbeddedChannel ch = channel(true);
        feed(ch, split(simpleReply(0, 1, null), 7).get(0));

        assertTrue(alloc.allocatedCount() > 0, "the partial header was copied aside");
        assertFalse(ch.finish());
    }

    @Test
    void messagesOtherThanBuffersPassThrough() {
        EmbeddedChannel ch = channel(true);
        ch.writeInbound("not a buffer");
        assertEquals("not a buffer", ch.readInbound());
        assertFalse(ch.finish());
    }

    // ---- Protocol errors ----

    @Test
    void badMagicIsAProtocolErrorThatNamesTheMagic() {
        expect.command(1);
        EmbeddedChannel ch = channel(true);
        ByteBuf bad = bytes().u32(0xdeadbeefL).u32(0).u64(1).buf();
        fed.add(bad);

        // The decoder throws from channelRead: the pipeline turns it into exceptionCaught, which
        // EmbeddedChannel records and rethrows from writeInbound (checkException).
        NbdProtocolException e = assertThrows(NbdProtocolException.class, () -> ch.writeInbound(bad));
        assertContains(e.getMessage(), "0xdeadbeef");
        assertContains(e.getMessage(), "0x67446698"); // and says what it expected
        assertNull(ch.readInbound());
        assertFalse(ch.finish());
    }

    @Test
    void afterABadMagicEverythingIsDropped() {
        expect.command(1);
        EmbeddedChannel ch = channel(true);
        byte[] bad = bytes().u32(0x12345678).zeroes(12).array();
        assertThrows(NbdProtocolException.class, () -> feed(ch, bad));

        feed(ch, simpleReply(0, 1, null)); // a valid reply is no longer decoded
        assertNull(ch.readInbound());
        assertFalse(ch.finish());
    }

    @Test
    void badMagicSplitAcrossReadsIsFoundOnceFourBytesArrived() {
        EmbeddedChannel ch = channel(true);
        List<ByteBuf> pieces = split(bytes().u32(0x01020304).zeroes(12).array(), 1, 2, 3);
        feed(ch, pieces.get(0));
        feed(ch, pieces.get(1));
        feed(ch, pieces.get(2));
        NbdProtocolException e = assertThrows(NbdProtocolException.class, () -> feed(ch, pieces.get(3)));
        assertContains(e.getMessage(), "0x01020304");
        assertFalse(ch.finish());
    }

    @Test
    void aGoodReplyBeforeTheBadOneIsStillDelivered() {
        expect.command(1);
        EmbeddedChannel ch = channel(true);
        assertThrows(NbdProtocolException.class,
                () -> feed(ch, concat(simpleReply(0, 1, null), bytes().u32(0).zeroes(12).array())));

        Reply.Simple good = ch.readInbound();
        assertEquals(1, good.handle());
        assertFalse(ch.finish());
    }

    @Test
    void simpleReplyForAnUnknownHandle() {
        EmbeddedChannel ch = channel(false);
        NbdProtocolException e = assertThrows(NbdProtocolException.class, () -> feed(ch, simpleReply(0, 0x2a, null)));
        assertContains(e.getMessage(), "0x2a");
        assertContains(e.getMessage(), "no outstanding request");
        assertFalse(ch.finish());
    }

    @Test
    void chunkForAnUnknownHandle() {
        EmbeddedChannel ch = channel(true);
        NbdProtocolException e = assertThrows(NbdProtocolException.class, () -> feed(ch, none(0x2b)));
        assertContains(e.getMessage(), "0x2b");
        assertContains(e.getMessage(), "no outstanding request");
        assertFalse(ch.finish());
    }

    @Test
    void structuredReplyWhenStructuredRepliesWereNotNegotiated() {
        expect.command(1);
        EmbeddedChannel ch = channel(false);
        NbdProtocolException e = assertThrows(NbdProtocolException.class, () -> feed(ch, none(1)));
        assertContains(e.getMessage(), "structured replies were not negotiated");
        assertFalse(ch.finish());
    }

    @Test
    void structuredReplyWhenNotNegotiatedIsFoundFromItsMagicAlone() {
        EmbeddedChannel ch = channel(false);
        assertThrows(NbdProtocolException.class, () -> feed(ch, bytes().u32(STRUCTURED_REPLY_MAGIC).array()));
        assertFalse(ch.finish());
    }

    @Test
    void simpleReplyToReadWhenStructuredRepliesWereNegotiated() {
        // proto.md: the server "MUST NOT use a simple reply for NBD_CMD_READ" once structured replies are on.
        expect.simple(1, ReplyExpectations.SIMPLE_REPLY_FORBIDDEN);
        EmbeddedChannel ch = channel(true);
        NbdProtocolException e = assertThrows(NbdProtocolException.class,
                () -> feed(ch, simpleReply(0, 1, pattern(16, 0))));
        assertContains(e.getMessage(), "NBD_CMD_READ");
        assertContains(e.getMessage(), "structured replies were negotiated");
        assertFalse(ch.finish());
    }

    @Test
    void chunkLongerThanAllowedFailsOnItsHeaderAlone() {
        expect.chunkMax(1, 100);
        EmbeddedChannel ch = channel(true);
        // Only the 20-byte header: the decoder must not wait for (or buffer) 101 bytes to refuse them.
        byte[] header = bytes().u32(STRUCTURED_REPLY_MAGIC).u16(0).u16(TYPE_OFFSET_DATA).u64(1).u32(101).array();
        NbdProtocolException e = assertThrows(NbdProtocolException.class, () -> feed(ch, header));
        assertContains(e.getMessage(), "101 bytes long");
        assertContains(e.getMessage(), "<= 100");
        assertFalse(ch.finish());
    }

    @Test
    void chunkLengthIsUnsigned() {
        expect.chunkMax(1, Integer.MAX_VALUE);
        EmbeddedChannel ch = channel(true);
        byte[] header = bytes().u32(STRUCTURED_REPLY_MAGIC).u16(0).u16(TYPE_OFFSET_DATA).u64(1).u32(0xffffffffL).array();
        NbdProtocolException e = assertThrows(NbdProtocolException.class, () -> feed(ch, header));
        assertContains(e.getMessage(), "4294967295");
        assertFalse(ch.finish());
    }

    @Test
    void chunkExactlyAsLongAsAllowedIsAccepted() {
        expect.chunkMax(1, 12);
        EmbeddedChannel ch = channel(true);
        feed(ch, chunk(FLAG_DONE, TYPE_OFFSET_HOLE, 1, new byte[12]));
        Reply.Chunk c = ch.readInbound();
        c.payload().release();
        assertFalse(ch.finish());
    }

    // ---- Helpers ----

    private EmbeddedChannel channel(boolean structured) {
        EmbeddedChannel ch = new EmbeddedChannel();
        ch.config().setAllocator(alloc);
        ch.pipeline().addLast(new ReplyDecoder(expect, structured));
        return ch;
    }

    private void feed(EmbeddedChannel ch, byte[] bytes) {
        feed(ch, Unpooled.wrappedBuffer(bytes));
    }

    private void feed(EmbeddedChannel ch, ByteBuf buf) {
        fed.add(buf);
        ch.writeInbound(buf);
    }

    private void feed(EmbeddedChannel ch, List<ByteBuf> pieces) {
        pieces.forEach(p -> feed(ch, p));
    }

    /** Feeds the pieces and describes every decoded reply (payload bytes included), releasing them. */
    private List<String> decodeAll(EmbeddedChannel ch, List<ByteBuf> pieces) {
        feed(ch, pieces);
        List<String> out = new ArrayList<>();
        for (Object msg; (msg = ch.readInbound()) != null; ) {
            Reply r = assertInstanceOf(Reply.class, msg);
            out.add(describe(r));
            if (r.payload() != null) {
                r.payload().release();
            }
        }
        assertFalse(ch.finish());
        return out;
    }

    static String describe(Reply r) {
        String payload = r.payload() == null ? "-" : java.util.HexFormat.of().formatHex(toArray(r.payload()));
        if (r instanceof Reply.Simple s) {
            return "simple " + s.handle() + " error " + s.error() + " " + payload;
        }
        Reply.Chunk c = (Reply.Chunk) r;
        return "chunk " + c.handle() + " flags " + c.flags() + " type " + c.type() + " " + payload;
    }

    static void assertContains(String text, String part) {
        assertTrue(text != null && text.contains(part), () -> "expected \"" + part + "\" in: " + text);
    }

    /** Expectations for a handful of made-up handles. */
    static final class FakeExpectations implements ReplyExpectations {
        private final Map<Long, Integer> simple = new HashMap<>();
        private final Map<Long, Integer> chunkMax = new HashMap<>();
        private final Map<Long, Long> offsets = new HashMap<>();

        /** A READ without structured replies: a simple reply carries its data. */
        FakeExpectations read(long handle, int length) {
            simple.put(handle, length);
            chunkMax.put(handle, length + 8);
            return this;
        }

        /** A command without reply data. */
        FakeExpectations command(long handle) {
            simple.put(handle, 0);
            chunkMax.put(handle, 4096 + 6);
            return this;
        }

        FakeExpectations simple(long handle, int dataLength) {
            simple.put(handle, dataLength);
            return this;
        }

        FakeExpectations chunkMax(long handle, int max) {
            chunkMax.put(handle, max);
            return this;
        }

        /** The offset of a handle's request (0 unless set), which an extended reply header must repeat. */
        FakeExpectations offset(long handle, long offset) {
            offsets.put(handle, offset);
            return this;
        }

        @Override
        public int simpleReplyDataLength(long handle) {
            return simple.getOrDefault(handle, UNKNOWN_HANDLE);
        }

        @Override
        public int maxChunkPayload(long handle) {
            return chunkMax.getOrDefault(handle, UNKNOWN_HANDLE);
        }

        @Override
        public long requestOffset(long handle) {
            boolean known = simple.containsKey(handle) || chunkMax.containsKey(handle);
            return offsets.getOrDefault(handle, known ? 0 : UNKNOWN_OFFSET);
        }
    }
}
