package org.nbdroot.client.daemon;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.logging.Level;
import java.util.logging.Logger;
import jnr.posix.POSIXFactory;
import jnr.unixsocket.Credentials;
import jnr.unixsocket.UnixServerSocketChannel;
import jnr.unixsocket.UnixSocketAddress;
import jnr.unixsocket.UnixSocketChannel;
import jnr.unixsocket.UnixSocketOptions;

/**
 * The control socket's second address on Linux: {@code @nbd-client/DEVICE} in the abstract
 * namespace, which no file backs. A daemon started from {@code /dev/reroot} keeps answering
 * there after the new root's init has removed every file under {@code /dev/reroot}, the run
 * directory with its socket files included. The JDK cannot bind abstract addresses;
 * JNR-UnixSocket can, and it reads the caller's credentials: with no file permissions to
 * guard it, the socket answers only root and the daemon's own user.
 */
final class AbstractSocket implements AutoCloseable {
    private static final Logger LOG = Logger.getLogger(AbstractSocket.class.getName());
    static final String PREFIX = "nbd-client/";

    private final UnixServerSocketChannel server;
    private final String device;
    private final Thread thread;

    private AbstractSocket(UnixServerSocketChannel server, String device, ControlServer.Handler handler) {
        this.server = server;
        this.device = device;
        this.thread = new Thread(() -> serve(handler), "control-@" + PREFIX + device);
        this.thread.setDaemon(true);
    }

    static boolean supported() {
        return System.getProperty("os.name", "").equals("Linux");
    }

    static UnixSocketAddress address(String device) {
        return new UnixSocketAddress("\0" + PREFIX + device);
    }

    static AbstractSocket start(String device, ControlServer.Handler handler) throws IOException {
        UnixServerSocketChannel server = UnixServerSocketChannel.open();
        try {
            server.socket().bind(address(device));
        } catch (IOException e) {
            server.close();
            throw new IOException("cannot bind the control socket @" + PREFIX + device + ": " + e.getMessage(), e);
        }
        AbstractSocket s = new AbstractSocket(server, device, handler);
        s.thread.start();
        return s;
    }

    private void serve(ControlServer.Handler handler) {
        int ownUid = POSIXFactory.getNativePOSIX().geteuid();
        while (server.isOpen()) {
            try (UnixSocketChannel client = server.accept()) {
                if (client == null) {
                    continue;
                }
                Credentials peer = client.getOption(UnixSocketOptions.SO_PEERCRED);
                String reply;
                if (peer == null || (peer.getUid() != 0 && peer.getUid() != ownUid)) {
                    reply = "error permission denied: only root and uid " + ownUid + " may control this daemon";
                    // Someone else on the machine tried to control the root disk's daemon: worth a line.
                    LOG.warning("@" + PREFIX + device + ": refused a control connection from "
                            + (peer == null ? "a caller without credentials" : "uid " + peer.getUid() + " (pid " + peer.getPid() + ")")
                            + ": only root and uid " + ownUid + " may control this daemon");
                } else {
                    reply = ControlServer.answer(handler, ControlServer.readLine(client));
                }
                ControlServer.writeReply(client, reply);
            } catch (IOException e) {
                if (server.isOpen()) {
                    LOG.log(Level.FINE, "control connection failed", e);
                }
            }
        }
    }

    /** Sends one request to the daemon serving {@code device} and returns its reply line. */
    static String request(String device, String request) throws IOException {
        try (UnixSocketChannel channel = connect(device)) {
            String stranger = stranger(channel);
            if (stranger != null) {
                throw new IOException("@" + PREFIX + device + " is bound by " + stranger
                        + ", neither root nor this user: not a daemon of ours; nothing sent to it");
            }
            channel.write(ByteBuffer.wrap((request + "\n").getBytes(StandardCharsets.UTF_8)));
            return ControlClient.readReplyWithin(channel, device);
        }
    }

    /**
     * Whether anything listens for {@code device}: a request then goes there, and fails naming a
     * stranger rather than fall back to acting without a daemon (destroy would tear the unit down).
     */
    static boolean isAlive(String device) {
        try (UnixSocketChannel channel = connect(device)) {
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    /** Whether a daemon of ours (root's, or this user's) listens for {@code device}. */
    static boolean isOurs(String device) {
        try (UnixSocketChannel channel = connect(device)) {
            return stranger(channel) == null;
        } catch (IOException e) {
            return false;
        }
    }

    /**
     * Connects within a few seconds: a blocking connect to a listener that never accepts, its
     * backlog full, would wait for ever, and any user can bind such a listener here.
     */
    private static UnixSocketChannel connect(String device) throws IOException {
        UnixSocketChannel channel = UnixSocketChannel.open();
        try {
            channel.configureBlocking(false);
            boolean connected = channel.connect(address(device));
            long deadline = System.nanoTime() + java.util.concurrent.TimeUnit.SECONDS.toNanos(5);
            while (!connected) {
                if (System.nanoTime() > deadline) {
                    throw new IOException("@" + PREFIX + device + " accepts no connection");
                }
                Thread.sleep(10);
                connected = channel.finishConnect();
            }
            channel.configureBlocking(true);
            return channel;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            channel.close();
            throw new IOException("interrupted while connecting to @" + PREFIX + device);
        } catch (IOException | RuntimeException e) {
            channel.close();
            throw e;
        }
    }

    /**
     * Who listens, when it is neither root nor this user; else null. Any local user can bind an
     * abstract address (no file permission guards it): one who took a daemon's would otherwise be
     * told its requests, answer them as it pleases, or hang list-devices.
     */
    private static String stranger(UnixSocketChannel channel) {
        Credentials peer;
        try {
            peer = channel.getOption(UnixSocketOptions.SO_PEERCRED);
        } catch (IOException | RuntimeException e) {
            peer = null;
        }
        int ownUid = POSIXFactory.getNativePOSIX().geteuid();
        if (peer == null) {
            return "a process whose credentials cannot be read";
        }
        return peer.getUid() == 0 || peer.getUid() == ownUid ? null : "uid " + peer.getUid() + " (pid " + peer.getPid() + ")";
    }

    /** The devices whose daemons listen in the abstract namespace, from /proc/net/unix. */
    static List<String> listDevices() {
        List<String> devices = new ArrayList<>();
        try {
            for (String line : Files.readAllLines(Path.of("/proc/net/unix"))) {
                int at = line.indexOf(" @" + PREFIX);
                // state 01 (unconnected) with the listening flag: one line per server socket
                if (at > 0 && line.contains(" 00010000 ")) {
                    String device = line.substring(at + 2 + PREFIX.length()).strip();
                    if (isOurs(device)) { // another user's address is no daemon of ours
                        devices.add(device);
                    }
                }
            }
        } catch (IOException e) {
            // no /proc: no abstract sockets to list
        }
        return devices;
    }

    /**
     * Closing the descriptor does not end an accept() blocked on it, and until that returns the
     * address stays bound: a connection of our own wakes it, and the loop sees the channel closed.
     */
    @Override
    public void close() throws IOException {
        server.close();
        isAlive(device);
        try {
            thread.join(10_000); // bounded: a daemon's exit must not hang on its control socket
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
