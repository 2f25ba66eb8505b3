package org.nbdroot.proto.handshake;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.nbdroot.proto.WireBytes.NBDMAGIC;
import static org.nbdroot.proto.WireBytes.OLDSTYLE_MAGIC;
import static org.nbdroot.proto.WireBytes.OPTION_REPLY_MAGIC;
import static org.nbdroot.proto.WireBytes.bytes;
import static org.nbdroot.proto.WireBytes.concat;
import static org.nbdroot.proto.WireBytes.drainOutbound;
import static org.nbdroot.proto.WireBytes.greeting;
import static org.nbdroot.proto.WireBytes.oneByteEach;
import static org.nbdroot.proto.WireBytes.option;
import static org.nbdroot.proto.WireBytes.optionReply;
import static org.nbdroot.proto.WireBytes.simpleReply;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import io.netty.util.concurrent.Promise;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.nbdroot.proto.BlockSize;
import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.ExportListing;
import org.nbdroot.proto.NbdException;
import org.nbdroot.proto.NbdOptionException;
import org.nbdroot.proto.NbdProtocolException;
import org.nbdroot.proto.TrackingAllocator;

/**
 * Drives the client's handshake with the test playing the server: greeting and replies go in
 * as inbound bytes, and every byte the client sends is checked against {@code doc/proto.md}
 * (numbers written out here, not taken from the engine).
 */
class HandshakerTest {
    // Handshake flags (server) and client flags.
    private static final int FIXED_NEWSTYLE = 1;
    private static final int NO_ZEROES = 2;
    // Options.
    private static final int OPT_EXPORT_NAME = 1;
    private static final int OPT_ABORT = 2;
    private static final int OPT_LIST = 3;
    private static final int OPT_GO = 7;
    private static final int OPT_STRUCTURED_REPLY = 8;
    private static final int OPT_LIST_META_CONTEXT = 9;
    private static final int OPT_SET_META_CONTEXT = 10;
    // Option reply types.
    private static final long REP_ACK = 1;
    private static final long REP_SERVER = 2;
    private static final long REP_INFO = 3;
    private static final long REP_META_CONTEXT = 4;
    private static final long REP_ERR = 1L << 31;
    private static final long REP_ERR_UNSUP = REP_ERR + 1;
    private static final long REP_ERR_UNKNOWN = REP_ERR + 6;
    // NBD_INFO types.
    private static final int INFO_EXPORT = 0;
    private static final int INFO_NAME = 1;
    private static final int INFO_DESCRIPTION = 2;
    private static final int INFO_BLOCK_SIZE = 3;

    private static final Duration TIMEOUT = Duration.ofMillis(500);
    private static final long SIZE = 1L << 30;
    private static final int TFLAGS = 0b1_0000_1101; // HAS_FLAGS, SEND_FLUSH, SEND_FUA, CAN_MULTI_CONN

    private final TrackingAllocator alloc = new TrackingAllocator();
    private final List<ByteBuf> fed = new ArrayList<>();
    private final List<HandshakeResult> installed = new ArrayList<>();
    private EmbeddedChannel ch;
    private Promise<HandshakeResult> result;

    @AfterEach
    void nothingLeaks() {
        if (ch != null) {
            drainOutbound(ch);
            ch.finishAndReleaseAll();
        }
        fed.forEach(b -> assertEquals(0, b.refCnt(), "an inbound buffer was not released"));
        assertEquals(List.of(), alloc.unreleased(), "buffers the handshaker allocated were not released");
    }

    // ---- The normal handshake, byte by byte ----

    @Test
    void goWithStructuredRepliesAndBaseAllocation() {
        start(plan("disk"));

        server(greeting(FIXED_NEWSTYLE | NO_ZEROES));
        assertSent(concat(bytes().u32(FIXED_NEWSTYLE | NO_ZEROES).array(), structuredReplyOption()));

        server(optionReply(OPT_STRUCTURED_REPLY, REP_ACK, new byte[0]));
        assertSent(setMetaContextOption("disk"));

        server(optionReply(OPT_SET_META_CONTEXT, REP_META_CONTEXT, bytes().u32(7).utf8("base:allocation").array()),
                optionReply(OPT_SET_META_CONTEXT, REP_ACK, new byte[0]));
        assertSent(goOption("disk"));

        server(infoExport(SIZE, TFLAGS),
                info(INFO_NAME, bytes().utf8("disk-canonical")),
                info(INFO_DESCRIPTION, bytes().utf8("a test disk")),
                info(INFO_BLOCK_SIZE, bytes().u32(512).u32(4096).u32(1 << 25)),
                optionReply(OPT_GO, REP_ACK, new byte[0]));

        ExportInfo export = success().export();
        assertEquals(new ExportInfo("disk-canonical", "a test disk", SIZE, TFLAGS, new BlockSize(512, 4096, 1 << 25),
                true, true, Map.of(7, "base:allocation")), export);
        assertEquals(1, installed.size(), "the transmission handlers were installed once");
        assertNull(ch.pipeline().get(Handshaker.class), "the handshaker removed itself");
        assertSent(new byte[0]);
        assertTrue(ch.isOpen());
        assertFalse(ch.finish());
    }

