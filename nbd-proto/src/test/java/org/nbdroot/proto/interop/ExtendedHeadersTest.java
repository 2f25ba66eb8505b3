package org.nbdroot.proto.interop;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.nbdroot.proto.interop.EngineExtension.failureOf;
import static org.nbdroot.proto.testing.ScriptedNbdProtocol.NBD_CMD_FLAG_PAYLOAD_LEN;
import static org.nbdroot.proto.testing.ScriptedNbdProtocol.NBD_CMD_WRITE;
import static org.nbdroot.proto.testing.ScriptedNbdProtocol.NBD_OPT_EXTENDED_HEADERS;
import static org.nbdroot.proto.testing.ScriptedNbdProtocol.NBD_OPT_STRUCTURED_REPLY;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;
import org.nbdroot.proto.Extent;
import org.nbdroot.proto.NbdException;
import org.nbdroot.proto.NbdProtocolException;
import org.nbdroot.proto.NbdServerErrorException;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.session.SessionOptions;
import org.nbdroot.proto.testing.ScriptedNbdServer;
import org.nbdroot.proto.testing.ScriptedNbdServer.Fault;
import org.nbdroot.proto.testing.ScriptedRequest;
import org.nbdroot.proto.transport.NbdUri;
import org.nbdroot.proto.wire.CommandFlag;
import org.nbdroot.proto.wire.NbdError;

/**
 * The engine against the scripted server with NBD_OPT_EXTENDED_HEADERS on offer: every command
 * over 32-byte headers gives the same disk as over the compact ones (the session's switch picks
 * the mode), a server without them is fallen back from, and one that grants them but answers
 * with compact headers loses the connection.
 */
class ExtendedHeadersTest {
    private static final int SIZE = 4 << 20;
    private static final int GRANULE = 64 << 10;

    @RegisterExtension
    static final EngineExtension engine = new EngineExtension(1);

