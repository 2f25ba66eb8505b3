package org.nbdroot.proto.interop;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import static org.nbdroot.proto.interop.EngineExtension.failureOf;

import io.netty.buffer.ByteBuf;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.nbdroot.proto.NbdException;
import org.nbdroot.proto.NbdProtocolException;
import org.nbdroot.proto.NbdServerErrorException;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.session.SessionOptions;
import org.nbdroot.proto.testing.ScriptedNbdServer;
import org.nbdroot.proto.testing.ScriptedNbdServer.Fault;
import org.nbdroot.proto.transport.NbdUri;
import org.nbdroot.proto.wire.NbdError;

/**
 * A server that sends something wrong, over a real socket, with other requests in flight:
 * the connection ends with a message naming what was wrong, every request on it fails, and
 * no caller ever gets data as success. Errors the protocol allows fail their own request only.
 */
class MisbehavingServerTest {
    @RegisterExtension
    static final EngineExtension engine = new EngineExtension(1);

    private static SessionOptions options(boolean structured) {
        return new SessionOptions(1, structured, SessionOptions.DEFAULT.metaContexts(), Duration.ofSeconds(5),
                Duration.ofSeconds(2));
    }

    @ParameterizedTest(name = "{0}")
    @CsvSource(delimiter = '|', value = {
        "BAD_REPLY_MAGIC                      | true  | bad reply magic",
        "UNKNOWN_HANDLE                       | true  | which has no outstanding request",
        "DUPLICATE_REPLY                      | true  | which has no outstanding request",
        "STRUCTURED_CHUNK_LONGER_THAN_REQUEST | true  | bytes long (expected: <=",
        "CHUNK_OUTSIDE_REQUEST                | true  | outside NBD_CMD_READ",
        "OVERLAPPING_CHUNKS                   | true  | overlaps data already received",
        "MISSING_DATA                         | true  | after sending only",
        "STRUCTURED_REPLY_NOT_NEGOTIATED      | false | structured replies were not negotiated",
        "BAD_CHUNK_TYPE                       | true  | unknown reply chunk type",
        "CLOSE_MID_REPLY                      | true  | server closed the connection",
    })
    void aBrokenReplyEndsTheConnectionAndFailsEverythingOnIt(Fault fault, boolean structured, String expected)
            throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(1 << 20).readChunkSize(1024).start()) {
            NbdSession session = NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()), options(structured))
                    .get(5, TimeUnit.SECONDS);
            // Warm up: a correct read first, so the fault lands in an established session.
            session.read(0, 4096).get(5, TimeUnit.SECONDS).release();
            server.armFault(fault);
            List<CompletableFuture<ByteBuf>> reads = new ArrayList<>();
            for (int i = 0; i < 8; i++) {
                reads.add(session.read(i * 8192L, 8192));
            }
            int protocolFailures = 0;
            for (int i = 0; i < reads.size(); i++) {
                CompletableFuture<ByteBuf> read = reads.get(i);
                try {
                    // A duplicate reply breaks the connection only after the first, valid one was delivered.
                    ByteBuf data = read.get(10, TimeUnit.SECONDS);
                    byte[] got = new byte[data.readableBytes()];
                    data.readBytes(got);
                    data.release();
                    assertEquals(Fault.DUPLICATE_REPLY, fault, "only a duplicate leaves a read that succeeded");
                    assertArrayEquals(server.read(i * 8192L, 8192), got, "data handed up as success is the server's");
                } catch (ExecutionException e) {
                    assertInstanceOf(NbdException.class, e.getCause(), "every failure is the engine's own");
                    if (e.getCause().getMessage().contains(expected)) {
                        protocolFailures++;
                    }
                }
            }
            int expectedFailures = fault == Fault.DUPLICATE_REPLY ? reads.size() - 1 : reads.size();
            assertTrue(protocolFailures >= expectedFailures,
                    protocolFailures + " of " + reads.size() + " reads failed naming what was wrong (" + expected + ")");
            assertTrue(session.anyConnectionClosed().handle((v, e) -> true).get(5, TimeUnit.SECONDS));
            assertInstanceOf(NbdException.class, failureOf(session.read(0, 512)), "the session is closed for good");
            assertEquals(List.of(), server.violations());
        }
    }

    @ParameterizedTest(name = "{0}")
    @CsvSource({"ERROR_CHUNK, true", "ERROR_OFFSET_CHUNK, true", "SIMPLE_ERROR, false"})
    void anErrorReplyFailsOnlyItsRequest(Fault fault, boolean structured) throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(1 << 20).start()) {
            byte[] data = new byte[4096];
            java.util.Arrays.fill(data, (byte) 7);
            server.write(4096, data);
            NbdSession session = NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()), options(structured))
                    .get(5, TimeUnit.SECONDS);
            server.armFault(fault);
            Throwable failure = failureOf(session.read(0, 4096));
            NbdServerErrorException error = assertInstanceOf(NbdServerErrorException.class, failure);
            assertEquals(NbdError.EIO, error.error());
            ByteBuf after = session.read(4096, 4096).get(5, TimeUnit.SECONDS);
            byte[] got = new byte[4096];
            after.readBytes(got);
            after.release();
            assertArrayEquals(data, got, "the connection goes on serving");
            session.close();
            assertTrue(server.awaitDisconnect(Duration.ofSeconds(5)), "NBD_CMD_DISC sent at the end");
        }
    }

    @ParameterizedTest(name = "{0}")
    @CsvSource(delimiter = '|', value = {
        "OVERLONG_STRING                 | bytes long (expected: <= 4096",
        "SIZE_NOT_MULTIPLE_OF_MIN_BLOCK  | is not a multiple of the minimum block size",
        "BAD_OPTION_REPLY_MAGIC          | bad option reply magic",
        "OPTION_REPLY_FOR_OTHER_OPTION   | was asked",
        "HUGE_OPTION_REPLY_LENGTH        | bytes long (expected: <=",
        "OLDSTYLE_GREETING               | oldstyle",
        "STALL_HANDSHAKE                 | handshake timed out after 2 s",
    })
    void aBrokenHandshakeFailsWithAMessage(Fault fault, String expected) throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(1 << 20).start()) {
            server.armFault(fault);
            Throwable failure = failureOf(NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()), options(true)));
            assertInstanceOf(NbdException.class, failure);
            assertTrue(failure.getMessage().contains(expected), failure.getMessage());
        }
    }

    @org.junit.jupiter.api.Test
    void listingWithAnOverlongNameFails() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().start()) {
            server.armFault(Fault.OVERLONG_STRING);
            Throwable failure = failureOf(org.nbdroot.proto.session.ExportQueries.list(engine.connector(),
                    NbdUri.parse(server.uri()).endpoint(), SessionOptions.DEFAULT));
            assertInstanceOf(NbdProtocolException.class, failure);
            assertTrue(failure.getMessage().contains("export name in NBD_REP_SERVER"), failure.getMessage());
        }
    }


}
