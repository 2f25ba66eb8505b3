package org.nbdroot.client.cli;

import java.nio.file.Path;
import org.nbdroot.proto.NbdException;
import org.nbdroot.proto.tls.TlsConfig;
import org.nbdroot.proto.tls.TlsSettings;
import org.nbdroot.proto.transport.NbdUri;
import picocli.CommandLine.Option;

/**
 * TLS options, shared by the commands that connect. Any of them asks for TLS; so does an
 * nbds:// URI, whose tls-* query parameters they override. Files are read once, at start.
 */
public final class TlsOptions {
    @Option(names = "--tls", description = "Require TLS (NBD_OPT_STARTTLS); never fall back to plain text. "
            + "The server's certificate and host name are verified.")
    boolean tls;

    @Option(names = "--tls-ca", paramLabel = "FILE",
            description = "PEM CA certificate(s) the server's certificate must chain to (default: the JDK's CAs).")
    Path ca;

    @Option(names = "--tls-cert", paramLabel = "FILE", description = "PEM client certificate, with --tls-key.")
    Path cert;

    @Option(names = "--tls-key", paramLabel = "FILE", description = "PEM (PKCS#8) private key of --tls-cert.")
    Path key;

    @Option(names = "--tls-hostname", paramLabel = "NAME",
            description = "The name the server's certificate must carry (default: the host connected to).")
    String hostname;

    @Option(names = "--tls-psk", paramLabel = "FILE",
            description = "TLS-PSK instead of certificates: a key file of username:hexkey lines (nbdkit-psktool's format).")
    Path psk;

    @Option(names = "--tls-username", paramLabel = "NAME",
            description = "The TLS-PSK username (default: the key file's first).")
    String username;

    boolean requested() {
        return tls || ca != null || cert != null || key != null || hostname != null || psk != null || username != null;
    }

    /** The TLS to use for {@code uri}, files read now; null for none. */
    public TlsConfig config(NbdUri uri) throws NbdException {
        if (!requested() && !uri.tls()) {
            return null;
        }
        TlsSettings s = uri.tls() ? TlsSettings.fromUri(uri) : TlsSettings.DEFAULT;
        if (ca != null) {
            s = s.withCa(ca);
        }
        if (cert != null || key != null) {
            s = s.withClientCertificate(cert, key);
        }
        if (hostname != null) {
            s = s.withHostname(hostname);
        }
        if (psk != null || username != null) {
            s = s.withPsk(psk != null ? psk : s.pskFile(), username != null ? username : s.username());
        }
        if (!s.verifyPeer()) {
            java.util.logging.Logger.getLogger(TlsOptions.class.getName()).warning(
                    "tls-verify-peer=0: the server's certificate is not checked; anyone in the path can pose as it");
        }
        return s.load();
    }
}
