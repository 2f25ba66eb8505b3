package org.nbdroot.proto.session;

import java.time.Duration;
import java.util.List;
import org.nbdroot.proto.NbdException;
import org.nbdroot.proto.handshake.HandshakePlan;
import org.nbdroot.proto.tls.TlsConfig;
import org.nbdroot.proto.tls.TlsSettings;
import org.nbdroot.proto.transport.NbdConnector;
import org.nbdroot.proto.transport.NbdUri;
import org.nbdroot.proto.wire.NbdConstants;

/**
 * How a session connects.
 *
 * @param connections       connections to open; more than one only when the server sets CAN_MULTI_CONN
 * @param structuredReplies ask for structured replies
 * @param extendedHeaders   ask for extended headers first (only with structured replies); a server that
 *                          refuses gets the compact headers, as a server without them always did
 * @param metaContexts      meta contexts to negotiate (block status needs base:allocation)
 * @param connectTimeout    for the TCP or Unix connect
 * @param handshakeTimeout  for the whole handshake of one connection
 * @param reconnect         how to get a lost connection back, or null to fail its requests instead
 * @param requestTimeout    a request without a reply for this long declares its connection dead (it is then
 *                          reconnected, or its requests fail); zero for no deadline
 * @param tls               TLS for every connection (files already read); null for none, or for what an
 *                          nbds:// URI asks ({@link TlsSettings#fromUri}, read when the session starts)
 * @param observer          hears every request's outcome and every reconnect (metrics); {@link RequestObserver#NONE}
 */
public record SessionOptions(
        int connections,
        boolean structuredReplies,
        List<String> metaContexts,
        Duration connectTimeout,
        Duration handshakeTimeout,
        ReconnectPolicy reconnect,
        Duration requestTimeout,
        TlsConfig tls,
        boolean extendedHeaders,
        RequestObserver observer) {

    /**
     * 30 s: far beyond any healthy reply (a loaded server answers in milliseconds; nbdkit's
     * delay filter tests tails of seconds), yet a silent server is given up on before a
     * filesystem above would hang for minutes.
     */
    public static final Duration DEFAULT_REQUEST_TIMEOUT = Duration.ofSeconds(30);

    public static final SessionOptions DEFAULT = new SessionOptions(1, true, List.of(NbdConstants.BASE_ALLOCATION),
            NbdConnector.DEFAULT_CONNECT_TIMEOUT, HandshakePlan.DEFAULT_TIMEOUT, null, DEFAULT_REQUEST_TIMEOUT, null, true,
            RequestObserver.NONE);

    public SessionOptions(int connections, boolean structuredReplies, List<String> metaContexts, Duration connectTimeout,
            Duration handshakeTimeout) {
        this(connections, structuredReplies, metaContexts, connectTimeout, handshakeTimeout, null);
    }

    public SessionOptions(int connections, boolean structuredReplies, List<String> metaContexts, Duration connectTimeout,
            Duration handshakeTimeout, ReconnectPolicy reconnect) {
        this(connections, structuredReplies, metaContexts, connectTimeout, handshakeTimeout, reconnect,
                DEFAULT_REQUEST_TIMEOUT, null);
    }

    public SessionOptions(int connections, boolean structuredReplies, List<String> metaContexts, Duration connectTimeout,
            Duration handshakeTimeout, ReconnectPolicy reconnect, Duration requestTimeout) {
        this(connections, structuredReplies, metaContexts, connectTimeout, handshakeTimeout, reconnect, requestTimeout,
                null);
    }

    public SessionOptions(int connections, boolean structuredReplies, List<String> metaContexts, Duration connectTimeout,
            Duration handshakeTimeout, ReconnectPolicy reconnect, Duration requestTimeout, TlsConfig tls) {
        this(connections, structuredReplies, metaContexts, connectTimeout, handshakeTimeout, reconnect, requestTimeout,
                tls, true, RequestObserver.NONE);
    }

    public SessionOptions {
        if (connections < 1) {
            throw new IllegalArgumentException("connections must be at least 1, not " + connections);
        }
        if (requestTimeout.isNegative()) {
            throw new IllegalArgumentException("the request timeout must not be negative");
        }
        metaContexts = List.copyOf(metaContexts);
        observer = observer == null ? RequestObserver.NONE : observer;
    }

    public SessionOptions withConnections(int n) {
        return new SessionOptions(n, structuredReplies, metaContexts, connectTimeout, handshakeTimeout, reconnect,
                requestTimeout, tls, extendedHeaders, observer);
    }

    public SessionOptions withStructuredReplies(boolean on) {
        return new SessionOptions(connections, on, metaContexts, connectTimeout, handshakeTimeout, reconnect,
                requestTimeout, tls, extendedHeaders, observer);
    }

    /** Whether to ask for NBD_OPT_EXTENDED_HEADERS (on by default); off keeps the compact headers. */
    public SessionOptions withExtendedHeaders(boolean on) {
        return new SessionOptions(connections, structuredReplies, metaContexts, connectTimeout, handshakeTimeout, reconnect,
                requestTimeout, tls, on, observer);
    }

    public SessionOptions withReconnect(ReconnectPolicy policy) {
        return new SessionOptions(connections, structuredReplies, metaContexts, connectTimeout, handshakeTimeout, policy,
                requestTimeout, tls, extendedHeaders, observer);
    }

    public SessionOptions withRequestTimeout(Duration timeout) {
        return new SessionOptions(connections, structuredReplies, metaContexts, connectTimeout, handshakeTimeout, reconnect,
                timeout, tls, extendedHeaders, observer);
    }

    public SessionOptions withHandshakeTimeout(Duration timeout) {
        return new SessionOptions(connections, structuredReplies, metaContexts, connectTimeout, timeout, reconnect,
                requestTimeout, tls, extendedHeaders, observer);
    }

    public SessionOptions withTls(TlsConfig config) {
        return new SessionOptions(connections, structuredReplies, metaContexts, connectTimeout, handshakeTimeout, reconnect,
                requestTimeout, config, extendedHeaders, observer);
    }

    public SessionOptions withObserver(RequestObserver o) {
        return new SessionOptions(connections, structuredReplies, metaContexts, connectTimeout, handshakeTimeout, reconnect,
                requestTimeout, tls, extendedHeaders, o);
    }

    /**
     * These options with the TLS {@code uri} asks for: the given {@link #tls} if any, else, for an
     * nbds:// URI, its query parameters' (files read now). A plain URI with no TLS given stays plain.
     */
    public SessionOptions forUri(NbdUri uri) throws NbdException {
        if (tls != null || !uri.tls()) {
            return this;
        }
        try {
            return withTls(TlsSettings.fromUri(uri).load());
        } catch (IllegalArgumentException e) {
            throw new NbdException(e.getMessage(), e);
        }
    }

    /** The plan for a connection to {@code uri}: TLS first when there is any. */
    HandshakePlan plan(NbdUri uri) {
        return plan(uri.exportName()).withTls(tls == null ? null : tls.starter(uri.endpoint()));
    }

    HandshakePlan plan(String exportName) {
        return HandshakePlan.transmission(exportName)
                .withStructuredReplies(structuredReplies)
                .withExtendedHeaders(structuredReplies && extendedHeaders)
                .withMetaContexts(structuredReplies ? metaContexts : List.of())
                .withTimeout(handshakeTimeout);
    }
}
