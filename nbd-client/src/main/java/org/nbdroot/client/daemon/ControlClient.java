package org.nbdroot.client.daemon;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.TreeSet;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.Stream;

/**
 * Sends one request to a daemon's control socket and returns its reply line. When the
 * socket file is gone (a daemon started from /dev/reroot outlives its run directory), the
 * daemon's abstract address serves instead on Linux.
 */
public final class ControlClient {
    private ControlClient() {}

    /**
     * How long a daemon may take to answer. The slowest request, a destroy, waits 30 s at most
     * for the export's FLUSH (on Linux after up to 30 s for the device's fsync); a daemon that
     * takes longer is stopped or wedged, and the command says so rather than hang with it.
     */
    static Duration replyTimeout() {
        return Duration.ofSeconds(Long.getLong("nbd.control.reply-timeout-seconds", 90));
    }

    public static String request(Path socket, String request) throws IOException {
        if (Files.notExists(socket) && AbstractSocket.supported()) {
            return AbstractSocket.request(ControlServer.deviceOf(socket), request);
        }
        try (SocketChannel channel = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            channel.connect(UnixDomainSocketAddress.of(socket));
            channel.write(ByteBuffer.wrap((request + "\n").getBytes(StandardCharsets.UTF_8)));
            return readReplyWithin(channel, ControlServer.deviceOf(socket));
        }
    }

    /**
     * Reads a reply to its end, or gives up after {@link #replyTimeout()} (90 s; the tests shorten it): a watchdog shuts the
     * channel's input, which ends a blocked read on either kind of channel (a close from another
     * thread does not wake a read blocked in jnr's native call).
     */
    static String readReplyWithin(SocketChannel channel, String device) throws IOException {
        Duration timeout = replyTimeout();
        // Whichever comes first, the reply or the deadline, settles it: the other then does nothing.
        AtomicBoolean settled = new AtomicBoolean();
        Thread watchdog = new Thread(() -> {
            try {
                Thread.sleep(timeout.toMillis());
            } catch (InterruptedException e) {
                return;
            }
            if (settled.compareAndSet(false, true)) {
                try {
                    channel.shutdownInput();
                } catch (IOException e) {
                    // closed meanwhile: the read has ended anyway
                }
            }
        }, "control-reply-timeout");
        watchdog.setDaemon(true);
        watchdog.start();
        try {
            String reply = ControlServer.readReply(channel).strip();
            if (!settled.compareAndSet(false, true)) {
                throw new IOException("the daemon of " + device + " did not answer within " + timeout.toSeconds()
                        + " s (is it stopped? kill -CONT it, or see its log)");
            }
            return reply;
        } finally {
            settled.set(true);
            watchdog.interrupt();
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
