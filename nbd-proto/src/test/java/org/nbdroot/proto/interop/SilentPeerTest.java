package org.nbdroot.proto.interop;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.netty.buffer.Unpooled;
import io.netty.channel.Channel;
import io.netty.channel.epoll.EpollChannelOption;
import io.netty.channel.socket.nio.NioChannelOption;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.nbdroot.proto.NbdException;
import org.nbdroot.proto.handshake.HandshakePlan;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.session.ReconnectPolicy;
import org.nbdroot.proto.session.SessionOptions;
import org.nbdroot.proto.testing.ScriptedNbdServer;
import org.nbdroot.proto.transport.NbdConnector;
import org.nbdroot.proto.transport.NbdUri;
import org.nbdroot.proto.transport.TcpLiveness;
import org.nbdroot.proto.transport.Transport;

/**
 * A server that accepts but stops answering: the request timeout declares the connection
 * dead, the session reconnects (a handshake that stalls too is given up and tried again) and
 * sends the unanswered requests again; nothing fails and every byte is where it was written.
 * Slow but live servers are not given up on.
 */
class SilentPeerTest {
    @RegisterExtension
    static final EngineExtension engine = new EngineExtension(2);

    static final int DISK = 8 << 20;
    static final int BLOCK = 4096;

    @TempDir
    Path dir;

    private static SessionOptions options(Duration requestTimeout, boolean reconnect) {
        SessionOptions o = SessionOptions.DEFAULT.withRequestTimeout(requestTimeout).withHandshakeTimeout(Duration.ofSeconds(3));
        return reconnect ? o.withReconnect(new ReconnectPolicy(Duration.ofMillis(50), Duration.ofMillis(500), 0)) : o;
    }

    /** Writes the first {@code count} blocks of a shuffled order, 32 at a time, {@code midway} run after a quarter. */
    private static WriteLoad writeLoad(NbdSession session, int count, long seed, WriteLoad.Action midway) throws Exception {
        return new WriteLoad(session, DISK, seed).at(count / 4, midway).run(count, Duration.ofSeconds(60));
    }

