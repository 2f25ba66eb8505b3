package org.nbdroot.proto.session;

import java.util.List;
import java.util.concurrent.CompletableFuture;
import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.ExportListing;
import org.nbdroot.proto.handshake.HandshakePlan;
import org.nbdroot.proto.transport.NbdConnector;
import org.nbdroot.proto.transport.NbdEndpoint;
import org.nbdroot.proto.transport.NbdUri;

/** One-shot questions to a server: which exports it has, and what one export is like. */
public final class ExportQueries {
    private ExportQueries() {}

    /** An export as the handshake described it, and the meta contexts the server offers for it. */
    public record ExportDetails(ExportInfo export, List<String> availableMetaContexts) {}

    /** The server's exports ({@code NBD_OPT_LIST}). */
    public static CompletableFuture<List<ExportListing>> list(NbdConnector connector, NbdEndpoint endpoint,
            SessionOptions options) {
        HandshakePlan plan = HandshakePlan.listExports().withTimeout(options.handshakeTimeout())
                .withTls(options.tls() == null ? null : options.tls().starter(endpoint));
        return connector.connect(endpoint, plan, (ctx, result) -> null, result -> result.exports());
    }

    /**
     * Opens the export as a session would (same options, so the same answer), asks for the
     * meta contexts the server offers too, then disconnects cleanly. GO rather than
     * NBD_OPT_INFO ({@link HandshakePlan.Goal#INFO}): nbd-server 3.24 answers INFO with size 0.
     */
    public static CompletableFuture<ExportDetails> inspect(NbdConnector connector, NbdUri uri, SessionOptions options) {
        return inspect(connector, uri, options, HandshakePlan.Goal.TRANSMISSION);
    }

    private static CompletableFuture<ExportDetails> inspect(NbdConnector connector, NbdUri uri, SessionOptions options,
            HandshakePlan.Goal goal) {
        SessionOptions resolved;
        try {
            resolved = options.forUri(uri);
        } catch (org.nbdroot.proto.NbdException e) {
            return CompletableFuture.failedFuture(e);
        }
        HandshakePlan plan = resolved.plan(uri).withGoal(goal).withListMetaContexts(options.structuredReplies());
        return connector.connect(uri.endpoint(), plan, (ctx, result) -> {
            NbdConnection connection = new NbdConnection(ctx.channel(), result.export());
            ctx.pipeline().addLast(connection);
            connection.disconnect();
            return new ExportDetails(result.export(), result.availableMetaContexts());
        }, result -> new ExportDetails(result.export(), result.availableMetaContexts()));
    }

    /**
     * Describes the export with NBD_OPT_INFO, without entering transmission (GO, then
     * NBD_CMD_DISC, when the server has no INFO).
     */
    public static CompletableFuture<ExportDetails> describe(NbdConnector connector, NbdUri uri, SessionOptions options) {
        return inspect(connector, uri, options, HandshakePlan.Goal.INFO);
    }
}
