package org.nbdroot.proto.tls;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nbdroot.proto.NbdException;
import org.nbdroot.proto.transport.NbdUri;

/** What the TLS settings read from URIs and files, and how they refuse what is wrong. */
class TlsSettingsTest {
    @TempDir
    Path dir;

    @Test
    void uriParameters() {
        TlsSettings s = TlsSettings.fromUri(NbdUri.parse(
                "nbds://bob@example.com/disk?tls-hostname=nbd.example.org&tls-verify-peer=0&tls-psk-file=/k.psk"));
        assertEquals("nbd.example.org", s.hostname());
        assertFalse(s.verifyPeer());
        assertEquals(Path.of("/k.psk"), s.pskFile());
        assertEquals("bob", s.username(), "the URI's user info is the TLS user name (doc/uri.md)");
    }

    @Test
    void tlsCertificatesDirectoryAsLibnbdReadsIt() throws Exception {
        TlsSettings caOnly = TlsSettings.fromUri(NbdUri.parse("nbds://h/?tls-certificates=" + dir));
        assertEquals(dir.resolve("ca-cert.pem"), caOnly.caFile());
        assertNull(caOnly.certFile(), "no client-cert.pem: no client certificate");
        Files.writeString(dir.resolve("client-cert.pem"), "");
        Files.writeString(dir.resolve("client-key.pem"), "");
        TlsSettings withClient = TlsSettings.fromUri(NbdUri.parse("nbds://h/?tls-certificates=" + dir));
        assertEquals(dir.resolve("client-cert.pem"), withClient.certFile());
        assertEquals(dir.resolve("client-key.pem"), withClient.keyFile());
    }

    @Test
    void refusedUriParameters() {
        IllegalArgumentException anon = assertThrows(IllegalArgumentException.class,
                () -> TlsSettings.fromUri(NbdUri.parse("nbds://h/?tls-type=anon")));
        assertTrue(anon.getMessage().contains("anonymous TLS authenticates no one"), anon.getMessage());
        assertThrows(IllegalArgumentException.class, () -> TlsSettings.fromUri(NbdUri.parse("nbds://h/?tls-verify-peer=maybe")));
        assertThrows(IllegalArgumentException.class, () -> TlsSettings.fromUri(NbdUri.parse("nbds://h/?tls-type=psk")));
        IllegalArgumentException unknown = assertThrows(IllegalArgumentException.class,
                () -> NbdUri.parse("nbds://h/?tls-priority=NORMAL"));
        assertTrue(unknown.getMessage().contains("tls-priority"), unknown.getMessage());
    }

    @Test
    void pskFileInPsktoolFormat() throws Exception {
        Path file = dir.resolve("keys.psk");
        Files.writeString(file, "# comment\nalice:00112233\nbob:aabbccdd\n");
        assertTrue(TlsSettings.DEFAULT.withPsk(file, null).load().isPsk());
        TlsSettings.DEFAULT.withPsk(file, "bob").load();
        NbdException missing = assertThrows(NbdException.class, () -> TlsSettings.DEFAULT.withPsk(file, "carol").load());
        assertEquals(file + " has no key for the username 'carol'", missing.getMessage());
        Files.writeString(file, "alice:xyz\n");
        NbdException notHex = assertThrows(NbdException.class, () -> TlsSettings.DEFAULT.withPsk(file, null).load());
        assertEquals(file + " line 1: the key is not hexadecimal", notHex.getMessage());
    }

    @Test
    void filesAreNamedWhenTheyCannotBeRead() throws Exception {
        Path absent = dir.resolve("absent.pem");
        NbdException noCa = assertThrows(NbdException.class, () -> TlsSettings.DEFAULT.withCa(absent).load());
        assertEquals("the CA certificate file " + absent + " does not exist", noCa.getMessage());
        Path notPem = dir.resolve("ca.pem");
        Files.writeString(notPem, "hello\n");
        NbdException empty = assertThrows(NbdException.class, () -> TlsSettings.DEFAULT.withCa(notPem).load());
        assertEquals("the CA certificate file " + notPem + " holds no PEM certificate", empty.getMessage());
        Path pkcs1 = dir.resolve("key.pem");
        Files.writeString(pkcs1, "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n");
        NbdException oldKey = assertThrows(NbdException.class,
                () -> TlsSettings.DEFAULT.withClientCertificate(notPem, pkcs1).load());
        assertEquals("the private key in " + pkcs1 + " is 'RSA PRIVATE KEY', not PKCS#8: convert it with "
                + "'openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8'", oldKey.getMessage());
        NbdException halfPair = assertThrows(NbdException.class,
                () -> TlsSettings.DEFAULT.withClientCertificate(null, pkcs1).load());
        assertTrue(halfPair.getMessage().contains("--tls-cert with --tls-key"), halfPair.getMessage());
    }

    @Test
    void pskAndCertificatesExcludeEachOther() throws Exception {
        Path file = dir.resolve("keys.psk");
        Files.writeString(file, "alice:00112233\n");
        NbdException both = assertThrows(NbdException.class,
                () -> TlsSettings.DEFAULT.withCa(dir.resolve("ca.pem")).withPsk(file, null).load());
        assertTrue(both.getMessage().contains("exclude each other"), both.getMessage());
    }
}
