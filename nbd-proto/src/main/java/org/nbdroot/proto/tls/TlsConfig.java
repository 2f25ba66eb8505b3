package org.nbdroot.proto.tls;

import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.ssl.SslContext;
import io.netty.handler.ssl.SslContextBuilder;
import io.netty.handler.ssl.SslHandler;
import io.netty.handler.ssl.SslProvider;
import io.netty.handler.ssl.util.InsecureTrustManagerFactory;
import io.netty.util.concurrent.Future;
import io.netty.util.concurrent.Promise;
import java.security.PrivateKey;
import java.security.cert.CertPathBuilderException;
import java.security.cert.CertPathValidatorException;
import java.security.cert.CertificateExpiredException;
import java.security.cert.CertificateNotYetValidException;
import java.security.cert.X509Certificate;
import java.util.List;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLParameters;
import org.nbdroot.proto.NbdException;
import org.nbdroot.proto.handshake.TlsStarter;
import org.nbdroot.proto.transport.NbdEndpoint;

/**
 * How to do TLS after {@code NBD_OPT_STARTTLS}: X.509 (the JDK's TLS through Netty's
 * {@link SslHandler}) or a pre-shared key (BouncyCastle's TLS, see {@link PskTlsHandler}).
 *
 * <p>Everything is in memory once this exists: certificates, keys and trust anchors are read
 * when it is made, never again. A daemon that serves a root disk may lose every file it could
 * open (after a reroot), yet must redo TLS on each reconnect.
 */
public final class TlsConfig {
    private final SslContext x509;
    private final String hostname;
    private final boolean verifyPeer;
    private final String trustSource;
    private final String pskIdentity;
    private final byte[] pskKey;
    private final org.bouncycastle.tls.crypto.TlsCrypto pskCrypto;

    /**
     * Classes a first connection does not load but a lost or failing one does (a TLS alert, a
     * refused certificate), loaded with the first configuration: after a reroot the daemon
     * may open no file, and loading a class can mean opening one.
     */
    private static final List<String> LOADED_LATE = List.of(
            "sun.security.ssl.Alert", "sun.security.ssl.Alert$AlertConsumer", "sun.security.ssl.Alert$Level",
            "io.netty.handler.ssl.SslCloseCompletionEvent", "io.netty.handler.ssl.SslHandshakeCompletionEvent",
            "javax.net.ssl.SSLHandshakeException", "java.security.cert.CertPathBuilderException",
            "java.security.cert.CertPathValidatorException", "java.security.cert.CertificateExpiredException",
            "java.security.cert.CertificateNotYetValidException",
            "org.bouncycastle.tls.TlsFatalAlert", "org.bouncycastle.tls.TlsFatalAlertReceived",
            "org.bouncycastle.tls.AlertDescription", "org.bouncycastle.tls.AlertLevel");

    static {
        for (String name : LOADED_LATE) {
            try {
                Class.forName(name, true, TlsConfig.class.getClassLoader());
            } catch (ClassNotFoundException | LinkageError e) {
                // a JDK without this internal class: nothing to load ahead
            }
        }
    }

    private TlsConfig(SslContext x509, String hostname, boolean verifyPeer, String trustSource,
            String pskIdentity, byte[] pskKey) {
        this.x509 = x509;
        this.hostname = hostname;
        this.verifyPeer = verifyPeer;
        this.trustSource = trustSource;
        this.pskIdentity = pskIdentity;
        this.pskKey = pskKey;
        this.pskCrypto = pskKey == null ? null : PskTlsHandler.newCrypto();
    }

    /**
     * X.509: the server's certificate must chain to one of {@code trusted} (the JDK's default
     * CAs when empty) and, unless {@code verifyPeer} is off, name the host.
     *
     * @param trusted     CA certificates; empty for the JDK's default trust store (read now)
     * @param key         the client's private key, or null to present no certificate
     * @param chain       the client's certificate chain, with {@code key}
     * @param hostname    the name the server's certificate must carry; null for the endpoint's host
     * @param verifyPeer  false skips every check on the server (a warning is the caller's)
     * @param trustSource where the CAs came from, for messages ("/etc/nbd/ca-cert.pem")
     */
    public static TlsConfig x509(List<X509Certificate> trusted, PrivateKey key, List<X509Certificate> chain,
            String hostname, boolean verifyPeer, String trustSource) throws NbdException {
        // Host name checks are set per connection (starter()): there may be no host to check.
        SslContextBuilder builder = SslContextBuilder.forClient().sslProvider(SslProvider.JDK)
                .protocols("TLSv1.3", "TLSv1.2").endpointIdentificationAlgorithm(null);
        if (!verifyPeer) {
            builder.trustManager(InsecureTrustManagerFactory.INSTANCE);
        } else if (!trusted.isEmpty()) {
            builder.trustManager(trusted);
        } // else: the JDK's default trust store, loaded by build() below
        if (key != null) {
            builder.keyManager(key, chain);
        }
        try {
            return new TlsConfig(builder.build(), hostname, verifyPeer,
                    trusted.isEmpty() ? "the JDK's default CAs" : trustSource, null, null);
        } catch (javax.net.ssl.SSLException | RuntimeException e) {
            throw new NbdException("cannot set up TLS: " + e.getMessage(), e);
        }
    }