    @Test
    void theWholeHandshakeFedOneByteAtATime() {
        start(plan("disk"));
        serverOneByteAtATime(greeting(FIXED_NEWSTYLE));
        assertSent(concat(bytes().u32(FIXED_NEWSTYLE).array(), structuredReplyOption()));
        serverOneByteAtATime(optionReply(OPT_STRUCTURED_REPLY, REP_ACK, new byte[0]));
        assertSent(setMetaContextOption("disk"));
        serverOneByteAtATime(concat(
                optionReply(OPT_SET_META_CONTEXT, REP_META_CONTEXT, bytes().u32(1).utf8("base:allocation").array()),
                optionReply(OPT_SET_META_CONTEXT, REP_ACK, new byte[0])));
        assertSent(goOption("disk"));
        serverOneByteAtATime(concat(infoExport(4096, 1), optionReply(OPT_GO, REP_ACK, new byte[0])));

        ExportInfo export = success().export();
        assertEquals("disk", export.name(), "without NBD_INFO_NAME the name asked for is kept");
        assertNull(export.description());
        assertEquals(4096, export.size());
        assertFalse(export.blockSizeFromServer());
        assertEquals(new BlockSize(1, 4096, 32 * 1024 * 1024), export.blockSize(), "proto.md defaults");
        assertFalse(ch.finish());
    }

    @Test
    void bytesTheServerSendsAfterTheGoAckAreHandedOnNotLost() {
        start(plan("").withMetaContexts(List.of()).withStructuredReplies(false));
        server(greeting(FIXED_NEWSTYLE));
        assertSent(concat(bytes().u32(FIXED_NEWSTYLE).array(), goOption("")));
        byte[] firstReply = simpleReply(0, 1, null);
        server(concat(infoExport(SIZE, 1), optionReply(OPT_GO, REP_ACK, new byte[0]), firstReply));

        success();
        ByteBuf passedOn = ch.readInbound();
        assertArrayEquals(firstReply, org.nbdroot.proto.WireBytes.toArray(passedOn));
        passedOn.release();
        assertFalse(ch.finish());
    }

    @Test
    void unknownHandshakeFlagsAreIgnoredAndNeverEchoed() {
        // proto.md: the client SHOULD ignore flags it does not know and MUST NOT set other client flags.
        start(plan("disk"));
        server(greeting(0xffff));
        assertSent(concat(bytes().u32(FIXED_NEWSTYLE | NO_ZEROES).array(), structuredReplyOption()));
        assertFalse(result.isDone());
    }

    @Test
    void noZeroesIsEchoedOnlyWhenOffered() {
        start(plan("disk"));
        server(greeting(FIXED_NEWSTYLE));
        assertSent(concat(bytes().u32(FIXED_NEWSTYLE).array(), structuredReplyOption()));
    }

    @Test
    void unknownInfoTypesAreIgnored() {
        // proto.md: "The client MUST ignore information replies it does not understand."
        startAtGo("disk");
        server(info(4242, bytes().utf8("whatever")), infoExport(SIZE, 1), optionReply(OPT_GO, REP_ACK, new byte[0]));
        assertEquals(SIZE, success().export().size());
        assertFalse(ch.finish());
    }

    @Test
    void listMetaContextsWhenAsked() {
        start(plan("disk").withListMetaContexts(true));
        server(greeting(FIXED_NEWSTYLE));
        assertSent(concat(bytes().u32(FIXED_NEWSTYLE).array(), structuredReplyOption()));
        server(optionReply(OPT_STRUCTURED_REPLY, REP_ACK, new byte[0]));
        // NBD_OPT_LIST_META_CONTEXT with no queries: every context the server has.
        assertSent(option(OPT_LIST_META_CONTEXT, bytes().string("disk").u32(0).array()));
        server(optionReply(OPT_LIST_META_CONTEXT, REP_META_CONTEXT, bytes().u32(0).utf8("base:allocation").array()),
                optionReply(OPT_LIST_META_CONTEXT, REP_META_CONTEXT, bytes().u32(0).utf8("qemu:dirty-bitmap:b0").array()),
                optionReply(OPT_LIST_META_CONTEXT, REP_ACK, new byte[0]));
        assertSent(setMetaContextOption("disk"));
        server(optionReply(OPT_SET_META_CONTEXT, REP_ACK, new byte[0]));
        assertSent(goOption("disk"));
        server(infoExport(SIZE, 1), optionReply(OPT_GO, REP_ACK, new byte[0]));

        HandshakeResult r = success();
        assertEquals(List.of("base:allocation", "qemu:dirty-bitmap:b0"), r.availableMetaContexts());
        assertEquals(Map.of(), r.export().metaContexts(), "the server selected none");
        assertFalse(ch.finish());
    }

    // ---- Fallbacks ----

    @Test
    void goUnsupportedFallsBackToExportNameWithNoZeroes() {
        startAtGo("disk"); // greeting had NO_ZEROES, which the client echoed
        server(optionReply(OPT_GO, REP_ERR_UNSUP, new byte[0]));
        assertSent(option(OPT_EXPORT_NAME, bytes().utf8("disk").array())); // the bare name, no length

        server(bytes().u64(SIZE).u16(TFLAGS).array());
        ExportInfo export = success().export();
        assertEquals(SIZE, export.size());
        assertEquals(TFLAGS, export.flags());
        assertFalse(export.blockSizeFromServer());
        assertTrue(export.structuredReplies(), "negotiated before the fallback");
        assertEquals(Map.of(7, "base:allocation"), export.metaContexts());
        assertFalse(ch.finish());
    }

