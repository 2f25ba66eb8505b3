package org.nbdroot.proto.handshake;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.nbdroot.proto.WireBytes.bytes;
import static org.nbdroot.proto.WireBytes.concat;
import static org.nbdroot.proto.WireBytes.drainOutbound;
import static org.nbdroot.proto.WireBytes.greeting;
import static org.nbdroot.proto.WireBytes.option;
import static org.nbdroot.proto.WireBytes.optionReply;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import io.netty.util.concurrent.Promise;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.NbdProtocolException;
import org.nbdroot.proto.TrackingAllocator;
import org.nbdroot.proto.wire.HeaderStyle;

/**
 * NBD_OPT_EXTENDED_HEADERS in the handshake, the test playing the server: asked for first (after
 * TLS), granted it stands in for NBD_OPT_STRUCTURED_REPLY, refused it changes nothing. Numbers
 * are written out from {@code doc/proto.md}.
 */
class HandshakerExtendedHeadersTest {
    private static final int FIXED_NEWSTYLE = 1;
    private static final int NO_ZEROES = 2;
    private static final int OPT_LIST = 3;
    private static final int OPT_GO = 7;
    private static final int OPT_STRUCTURED_REPLY = 8;
    private static final int OPT_SET_META_CONTEXT = 10;
    private static final int OPT_EXTENDED_HEADERS = 11;
    private static final long REP_ACK = 1;
    private static final long REP_SERVER = 2;
    private static final long REP_INFO = 3;
    private static final long REP_META_CONTEXT = 4;
    private static final long REP_ERR = 1L << 31;
    private static final long REP_ERR_UNSUP = REP_ERR + 1;
    private static final long SIZE = 1L << 30;
    private static final int TFLAGS = 0b1101;

    private final TrackingAllocator alloc = new TrackingAllocator();
    private final List<ByteBuf> fed = new ArrayList<>();
    private EmbeddedChannel ch;
    private Promise<HandshakeResult> result;

    @AfterEach
    void nothingLeaks() {
        drainOutbound(ch);
        ch.finishAndReleaseAll();
        fed.forEach(b -> assertEquals(0, b.refCnt(), "an inbound buffer was not released"));
        assertEquals(List.of(), alloc.unreleased(), "buffers the handshaker allocated were not released");
    }

    @Test
    void grantedExtendedHeadersStandInForStructuredReplies() {
        start(plan());
        server(greeting(FIXED_NEWSTYLE | NO_ZEROES));
        assertSent(concat(bytes().u32(FIXED_NEWSTYLE | NO_ZEROES).array(), option(OPT_EXTENDED_HEADERS, new byte[0])));

        server(optionReply(OPT_EXTENDED_HEADERS, REP_ACK, new byte[0]));
        assertSent(setMetaContext()); // no NBD_OPT_STRUCTURED_REPLY: the server could only refuse it now

        server(optionReply(OPT_SET_META_CONTEXT, REP_META_CONTEXT, bytes().u32(3).utf8("base:allocation").array()),
                optionReply(OPT_SET_META_CONTEXT, REP_ACK, new byte[0]));
        assertSent(go());
        server(infoExport(), optionReply(OPT_GO, REP_ACK, new byte[0]));

        ExportInfo export = success().export();
        assertTrue(export.extendedHeaders());
        assertTrue(export.structuredReplies(), "extended headers imply structured replies");
        assertEquals(HeaderStyle.EXTENDED, export.headerStyle());
        assertEquals(Map.of(3, "base:allocation"), export.metaContexts());
    }

    @Test
    void refusedAsUnsupportedTheHandshakeGoesOnAsWithoutIt() {
        start(plan());
        server(greeting(FIXED_NEWSTYLE | NO_ZEROES));
        drainOutbound(ch);
        server(optionReply(OPT_EXTENDED_HEADERS, REP_ERR_UNSUP, bytes().utf8("not here").array()));
        assertSent(option(OPT_STRUCTURED_REPLY, new byte[0]));
        server(optionReply(OPT_STRUCTURED_REPLY, REP_ACK, new byte[0]));
        assertSent(setMetaContext());
        server(optionReply(OPT_SET_META_CONTEXT, REP_META_CONTEXT, bytes().u32(3).utf8("base:allocation").array()),
                optionReply(OPT_SET_META_CONTEXT, REP_ACK, new byte[0]));
        assertSent(go());
        server(infoExport(), optionReply(OPT_GO, REP_ACK, new byte[0]));

        ExportInfo export = success().export();
        assertFalse(export.extendedHeaders());
        assertTrue(export.structuredReplies());
        assertEquals(HeaderStyle.STRUCTURED, export.headerStyle());
    }

    /** ERR_POLICY, ERR_INVALID, ERR_PLATFORM, ERR_TLS_REQD, ERR_TOO_BIG, and one this client does not know. */
    @ParameterizedTest
    @ValueSource(ints = {2, 3, 4, 5, 9, 99})
    void anyOtherRefusalFallsBackSilentlyToo(int err) {
        start(plan());
        server(greeting(FIXED_NEWSTYLE | NO_ZEROES));
        drainOutbound(ch);
        server(optionReply(OPT_EXTENDED_HEADERS, REP_ERR + err, new byte[0]));
        assertSent(option(OPT_STRUCTURED_REPLY, new byte[0]));
        assertFalse(result.isDone());
    }

