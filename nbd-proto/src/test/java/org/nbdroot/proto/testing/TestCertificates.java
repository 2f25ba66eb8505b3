package org.nbdroot.proto.testing;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Certificates and keys made for one test run with openssl, nothing committed: a CA, a server
 * certificate it signed for {@code localhost} and {@code 127.0.0.1} (in nbdkit's
 * {@code --tls-certificates} layout: ca-cert.pem, server-cert.pem, server-key.pem), a client
 * certificate, a second CA that signed nothing of these, and a TLS-PSK key file. Keys are
 * ECDSA P-256 unless RSA is asked for.
 */
public final class TestCertificates {
    /** The kind of every key made: what the certificates carry and the handshake signs with. */
    public enum KeyType {
        EC("ec", "ec_paramgen_curve:P-256"), RSA("rsa", "rsa_keygen_bits:2048");

        final String algorithm;
        final String parameter;

        KeyType(String algorithm, String parameter) {
            this.algorithm = algorithm;
            this.parameter = parameter;
        }
    }

    /** The server's directory for nbdkit --tls-certificates. */
    public final Path serverDir;
    public final Path ca;
    public final Path otherCa;
    public final Path clientCert;
    public final Path clientKey;
    public final Path pskFile;
    public final String pskUser = "alice";
    public final KeyType keyType;

    private TestCertificates(Path dir, KeyType keyType) {
        this.keyType = keyType;
        this.serverDir = dir.resolve("server");
        this.ca = serverDir.resolve("ca-cert.pem");
        this.otherCa = dir.resolve("other-ca.pem");
        this.clientCert = dir.resolve("client-cert.pem");
        this.clientKey = dir.resolve("client-key.pem");
        this.pskFile = dir.resolve("keys.psk");
    }

    public static TestCertificates create(Path dir) throws IOException, InterruptedException {
        return create(dir, KeyType.EC);
    }

    public static TestCertificates create(Path dir, KeyType keyType) throws IOException, InterruptedException {
        TestCertificates c = new TestCertificates(dir, keyType);
        Files.createDirectories(c.serverDir);
        Path caKey = dir.resolve("ca-key.pem");
        c.selfSigned(dir, caKey, c.ca, "nbdroot test CA");
        c.selfSigned(dir, dir.resolve("other-ca-key.pem"), c.otherCa, "some other CA");
        c.signed(dir, c.serverDir.resolve("server-key.pem"), c.serverDir.resolve("server-cert.pem"), "localhost",
                "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n", c.ca, caKey);
        c.signed(dir, c.clientKey, c.clientCert, "nbdroot test client", "extendedKeyUsage=clientAuth\n", c.ca, caKey);
        byte[] key = new byte[32];
        new SecureRandom().nextBytes(key);
        Files.writeString(c.pskFile, c.pskUser + ":" + HexFormat.of().formatHex(key) + "\n");
        return c;
    }

    /** Another PSK file for the same user, with a different key. */
    public Path wrongPskFile() throws IOException {
        Path file = pskFile.resolveSibling("wrong.psk");
        byte[] key = new byte[32];
        new SecureRandom().nextBytes(key);
        Files.writeString(file, pskUser + ":" + HexFormat.of().formatHex(key) + "\n");
        return file;
    }

    private void selfSigned(Path dir, Path key, Path cert, String name) throws IOException, InterruptedException {
        openssl(dir, "req", "-x509", "-newkey", keyType.algorithm, "-pkeyopt", keyType.parameter, "-nodes",
                "-keyout", key.toString(), "-out", cert.toString(), "-days", "2", "-subj", "/CN=" + name);
    }

    private void signed(Path dir, Path key, Path cert, String name, String extensions, Path ca, Path caKey)
            throws IOException, InterruptedException {
        Path csr = dir.resolve(name.replace(' ', '-') + ".csr");
        Path ext = dir.resolve(name.replace(' ', '-') + ".ext");
        Files.writeString(ext, "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n" + extensions);
        openssl(dir, "req", "-newkey", keyType.algorithm, "-pkeyopt", keyType.parameter, "-nodes",
                "-keyout", key.toString(), "-out", csr.toString(), "-subj", "/CN=" + name);
        openssl(dir, "x509", "-req", "-in", csr.toString(), "-CA", ca.toString(), "-CAkey", caKey.toString(),
                "-CAcreateserial", "-out", cert.toString(), "-days", "2", "-extfile", ext.toString());
    }

    private static void openssl(Path dir, String... args) throws IOException, InterruptedException {
        if (!Files.isExecutable(Path.of("/usr/bin/openssl"))) {
            throw new AssertionError("openssl not found: the test command installs the Debian package openssl");
        }
        List<String> command = new ArrayList<>(List.of("openssl"));
        command.addAll(List.of(args));
        Process p = new ProcessBuilder(command).directory(dir.toFile()).redirectErrorStream(true).start();
        String output = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (!p.waitFor(30, TimeUnit.SECONDS) || p.exitValue() != 0) {
            throw new AssertionError("openssl " + String.join(" ", args) + " failed: " + output);
        }
    }
}