    @Test
    void goUnsupportedFallsBackToExportNameWith124ZeroBytes() {
        start(plan("disk").withStructuredReplies(false));
        server(greeting(FIXED_NEWSTYLE));
        assertSent(concat(bytes().u32(FIXED_NEWSTYLE).array(), goOption("disk")));
        server(optionReply(OPT_GO, REP_ERR_UNSUP, bytes().utf8("what is GO?").array()));
        assertSent(option(OPT_EXPORT_NAME, bytes().utf8("disk").array()));

        server(bytes().u64(SIZE).u16(TFLAGS).array());
        byte[] zeroes = new byte[124];
        for (int i = 0; i < zeroes.length - 1; i++) {
            server(new byte[] {zeroes[i]});
            assertFalse(result.isDone(), "not done before the 124th zero byte");
        }
        server(new byte[1]);
        assertEquals(SIZE, success().export().size());
        assertFalse(ch.finish());
    }

    @Test
    void structuredReplyRefusedMeansNoMetaContextOptions() {
        start(plan("disk").withListMetaContexts(true));
        server(greeting(FIXED_NEWSTYLE | NO_ZEROES));
        assertSent(concat(bytes().u32(FIXED_NEWSTYLE | NO_ZEROES).array(), structuredReplyOption()));
        server(optionReply(OPT_STRUCTURED_REPLY, REP_ERR_UNSUP, new byte[0]));
        assertSent(goOption("disk")); // neither LIST_META_CONTEXT nor SET_META_CONTEXT
        server(infoExport(SIZE, 1), optionReply(OPT_GO, REP_ACK, new byte[0]));

        ExportInfo export = success().export();
        assertFalse(export.structuredReplies());
        assertEquals(Map.of(), export.metaContexts());
        assertFalse(ch.finish());
    }

    @Test
    void metaContextRefusedStillGoes() {
        start(plan("disk"));
        server(greeting(FIXED_NEWSTYLE), optionReply(OPT_STRUCTURED_REPLY, REP_ACK, new byte[0]));
        drainOutbound(ch);
        server(optionReply(OPT_SET_META_CONTEXT, REP_ERR + 3, new byte[0]));
        assertSent(goOption("disk"));
        server(infoExport(SIZE, 1), optionReply(OPT_GO, REP_ACK, new byte[0]));
        assertEquals(Map.of(), success().export().metaContexts());
        assertFalse(ch.finish());
    }

    @Test
    void plainNewstyleServerGetsOnlyExportName() {
        // Without FIXED_NEWSTYLE nothing but NBD_OPT_EXPORT_NAME is understood.
        start(plan("disk"));
        server(greeting(0));
        assertSent(concat(bytes().u32(0).array(), option(OPT_EXPORT_NAME, bytes().utf8("disk").array())));
        server(bytes().u64(SIZE).u16(1).zeroes(124).array());
        assertFalse(success().export().structuredReplies());
        assertFalse(ch.finish());
    }

    // ---- Listing exports ----

    @Test
    void listReturnsTheExportsAndSendsAbort() {
        start(HandshakePlan.listExports().withTimeout(TIMEOUT));
        server(greeting(FIXED_NEWSTYLE | NO_ZEROES));
        assertSent(concat(bytes().u32(FIXED_NEWSTYLE | NO_ZEROES).array(), option(OPT_LIST, new byte[0])));

        server(optionReply(OPT_LIST, REP_SERVER, bytes().string("disk").utf8("the first disk").array()),
                optionReply(OPT_LIST, REP_SERVER, bytes().string("").array()),
                optionReply(OPT_LIST, REP_ACK, new byte[0]));

        HandshakeResult r = success();
        assertNull(r.export());
        assertEquals(List.of(new ExportListing("disk", "the first disk"), new ExportListing("", "")), r.exports());
        assertSent(option(OPT_ABORT, new byte[0])); // a soft disconnect
        assertTrue(installed.isEmpty(), "no transmission handlers for a listing");
        assertFalse(ch.finish());
    }

    @Test
    void listNeedsFixedNewstyle() {
        start(HandshakePlan.listExports().withTimeout(TIMEOUT));
        server(greeting(0));
        assertContains(failure(NbdException.class).getMessage(), "fixed newstyle");
        assertFalse(ch.isOpen());
    }

    @Test
    void listRefusedByPolicy() {
        start(HandshakePlan.listExports().withTimeout(TIMEOUT));
        server(greeting(FIXED_NEWSTYLE));
        drainOutbound(ch);
        server(optionReply(OPT_LIST, REP_ERR + 2, bytes().utf8("listing is disabled").array()));
        NbdOptionException e = failure(NbdOptionException.class);
        assertContains(e.getMessage(), "NBD_OPT_LIST");
        assertContains(e.getMessage(), "NBD_REP_ERR_POLICY");
        assertContains(e.getMessage(), "listing is disabled");
        assertSent(option(OPT_ABORT, new byte[0]));
        assertFalse(ch.isOpen());
    }

    @Test
    void listEntryWithANameLongerThanItsReply() {
        start(HandshakePlan.listExports().withTimeout(TIMEOUT));
        server(greeting(FIXED_NEWSTYLE));
        server(optionReply(OPT_LIST, REP_SERVER, bytes().u32(10).utf8("abc").array()));
        assertContains(failure(NbdProtocolException.class).getMessage(), "export name in NBD_REP_SERVER");
    }

    // ---- NBD_OPT_STARTTLS ----

    /** A TLS starter the test completes by hand: the state machine around TLS, without TLS. */
    private static final class FakeTls implements TlsStarter {
        io.netty.util.concurrent.Promise<Void> started;

