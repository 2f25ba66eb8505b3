package org.nbdroot.proto.interop;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.session.SessionOptions;
import org.nbdroot.proto.transport.NbdConnector;
import org.nbdroot.proto.transport.NbdUri;
import org.nbdroot.proto.transport.Transport;

/** TCP over IPv4 and IPv6 and Unix domain sockets, each on the native epoll transport and on NIO. */
class TransportsTest {
    @TempDir
    Path dir;

    @ParameterizedTest
    @ValueSource(strings = {"epoll", "nio"})
    void everyAddressFamilyOnEveryTransport(String transportName) throws Exception {
        String previous = System.getProperty("nbd.transport");
        System.setProperty("nbd.transport", transportName);
        try (Transport transport = Transport.create(1)) {
            assertEquals(transportName, transport.name());
            NbdConnector connector = new NbdConnector(transport, Duration.ofSeconds(5));
            int v4 = PeerServer.freePort();
            int v6 = PeerServer.freePort();
            Path socket = dir.resolve("nbd.sock");
            exercise(connector, List.of("-i", "127.0.0.1", "-p", String.valueOf(v4)), "nbd://127.0.0.1:" + v4 + "/", null);
            exercise(connector, List.of("-i", "::1", "-p", String.valueOf(v6)), "nbd://[::1]:" + v6 + "/", null);
            exercise(connector, List.of("-U", socket.toString()), "nbd+unix:///?socket=" + socket, socket);
        } finally {
            if (previous == null) {
                System.clearProperty("nbd.transport");
            } else {
                System.setProperty("nbd.transport", previous);
            }
        }
    }

    private void exercise(NbdConnector connector, List<String> listen, String uri, Path socket) throws Exception {
        List<String> command = new java.util.ArrayList<>(List.of("nbdkit", "--foreground", "--exit-with-parent"));
        command.addAll(listen);
        command.addAll(List.of("memory", "size=16M"));
        Process nbdkit = new ProcessBuilder(command).redirectErrorStream(true)
                .redirectOutput(dir.resolve("nbdkit.log").toFile()).start();
        try {
            waitUntilListening(listen, socket);
            try (NbdSession session = NbdSession.connect(connector, NbdUri.parse(uri), SessionOptions.DEFAULT)
                    .get(10, TimeUnit.SECONDS)) {
                byte[] data = new byte[65536];
                new Random(uri.hashCode()).nextBytes(data);
                session.write(4096, Unpooled.wrappedBuffer(data), false).get(10, TimeUnit.SECONDS);
                ByteBuf back = session.read(4096, data.length).get(10, TimeUnit.SECONDS);
                byte[] got = new byte[data.length];
                back.readBytes(got);
                back.release();
                assertArrayEquals(data, got, uri);
            }
        } finally {
            nbdkit.destroy();
            nbdkit.waitFor(5, TimeUnit.SECONDS);
        }
    }

    private void waitUntilListening(List<String> listen, Path socket) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (System.nanoTime() < deadline) {
            if (socket != null ? Files.exists(socket) : isListening(listen)) {
                return;
            }
            Thread.sleep(20);
        }
        throw new AssertionError("nbdkit did not start: " + Files.readString(dir.resolve("nbdkit.log")));
    }

    private static boolean isListening(List<String> listen) throws Exception {
        int port = Integer.parseInt(listen.get(3));
        if (listen.get(1).equals("::1")) {
            String local = String.format("00000000000000000000000001000000:%04X", port);
            return Files.readAllLines(Path.of("/proc/net/tcp6")).stream()
                    .map(l -> l.trim().split("\\s+")).anyMatch(f -> f.length > 3 && f[1].equals(local) && f[3].equals("0A"));
        }
        return PeerServer.isListening(port);
    }
}
