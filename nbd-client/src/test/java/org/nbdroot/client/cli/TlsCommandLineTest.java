package org.nbdroot.client.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.nbdroot.client.cli.CommandLineTest.run;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nbdroot.client.cli.CommandLineTest.Run;
import org.nbdroot.proto.interop.PeerServer;
import org.nbdroot.proto.testing.TestCertificates;

/** The TLS options as a user gives them, against nbdkit requiring TLS with certificates and with a PSK. */
class TlsCommandLineTest {
    @TempDir
    static Path dir;
    static TestCertificates certs;
    static PeerServer x509;
    static PeerServer psk;

    @BeforeAll
    static void startServers() throws Exception {
        certs = TestCertificates.create(dir);
        Path disk = dir.resolve("disk.img");
        Files.write(disk, new byte[32 << 20]);
        x509 = PeerServer.nbdkit("nbdkit x509", dir, disk,
                List.of("--tls=require", "--tls-certificates=" + certs.serverDir), "file", "file=" + disk);
        Path disk2 = dir.resolve("disk2.img");
        Files.write(disk2, new byte[32 << 20]);
        psk = PeerServer.nbdkit("nbdkit psk", dir, disk2, List.of("--tls=require", "--tls-psk=" + certs.pskFile),
                "file", "file=" + disk2);
    }

    @AfterAll
    static void stopServers() throws Exception {
        x509.close();
        psk.close();
    }

    static String port(PeerServer server) {
        return server.uri.endpoint().toString().split(":")[1];
    }

    @Test
    void infoWithTlsAndCa() {
        Run r = run("info", x509.uri.toString(), "--tls", "--tls-ca", certs.ca.toString(), "--json");
        assertEquals(0, r.status(), r.err());
        assertTrue(r.out().contains("\"size\": 33554432"), r.out());
    }

    @Test
    void infoWithAnNbdsUri() {
        Run r = run("info", "nbds://localhost:" + port(x509) + "/?tls-certificates=" + certs.serverDir);
        assertEquals(0, r.status(), r.err());
        assertTrue(r.out().contains("size:               33554432 bytes"), r.out());
    }

    @Test
    void listOverTls() {
        Run r = run("list", "--tls-ca", certs.ca.toString(), "127.0.0.1", port(x509));
        assertEquals(0, r.status(), r.err());
        assertTrue(!r.out().isEmpty(), "an export is listed");
    }

    @Test
    void benchOverTlsPskVerifiesWhatItWrote() {
        Run r = run("bench", psk.uri.toString(), "--tls-psk", certs.pskFile.toString(), "--tls-username", certs.pskUser,
                "--rw", "randwrite", "--bs", "64k", "--iodepth", "8", "--runtime", "1", "--verify", "--json");
        assertEquals(0, r.status(), r.err());
        assertTrue(r.out().contains("\"errors\": 0"), r.out());
        assertTrue(r.out().contains("\"verify_failures\": 0"), r.out());
        assertTrue(r.out().matches("(?s).*\"verified_blocks\": [1-9].*"), "something was read back: " + r.out());
    }

    @Test
    void benchOverTwoTlsConnections() {
        Run r = run("bench", x509.uri.toString(), "--tls-ca", certs.ca.toString(), "--connections", "2",
                "--rw", "randread", "--bs", "4k", "--iodepth", "8", "--runtime", "1", "--verify", "--json");
        assertEquals(0, r.status(), r.err());
        assertTrue(r.out().contains("\"connections\": 2"), r.out());
        assertTrue(r.out().contains("\"errors\": 0"), r.out());
        assertTrue(r.out().contains("\"verify_failures\": 0"), r.out());
    }

    @Test
    void plainClientIsToldToUseTls() {
        Run r = run("info", x509.uri.toString());
        assertEquals(1, r.status());
        assertEquals("nbd-client: NBD_OPT_STRUCTURED_REPLY refused: the server requires TLS first (NBD_REP_ERR_TLS_REQD); "
                + "connect with TLS (--tls, or an nbds:// URI)\n", r.err());
    }

    @Test
    void failuresNameWhatIsWrong() {
        Run wrongCa = run("info", x509.uri.toString(), "--tls-ca", certs.otherCa.toString());
        assertEquals(1, wrongCa.status());
        assertTrue(wrongCa.err().contains("not signed by a trusted certificate authority"), wrongCa.err());
        Run wrongHost = run("info", x509.uri.toString(), "--tls-ca", certs.ca.toString(), "--tls-hostname", "other.example");
        assertEquals(1, wrongHost.status());
        assertTrue(wrongHost.err().contains("not issued to 'other.example'"), wrongHost.err());
        Run noUser = run("info", psk.uri.toString(), "--tls-psk", certs.pskFile.toString(), "--tls-username", "bob");
        assertEquals(1, noUser.status());
        assertEquals("nbd-client: " + certs.pskFile + " has no key for the username 'bob'\n", noUser.err());
        Run noFile = run("info", x509.uri.toString(), "--tls-ca", dir.resolve("nope.pem").toString());
        assertEquals(1, noFile.status());
        assertEquals("nbd-client: the CA certificate file " + dir.resolve("nope.pem") + " does not exist\n", noFile.err());
    }
}