    static final String PSK_NOT_BUILT_IN = "TLS-PSK needs BouncyCastle's TLS, which this runtime image was built without"
            + " (it adds 11 MiB: build the image with mvn package -Dimage.psk=true)";

    /** Whether BouncyCastle's TLS is here: an optional module of the runtime image (-Dimage.psk=true). */
    static boolean pskAvailable() {
        try {
            Class.forName("org.bouncycastle.tls.PSKTlsClient", false, TlsConfig.class.getClassLoader());
            return true;
        } catch (ClassNotFoundException | LinkageError e) {
            return false;
        }
    }

    /** TLS-PSK: both sides prove they know {@code key}, sent under {@code identity}. */
    public static TlsConfig psk(String identity, byte[] key) {
        if (identity.isEmpty() || key.length == 0) {
            throw new IllegalArgumentException("a TLS-PSK identity and key must not be empty");
        }
        if (!pskAvailable()) {
            throw new IllegalArgumentException(PSK_NOT_BUILT_IN);
        }
        return new TlsConfig(null, null, true, null, identity, key.clone());
    }

    public boolean isPsk() {
        return x509 == null;
    }

    /** A starter for connections to {@code endpoint}: its host is the name to verify, unless one was given. */
    public TlsStarter starter(NbdEndpoint endpoint) {
        if (isPsk()) {
            return new TlsStarter() {
                @Override
                public Future<?> start(ChannelHandlerContext ctx) {
                    PskTlsHandler handler = new PskTlsHandler(pskCrypto, pskIdentity, pskKey);
                    ctx.pipeline().addFirst("tls", handler);
                    return handler.handshakeFuture();
                }

                @Override
                public String describe() {
                    return "TLS-PSK as '" + pskIdentity + "'";
                }
            };
        }
        String host = hostname != null ? hostname : endpoint instanceof NbdEndpoint.Tcp tcp ? tcp.host() : null;
        int port = endpoint instanceof NbdEndpoint.Tcp tcp ? tcp.port() : -1;
        return new TlsStarter() {
            @Override
            public Future<?> start(ChannelHandlerContext ctx) {
                SSLEngine engine = host == null ? x509.newEngine(ctx.alloc()) : x509.newEngine(ctx.alloc(), host, port);
                SSLParameters parameters = engine.getSSLParameters();
                // No host to check (a Unix socket without --tls-hostname): the chain is still verified, as libnbd does.
                parameters.setEndpointIdentificationAlgorithm(verifyPeer && host != null ? "HTTPS" : null);
                engine.setSSLParameters(parameters);
                SslHandler handler = new SslHandler(engine);
                handler.setHandshakeTimeoutMillis(0); // the NBD handshake's own timeout covers TLS too
                Promise<Void> done = ctx.executor().newPromise();
                handler.handshakeFuture().addListener(f -> {
                    if (f.isSuccess()) {
                        done.trySuccess(null);
                    } else {
                        done.tryFailure(new NbdException("TLS handshake with the server failed: "
                                + explain(f.cause(), host), f.cause()));
                    }
                });
                ctx.pipeline().addFirst("tls", handler);
                return done;
            }

            @Override
            public String describe() {
                return "TLS with X.509" + (!verifyPeer ? ", server not verified"
                        : host == null ? ", certificate verified (no host name to check)" : ", verifying host " + host);
            }
        };
    }

    /** Why a TLS handshake failed, in words, with the option that would fix it. */
    String explain(Throwable failure, String host) {
        for (Throwable t = failure; t != null; t = t.getCause()) {
            if (t instanceof CertificateExpiredException) {
                return "the server's certificate has expired (" + t.getMessage() + ")";
            }
            if (t instanceof CertificateNotYetValidException) {
                return "the server's certificate is not valid yet (" + t.getMessage() + ")";
            }
            if (t instanceof CertPathBuilderException || t instanceof CertPathValidatorException) {
                return "the server's certificate is not signed by a trusted certificate authority (trusted: "
                        + trustSource + "; name the server's CA with --tls-ca)";
            }
            String message = String.valueOf(t.getMessage());
            if (message.startsWith("No subject alternative") || message.startsWith("No name matching")) {
                return "the server's certificate is not issued to '" + host + "' (" + message.replaceAll("\\.$", "")
                        + "; name the host it is issued to with --tls-hostname)";
            }
        }
        if (innermostCause(failure) instanceof java.nio.channels.ClosedChannelException) {
            return "the server closed the connection in the middle of it (its log says why: often no protocol "
                    + "version or cipher suite in common)";
        }
        return innermost(failure);
    }

    private static Throwable innermostCause(Throwable failure) {
        Throwable t = failure;
        while (t.getCause() != null && t.getCause() != t) {
            t = t.getCause();
        }
        return t;
    }

    static String innermost(Throwable failure) {
        Throwable t = failure;
        while (t.getCause() != null && t.getCause() != t) {
            t = t.getCause();
        }
        return t.getMessage() != null ? t.getMessage() : t.toString();
    }
}