        @Override
        public io.netty.util.concurrent.Future<?> start(io.netty.channel.ChannelHandlerContext ctx) {
            started = ctx.executor().newPromise();
            return started;
        }

        @Override
        public String describe() {
            return "fake TLS";
        }
    }

    @Test
    void startTlsComesFirstAndTheRestWaitsForTls() {
        FakeTls tls = new FakeTls();
        start(plan("disk").withTls(tls));
        server(greeting(FIXED_NEWSTYLE));
        assertSent(concat(bytes().u32(FIXED_NEWSTYLE).array(), option(5, new byte[0])));
        server(optionReply(5, REP_ACK, new byte[0]));
        assertTrue(tls.started != null, "TLS started on the acknowledgement");
        assertSent(new byte[0]); // nothing more until TLS is up
        tls.started.setSuccess(null);
        ch.runPendingTasks();
        assertSent(structuredReplyOption());
    }

    @Test
    void startTlsRefusedEndsTheHandshake() {
        start(plan("disk").withTls(new FakeTls()));
        server(greeting(FIXED_NEWSTYLE));
        drainOutbound(ch);
        server(optionReply(5, REP_ERR_UNSUP, new byte[0]));
        NbdOptionException e = failure(NbdOptionException.class);
        assertEquals(5, e.option());
        assertContains(e.getMessage(), "the server does not offer TLS, which is required: not going on in plain text");
        assertSent(option(OPT_ABORT, new byte[0])); // and nothing but the polite abort
    }

    @Test
    void tlsNeedsFixedNewstyle() {
        start(plan("disk").withTls(new FakeTls()));
        server(greeting(0));
        assertContains(failure(NbdException.class).getMessage(), "does not speak fixed newstyle and so cannot start TLS");
    }

    @Test
    void failedTlsHandshakeEndsTheHandshake() {
        FakeTls tls = new FakeTls();
        start(plan("disk").withTls(tls));
        server(greeting(FIXED_NEWSTYLE));
        drainOutbound(ch);
        server(optionReply(5, REP_ACK, new byte[0]));
        tls.started.setFailure(new javax.net.ssl.SSLHandshakeException("bad certificate"));
        ch.runPendingTasks();
        assertEquals("TLS handshake with the server failed (fake TLS): bad certificate",
                failure(NbdException.class).getMessage());
        assertSent(new byte[0]); // no abort in plain text once TLS has begun
    }

    // ---- Refusals of NBD_OPT_GO ----

    @ParameterizedTest(name = "{1}")
    @CsvSource({
        "2, NBD_REP_ERR_POLICY",
        "3, NBD_REP_ERR_INVALID",
        "4, NBD_REP_ERR_PLATFORM",
        "5, NBD_REP_ERR_TLS_REQD",
        "7, NBD_REP_ERR_SHUTDOWN",
        "8, NBD_REP_ERR_BLOCK_SIZE_REQD",
        "9, NBD_REP_ERR_TOO_BIG",
        "10, NBD_REP_ERR_EXT_HEADER_REQD",
    })
    void goRefusalNamesTheError(int n, String specName) {
        startAtGo("disk");
        server(optionReply(OPT_GO, REP_ERR + n, bytes().utf8("  go away\n").array()));

        NbdOptionException e = failure(NbdOptionException.class);
        assertEquals(OPT_GO, e.option());
        assertEquals((int) (REP_ERR + n), e.replyType());
        assertContains(e.getMessage(), "NBD_OPT_GO");
        assertContains(e.getMessage(), specName);
        assertContains(e.getMessage(), ": go away"); // the server's message, trimmed
        // The client ends politely (NBD_OPT_ABORT), as proto.md requires after NBD_REP_ERR_SHUTDOWN.
        assertSent(option(OPT_ABORT, new byte[0]));
        assertFalse(ch.isOpen());
    }

    @Test
    void goRefusedWithUnknownExport() {
        startAtGo("disk");
        server(optionReply(OPT_GO, REP_ERR_UNKNOWN, bytes().utf8("not here").array()));

        NbdException e = failure(NbdException.class);
        assertContains(e.getMessage(), "no such export");
        assertContains(e.getMessage(), "'disk'");
        assertContains(e.getMessage(), "not here");
        assertSent(option(OPT_ABORT, new byte[0]));
        assertFalse(ch.isOpen());
    }

    @Test
    void goRefusedWithAnErrorThisClientDoesNotKnow() {
        startAtGo("disk");
        server(optionReply(OPT_GO, REP_ERR + 100, new byte[0]));
        assertContains(failure(NbdOptionException.class).getMessage(), "0x80000064");
    }

    // ---- Protocol errors: hard disconnect, nothing more sent ----

    @Test
    void oldstyleGreeting() {
        start(plan("disk"));
        server(bytes().u64(NBDMAGIC).u64(OLDSTYLE_MAGIC).u64(SIZE).u32(1).zeroes(124).array());
        assertContains(failure(NbdProtocolException.class).getMessage(), "oldstyle");
        assertSent(new byte[0]);
        assertFalse(ch.isOpen());
    }

    @Test
    void notAnNbdServer() {
        start(plan("disk"));
        server(bytes().utf8("HTTP/1.1 400 Bad Request\r\n").array());
        NbdProtocolException e = failure(NbdProtocolException.class);
        assertContains(e.getMessage(), "not an NBD server");
        assertContains(e.getMessage(), HexFormat.of().formatHex("HTTP/1.1".getBytes(java.nio.charset.StandardCharsets.US_ASCII)));
        assertSent(new byte[0]);
        assertFalse(ch.isOpen());
    }

