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
 * closes. Requests: {@code status}, {@code destroy}, {@code destroy force}, {@code resize},
 * {@code stats}. Replies start with {@code ok} or {@code error}; a reply may hold more lines
 * (stats), so a client reads it to the end. On Linux the daemon also answers at an
 * address no file backs ({@link AbstractSocket}), which outlives its run directory.
 */
public final class ControlServer implements AutoCloseable {
    private static final Logger LOG = Logger.getLogger(ControlServer.class.getName());
    static final int MAX_REQUEST = 256;
    /** A reply is read to the end of the connection, up to this much. */
    static final int MAX_REPLY = 1 << 20;

    /** What the daemon does for each request; returns the reply. */
    public interface Handler {
        String handle(String request) throws Exception;
    }

    private final Path path;
    private final ServerSocketChannel server;
    private final Thread thread;
    /** Bound in the background: JNR's first use costs a few hundred ms the device should not wait for. */
    private java.util.concurrent.CompletableFuture<AbstractSocket> abstractSocket;

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
        if (AbstractSocket.supported()) {
            control.abstractSocket = new java.util.concurrent.CompletableFuture<>();
            Thread binder = new Thread(() -> {
                try {
                    control.abstractSocket.complete(AbstractSocket.start(deviceOf(path), handler));
                } catch (IOException | RuntimeException e) {
                    LOG.warning(e.getMessage() + "; the control socket " + path + " still serves");
                    control.abstractSocket.complete(null);
                }
            }, "control-bind");
            binder.setDaemon(true);
            binder.start();
        }
        control.thread.start();
        return control;
    }

    /** {@code /var/run/nbd-client/ggate0.sock} is the socket of {@code ggate0}. */
    static String deviceOf(Path socket) {
        return socket.getFileName().toString().replaceFirst("\\.sock$", "");
    }

    static String answer(Handler handler, String request) {
        try {
            return handler.handle(request.strip());
        } catch (Exception e) {
            return "error " + e.getMessage();
        }
    }

    private void serve(Handler handler) {
        while (server.isOpen()) {
            try (SocketChannel client = server.accept()) {
                String reply = answer(handler, readLine(client));
                writeReply(client, reply);
            } catch (IOException e) {
                if (server.isOpen()) {
                    LOG.log(Level.FINE, "control connection failed", e);
                }
            }
        }
    }

    /** One request line, up to {@link #MAX_REQUEST} bytes, from either kind of Unix socket. */
    static String readLine(java.nio.channels.ReadableByteChannel channel) throws IOException {
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

    /** A whole reply: everything the daemon writes before it closes, up to {@link #MAX_REPLY} bytes. */
    static String readReply(java.nio.channels.ReadableByteChannel channel) throws IOException {
        java.io.ByteArrayOutputStream reply = new java.io.ByteArrayOutputStream();
        ByteBuffer buffer = ByteBuffer.allocate(8192);
        while (channel.read(buffer) >= 0 && reply.size() < MAX_REPLY) {
            reply.write(buffer.array(), 0, buffer.position());
            buffer.clear();
        }
        reply.write(buffer.array(), 0, buffer.position());
        return reply.toString(StandardCharsets.UTF_8);
    }

    /** Writes all of a reply: a channel may take less than asked. */
    static void writeReply(java.nio.channels.WritableByteChannel channel, String reply) throws IOException {
        ByteBuffer bytes = ByteBuffer.wrap((reply + "\n").getBytes(StandardCharsets.UTF_8));
        while (bytes.hasRemaining()) {
            channel.write(bytes);
        }
    }

    private static void closeQuietly(AbstractSocket socket) {
        if (socket == null) {
            return;
        }
        try {
            socket.close();
        } catch (IOException e) {
            LOG.warning("cannot close the control socket's abstract address: " + e.getMessage());
        }
    }

    @Override
    public void close() {
        try {
            server.close();
            Files.deleteIfExists(path);
        } catch (IOException e) {
            LOG.warning("cannot remove " + path + ": " + e.getMessage());
        }
        if (abstractSocket == null) {
            return;
        }
        try {
            // Closed by whichever thread completes the bind: a bind that ends after the wait here
            // is closed by its binder, never left answering for a daemon that is gone.
            abstractSocket.thenAccept(ControlServer::closeQuietly).get(10, java.util.concurrent.TimeUnit.SECONDS);
        } catch (java.util.concurrent.ExecutionException | java.util.concurrent.TimeoutException e) {
            LOG.warning("the control socket's abstract address is still being bound; it closes once bound: " + e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
