package org.nbdroot.proto.interop;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.session.ReconnectPolicy;
import org.nbdroot.proto.session.SessionOptions;
import org.nbdroot.proto.testing.ScriptedNbdServer;
import org.nbdroot.proto.testing.ScriptedNbdServer.Fault;
import org.nbdroot.proto.transport.NbdUri;

/**
 * The replay gate of a session with two connections, while it is closed: a connection came
 * back and waits for its turn to write the journal again, because the other connection has a
 * request the server never answers (until the request timeout). What happens to the session
 * meanwhile must leave nothing stranded.
 */
class ReplayGateTest {
    @RegisterExtension
    static final EngineExtension engine = new EngineExtension(2);

    private static final int DISK = 1 << 20;

    private static NbdSession connect(ScriptedNbdServer server) throws Exception {
        SessionOptions options = SessionOptions.DEFAULT.withConnections(2).withRequestTimeout(Duration.ofSeconds(10))
                .withReconnect(new ReconnectPolicy(Duration.ofMillis(20), Duration.ofMillis(200), 0));
        NbdSession session = NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()), options)
                .get(10, TimeUnit.SECONDS);
        assertEquals(2, session.connectionCount());
        // Written and flushed: the journal is empty, so a connection back at the gate has nothing to
        // write again and goes straight to its slot once its turn comes (a replay would find it broken).
        session.write(0, Unpooled.wrappedBuffer(new byte[4096]), false).get(10, TimeUnit.SECONDS);
        session.flush().get(10, TimeUnit.SECONDS);
        return session;
    }

    /**
     * Stalls one connection (its next request is never answered), drops the other (the request
     * after), and waits until the dropped one has been accepted again: it now waits at the gate.
     */
    private static CompletableFuture<ByteBuf> closeTheGate(ScriptedNbdServer server, NbdSession session) throws Exception {
        int before = server.connectionCount();
        server.armFault(Fault.STALL, 1);
        server.armFault(Fault.CLOSE_MID_REPLY, 2);
        CompletableFuture<ByteBuf> stalled = session.read(0, 4096);
        Thread.sleep(50); // the stalled read is on one connection, so the next goes to the other
        CompletableFuture<ByteBuf> dropped = session.read(4096, 4096);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (server.connectionCount() < before + 1 && System.nanoTime() < deadline) {
            Thread.sleep(5);
        }
        assertEquals(before + 1, server.connectionCount(), "the dropped connection was opened again");
        Thread.sleep(200); // its handshake is done: it waits for the stalled request
        assertFalse(dropped.isDone(), "the dropped connection's read waits at the gate");
        return stalled;
    }

    @Test
    void aSessionClosedWhileAReplayWaitsLeavesNoConnectionAndNoRequestWaiting() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(DISK).volatileWriteCache().start()) {
            NbdSession session = connect(server);
            CompletableFuture<ByteBuf> stalled = closeTheGate(server, session);
            session.disconnect().get(30, TimeUnit.SECONDS); // waits for the stalled read: up to the request timeout
            Throwable later = EngineExtension.failureOf(session.read(8192, 4096));
            assertTrue(later.getMessage().contains("closed"), later.getMessage());
            EngineExtension.failureOf(stalled);
            Thread.sleep(300); // the connection that waited at the gate must not be put back in use
            Throwable after = EngineExtension.failureOf(session.read(8192, 4096));
            assertTrue(after.getMessage().contains("closed"), after.getMessage());
            assertTrue(server.awaitIdle(Duration.ofSeconds(10)), "every connection of the closed session is closed: "
                    + server.openConnections() + " open");
        }
    }

    /**
     * The server restarts while a connection waits at the gate: both connections break, and
     * the waiting one's loss comes before it has its slot back. Both must come back (it used to
     * be put in its slot dead, and the session went on with one connection).
     */
    @Test
    void aConnectionThatBreaksWhileWaitingAtTheGateIsReconnected() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(DISK).volatileWriteCache().start();
                NbdSession session = connect(server)) {
            CompletableFuture<ByteBuf> stalled = closeTheGate(server, session);
            server.crash();
            stalled.get(10, TimeUnit.SECONDS).release(); // sent again once a connection is back
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (server.openConnections() < 2 && System.nanoTime() < deadline) {
                Thread.sleep(10);
            }
            assertEquals(2, server.openConnections(), "both connections are back after the restart");
            for (int i = 0; i < 16; i++) {
                session.read((long) i * 4096, 4096).get(10, TimeUnit.SECONDS).release();
            }
        }
    }
}
