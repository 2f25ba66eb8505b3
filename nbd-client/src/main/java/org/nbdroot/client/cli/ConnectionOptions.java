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

    @Option(names = "--reconnect-attempts", paramLabel = "N", defaultValue = "0",
            description = "When a connection drops, try this many times to get it back, its requests waiting "
                    + "meanwhile; 0 (default) keeps trying for ever, -1 fails them at once.")
    int reconnectAttempts;

    @Mixin
    TlsOptions tls;

    public SessionOptions sessionOptions() {
        SessionOptions d = SessionOptions.DEFAULT;
        ReconnectPolicy reconnect = reconnectAttempts < 0 ? null : new ReconnectPolicy(
                ReconnectPolicy.FOREVER.initialDelay(), ReconnectPolicy.FOREVER.maxDelay(), reconnectAttempts);
        return new SessionOptions(connections, !noStructuredReplies, d.metaContexts(),
                Duration.ofSeconds(connectTimeoutSeconds), d.handshakeTimeout(), reconnect);
    }

    /** The options for {@code uri}, with the TLS it and the TLS options ask for (files read now). */
    public SessionOptions sessionOptions(NbdUri uri) throws NbdException {
        return sessionOptions().withTls(tls.config(uri));
    }
}
