package org.nbdroot.proto.wire;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.nbdroot.proto.WireBytes.EXTENDED_REPLY_MAGIC;
import static org.nbdroot.proto.WireBytes.FLAG_DONE;
import static org.nbdroot.proto.WireBytes.TYPE_BLOCK_STATUS_EXT;
import static org.nbdroot.proto.WireBytes.TYPE_ERROR;
import static org.nbdroot.proto.WireBytes.TYPE_NONE;
import static org.nbdroot.proto.WireBytes.TYPE_OFFSET_DATA;
import static org.nbdroot.proto.WireBytes.blockStatusExtPayload;
import static org.nbdroot.proto.WireBytes.bytes;
import static org.nbdroot.proto.WireBytes.concat;
import static org.nbdroot.proto.WireBytes.extendedChunk;
import static org.nbdroot.proto.WireBytes.none;
import static org.nbdroot.proto.WireBytes.oneByteEach;
import static org.nbdroot.proto.WireBytes.pattern;
import static org.nbdroot.proto.WireBytes.simpleReply;
import static org.nbdroot.proto.WireBytes.split;
import static org.nbdroot.proto.wire.ReplyDecoderTest.assertContains;
import static org.nbdroot.proto.wire.ReplyDecoderTest.describe;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.nbdroot.proto.NbdProtocolException;
import org.nbdroot.proto.TrackingAllocator;

/**
 * The decoder once NBD_OPT_EXTENDED_HEADERS was agreed: 32-byte reply headers (magic, flags,
 * type, cookie, the request's offset, a 64-bit length) and nothing else; and the extended magic
 * refused where extended headers were not agreed.
 */
class ExtendedReplyDecoderTest {
    private final ReplyDecoderTest.FakeExpectations expect = new ReplyDecoderTest.FakeExpectations();
    private final TrackingAllocator alloc = new TrackingAllocator();
    private final List<ByteBuf> fed = new ArrayList<>();

    @AfterEach
    void nothingLeaks() {
        fed.forEach(b -> assertEquals(0, b.refCnt(), "an inbound buffer was not released"));
        assertEquals(List.of(), alloc.unreleased(), "buffers the decoder allocated were not released");
    }

    // ---- Well-formed ----

    @Test
    void headerFieldsAreDecoded() {
        expect.command(0x42).offset(0x42, 1 << 20);
        EmbeddedChannel ch = channel(HeaderStyle.EXTENDED);
        byte[] error = bytes().u32(5).u16(3).utf8("bad").array();
        feed(ch, extendedChunk(FLAG_DONE, TYPE_ERROR, 0x42, 1 << 20, error));

        Reply.Chunk c = ch.readInbound();
        assertEquals(0x42, c.handle());
        assertEquals(FLAG_DONE, c.flags());
        assertEquals(TYPE_ERROR, c.type());
        assertEquals(HexFormat.of().formatHex(error), HexFormat.of().formatHex(org.nbdroot.proto.WireBytes.toArray(c.payload())));
        c.payload().release();
        assertFalse(ch.finish());
    }

    @Test
    void aStreamOfExtendedRepliesFedOneByteAtATimeDecodesAsAWhole() {
        byte[] data = pattern(1000, 3);
        expect.read(1, data.length).offset(1, 8192);
        expect.command(2).offset(2, 0);
        expect.chunkMax(3, 4096).offset(3, 512);
        byte[] stream = concat(
                extendedChunk(0, TYPE_OFFSET_DATA, 1, 8192, concat(bytes().u64(8192).array(), data)),
                extendedChunk(FLAG_DONE, TYPE_NONE, 2, 0, new byte[0]),
                extendedChunk(FLAG_DONE, TYPE_BLOCK_STATUS_EXT, 3, 512, blockStatusExtPayload(1, 1, 512, 3)),
                extendedChunk(FLAG_DONE, TYPE_NONE, 1, 8192, new byte[0]));

        List<String> whole = decodeAll(channel(HeaderStyle.EXTENDED), List.of(Unpooled.wrappedBuffer(stream)));
        List<String> bytewise = decodeAll(channel(HeaderStyle.EXTENDED), oneByteEach(stream));
        assertEquals(4, whole.size());
        assertEquals(whole, bytewise);
        assertEquals("chunk 1 flags 0 type 1 " + HexFormat.of().formatHex(concat(bytes().u64(8192).array(), data)),
                whole.get(0));
        assertEquals("chunk 2 flags 1 type 0 -", whole.get(1));
        assertEquals("chunk 3 flags 1 type 6 " + HexFormat.of().formatHex(blockStatusExtPayload(1, 1, 512, 3)),
                whole.get(2));
    }

