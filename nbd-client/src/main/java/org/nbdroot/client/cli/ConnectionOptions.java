package org.nbdroot.client.cli;

import java.time.Duration;
import org.nbdroot.proto.NbdException;
import org.nbdroot.proto.session.ReconnectPolicy;
import org.nbdroot.proto.session.SessionOptions;
import org.nbdroot.proto.transport.NbdUri;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** How to connect, shared by the commands that open an export. */
public final class ConnectionOptions {
    @Option(names = "--connections", paramLabel = "N", defaultValue = "1",
            description = "Connections to open when the server allows several (CAN_MULTI_CONN); default ${DEFAULT-VALUE}.")
    int connections;

    @Option(names = "--no-structured-replies", description = "Do not negotiate structured replies (nor meta contexts).")
    boolean noStructuredReplies;

    @Option(names = "--connect-timeout", paramLabel = "SECONDS", defaultValue = "10",
            description = "Give up connecting after this long; default ${DEFAULT-VALUE} s.")
    int connectTimeoutSeconds;

    @Option(names = "--request-timeout", paramLabel = "SECONDS", defaultValue = "30",
            description = "A request without a reply for this long declares the connection dead: it is reconnected and "
                    + "its requests sent again (nothing fails while reconnecting). Also TCP_USER_TIMEOUT. "
                    + "0: no deadline; default ${DEFAULT-VALUE} s.")
    int requestTimeoutSeconds;

    @Option(names = "--handshake-timeout", paramLabel = "SECONDS", defaultValue = "10",
            description = "Give up a handshake (and try again, when reconnecting) after this long; default ${DEFAULT-VALUE} s.")
    int handshakeTimeoutSeconds;

    @Option(names = "--reconnect-attempts", paramLabel = "N", defaultValue = "0",
            description = "When a connection drops, try this many times to get it back, its requests waiting "
                    + "meanwhile; 0 (default) keeps trying for ever, -1 fails them at once.")
    int reconnectAttempts;

    @Option(names = "--replay-limit", paramLabel = "SIZE", defaultValue = "64M", converter = SizeConverter.class,
            description = "Keep up to this much of the writes acknowledged since the last flush, to write them again "
                    + "after a reconnect (a restarted server may have lost them); a flush of our own comes at half of it. "
                    + "0: keep none; default ${DEFAULT-VALUE}.")
    long replayLimit;

    @Mixin
    TlsOptions tls;

    public SessionOptions sessionOptions() {
        SessionOptions d = SessionOptions.DEFAULT;
        ReconnectPolicy reconnect = reconnectAttempts < 0 ? null : new ReconnectPolicy(
                ReconnectPolicy.FOREVER.initialDelay(), ReconnectPolicy.FOREVER.maxDelay(), reconnectAttempts, replayLimit);
        // Each ends up as an int of milliseconds somewhere (Netty's connect timeout, TCP_USER_TIMEOUT): a day at most.
        checkSeconds("--connect-timeout", connectTimeoutSeconds, 0); // 0: the system's own, as before
        checkSeconds("--request-timeout", requestTimeoutSeconds, 0);
        checkSeconds("--handshake-timeout", handshakeTimeoutSeconds, 1);
        return new SessionOptions(connections, !noStructuredReplies, d.metaContexts(),
                Duration.ofSeconds(connectTimeoutSeconds), Duration.ofSeconds(handshakeTimeoutSeconds), reconnect,
                Duration.ofSeconds(requestTimeoutSeconds));
    }

    static final int MAX_TIMEOUT_SECONDS = 86_400;

    private static void checkSeconds(String option, int seconds, int least) {
        if (seconds < least || seconds > MAX_TIMEOUT_SECONDS) {
            throw new IllegalArgumentException(option + " must be " + least + " to " + MAX_TIMEOUT_SECONDS + " seconds, not "
                    + seconds);
        }
    }

    /** The options for {@code uri}, with the TLS it and the TLS options ask for (files read now). */
    public SessionOptions sessionOptions(NbdUri uri) throws NbdException {
        return sessionOptions().withTls(tls.config(uri));
    }
}