    @ParameterizedTest(name = "extended headers asked for: {0}")
    @ValueSource(booleans = {true, false})
    void everyCommandLeavesTheDiskAsTheServerHasIt(boolean askForExtendedHeaders) throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(SIZE).supportsExtendedHeaders(true)
                .reorderWindow(8).readChunkSize(3000).shuffleChunks(true).blockStatusGranularity(GRANULE).seed(7)
                .start()) {
            SessionOptions options = SessionOptions.DEFAULT.withExtendedHeaders(askForExtendedHeaders);
            Random random = new Random(11);
            byte[] expected = new byte[SIZE];
            try (NbdSession session = NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()), options)
                    .get(5, TimeUnit.SECONDS)) {
                assertEquals(askForExtendedHeaders, session.export().extendedHeaders());
                assertTrue(session.export().structuredReplies());

                // Writes, some with FUA, in flight together.
                List<CompletableFuture<Void>> writes = new ArrayList<>();
                for (int i = 0; i < 24; i++) {
                    int length = 512 * (1 + random.nextInt(256));
                    int offset = 512 * random.nextInt((SIZE - length) / 512);
                    byte[] data = new byte[length];
                    random.nextBytes(data);
                    System.arraycopy(data, 0, expected, offset, length);
                    writes.add(session.write(offset, Unpooled.wrappedBuffer(data), i % 3 == 0));
                    writes.get(i).get(10, TimeUnit.SECONDS); // in order: later writes may overlap earlier ones
                }
                session.flush().get(10, TimeUnit.SECONDS);
                // Trim and write zeroes clear whole granules, so block status has holes to report.
                session.trim(GRANULE, 2L * GRANULE, false).get(10, TimeUnit.SECONDS);
                Arrays.fill(expected, GRANULE, 3 * GRANULE, (byte) 0);
                session.writeZeroes(10L * GRANULE, GRANULE, CommandFlag.NO_HOLE).get(10, TimeUnit.SECONDS);
                Arrays.fill(expected, 10 * GRANULE, 11 * GRANULE, (byte) 0);
                session.writeZeroes(20L * GRANULE, 4L * GRANULE, 0).get(10, TimeUnit.SECONDS);
                Arrays.fill(expected, 20 * GRANULE, 24 * GRANULE, (byte) 0);
                session.flush().get(10, TimeUnit.SECONDS);

                assertArrayEquals(expected, server.contents(), "the server's disk after the writes");
                assertArrayEquals(server.contents(), readAll(session), "what the client reads back");

                List<Extent> extents = session.blockStatus(0, SIZE, false).get(10, TimeUnit.SECONDS);
                assertEquals(expectedExtents(server.contents(), 0, SIZE), extents);
                List<Extent> one = session.blockStatus(GRANULE, 4L * GRANULE, true).get(10, TimeUnit.SECONDS);
                assertEquals(List.of(new Extent(GRANULE, 2L * GRANULE, 3)), one, "REQ_ONE: the first extent");
            }
            assertTrue(server.awaitDisconnect(Duration.ofSeconds(5)));
            assertEquals(List.of(), server.violations());
            assertEquals(askForExtendedHeaders, server.options().contains(NBD_OPT_EXTENDED_HEADERS), server.options()
                    .toString());
            assertEquals(!askForExtendedHeaders, server.options().contains(NBD_OPT_STRUCTURED_REPLY),
                    "structured replies asked for only without extended headers: " + server.options());
            List<ScriptedRequest> written = server.requests().stream().filter(r -> r.type() == NBD_CMD_WRITE).toList();
            assertEquals(24, written.size());
            assertTrue(written.stream().allMatch(r -> r.hasFlag(NBD_CMD_FLAG_PAYLOAD_LEN) == askForExtendedHeaders),
                    "NBD_CMD_FLAG_PAYLOAD_LEN on every write with extended headers, on none without: " + written);
        }
    }

    @Test
    void aServerWithoutExtendedHeadersIsFallenBackFromSilently() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(1 << 20).start()) {
            try (NbdSession session = NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()),
                    SessionOptions.DEFAULT).get(5, TimeUnit.SECONDS)) {
                assertFalse(session.export().extendedHeaders());
                assertTrue(session.export().structuredReplies());
                byte[] data = new byte[8192];
                new Random(2).nextBytes(data);
                session.write(4096, Unpooled.wrappedBuffer(data), false).get(5, TimeUnit.SECONDS);
                ByteBuf back = session.read(4096, data.length).get(5, TimeUnit.SECONDS);
                byte[] got = new byte[back.readableBytes()];
                back.readBytes(got);
                back.release();
                assertArrayEquals(data, got);
                assertEquals(List.of(new Extent(0, 4096, 3)), session.blockStatus(0, 4096, false)
                        .get(5, TimeUnit.SECONDS));
            }
            assertEquals(List.of(NBD_OPT_EXTENDED_HEADERS, NBD_OPT_STRUCTURED_REPLY),
                    server.options().subList(0, 2), "asked first, refused, then structured replies");
            assertEquals(List.of(), server.violations());
        }
    }

    @Test
    void compactRepliesAfterGrantedExtendedHeadersEndTheConnectionWithAClearError() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(1 << 20).supportsExtendedHeaders(true)
                .compactRepliesDespiteExtendedHeaders(true).start()) {
            try (NbdSession session = NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()),
                    SessionOptions.DEFAULT).get(5, TimeUnit.SECONDS)) {
                assertTrue(session.export().extendedHeaders(), "the handshake granted them");
                Throwable failure = failureOf(session.read(0, 4096));
                NbdProtocolException e = assertInstanceOf(NbdProtocolException.class, failure);
                assertTrue(e.getMessage().contains("a structured reply chunk (magic 0x668e33ef)")
                        && e.getMessage().contains("only extended reply chunks: extended headers were negotiated"),
                        e.getMessage());
                Throwable closed = session.anyConnectionClosed().handle((v, t) -> t).get(5, TimeUnit.SECONDS);
                assertTrue(closed != null && String.valueOf(closed.getMessage()).contains("0x668e33ef"),
                        "the connection ended with that error: " + closed);
            }
        }
    }

    @Test
    void aSimpleReplyAfterGrantedExtendedHeadersIsNamedAsSuch() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(1 << 20).supportsExtendedHeaders(true)
                .compactRepliesDespiteExtendedHeaders(true).start()) {
            try (NbdSession session = NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()),
                    SessionOptions.DEFAULT).get(5, TimeUnit.SECONDS)) {
                Throwable failure = failureOf(session.flush()); // the scripted server answers a flush simply
                NbdProtocolException e = assertInstanceOf(NbdProtocolException.class, failure);
                assertTrue(e.getMessage().contains("a simple reply (magic 0x67446698)"), e.getMessage());
            }
        }
    }

    @ParameterizedTest(name = "{0}")
    @CsvSource(delimiter = '|', value = {
        "BAD_REPLY_MAGIC                      | bad reply magic",
        "UNKNOWN_HANDLE                       | which has no outstanding request",
        "DUPLICATE_REPLY                      | which has no outstanding request",
        "STRUCTURED_CHUNK_LONGER_THAN_REQUEST | bytes long (expected: <=",
        "CHUNK_OUTSIDE_REQUEST                | outside NBD_CMD_READ",
        "OVERLAPPING_CHUNKS                   | overlaps data already received",
        "MISSING_DATA                         | after sending only",
        "BAD_CHUNK_TYPE                       | unknown reply chunk type",
        "CLOSE_MID_REPLY                      | server closed the connection",
    })
    void aBrokenExtendedReplyEndsTheConnectionAndFailsEverythingOnIt(Fault fault, String expected) throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(1 << 20).supportsExtendedHeaders(true)
                .readChunkSize(1024).start()) {
            NbdSession session = NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()), SessionOptions.DEFAULT)
                    .get(5, TimeUnit.SECONDS);
            assertTrue(session.export().extendedHeaders());
            session.read(0, 4096).get(5, TimeUnit.SECONDS).release(); // the fault lands in an established session
            server.armFault(fault);
            List<CompletableFuture<ByteBuf>> reads = new ArrayList<>();
            for (int i = 0; i < 8; i++) {
                reads.add(session.read(i * 8192L, 8192));
            }
            int named = 0;
            for (int i = 0; i < reads.size(); i++) {
                try {
                    ByteBuf data = reads.get(i).get(10, TimeUnit.SECONDS);
                    byte[] got = new byte[data.readableBytes()];
                    data.readBytes(got);
                    data.release();
                    assertEquals(Fault.DUPLICATE_REPLY, fault, "only a duplicate leaves a read that succeeded");
                    assertArrayEquals(server.read(i * 8192L, 8192), got, "data handed up as success is the server's");
                } catch (ExecutionException e) {
                    assertInstanceOf(NbdException.class, e.getCause());
                    named += e.getCause().getMessage().contains(expected) ? 1 : 0;
                }
            }
            assertTrue(named >= (fault == Fault.DUPLICATE_REPLY ? reads.size() - 1 : reads.size()),
                    named + " of " + reads.size() + " reads failed naming what was wrong (" + expected + ")");
            assertTrue(session.anyConnectionClosed().handle((v, e) -> true).get(5, TimeUnit.SECONDS));
            assertEquals(List.of(fault), server.firedFaults());
            assertEquals(List.of(), server.violations());
        }
    }

    @ParameterizedTest(name = "{0}")
    @ValueSource(strings = {"ERROR_CHUNK", "ERROR_OFFSET_CHUNK"})
    void anExtendedErrorChunkFailsOnlyItsRequest(Fault fault) throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(1 << 20).supportsExtendedHeaders(true).start()) {
            byte[] data = new byte[4096];
            Arrays.fill(data, (byte) 7);
            server.write(4096, data);
            try (NbdSession session = NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()),
                    SessionOptions.DEFAULT).get(5, TimeUnit.SECONDS)) {
                server.armFault(fault);
                NbdServerErrorException error = assertInstanceOf(NbdServerErrorException.class,
                        failureOf(session.read(0, 4096)));
                assertEquals(NbdError.EIO, error.error());
                ByteBuf after = session.read(4096, 4096).get(5, TimeUnit.SECONDS);
                byte[] got = new byte[4096];
                after.readBytes(got);
                after.release();
                assertArrayEquals(data, got, "the connection goes on serving");
            }
            assertEquals(List.of(), server.violations());
        }
    }

    private static byte[] readAll(NbdSession session) throws Exception {
        byte[] all = new byte[SIZE];
        int piece = 256 << 10;
        List<CompletableFuture<ByteBuf>> reads = new ArrayList<>();
        for (int offset = 0; offset < SIZE; offset += piece) {
            reads.add(session.read(offset, piece));
        }
        for (int i = 0; i < reads.size(); i++) {
            ByteBuf got = reads.get(i).get(10, TimeUnit.SECONDS);
            got.readBytes(all, i * piece, piece);
            got.release();
        }
        return all;
    }

    /** What the scripted server reports: per granule, hole|zero when all zero, else data; equal neighbours merged. */
    private static List<Extent> expectedExtents(byte[] disk, long offset, long length) {
        List<Extent> out = new ArrayList<>();
        for (long pos = offset; pos < offset + length; pos += GRANULE) {
            boolean zero = true;
            for (int i = (int) pos; i < pos + GRANULE && zero; i++) {
                zero = disk[i] == 0;
            }
            int flags = zero ? 3 : 0;
            Extent last = out.isEmpty() ? null : out.get(out.size() - 1);
            if (last != null && last.flags() == flags) {
                out.set(out.size() - 1, new Extent(last.offset(), last.length() + GRANULE, flags));
            } else {
                out.add(new Extent(pos, GRANULE, flags));
            }
        }
        return out;
    }
}