    @Test
    void badSecondMagic() {
        start(plan("disk"));
        server(bytes().u64(NBDMAGIC).u64(0x1122334455667788L).u16(1).array());
        assertContains(failure(NbdProtocolException.class).getMessage(), "0x1122334455667788");
        assertFalse(ch.isOpen());
    }

    @Test
    void badOptionReplyMagic() {
        startAfterGreeting();
        server(bytes().u64(OPTION_REPLY_MAGIC + 1).u32(OPT_STRUCTURED_REPLY).u32(REP_ACK).u32(0).array());
        NbdProtocolException e = failure(NbdProtocolException.class);
        assertContains(e.getMessage(), "bad option reply magic");
        assertContains(e.getMessage(), "NBD_OPT_STRUCTURED_REPLY");
        assertSent(new byte[0]); // no NBD_OPT_ABORT after a protocol error
        assertFalse(ch.isOpen());
    }

    @Test
    void replyForAnotherOption() {
        startAfterGreeting();
        server(optionReply(OPT_GO, REP_ACK, new byte[0]));
        assertContains(failure(NbdProtocolException.class).getMessage(),
                "server answered NBD_OPT_GO while NBD_OPT_STRUCTURED_REPLY was asked");
        assertFalse(ch.isOpen());
    }

    @Test
    void optionReplyLongerThanTheLimitFailsOnItsHeader() {
        startAfterGreeting();
        // Only the header: the client must refuse without waiting for 8261 bytes.
        server(bytes().u64(OPTION_REPLY_MAGIC).u32(OPT_STRUCTURED_REPLY).u32(REP_ERR_UNSUP).u32(8261).array());
        NbdProtocolException e = failure(NbdProtocolException.class);
        assertContains(e.getMessage(), "8261 bytes long");
        assertFalse(ch.isOpen());
    }

    @Test
    void infoNameLongerThan4096Bytes() {
        startAtGo("disk");
        server(info(INFO_NAME, bytes().utf8("n".repeat(4097))));
        assertContains(failure(NbdProtocolException.class).getMessage(), "NBD_INFO_NAME is 4097 bytes long");
        assertFalse(ch.isOpen());
    }

    @Test
    void infoNameOf4096BytesIsFine() {
        startAtGo("disk");
        server(info(INFO_NAME, bytes().utf8("n".repeat(4096))), infoExport(SIZE, 1),
                optionReply(OPT_GO, REP_ACK, new byte[0]));
        assertEquals("n".repeat(4096), success().export().name());
        assertFalse(ch.finish());
    }

    @ParameterizedTest(name = "min {0}, preferred {1}, max {2}")
    @CsvSource({
        "0, 4096, 4096, minimum block size 0",
        "3, 4096, 4096, minimum block size 3",
        "131072, 131072, 131072, minimum block size 131072",
        "512, 256, 4096, preferred block size 256",
        "1, 256, 4096, preferred block size 256",
        "4096, 2048, 8192, preferred block size 2048",
        "512, 3000, 4096, preferred block size 3000",
        "512, 4096, 1000, maximum block size 1000",
        "512, 4096, 256, maximum block size 256",
    })
    void blockSizeBreakingTheRules(long min, long preferred, long max, String expected) {
        startAtGo("disk");
        server(infoExport(SIZE, 1), info(INFO_BLOCK_SIZE, bytes().u32(min).u32(preferred).u32(max)));
        NbdProtocolException e = failure(NbdProtocolException.class);
        assertContains(e.getMessage(), "NBD_INFO_BLOCK_SIZE");
        assertContains(e.getMessage(), expected);
        assertFalse(ch.isOpen());
    }

    @Test
    void blockSizeWithoutAnInherentMaximum() {
        startAtGo("disk");
        server(infoExport(SIZE, 1), info(INFO_BLOCK_SIZE, bytes().u32(1).u32(512).u32(0xffffffffL)),
                optionReply(OPT_GO, REP_ACK, new byte[0]));
        BlockSize blocks = success().export().blockSize();
        assertEquals(1, blocks.minimum());
        assertEquals(512, blocks.preferred());
        assertEquals(32 * 1024 * 1024, blocks.maximumPayload(), "0xffffffff means no limit: the client's cap applies");
        assertFalse(ch.finish());
    }

    @Test
    void blockSizeInfoOfTheWrongLength() {
        startAtGo("disk");
        server(info(INFO_BLOCK_SIZE, bytes().u32(512).u32(4096)));
        assertContains(failure(NbdProtocolException.class).getMessage(), "NBD_INFO_BLOCK_SIZE is 8 bytes long (expected: 12)");
    }

    @Test
    void exportInfoOfTheWrongLength() {
        startAtGo("disk");
        server(info(INFO_EXPORT, bytes().u64(SIZE)));
        assertContains(failure(NbdProtocolException.class).getMessage(), "NBD_INFO_EXPORT is 8 bytes long (expected: 10)");
    }

    @Test
    void exportSizeNotAMultipleOfTheMinimumBlock() {
        startAtGo("disk");
        server(infoExport(1000, 1), info(INFO_BLOCK_SIZE, bytes().u32(512).u32(4096).u32(1 << 20)),
                optionReply(OPT_GO, REP_ACK, new byte[0]));
        assertContains(failure(NbdProtocolException.class).getMessage(),
                "export size 1000 is not a multiple of the minimum block size 512");
        assertTrue(installed.isEmpty());
        assertFalse(ch.isOpen());
    }