    @Test
    void aHeaderSplitAtEveryPositionDecodesTheSame() {
        expect.command(9).offset(9, 4096);
        byte[] reply = extendedChunk(FLAG_DONE, TYPE_NONE, 9, 4096, new byte[0]);
        for (int cut = 1; cut < reply.length; cut++) {
            assertEquals(List.of("chunk 9 flags 1 type 0 -"),
                    decodeAll(channel(HeaderStyle.EXTENDED), split(reply, cut)), "cut at " + cut);
        }
    }

    // ---- The wrong header for the mode ----

    @Test
    void simpleReplyOnceExtendedHeadersAreAgreed() {
        expect.command(1);
        NbdProtocolException e = refused(HeaderStyle.EXTENDED, simpleReply(0, 1, null));
        assertContains(e.getMessage(), "a simple reply (magic 0x67446698)");
        assertContains(e.getMessage(), "0x6e8a278c (only extended reply chunks: extended headers were negotiated)");
    }

    @Test
    void structuredChunkOnceExtendedHeadersAreAgreed() {
        expect.command(1);
        NbdProtocolException e = refused(HeaderStyle.EXTENDED, none(1));
        assertContains(e.getMessage(), "a structured reply chunk (magic 0x668e33ef)");
        assertContains(e.getMessage(), "0x6e8a278c (only extended reply chunks");
    }

    @Test
    void extendedChunkWhenOnlyStructuredRepliesWereAgreed() {
        expect.command(1);
        NbdProtocolException e = refused(HeaderStyle.STRUCTURED, extendedChunk(FLAG_DONE, TYPE_NONE, 1, 0, new byte[0]));
        assertContains(e.getMessage(), "an extended reply chunk (magic 0x6e8a278c)");
        assertContains(e.getMessage(), "0x67446698 or 0x668e33ef");
        assertContains(e.getMessage(), "extended headers were not");
    }

    @Test
    void extendedChunkWithoutEitherOption() {
        expect.command(1);
        NbdProtocolException e = refused(HeaderStyle.SIMPLE, extendedChunk(FLAG_DONE, TYPE_NONE, 1, 0, new byte[0]));
        assertContains(e.getMessage(), "an extended reply chunk (magic 0x6e8a278c)");
        assertContains(e.getMessage(), "simple replies only");
    }

    @Test
    void theWrongMagicIsFoundFromItsFirstFourBytes() {
        EmbeddedChannel ch = channel(HeaderStyle.EXTENDED);
        NbdProtocolException e = assertThrows(NbdProtocolException.class,
                () -> feed(ch, bytes().u32(0x67446698L).array()));
        assertContains(e.getMessage(), "a simple reply");
        assertFalse(ch.finish());
    }

    @Test
    void badMagicNamesWhatExtendedHeadersAllow() {
        NbdProtocolException e = refused(HeaderStyle.EXTENDED, bytes().u32(0xdeadbeefL).zeroes(28).array());
        assertContains(e.getMessage(), "bad reply magic 0xdeadbeef (expected: 0x6e8a278c");
    }

    // ---- Lengths and offsets ----

    @Test
    void lengthOverWhatTheRequestAllows() {
        expect.chunkMax(1, 100);
        NbdProtocolException e = refused(HeaderStyle.EXTENDED, header(1, 0, 101));
        assertContains(e.getMessage(), "101 bytes long (expected: <= 100)");
    }

