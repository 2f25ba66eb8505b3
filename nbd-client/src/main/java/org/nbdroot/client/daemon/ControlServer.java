package org.nbdroot.client.daemon;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * A daemon's control socket: one request line in, one reply out, then the connection
 * closes. Requests: {@code status}, {@code destroy}, {@code destroy force}.
 * Replies start with {@code ok} or {@code error}.
 */
public final class ControlServer implements AutoCloseable {
    private static final Logger LOG = Logger.getLogger(ControlServer.class.getName());
    private static final int MAX_REQUEST = 256;

    /** What the daemon does for each request; returns the reply. */
    public interface Handler {
        String handle(String request) throws Exception;
    }

    private final Path path;
    private final ServerSocketChannel server;
    private final Thread thread;

    private ControlServer(Path path, ServerSocketChannel server, Handler handler) {
        this.path = path;
        this.server = server;
        this.thread = new Thread(() -> serve(handler), "control-" + path.getFileName());
        this.thread.setDaemon(true);
    }

    public static ControlServer start(Path path, Handler handler) throws IOException {
        RunDirectory.ensure();
        if (Files.exists(path) && ControlClient.isAlive(path)) {
            throw new IOException("another daemon already answers on " + path);
        }
        Files.deleteIfExists(path); // left behind by a daemon that died
        ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        server.bind(UnixDomainSocketAddress.of(path));
        ControlServer control = new ControlServer(path, server, handler);
        control.thread.start();
        return control;
    }

    private void serve(Handler handler) {
        while (server.isOpen()) {
            try (SocketChannel client = server.accept()) {
                String request = readLine(client);
                String reply;
                try {
                    reply = handler.handle(request.strip());
                } catch (Exception e) {
                    reply = "error " + e.getMessage();
                }
                client.write(ByteBuffer.wrap((reply + "\n").getBytes(StandardCharsets.UTF_8)));
            } catch (IOException e) {
                if (server.isOpen()) {
                    LOG.log(Level.FINE, "control connection failed", e);
                }
            }
        }
    }

    static String readLine(SocketChannel channel) throws IOException {
        ByteBuffer buffer = ByteBuffer.allocate(MAX_REQUEST);
        while (buffer.hasRemaining()) {
            if (channel.read(buffer) < 0) {
                break;
            }
            if (buffer.position() > 0 && buffer.get(buffer.position() - 1) == '\n') {
                break;
            }
        }
        buffer.flip();
        return StandardCharsets.UTF_8.decode(buffer).toString();
    }

    @Override
    public void close() {
        try {
            server.close();
            Files.deleteIfExists(path);
        } catch (IOException e) {
            LOG.warning("cannot remove " + path + ": " + e.getMessage());
        }
    }
}
