package org.nbdroot.proto.handshake;

import java.time.Duration;
import java.util.List;
import org.nbdroot.proto.wire.NbdConstants;

/**
 * What a handshake should achieve.
 *
 * @param goal              enter transmission on an export, describe it without entering (INFO), or list the exports
 * @param exportName        the export to open ("" is the server's default export)
 * @param structuredReplies ask for structured replies (needed for meta contexts and sparse reads)
 * @param extendedHeaders   ask for extended headers first (with structured replies only): 64-bit lengths,
 *                          which imply structured replies; a server that refuses gets the compact headers
 * @param metaContexts      meta contexts to set, e.g. {@code base:allocation}
 * @param listMetaContexts  also ask which meta contexts the server offers
 * @param timeout           the whole handshake must finish within this
 * @param tls               TLS to start with NBD_OPT_STARTTLS before any other option; null for none.
 *                          With it, nothing but STARTTLS is ever sent in plain text.
 */
public record HandshakePlan(
        Goal goal,
        String exportName,
        boolean structuredReplies,
        boolean extendedHeaders,
        List<String> metaContexts,
        boolean listMetaContexts,
        Duration timeout,
        TlsStarter tls) {

    public enum Goal {
        TRANSMISSION,
        /** NBD_OPT_INFO: the export's description without entering transmission (GO if the server lacks INFO). */
        INFO,
        LIST_EXPORTS
    }

    public static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(30);

    public HandshakePlan {
        metaContexts = List.copyOf(metaContexts);
    }

    public static HandshakePlan transmission(String exportName) {
        return new HandshakePlan(Goal.TRANSMISSION, exportName, true, true,
                List.of(NbdConstants.BASE_ALLOCATION), false, DEFAULT_TIMEOUT, null);
    }

    public static HandshakePlan listExports() {
        return new HandshakePlan(Goal.LIST_EXPORTS, "", false, false, List.of(), false, DEFAULT_TIMEOUT, null);
    }

    public HandshakePlan withGoal(Goal g) {
        return new HandshakePlan(g, exportName, structuredReplies, extendedHeaders,
                metaContexts, listMetaContexts, timeout, tls);
    }

    public HandshakePlan withStructuredReplies(boolean on) {
        return new HandshakePlan(goal, exportName, on, extendedHeaders, metaContexts, listMetaContexts, timeout, tls);
    }

    public HandshakePlan withExtendedHeaders(boolean on) {
        return new HandshakePlan(goal, exportName, structuredReplies, on, metaContexts, listMetaContexts, timeout, tls);
    }

    public HandshakePlan withMetaContexts(List<String> contexts) {
        return new HandshakePlan(goal, exportName, structuredReplies, extendedHeaders,
                contexts, listMetaContexts, timeout, tls);
    }

    public HandshakePlan withListMetaContexts(boolean on) {
        return new HandshakePlan(goal, exportName, structuredReplies, extendedHeaders, metaContexts, on, timeout, tls);
    }

    public HandshakePlan withTls(TlsStarter starter) {
        return new HandshakePlan(goal, exportName, structuredReplies, extendedHeaders,
                metaContexts, listMetaContexts, timeout, starter);
    }

    public HandshakePlan withTimeout(Duration t) {
        return new HandshakePlan(goal, exportName, structuredReplies, extendedHeaders,
                metaContexts, listMetaContexts, t, tls);
    }
}