    @Test
    void lengthExactlyAtTheLimitIsAccepted() {
        expect.chunkMax(1, 12);
        EmbeddedChannel ch = channel(HeaderStyle.EXTENDED);
        feed(ch, extendedChunk(FLAG_DONE, 2, 1, 0, new byte[12]));
        Reply.Chunk c = ch.readInbound();
        assertEquals(12, c.payload().readableBytes());
        c.payload().release();
        assertFalse(ch.finish());
    }

    @Test
    void aLengthThatWouldWrapToASmallIntIsRefusedNotTruncated() {
        // 2^32 + 8 as an int is 8: the request's own limit would pass it.
        expect.chunkMax(1, Integer.MAX_VALUE);
        NbdProtocolException e = refused(HeaderStyle.EXTENDED, header(1, 0, (1L << 32) + 8));
        assertContains(e.getMessage(), "4294967304 bytes long");
    }

    @Test
    void aLengthOver2To31IsRefusedAgainstTheRequest() {
        expect.chunkMax(1, (1 << 25) + 8);
        NbdProtocolException e = refused(HeaderStyle.EXTENDED, header(1, 0, (1L << 31) + 1));
        assertContains(e.getMessage(), "2147483649 bytes long (expected: <= 33554440)");
    }

    @Test
    void aLengthWithTheTopBitSetIsUnsignedNotNegative() {
        expect.chunkMax(1, Integer.MAX_VALUE);
        NbdProtocolException e = refused(HeaderStyle.EXTENDED, header(1, 0, -1L));
        assertContains(e.getMessage(), "18446744073709551615 bytes long");
    }

    @Test
    void anOffsetThatIsNotTheRequestsIsRefused() {
        expect.command(1).offset(1, 4096);
        NbdProtocolException e = refused(HeaderStyle.EXTENDED, extendedChunk(FLAG_DONE, TYPE_NONE, 1, 8192, new byte[0]));
        assertContains(e.getMessage(), "names offset 8192 (expected: 4096, its request's)");
    }

    @Test
    void chunkForAnUnknownHandle() {
        NbdProtocolException e = refused(HeaderStyle.EXTENDED, extendedChunk(FLAG_DONE, TYPE_NONE, 77, 0, new byte[0]));
        assertContains(e.getMessage(), "handle 0x4d, which has no outstanding request");
    }

    @Test
    void afterARefusalNothingMoreIsDecoded() {
        expect.command(1).command(2);
        EmbeddedChannel ch = channel(HeaderStyle.EXTENDED);
        assertThrows(NbdProtocolException.class, () -> feed(ch, simpleReply(0, 1, null)));
        feed(ch, extendedChunk(FLAG_DONE, TYPE_NONE, 2, 0, new byte[0]));
        assertNull(ch.readInbound());
        assertFalse(ch.finish());
    }

    // ---- Helpers ----

    /** An extended header alone, announcing {@code length} bytes that never come. */
    private static byte[] header(long handle, long offset, long length) {
        return bytes().u32(EXTENDED_REPLY_MAGIC).u16(0).u16(TYPE_OFFSET_DATA).u64(handle).u64(offset).u64(length).array();
    }

    private NbdProtocolException refused(HeaderStyle style, byte[] bytes) {
        EmbeddedChannel ch = channel(style);
        NbdProtocolException e = assertThrows(NbdProtocolException.class, () -> feed(ch, bytes));
        assertNull(ch.readInbound());
        assertFalse(ch.finish());
        return e;
    }

    private EmbeddedChannel channel(HeaderStyle style) {
        EmbeddedChannel ch = new EmbeddedChannel();
        ch.config().setAllocator(alloc);
        ch.pipeline().addLast(new ReplyDecoder(expect, style));
        return ch;
    }

    private void feed(EmbeddedChannel ch, byte[] bytes) {
        ByteBuf buf = Unpooled.wrappedBuffer(bytes);
        fed.add(buf);
        ch.writeInbound(buf);
    }

    private List<String> decodeAll(EmbeddedChannel ch, List<ByteBuf> pieces) {
        for (ByteBuf p : pieces) {
            fed.add(p);
            ch.writeInbound(p);
        }
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
}
