package org.nbdroot.proto.tls;

import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyFactory;
import java.security.PrivateKey;
import java.security.cert.CertificateException;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.nbdroot.proto.NbdException;
import org.nbdroot.proto.transport.NbdUri;

/**
 * What the user asked of TLS, by file name: from an {@code nbds://} URI's query parameters
 * ({@code doc/uri.md} and libnbd's) or from command line options. {@link #load} reads every
 * file once and gives the {@link TlsConfig} that connections use from then on.
 *
 * @param caFile     PEM CA certificates the server's certificate must chain to; null for the JDK's default CAs
 * @param certFile   PEM client certificate (chain), with {@code keyFile}; null for none
 * @param keyFile    PEM PKCS#8 private key of {@code certFile}
 * @param hostname   the name the server's certificate must carry; null for the host connected to
 * @param verifyPeer false accepts any server certificate (tls-verify-peer=0): for tests only
 * @param pskFile    nbdkit/psktool PSK file ({@code username:hexkey} lines): TLS-PSK instead of X.509
 * @param username   the PSK identity; null for the file's first entry
 */
public record TlsSettings(Path caFile, Path certFile, Path keyFile, String hostname, boolean verifyPeer,
        Path pskFile, String username) {

    /** X.509 against the JDK's default CAs, host name verified. */
    public static final TlsSettings DEFAULT = new TlsSettings(null, null, null, null, true, null, null);

    /** The TLS query parameters an NBD URI may carry: {@code doc/uri.md}'s, and libnbd's file ones. */
    public static final List<String> URI_PARAMETERS = List.of("tls-type", "tls-hostname", "tls-verify-peer",
            "tls-certificates", "tls-psk-file", "tls-username");

    /**
     * The settings an URI names: {@code tls-certificates=DIR} as libnbd reads it ({@code ca-cert.pem},
     * and {@code client-cert.pem} with {@code client-key.pem} when present), {@code tls-psk-file},
     * {@code tls-username} (or the URI's user info), {@code tls-hostname}, {@code tls-verify-peer},
     * {@code tls-type} ({@code x509} or {@code psk}; {@code anon} is refused: it authenticates nobody).
     */
    public static TlsSettings fromUri(NbdUri uri) {
        Map<String, String> p = uri.tlsParameters();
        TlsSettings s = DEFAULT;
        String dir = p.get("tls-certificates");
        if (dir != null) {
            Path d = Path.of(dir);
            Path cert = d.resolve("client-cert.pem");
            Path key = d.resolve("client-key.pem");
            boolean client = Files.exists(cert) && Files.exists(key);
            s = s.withCa(d.resolve("ca-cert.pem")).withClientCertificate(client ? cert : null, client ? key : null);
        }
        if (p.containsKey("tls-hostname")) {
            s = s.withHostname(p.get("tls-hostname"));
        }
        String verify = p.get("tls-verify-peer");
        if (verify != null) {
            switch (verify.toLowerCase(java.util.Locale.ROOT)) {
                case "1", "true", "yes", "on" -> s = s.withVerifyPeer(true);
                case "0", "false", "no", "off" -> s = s.withVerifyPeer(false);
                default -> throw new IllegalArgumentException("tls-verify-peer=" + verify + " in '" + uri
                        + "' (expected 0 or 1)");
            }
        }
        if (p.containsKey("tls-psk-file")) {
            s = s.withPsk(Path.of(p.get("tls-psk-file")), p.get("tls-username"));
        } else if (p.containsKey("tls-username")) {
            s = s.withPsk(null, p.get("tls-username"));
        }
        String type = p.get("tls-type");
        if (type != null) {
            switch (type.toLowerCase(java.util.Locale.ROOT)) {
                case "x509" -> {
                    if (s.pskFile() != null) {
                        throw new IllegalArgumentException("tls-type=x509 with tls-psk-file in '" + uri + "'");
                    }
                }
                case "psk" -> {
                    if (s.pskFile() == null) {
                        throw new IllegalArgumentException("tls-type=psk needs tls-psk-file=FILE in '" + uri + "'");
                    }
                }
                case "anon" -> throw new IllegalArgumentException("tls-type=anon in '" + uri
                        + "': anonymous TLS authenticates no one and is not supported");
                default -> throw new IllegalArgumentException("tls-type=" + type + " in '" + uri
                        + "' (expected x509 or psk)");
            }
        }
        return s;
    }

    public TlsSettings withCa(Path ca) {
        return new TlsSettings(ca, certFile, keyFile, hostname, verifyPeer, pskFile, username);
    }

    public TlsSettings withClientCertificate(Path cert, Path key) {
        return new TlsSettings(caFile, cert, key, hostname, verifyPeer, pskFile, username);
    }

    public TlsSettings withHostname(String name) {
        return new TlsSettings(caFile, certFile, keyFile, name, verifyPeer, pskFile, username);
    }

    public TlsSettings withVerifyPeer(boolean on) {
        return new TlsSettings(caFile, certFile, keyFile, hostname, on, pskFile, username);
    }

    public TlsSettings withPsk(Path file, String user) {
        return new TlsSettings(caFile, certFile, keyFile, hostname, verifyPeer, file, user);
    }

    /** Reads every file named, now; nothing is read again afterwards. */
    public TlsConfig load() throws NbdException {
        if (pskFile != null) {
            if (caFile != null || certFile != null || keyFile != null) {
                throw new NbdException("TLS-PSK (" + pskFile + ") and X.509 certificates exclude each other: give one");
            }
            return loadPsk();
        }
        if (username != null) {
            throw new NbdException("a TLS username ('" + username + "') is for TLS-PSK: give the PSK file too (--tls-psk)");
        }
        if ((certFile == null) != (keyFile == null)) {
            throw new NbdException("a client certificate needs its key and a key its certificate (--tls-cert with --tls-key)");
        }
        PrivateKey key = keyFile == null ? null : readPrivateKey(keyFile);
        List<X509Certificate> trusted = caFile == null ? List.of() : readCertificates(caFile, "CA certificate");
        List<X509Certificate> chain = certFile == null ? List.of() : readCertificates(certFile, "client certificate");
        return TlsConfig.x509(trusted, key, chain, hostname, verifyPeer, caFile == null ? null : caFile.toString());
    }

    private TlsConfig loadPsk() throws NbdException {
        if (!TlsConfig.pskAvailable()) {
            // What this image lacks, not a command line that does not parse: exit status 1, not 2.
            throw new NbdException(TlsConfig.PSK_NOT_BUILT_IN);
        }
        List<String> lines = readLines(pskFile, "TLS-PSK key file");
        for (int i = 0; i < lines.size(); i++) {
            String line = lines.get(i).strip();
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            int colon = line.lastIndexOf(':');
            if (colon <= 0) {
                throw new NbdException(pskFile + " line " + (i + 1) + ": expected username:hexkey (as psktool writes)");
            }
            String user = line.substring(0, colon);
            if (username != null && !username.equals(user)) {
                continue;
            }
            byte[] key;
            try {
                key = HexFormat.of().parseHex(line.substring(colon + 1));
            } catch (IllegalArgumentException e) {
                throw new NbdException(pskFile + " line " + (i + 1) + ": the key is not hexadecimal");
            }
            if (key.length == 0) {
                throw new NbdException(pskFile + " line " + (i + 1) + ": the key is empty");
            }
            return TlsConfig.psk(user, key);
        }
        throw new NbdException(username == null ? pskFile + " holds no username:hexkey line"
                : pskFile + " has no key for the username '" + username + "'");
    }

    private static final Pattern PEM = Pattern.compile(
            "-----BEGIN ([A-Z0-9 ]+)-----([A-Za-z0-9+/=\\s]+)-----END \\1-----");

    private static List<X509Certificate> readCertificates(Path file, String what) throws NbdException {
        String text = String.join("\n", readLines(file, what));
        List<X509Certificate> certificates = new ArrayList<>();
        try {
            CertificateFactory factory = CertificateFactory.getInstance("X.509");
            Matcher m = PEM.matcher(text);
            while (m.find()) {
                if (m.group(1).equals("CERTIFICATE") || m.group(1).equals("TRUSTED CERTIFICATE")) {
                    certificates.add((X509Certificate) factory.generateCertificate(
                            new ByteArrayInputStream(Base64.getMimeDecoder().decode(m.group(2)))));
                }
            }
        } catch (CertificateException | IllegalArgumentException e) {
            throw new NbdException("cannot read the " + what + " " + file + ": " + e.getMessage(), e);
        }
        if (certificates.isEmpty()) {
            throw new NbdException("the " + what + " file " + file + " holds no PEM certificate");
        }
        return certificates;
    }

    private static PrivateKey readPrivateKey(Path file) throws NbdException {
        String text = String.join("\n", readLines(file, "private key"));
        Matcher m = PEM.matcher(text);
        while (m.find()) {
            String type = m.group(1);
            if (type.equals("PRIVATE KEY")) {
                byte[] der = Base64.getMimeDecoder().decode(m.group(2));
                for (String algorithm : List.of("RSA", "EC", "Ed25519", "Ed448")) {
                    try {
                        return KeyFactory.getInstance(algorithm).generatePrivate(new PKCS8EncodedKeySpec(der));
                    } catch (java.security.GeneralSecurityException e) {
                        // try the next algorithm
                    }
                }
                throw new NbdException("the private key in " + file + " is neither RSA, EC nor EdDSA");
            }
            if (type.endsWith("PRIVATE KEY")) {
                throw new NbdException("the private key in " + file + " is '" + type + "', not PKCS#8: "
                        + "convert it with 'openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8'");
            }
        }
        throw new NbdException(file + " holds no PEM private key (-----BEGIN PRIVATE KEY-----)");
    }

    private static List<String> readLines(Path file, String what) throws NbdException {
        try {
            return Files.readAllLines(file, StandardCharsets.UTF_8);
        } catch (java.nio.file.NoSuchFileException e) {
            throw new NbdException("the " + what + " file " + file + " does not exist");
        } catch (IOException e) {
            throw new NbdException("cannot read the " + what + " file " + file + ": " + e, e);
        }
    }
}
