package org.nbdroot.client.daemon;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.TreeSet;
import java.util.stream.Stream;

/**
 * Sends one request to a daemon's control socket and returns its reply line. When the
 * socket file is gone (a daemon started from /dev/reroot outlives its run directory), the
 * daemon's abstract address serves instead on Linux.
 */
public final class ControlClient {
    private ControlClient() {}

    public static String request(Path socket, String request) throws IOException {
        if (Files.notExists(socket) && AbstractSocket.supported()) {
            return AbstractSocket.request(ControlServer.deviceOf(socket), request);
        }
        try (SocketChannel channel = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            channel.connect(UnixDomainSocketAddress.of(socket));
            channel.write(ByteBuffer.wrap((request + "\n").getBytes(StandardCharsets.UTF_8)));
            return ControlServer.readReply(channel).strip();
        }
    }

    /** The devices of every running daemon: socket files in the run directory, and abstract addresses. */
    public static List<String> devices() throws IOException {
        TreeSet<String> devices = new TreeSet<>();
        Path dir = RunDirectory.path();
        if (Files.isDirectory(dir)) {
            try (Stream<Path> entries = Files.list(dir)) {
                entries.filter(p -> p.getFileName().toString().endsWith(".sock"))
                        .forEach(p -> devices.add(ControlServer.deviceOf(p)));
            }
        }
        if (AbstractSocket.supported()) {
            devices.addAll(AbstractSocket.listDevices());
        }
        return List.copyOf(devices);
    }

    /** Whether a daemon answers on this socket (a stale socket file refuses connections). */
    public static boolean isAlive(Path socket) {
        if (Files.notExists(socket) && AbstractSocket.supported()) {
            return AbstractSocket.isAlive(ControlServer.deviceOf(socket));
        }
        try (SocketChannel channel = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            channel.connect(UnixDomainSocketAddress.of(socket));
            return true;
        } catch (IOException e) {
            return false;
        }
    }
}