    /**
     * NBD_ESHUTDOWN says the server is going away, not that the request failed (proto.md: the
     * client may send it again on a new connection): with reconnect on, nothing fails.
     */
    @Test
    void aServerShuttingDownLosesTheConnectionNotTheWrite() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(DISK).start()) {
            try (NbdSession session = NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()),
                    options(Duration.ofSeconds(5), true)).get(10, TimeUnit.SECONDS)) {
                WriteLoad load = writeLoad(session, 1000, 3,
                        () -> server.armFault(ScriptedNbdServer.Fault.SHUTTING_DOWN, 5));
                assertEquals(List.of(ScriptedNbdServer.Fault.SHUTTING_DOWN), server.firedFaults());
                assertEquals(List.of(), load.failures(), "the refused write was sent again on the new connection");
                assertEquals(1, session.reconnects());
                load.verify(session);
            }
        }
    }

    /** Without reconnect, NBD_ESHUTDOWN is the request's failure, named as the server's error. */
    @Test
    void withoutReconnectShuttingDownFailsTheRequest() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(DISK).start();
                NbdSession session = NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()),
                        options(Duration.ofSeconds(5), false)).get(10, TimeUnit.SECONDS)) {
            server.armFault(ScriptedNbdServer.Fault.SHUTTING_DOWN, 1);
            ExecutionException e = assertThrows(ExecutionException.class,
                    () -> session.write(0, Unpooled.wrappedBuffer(new byte[BLOCK]), false).get(10, TimeUnit.SECONDS));
            assertTrue(e.getCause() instanceof org.nbdroot.proto.NbdServerErrorException, e.toString());
            assertTrue(e.getCause().getMessage().contains("shutting down"), e.getCause().getMessage());
        }
    }

    @Test
    void aStalledConnectionIsDroppedAndItsRequestsSentAgain() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(DISK).start()) {
            long start = System.nanoTime();
            WriteLoad load;
            try (NbdSession session = NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()),
                    // 3 s: with 1 s, a JVM paused a second under load would also drop a healthy connection.
                    options(Duration.ofSeconds(3), true)).get(10, TimeUnit.SECONDS)) {
                load = writeLoad(session, 1000, 1, () -> {
                    server.armFault(ScriptedNbdServer.Fault.STALL, 10);
                    // The first reconnect finds a server that greets and then says nothing either.
                    server.armFault(ScriptedNbdServer.Fault.STALL_HANDSHAKE, 1);
                });
                assertEquals(List.of(), load.failures(), "no write failed: they waited and were sent again");
                assertEquals(List.of(ScriptedNbdServer.Fault.STALL, ScriptedNbdServer.Fault.STALL_HANDSHAKE),
                        server.firedFaults());
                assertEquals(1, session.reconnects(), "one reconnect: the stalled handshake was an attempt that failed");
                assertTrue(server.connectionCount() >= 3, "first connection, stalled handshake, the one that worked");
                load.verify(session);
            }
            long seconds = TimeUnit.NANOSECONDS.toSeconds(System.nanoTime() - start);
            assertTrue(seconds < 60, "recovered in " + seconds + " s: a 3 s request timeout and a 3 s handshake timeout");
            load.verifyContents(server.contents(), "the export holds every write");
            assertEquals(List.of(), server.violations());
        }
    }

    @Test
    void withoutReconnectTheRequestsFailSayingWhy() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(DISK).start();
                NbdSession session = NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()),
                        options(Duration.ofMillis(500), false)).get(10, TimeUnit.SECONDS)) {
            server.armFault(ScriptedNbdServer.Fault.STALL, 1);
            long start = System.nanoTime();
            Throwable failure = EngineExtension.failureOf(session.read(0, 4096));
            long millis = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
            assertTrue(failure instanceof NbdException, failure.toString());
            assertEquals("no reply to NBD_CMD_READ of 4096 bytes at offset 0 within 500 ms: the server stopped answering; "
                    + "dropping the connection", failure.getMessage());
            assertTrue(millis >= 500 && millis < 10_000, "failed after " + millis + " ms");
        }
    }

    /**
     * qemu-nbd rather than nbdkit: nbdkit 1.32, thawed, fails an assertion replying on the
     * connection the client gave up on, and exits.
     */
    @Test
    void aFrozenServerIsGivenUpOnAndTheSessionCarriesOnOnceItThaws() throws Exception {
        Path file = dir.resolve("disk.img");
        Files.write(file, new byte[DISK]);
        WriteLoad load;
        try (PeerServer server = PeerServer.qemuNbd(dir, file, "raw", "disk")) {
            Thread thawer = new Thread(() -> {
                try {
                    Thread.sleep(4000);
                    server.thaw();
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            });
            try (NbdSession session = NbdSession.connect(engine.connector(), server.uri, options(Duration.ofSeconds(1), true))
                    .get(10, TimeUnit.SECONDS)) {
                load = writeLoad(session, 1500, 2, () -> {
                    server.freeze(); // SIGSTOP: sockets open, the kernel accepts, nothing answers
                    thawer.start();
                });
                assertEquals(List.of(), load.failures(), "no write failed");
                assertTrue(session.reconnects() >= 1, "the frozen connection was given up on");
                assertTrue(server.isAlive(), "the server lives on: " + server.logTail());
                session.flush().get(10, TimeUnit.SECONDS);
                load.verify(session);
            } finally {
                thawer.join();
            }
        }
        load.verifyFile(file); // the file holds every write
    }

    @Test
    void slowRepliesWithinTheTimeoutAreNotTakenForASilentPeer() throws Exception {
        Path file = dir.resolve("disk.img");
        Files.write(file, new byte[DISK]);
        WriteLoad load;
        try (PeerServer server = PeerServer.nbdkit("nbdkit delay", dir, file, List.of("--filter=delay"), "file",
                "file=" + file, "delay-write=150ms", "delay-read=150ms");
                NbdSession session = NbdSession.connect(engine.connector(), server.uri, options(Duration.ofSeconds(3), true))
                        .get(10, TimeUnit.SECONDS)) {
            load = writeLoad(session, 400, 3, () -> { });
            assertEquals(List.of(), load.failures());
            assertEquals(0, session.reconnects(), "no spurious timeout: every reply came, late");
            load.verify(session);
        }
        load.verifyFile(file);
    }

    @ParameterizedTest
    @ValueSource(strings = {"epoll", "nio"})
    void keepaliveTimingReachesTheSocket(String transportName) throws Exception {
        String previous = System.getProperty("nbd.transport");
        System.setProperty("nbd.transport", transportName);
        try (Transport transport = Transport.create(1);
                ScriptedNbdServer server = ScriptedNbdServer.builder().size(DISK).start()) {
            TcpLiveness liveness = new TcpLiveness(Duration.ofSeconds(7), Duration.ofSeconds(3), 4, Duration.ofSeconds(21));
            NbdConnector connector = new NbdConnector(transport, Duration.ofSeconds(5), liveness);
            NbdUri uri = NbdUri.parse(server.uri());
            Channel channel = connector.connect(uri.endpoint(), HandshakePlan.transmission(uri.exportName()),
                    (ctx, result) -> ctx.channel(), result -> null).get(10, TimeUnit.SECONDS);
            try {
                assertEquals(Boolean.TRUE, channel.config().getOption(io.netty.channel.ChannelOption.SO_KEEPALIVE));
                if (transportName.equals("epoll")) {
                    assertEquals(7, channel.config().getOption(EpollChannelOption.TCP_KEEPIDLE));
                    assertEquals(3, channel.config().getOption(EpollChannelOption.TCP_KEEPINTVL));
                    assertEquals(4, channel.config().getOption(EpollChannelOption.TCP_KEEPCNT));
                    assertEquals(21000, channel.config().getOption(EpollChannelOption.TCP_USER_TIMEOUT));
                } else {
                    assertEquals(7, channel.config().getOption(NioChannelOption.of(jdk.net.ExtendedSocketOptions.TCP_KEEPIDLE)));
                    assertEquals(3, channel.config().getOption(NioChannelOption.of(jdk.net.ExtendedSocketOptions.TCP_KEEPINTERVAL)));
                    assertEquals(4, channel.config().getOption(NioChannelOption.of(jdk.net.ExtendedSocketOptions.TCP_KEEPCOUNT)));
                }
            } finally {
                channel.close().sync();
            }
        } finally {
            if (previous == null) {
                System.clearProperty("nbd.transport");
            } else {
                System.setProperty("nbd.transport", previous);
            }
        }
    }
}
