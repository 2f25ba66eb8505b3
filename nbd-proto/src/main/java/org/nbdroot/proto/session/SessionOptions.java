package org.nbdroot.proto.session;

import java.time.Duration;
import java.util.List;
import org.nbdroot.proto.handshake.HandshakePlan;
import org.nbdroot.proto.transport.NbdConnector;
import org.nbdroot.proto.wire.NbdConstants;

/**
 * How a session connects.
 *
 * @param connections       connections to open; more than one only when the server sets CAN_MULTI_CONN
 * @param structuredReplies ask for structured replies
 * @param metaContexts      meta contexts to negotiate (block status needs base:allocation)
 * @param connectTimeout    for the TCP or Unix connect
 * @param handshakeTimeout  for the whole handshake of one connection
 * @param reconnect         how to get a lost connection back, or null to fail its requests instead
 * @param requestTimeout    a request without a reply for this long declares its connection dead (it is then
 *                          reconnected, or its requests fail); zero for no deadline
 */
public record SessionOptions(
        int connections,
        boolean structuredReplies,
        List<String> metaContexts,
        Duration connectTimeout,
        Duration handshakeTimeout,
        ReconnectPolicy reconnect,
        Duration requestTimeout) {

    /**
     * 30 s: far beyond any healthy reply (a loaded server answers in milliseconds; nbdkit's
     * delay filter tests tails of seconds), yet a silent server is given up on before a
     * filesystem above would hang for minutes.
     */
    public static final Duration DEFAULT_REQUEST_TIMEOUT = Duration.ofSeconds(30);

    public static final SessionOptions DEFAULT = new SessionOptions(1, true, List.of(NbdConstants.BASE_ALLOCATION),
            NbdConnector.DEFAULT_CONNECT_TIMEOUT, HandshakePlan.DEFAULT_TIMEOUT, null, DEFAULT_REQUEST_TIMEOUT);

    public SessionOptions(int connections, boolean structuredReplies, List<String> metaContexts, Duration connectTimeout,
            Duration handshakeTimeout) {
        this(connections, structuredReplies, metaContexts, connectTimeout, handshakeTimeout, null);
    }

    public SessionOptions(int connections, boolean structuredReplies, List<String> metaContexts, Duration connectTimeout,
            Duration handshakeTimeout, ReconnectPolicy reconnect) {
        this(connections, structuredReplies, metaContexts, connectTimeout, handshakeTimeout, reconnect,
                DEFAULT_REQUEST_TIMEOUT);
    }

    public SessionOptions {
        if (connections < 1) {
            throw new IllegalArgumentException("connections must be at least 1, not " + connections);
        }
        if (requestTimeout.isNegative()) {
            throw new IllegalArgumentException("the request timeout must not be negative");
        }
        metaContexts = List.copyOf(metaContexts);
    }

    public SessionOptions withConnections(int n) {
        return new SessionOptions(n, structuredReplies, metaContexts, connectTimeout, handshakeTimeout, reconnect,
                requestTimeout);
    }

    public SessionOptions withStructuredReplies(boolean on) {
        return new SessionOptions(connections, on, metaContexts, connectTimeout, handshakeTimeout, reconnect,
                requestTimeout);
    }

    public SessionOptions withReconnect(ReconnectPolicy policy) {
        return new SessionOptions(connections, structuredReplies, metaContexts, connectTimeout, handshakeTimeout, policy,
                requestTimeout);
    }

    public SessionOptions withRequestTimeout(Duration timeout) {
        return new SessionOptions(connections, structuredReplies, metaContexts, connectTimeout, handshakeTimeout, reconnect,
                timeout);
    }

    public SessionOptions withHandshakeTimeout(Duration timeout) {
        return new SessionOptions(connections, structuredReplies, metaContexts, connectTimeout, timeout, reconnect,
                requestTimeout);
    }

    HandshakePlan plan(String exportName) {
        return HandshakePlan.transmission(exportName)
                .withStructuredReplies(structuredReplies)
                .withMetaContexts(structuredReplies ? metaContexts : List.of())
                .withTimeout(handshakeTimeout);
    }
}