    @Test
    void goAcknowledgedWithoutExportInfo() {
        startAtGo("disk");
        server(info(INFO_NAME, bytes().utf8("disk")), optionReply(OPT_GO, REP_ACK, new byte[0]));
        assertContains(failure(NbdProtocolException.class).getMessage(), "without NBD_INFO_EXPORT");
        assertTrue(installed.isEmpty());
        assertFalse(ch.isOpen());
    }

    @Test
    void ackWithData() {
        startAfterGreeting();
        server(optionReply(OPT_STRUCTURED_REPLY, REP_ACK, new byte[3]));
        assertContains(failure(NbdProtocolException.class).getMessage(), "NBD_REP_ACK is 3 bytes long (expected: 0)");
    }

    @Test
    void replyTypeThatDoesNotBelongToTheOption() {
        startAtGo("disk");
        server(optionReply(OPT_GO, REP_SERVER, bytes().string("disk").array()));
        assertContains(failure(NbdProtocolException.class).getMessage(), "unexpected reply type 0x2 to NBD_OPT_GO");
    }

    @Test
    void exportNameLongerThan4096BytesIsRefusedUpFront() {
        assertThrows(IllegalArgumentException.class,
                () -> new Handshaker(plan("x".repeat(4097)), new EmbeddedChannel().eventLoop().newPromise(), null));
    }

    // ---- The server going away, and the timeout ----

    @Test
    void serverClosesBeforeTheGreeting() {
        start(plan("disk"));
        ch.close();
        assertContains(failure(NbdException.class).getMessage(),
                "server closed the connection during the handshake, waiting for the server's greeting");
    }

    @Test
    void serverClosesMidHandshake() {
        startAtGo("disk");
        server(infoExport(SIZE, 1)); // half of the answer
        ch.close();
        NbdException e = failure(NbdException.class);
        assertContains(e.getMessage(), "server closed the connection during the handshake");
        assertContains(e.getMessage(), "waiting for the reply to NBD_OPT_GO");
        assertTrue(installed.isEmpty());
    }

    @Test
    void serverClosesAfterExportNameHintsAtAMissingExport() {
        startAtGo("disk");
        server(optionReply(OPT_GO, REP_ERR_UNSUP, new byte[0]));
        ch.close();
        NbdException e = failure(NbdException.class);
        assertContains(e.getMessage(), "NBD_OPT_EXPORT_NAME");
        assertContains(e.getMessage(), "there is no export 'disk'");
    }

    @Test
    void timeoutWaitingForTheGreeting() {
        start(plan("disk"));
        ch.advanceTimeBy(TIMEOUT.toMillis() - 1, TimeUnit.MILLISECONDS);
        ch.runScheduledPendingTasks();
        assertFalse(result.isDone());

        ch.advanceTimeBy(1, TimeUnit.MILLISECONDS);
        ch.runScheduledPendingTasks();
        NbdException e = failure(NbdException.class);
        assertContains(e.getMessage(), "handshake timed out");
        assertContains(e.getMessage(), "waiting for the server's greeting");
        assertSent(new byte[0]); // nothing to abort before the greeting
        assertFalse(ch.isOpen());
    }