    @Test
    void bothRefusedMeansSimpleRepliesWithoutMetaContexts() {
        start(plan());
        server(greeting(FIXED_NEWSTYLE | NO_ZEROES));
        drainOutbound(ch);
        server(optionReply(OPT_EXTENDED_HEADERS, REP_ERR_UNSUP, new byte[0]),
                optionReply(OPT_STRUCTURED_REPLY, REP_ERR_UNSUP, new byte[0]));
        assertSent(concat(option(OPT_STRUCTURED_REPLY, new byte[0]), go()));
        server(infoExport(), optionReply(OPT_GO, REP_ACK, new byte[0]));
        assertEquals(HeaderStyle.SIMPLE, success().export().headerStyle());
    }

    @Test
    void goUnsupportedAfterGrantedExtendedHeadersIsAProtocolErrorNotExportName() {
        start(plan());
        server(greeting(FIXED_NEWSTYLE | NO_ZEROES),
                optionReply(OPT_EXTENDED_HEADERS, REP_ACK, new byte[0]),
                optionReply(OPT_SET_META_CONTEXT, REP_ACK, new byte[0]));
        drainOutbound(ch);
        server(optionReply(OPT_GO, REP_ERR_UNSUP, new byte[0]));

        assertTrue(result.isDone());
        NbdProtocolException e = assertInstanceOf(NbdProtocolException.class, result.cause());
        assertTrue(e.getMessage().contains("after granting NBD_OPT_EXTENDED_HEADERS"), e.getMessage());
        assertSent(new byte[0]); // NBD_OPT_EXPORT_NAME MUST NOT follow extended headers
        assertFalse(ch.isOpen());
    }

    @Test
    void shutdownRefusalStillEndsTheHandshake() {
        start(plan());
        server(greeting(FIXED_NEWSTYLE | NO_ZEROES));
        drainOutbound(ch);
        server(optionReply(OPT_EXTENDED_HEADERS, REP_ERR + 7, new byte[0]));
        assertTrue(result.isDone() && !result.isSuccess(), "NBD_REP_ERR_SHUTDOWN is no refusal to fall back from");
        assertTrue(result.cause().getMessage().contains("NBD_REP_ERR_SHUTDOWN"), result.cause().getMessage());
        assertSent(option(2, new byte[0])); // NBD_OPT_ABORT, not NBD_OPT_STRUCTURED_REPLY
    }

    @Test
    void notAskedForWhenSwitchedOff() {
        start(plan().withExtendedHeaders(false));
        server(greeting(FIXED_NEWSTYLE | NO_ZEROES));
        assertSent(concat(bytes().u32(FIXED_NEWSTYLE | NO_ZEROES).array(), option(OPT_STRUCTURED_REPLY, new byte[0])));
    }

    @Test
    void notAskedForWithoutStructuredReplies() {
        start(plan().withStructuredReplies(false).withMetaContexts(List.of()));
        server(greeting(FIXED_NEWSTYLE | NO_ZEROES));
        assertSent(concat(bytes().u32(FIXED_NEWSTYLE | NO_ZEROES).array(), go()));
        server(infoExport(), optionReply(OPT_GO, REP_ACK, new byte[0]));
        assertFalse(success().export().extendedHeaders());
    }

    @Test
    void notAskedForWhenOnlyListing() {
        start(HandshakePlan.listExports().withTimeout(Duration.ofSeconds(5)));
        server(greeting(FIXED_NEWSTYLE | NO_ZEROES));
        assertSent(concat(bytes().u32(FIXED_NEWSTYLE | NO_ZEROES).array(), option(OPT_LIST, new byte[0])));
        server(optionReply(OPT_LIST, REP_SERVER, bytes().string("disk").array()),
                optionReply(OPT_LIST, REP_ACK, new byte[0]));
        assertEquals(1, success().exports().size());
    }

    // ---- Helpers ----

    private static HandshakePlan plan() {
        return HandshakePlan.transmission("disk").withTimeout(Duration.ofSeconds(5));
    }

    private void start(HandshakePlan plan) {
        ch = new EmbeddedChannel();
        ch.config().setAllocator(alloc);
        result = ch.eventLoop().newPromise();
        ch.pipeline().addLast(new Handshaker(plan, result, (ctx, r) -> { }));
    }

    private void server(byte[]... messages) {
        for (byte[] m : messages) {
            ByteBuf buf = Unpooled.wrappedBuffer(m);
            fed.add(buf);
            ch.writeInbound(buf);
        }
    }

    private void assertSent(byte[] expected) {
        assertEquals(HexFormat.of().formatHex(expected), HexFormat.of().formatHex(drainOutbound(ch)));
    }

    private HandshakeResult success() {
        assertTrue(result.isDone(), "handshake not finished");
        if (!result.isSuccess()) {
            throw new AssertionError("handshake failed", result.cause());
        }
        return result.getNow();
    }

    private static byte[] setMetaContext() {
        return option(OPT_SET_META_CONTEXT, bytes().string("disk").u32(1).string("base:allocation").array());
    }

    /** NBD_OPT_GO asking for NBD_INFO_NAME, NBD_INFO_DESCRIPTION and NBD_INFO_BLOCK_SIZE. */
    private static byte[] go() {
        return option(OPT_GO, bytes().string("disk").u16(3).u16(1).u16(2).u16(3).array());
    }

    private static byte[] infoExport() {
        return optionReply(OPT_GO, REP_INFO, bytes().u16(0).u64(SIZE).u16(TFLAGS).array());
    }
}
