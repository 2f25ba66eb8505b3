package org.nbdroot.proto.session;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.netty.buffer.ByteBufUtil;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.nbdroot.proto.NbdException;
import org.nbdroot.proto.interop.EngineExtension;
import org.nbdroot.proto.testing.ScriptedNbdServer;
import org.nbdroot.proto.transport.NbdUri;
import org.nbdroot.proto.wire.Command;

/**
 * Requests that reach the reconnector late, after the reconnect they were waiting for is done:
 * a thread that found no usable connection, or picked one just before it broke, and was
 * descheduled for as long as the reconnect took. The windows are too narrow to hit from outside,
 * so the tests call the reconnector in the state those threads find. Nothing may wait for the
 * next outage, and nothing may fail while a connection can take it.
 */
class ReconnectRaceTest {
    @RegisterExtension
    static final EngineExtension engine = new EngineExtension(1);

    private static final int DISK = 1 << 20;

    private static NbdSession connect(ScriptedNbdServer server) throws Exception {
        SessionOptions options = SessionOptions.DEFAULT
                .withReconnect(new ReconnectPolicy(Duration.ofMillis(20), Duration.ofMillis(200), 0));
        return NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()), options).get(10, TimeUnit.SECONDS);
    }

    /** A READ of the block written at offset 0, completing {@code outcome} with its bytes or its failure. */
    private static NbdRequest readOfBlockZero(CompletableFuture<byte[]> outcome) {
        return new NbdRequest(Command.READ, 0, 0, 4096, null, (request, failure) -> {
            if (failure != null) {
                outcome.completeExceptionally(failure);
                return;
            }
            outcome.complete(ByteBufUtil.getBytes(request.data));
            request.releaseBuffers();
        });
    }

    private static byte[] writeBlockZero(NbdSession session) throws Exception {
        byte[] block = new byte[4096];
        new java.util.Random(7).nextBytes(block);
        session.write(0, Unpooled.wrappedBuffer(block), false).get(10, TimeUnit.SECONDS);
        session.flush().get(10, TimeUnit.SECONDS); // kept by the server's crash below
        return block;
    }

    private static byte[] outcomeOf(CompletableFuture<byte[]> outcome) throws Exception {
        try {
            return outcome.get(5, TimeUnit.SECONDS);
        } catch (java.util.concurrent.TimeoutException e) {
            throw new AssertionError("the request still waits: nothing will send it until the next outage");
        } catch (java.util.concurrent.ExecutionException e) {
            throw new AssertionError("the request failed while a connection could take it: " + e.getCause(), e);
        }
    }

    @Test
    void aRequestHeldAfterTheReconnectWasAdoptedIsSentOnTheNewConnection() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(DISK).volatileWriteCache().start();
                NbdSession session = connect(server)) {
            byte[] block = writeBlockZero(session);
            server.crash(); // drops the connection (unflushed writes too; there are none)
            session.read(0, 4096).get(10, TimeUnit.SECONDS).release(); // waited for the reconnect, which is adopted now
            CompletableFuture<byte[]> outcome = new CompletableFuture<>();
            session.reconnector().hold(readOfBlockZero(outcome)); // as a thread that saw no connection before it came back
            assertArrayEquals(block, outcomeOf(outcome));
        }
    }

    @Test
    void requestsOfAConnectionAlreadyReplacedGoToItsSuccessor() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(DISK).volatileWriteCache().start();
                NbdSession session = connect(server)) {
            byte[] block = writeBlockZero(session);
            // A connection in no slot, as the lost one is once its replacement took its place.
            NbdConnection replaced = new NbdConnection(new EmbeddedChannel(), session.export());
            CompletableFuture<byte[]> outcome = new CompletableFuture<>();
            session.reconnector().connectionLost(replaced, new NbdException("connection reset"),
                    List.of(readOfBlockZero(outcome)));
            assertArrayEquals(block, outcomeOf(outcome), "the read went to the connection in use, not failed");
        }
    }

    /**
     * One of three connections closes right after its handshake while the last one's handshake is
     * still going: it is dead before the session puts it in its slot. It must be reconnected
     * there (it used to stay in its slot dead, with no reconnect, and the session went on with two).
     */
    @Test
    void aConnectionLostBeforeItHadItsSlotIsReconnected() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(DISK).start()) {
            server.armFault(ScriptedNbdServer.Fault.CLOSE_AFTER_HANDSHAKE, 2);
            server.armFault(ScriptedNbdServer.Fault.SLOW_HANDSHAKE, 3);
            SessionOptions options = SessionOptions.DEFAULT.withConnections(3)
                    .withReconnect(new ReconnectPolicy(Duration.ofMillis(20), Duration.ofMillis(200), 0));
            try (NbdSession session = NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()), options)
                    .get(10, TimeUnit.SECONDS)) {
                assertEquals(3, session.connectionCount());
                assertTrue(server.firedFaults().containsAll(List.of(ScriptedNbdServer.Fault.CLOSE_AFTER_HANDSHAKE,
                        ScriptedNbdServer.Fault.SLOW_HANDSHAKE)), "both faults fired: " + server.firedFaults());
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
                while (session.reconnects() < 1 && System.nanoTime() < deadline) {
                    Thread.sleep(10);
                }
                assertEquals(1, session.reconnects(), "the connection lost before it had its slot was opened again");
                while (server.openConnections() != 3 && System.nanoTime() < deadline) {
                    Thread.sleep(10); // the closed one's server thread may not have noticed yet
                }
                assertEquals(3, server.openConnections());
                for (int i = 0; i < 6; i++) {
                    session.read((long) i * 4096, 4096).get(10, TimeUnit.SECONDS).release();
                }
            }
        }
    }
}