    @Test
    void timeoutWaitingForAnOptionReplyAbortsPolitely() {
        startAfterGreeting();
        ch.advanceTimeBy(TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
        ch.runScheduledPendingTasks();
        NbdException e = failure(NbdException.class);
        assertContains(e.getMessage(), "handshake timed out");
        assertContains(e.getMessage(), "waiting for the reply to NBD_OPT_STRUCTURED_REPLY");
        assertSent(option(OPT_ABORT, new byte[0]));
        assertFalse(ch.isOpen());
    }

    @Test
    void timeoutMessageStatesTheTimeoutTruthfully() {
        start(plan("disk"));
        ch.advanceTimeBy(TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
        ch.runScheduledPendingTasks();
        String message = failure(NbdException.class).getMessage();
        assertFalse(message.contains("after 0 s"), message);
    }

    @Test
    void noTimeoutOnceTheHandshakeIsDone() {
        startAtGo("disk");
        server(infoExport(SIZE, 1), optionReply(OPT_GO, REP_ACK, new byte[0]));
        success();
        ch.advanceTimeBy(TIMEOUT.toMillis() * 10, TimeUnit.MILLISECONDS);
        ch.runScheduledPendingTasks();
        assertTrue(ch.isOpen());
        assertTrue(result.isSuccess());
        assertFalse(ch.finish());
    }

    // ---- Bugs ----

    @Test
    void setMetaContextErrorDropsTheContextsItReported() {
        start(plan("disk"));
        server(greeting(FIXED_NEWSTYLE), optionReply(OPT_STRUCTURED_REPLY, REP_ACK, new byte[0]));
        server(optionReply(OPT_SET_META_CONTEXT, REP_META_CONTEXT, bytes().u32(1).utf8("base:allocation").array()),
                optionReply(OPT_SET_META_CONTEXT, REP_ERR + 9, new byte[0])); // NBD_REP_ERR_TOO_BIG
        server(infoExport(SIZE, 1), optionReply(OPT_GO, REP_ACK, new byte[0]));

        assertEquals(Map.of(), success().export().metaContexts());
    }

    @Test
    void listMetaContextErrorDisregardsTheContextsItReported() {
        start(plan("disk").withListMetaContexts(true).withMetaContexts(List.of()));
        server(greeting(FIXED_NEWSTYLE), optionReply(OPT_STRUCTURED_REPLY, REP_ACK, new byte[0]));
        server(optionReply(OPT_LIST_META_CONTEXT, REP_META_CONTEXT, bytes().u32(0).utf8("base:allocation").array()),
                optionReply(OPT_LIST_META_CONTEXT, REP_ERR + 3, new byte[0])); // NBD_REP_ERR_INVALID
        server(infoExport(SIZE, 1), optionReply(OPT_GO, REP_ACK, new byte[0]));

        assertEquals(List.of(), success().availableMetaContexts());
    }

    /** Each reply is bounded; without a bound on their number a server could fill the daemon's heap. */
    @Test
    void aListThatNeverEndsFailsPast4MiBOfReplies() {
        start(HandshakePlan.listExports().withTimeout(TIMEOUT));
        server(greeting(FIXED_NEWSTYLE));
        drainOutbound(ch);
        byte[] entry = optionReply(OPT_LIST, REP_SERVER, bytes().string("x".repeat(4000)).array());
        int sent = 0;
        while (!result.isDone() && sent < 2000) {
            server(entry);
            sent++;
        }
        assertContains(failure(NbdProtocolException.class).getMessage(),
                "the server sent more than 4 MiB or 65536 replies to NBD_OPT_LIST");
        assertTrue(sent > 1000 && sent < 1100, "failed just past 4 MiB: after " + sent + " replies");
        assertFalse(ch.isOpen());
    }

    @Test
    void aMetaContextIdGivenTwiceIsAProtocolError() {
        start(plan("disk").withMetaContexts(List.of("base:allocation", "x-other:")));
        server(greeting(FIXED_NEWSTYLE | NO_ZEROES), optionReply(OPT_STRUCTURED_REPLY, REP_ACK, new byte[0]));
        drainOutbound(ch);
        server(optionReply(OPT_SET_META_CONTEXT, REP_META_CONTEXT, bytes().u32(7).utf8("base:allocation").array()),
                optionReply(OPT_SET_META_CONTEXT, REP_META_CONTEXT, bytes().u32(7).utf8("x-other:thing").array()));
        assertContains(failure(NbdProtocolException.class).getMessage(),
                "the server gave meta context id 7 to both 'base:allocation' and 'x-other:thing'");
        assertFalse(ch.isOpen());
    }

    /** Were the handshake marked done first, the failure would be dropped and nothing would end it. */
    @Test
    void aConnectionWhoseTransmissionSetUpThrowsFailsInsteadOfHanging() {
        ch = new EmbeddedChannel();
        ch.freezeTime();
        ch.config().setAllocator(alloc);
        result = ch.eventLoop().newPromise();
        ch.pipeline().addLast(new Handshaker(plan("disk"), result, (ctx, r) -> {
            throw new IllegalStateException("no room for the handlers");
        }));
        server(greeting(FIXED_NEWSTYLE | NO_ZEROES),
                optionReply(OPT_STRUCTURED_REPLY, REP_ACK, new byte[0]),
                optionReply(OPT_SET_META_CONTEXT, REP_ACK, new byte[0]),
                infoExport(SIZE, TFLAGS), optionReply(OPT_GO, REP_ACK, new byte[0]));
        assertContains(failure(NbdException.class).getMessage(),
                "setting up the connection for transmission failed: java.lang.IllegalStateException: no room for the handlers");
        byte[] sent = drainOutbound(ch);
        byte[] go = goOption("disk");
        assertArrayEquals(go, java.util.Arrays.copyOfRange(sent, sent.length - go.length, sent.length),
                "NBD_OPT_GO was the last thing sent: no NBD_OPT_ABORT to a server in transmission");
        assertFalse(ch.isOpen());
    }

    /** A server could otherwise send one context after another, each kept for the connection's life. */
    @Test
    void aMetaContextThatWasNotAskedForIsAProtocolError() {
        startAfterGreeting();
        server(optionReply(OPT_STRUCTURED_REPLY, REP_ACK, new byte[0]));
        drainOutbound(ch);
        server(optionReply(OPT_SET_META_CONTEXT, REP_META_CONTEXT, bytes().u32(8).utf8("").array()));
        assertContains(failure(NbdProtocolException.class).getMessage(),
                "the server selected meta context '', which was not asked for (asked: base:allocation)");
    }

    @Test
    void aMetaContextSelectedTwiceIsAProtocolError() {
        startAfterGreeting();
        server(optionReply(OPT_STRUCTURED_REPLY, REP_ACK, new byte[0]));
        drainOutbound(ch);
        server(optionReply(OPT_SET_META_CONTEXT, REP_META_CONTEXT, bytes().u32(7).utf8("base:allocation").array()),
                optionReply(OPT_SET_META_CONTEXT, REP_META_CONTEXT, bytes().u32(8).utf8("base:allocation").array()));
        assertContains(failure(NbdProtocolException.class).getMessage(),
                "the server selected meta context 'base:allocation' twice");
    }

    @Test
    void aListOfMoreThan65536ExportsFails() {
        start(HandshakePlan.listExports().withTimeout(TIMEOUT));
        server(greeting(FIXED_NEWSTYLE));
        drainOutbound(ch);
        byte[] entry = optionReply(OPT_LIST, REP_SERVER, bytes().string("").array());
        int sent = 0;
        while (!result.isDone() && sent < 70000) {
            server(entry);
            sent++;
        }
        assertContains(failure(NbdProtocolException.class).getMessage(),
                "the server sent more than 4 MiB or 65536 replies to NBD_OPT_LIST");
        assertEquals(65537, sent);
    }

    /** A preferred size of 2 GiB and a maximum past 2^31 are legal; kept in ints they must stay meaningful. */
    @Test
    void blockSizesPastWhatAnIntHoldsStayValid() {
        startAtGo("disk");
        server(infoExport(SIZE, 1), info(INFO_BLOCK_SIZE, bytes().u32(4096).u32(0x80000000L).u32(0xfffff000L)),
                optionReply(OPT_GO, REP_ACK, new byte[0]));
        BlockSize blocks = success().export().blockSize();
        assertEquals(1 << 30, blocks.preferred());
        assertEquals(Integer.MAX_VALUE / 4096 * 4096, blocks.maximum());
        assertNull(BlockSize.violation(blocks.minimum(), blocks.preferred(), blocks.maximum()));
        assertFalse(ch.finish());
    }

    @Test
    void shutdownRefusalOfAnyOptionEndsTheHandshake() {
        startAfterGreeting();
        server(optionReply(OPT_STRUCTURED_REPLY, REP_ERR + 7, new byte[0]));
        assertSent(option(OPT_ABORT, new byte[0])); // not NBD_OPT_GO
        assertContains(failure(NbdOptionException.class).getMessage(), "NBD_REP_ERR_SHUTDOWN");
    }

    // ---- Helpers ----

    /** The compact-header plan the scripts above follow; {@link HandshakerExtendedHeadersTest} asks for more. */
    private static HandshakePlan plan(String exportName) {
        return HandshakePlan.transmission(exportName).withExtendedHeaders(false).withTimeout(TIMEOUT);
    }

    private void start(HandshakePlan plan) {
        ch = new EmbeddedChannel();
        ch.freezeTime(); // only advanceTimeBy moves it: the real clock would fire the 500 ms timeout in a slow test
        ch.config().setAllocator(alloc);
        result = ch.eventLoop().newPromise();
        ch.pipeline().addLast(new Handshaker(plan, result, (ctx, r) -> installed.add(r)));
    }

    /** Greeting answered: the client has just sent NBD_OPT_STRUCTURED_REPLY. */
    private void startAfterGreeting() {
        start(plan("disk"));
        server(greeting(FIXED_NEWSTYLE | NO_ZEROES));
        drainOutbound(ch);
    }

    /** Structured replies and base:allocation (id 7) agreed: the client has just sent NBD_OPT_GO. */
    private void startAtGo(String exportName) {
        start(plan(exportName));
        server(greeting(FIXED_NEWSTYLE | NO_ZEROES),
                optionReply(OPT_STRUCTURED_REPLY, REP_ACK, new byte[0]),
                optionReply(OPT_SET_META_CONTEXT, REP_META_CONTEXT, bytes().u32(7).utf8("base:allocation").array()),
                optionReply(OPT_SET_META_CONTEXT, REP_ACK, new byte[0]));
        byte[] sent = drainOutbound(ch);
        byte[] tail = java.util.Arrays.copyOfRange(sent, sent.length - goOption(exportName).length, sent.length);
        assertArrayEquals(goOption(exportName), tail);
    }

    private void server(byte[]... messages) {
        for (byte[] m : messages) {
            ByteBuf buf = Unpooled.wrappedBuffer(m);
            fed.add(buf);
            ch.writeInbound(buf);
        }
    }

    private void serverOneByteAtATime(byte[] bytes) {
        for (ByteBuf b : oneByteEach(bytes)) {
            fed.add(b);
            ch.writeInbound(b);
        }
    }

    private void assertSent(byte[] expected) {
        byte[] actual = drainOutbound(ch);
        assertEquals(HexFormat.of().formatHex(expected), HexFormat.of().formatHex(actual));
    }

    private HandshakeResult success() {
        assertTrue(result.isDone(), "handshake not finished");
        if (!result.isSuccess()) {
            throw new AssertionError("handshake failed", result.cause());
        }
        return result.getNow();
    }

    private <T extends Throwable> T failure(Class<T> type) {
        assertTrue(result.isDone(), "handshake not finished");
        assertFalse(result.isSuccess(), "handshake succeeded");
        return assertInstanceOf(type, result.cause());
    }

    private static byte[] structuredReplyOption() {
        return option(OPT_STRUCTURED_REPLY, new byte[0]);
    }

    private static byte[] setMetaContextOption(String exportName) {
        return option(OPT_SET_META_CONTEXT, bytes().string(exportName).u32(1).string("base:allocation").array());
    }

    /** NBD_OPT_GO asking for NBD_INFO_NAME, NBD_INFO_DESCRIPTION and NBD_INFO_BLOCK_SIZE. */
    private static byte[] goOption(String exportName) {
        return option(OPT_GO, bytes().string(exportName).u16(3).u16(INFO_NAME).u16(INFO_DESCRIPTION).u16(INFO_BLOCK_SIZE).array());
    }

    private static byte[] info(int type, org.nbdroot.proto.WireBytes data) {
        return optionReply(OPT_GO, REP_INFO, bytes().u16(type).raw(data.array()).array());
    }

    private static byte[] infoExport(long size, int flags) {
        return info(INFO_EXPORT, bytes().u64(size).u16(flags));
    }

    private static void assertContains(String text, String part) {
        assertTrue(text != null && text.contains(part), () -> "expected \"" + part + "\" in: " + text);
    }
}
