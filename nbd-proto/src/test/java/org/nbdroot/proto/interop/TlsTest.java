package org.nbdroot.proto.interop;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.nbdroot.proto.interop.EngineExtension.failureOf;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;
import org.nbdroot.proto.NbdException;
import org.nbdroot.proto.NbdProtocolException;
import org.nbdroot.proto.session.ExportQueries;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.session.ReconnectPolicy;
import org.nbdroot.proto.session.SessionOptions;
import org.nbdroot.proto.testing.ScriptedNbdProtocol;
import org.nbdroot.proto.testing.ScriptedNbdServer;
import org.nbdroot.proto.testing.TestCertificates;
import org.nbdroot.proto.tls.TlsConfig;
import org.nbdroot.proto.tls.TlsSettings;
import org.nbdroot.proto.transport.NbdUri;

/**
 * NBD_OPT_STARTTLS against nbdkit (GnuTLS) with X.509 and with TLS-PSK: data goes through and
 * comes back byte for byte; every way it can fail fails with a message naming why, and never
 * goes on in plain text.
 */
class TlsTest {
    @RegisterExtension
    static final EngineExtension engine = new EngineExtension(2);

    static final int DISK = 16 << 20;

    @TempDir
    static Path certDir;
    static TestCertificates certs;

    @TempDir
    Path dir;

    @BeforeAll
    static void makeCertificates() throws Exception {
        certs = TestCertificates.create(certDir);
    }

    private PeerServer nbdkit(Path disk, String... tlsOptions) throws Exception {
        Files.write(disk, new byte[DISK]);
        List<String> options = new ArrayList<>(List.of("--tls=require"));
        options.addAll(List.of(tlsOptions));
        return PeerServer.nbdkit("nbdkit tls", dir, disk, options, "file", "file=" + disk);
    }

    private PeerServer x509Server(Path disk) throws Exception {
        return nbdkit(disk, "--tls-certificates=" + certs.serverDir);
    }

    private static SessionOptions with(TlsSettings settings) throws NbdException {
        return SessionOptions.DEFAULT.withTls(settings.load());
    }

    /** Writes a random pattern over the export, reads it back through the session and from the file. */
    private static void writeReadCompare(NbdSession session, Path file) throws Exception {
        byte[] data = new byte[DISK];
        new Random(5).nextBytes(data);
        // Larger than one TLS record and than the 32 MiB payload limit is not needed: 1 MiB pieces, 4 at once.
        List<CompletableFuture<Void>> writes = new ArrayList<>();
        for (int offset = 0; offset < DISK; offset += 1 << 20) {
            writes.add(session.write(offset, Unpooled.wrappedBuffer(data, offset, 1 << 20), false));
        }
        CompletableFuture.allOf(writes.toArray(CompletableFuture[]::new)).get(30, TimeUnit.SECONDS);
        session.flush().get(10, TimeUnit.SECONDS);
        ByteBuf back = session.read(0, DISK).get(30, TimeUnit.SECONDS);
        byte[] got = new byte[DISK];
        back.readBytes(got);
        back.release();
        assertEquals(-1, Arrays.mismatch(data, got), "read back over TLS");
        assertEquals(-1, Arrays.mismatch(data, Files.readAllBytes(file)), "the server's file");
    }

    @Test
    void x509ReadWriteCompare() throws Exception {
        Path disk = dir.resolve("disk.img");
        try (PeerServer server = x509Server(disk);
                NbdSession session = NbdSession.connect(engine.connector(), server.uri,
                        with(TlsSettings.DEFAULT.withCa(certs.ca))).get(10, TimeUnit.SECONDS)) {
            assertEquals(DISK, session.export().size());
            writeReadCompare(session, disk);
        }
    }

    @Test
    void nbdsUriWithTlsCertificatesDirectory() throws Exception {
        // libnbd's layout: tls-certificates=DIR holds ca-cert.pem. The host name is localhost, as in the certificate.
        Path disk = dir.resolve("disk.img");
        try (PeerServer server = x509Server(disk)) {
            String port = server.uri.endpoint().toString().split(":")[1];
            NbdUri uri = NbdUri.parse("nbds://localhost:" + port + "/?tls-certificates=" + certs.serverDir);
            ExportQueries.ExportDetails details = ExportQueries.inspect(engine.connector(), uri, SessionOptions.DEFAULT)
                    .get(10, TimeUnit.SECONDS);
            assertEquals(DISK, details.export().size());
        }
    }

    @Test
    void pskReadWriteCompare() throws Exception {
        Path disk = dir.resolve("disk.img");
        try (PeerServer server = nbdkit(disk, "--tls-psk=" + certs.pskFile);
                NbdSession session = NbdSession.connect(engine.connector(), server.uri,
                        with(TlsSettings.DEFAULT.withPsk(certs.pskFile, certs.pskUser))).get(10, TimeUnit.SECONDS)) {
            writeReadCompare(session, disk);
        }
    }

    @Test
    void pskWithTheWrongKeyFails() throws Exception {
        try (PeerServer server = nbdkit(dir.resolve("disk.img"), "--tls-psk=" + certs.pskFile)) {
            Throwable failure = failureOf(NbdSession.connect(engine.connector(), server.uri,
                    with(TlsSettings.DEFAULT.withPsk(certs.wrongPskFile(), null))));
            assertTrue(failure.getMessage().startsWith("TLS-PSK handshake with the server failed"), failure.getMessage());
        }
    }

    @Test
    void clientCertificateWhenTheServerVerifiesPeers() throws Exception {
        Path disk = dir.resolve("disk.img");
        try (PeerServer server = nbdkit(disk, "--tls-certificates=" + certs.serverDir, "--tls-verify-peer")) {
            TlsSettings trusting = TlsSettings.DEFAULT.withCa(certs.ca);
            NbdSession session = NbdSession.connect(engine.connector(), server.uri,
                    with(trusting.withClientCertificate(certs.clientCert, certs.clientKey))).get(10, TimeUnit.SECONDS);
            session.close();
            Throwable without = failureOf(NbdSession.connect(engine.connector(), server.uri, with(trusting)));
            assertInstanceOf(NbdException.class, without);
            assertTrue(without.getMessage().contains("the server may have refused the client's certificate"),
                    without.getMessage());
        }
    }

    /** nbd-server (GnuTLS too) with force_tls: it wants a client certificate signed by its CA. */
    @Test
    void nbdServerWithForcedTls() throws Exception {
        Path disk = dir.resolve("disk.img");
        Files.write(disk, new byte[DISK]);
        try (PeerServer server = PeerServer.nbdServer(dir, disk, "disk", List.of("force_tls = true",
                "certfile = " + certs.serverDir.resolve("server-cert.pem"),
                "keyfile = " + certs.serverDir.resolve("server-key.pem"), "cacertfile = " + certs.ca))) {
            TlsSettings trusting = TlsSettings.DEFAULT.withCa(certs.ca);
            try (NbdSession session = NbdSession.connect(engine.connector(), server.uri,
                    with(trusting.withClientCertificate(certs.clientCert, certs.clientKey))).get(10, TimeUnit.SECONDS)) {
                writeReadCompare(session, disk);
            }
            Throwable plain = failureOf(NbdSession.connect(engine.connector(), server.uri, SessionOptions.DEFAULT));
            assertTrue(plain.getMessage().contains("(NBD_REP_ERR_TLS_REQD)"), plain.getMessage());
            assertTrue(plain.getMessage().endsWith("connect with TLS (--tls, or an nbds:// URI)"), plain.getMessage());
        }
    }

    /**
     * nbds+unix://: no host to check unless tls-hostname names one, as libnbd does; the chain is
     * checked either way.
     */
    @Test
    void nbdsOverAUnixSocket() throws Exception {
        Path socket = dir.resolve("nbd.sock");
        Process nbdkit = new ProcessBuilder("nbdkit", "--foreground", "--exit-with-parent", "-U", socket.toString(),
                "--tls=require", "--tls-certificates=" + certs.serverDir, "memory", "size=1M")
                .redirectErrorStream(true).redirectOutput(dir.resolve("nbdkit-unix.log").toFile()).start();
        try {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (!Files.exists(socket) && System.nanoTime() < deadline) {
                Thread.sleep(20);
            }
            String base = "nbds+unix:///?socket=" + socket + "&tls-certificates=" + certs.serverDir;
            assertEquals(1 << 20, ExportQueries.inspect(engine.connector(), NbdUri.parse(base), SessionOptions.DEFAULT)
                    .get(10, TimeUnit.SECONDS).export().size());
            assertEquals(1 << 20, ExportQueries.inspect(engine.connector(), NbdUri.parse(base + "&tls-hostname=localhost"),
                    SessionOptions.DEFAULT).get(10, TimeUnit.SECONDS).export().size());
            Throwable wrongHost = failureOf(ExportQueries.inspect(engine.connector(),
                    NbdUri.parse(base + "&tls-hostname=elsewhere.example"), SessionOptions.DEFAULT));
            assertTrue(wrongHost.getMessage().contains("not issued to 'elsewhere.example'"), wrongHost.getMessage());
            Throwable wrongCa = failureOf(ExportQueries.inspect(engine.connector(), NbdUri.parse("nbds+unix:///?socket="
                    + socket), SessionOptions.DEFAULT.withTls(TlsSettings.DEFAULT.withCa(certs.otherCa).load())));
            assertTrue(wrongCa.getMessage().contains("not signed by a trusted certificate authority"), wrongCa.getMessage());
        } finally {
            nbdkit.destroy();
            nbdkit.waitFor(5, TimeUnit.SECONDS);
        }
    }

    @Test
    void wrongCaIsAVerificationError() throws Exception {
        try (PeerServer server = x509Server(dir.resolve("disk.img"))) {
            Throwable failure = failureOf(NbdSession.connect(engine.connector(), server.uri,
                    with(TlsSettings.DEFAULT.withCa(certs.otherCa))));
            assertEquals("TLS handshake with the server failed: the server's certificate is not signed by a trusted "
                    + "certificate authority (trusted: " + certs.otherCa + "; name the server's CA with --tls-ca)",
                    failure.getMessage());
        }
    }

    @Test
    void defaultTrustStoreDoesNotTrustATestCa() throws Exception {
        try (PeerServer server = x509Server(dir.resolve("disk.img"))) {
            Throwable failure = failureOf(NbdSession.connect(engine.connector(), server.uri, with(TlsSettings.DEFAULT)));
            assertTrue(failure.getMessage().contains("not signed by a trusted certificate authority (trusted: the JDK's "
                    + "default CAs"), failure.getMessage());
        }
    }

    @Test
    void wrongHostNameIsAnError() throws Exception {
        try (PeerServer server = x509Server(dir.resolve("disk.img"))) {
            Throwable failure = failureOf(NbdSession.connect(engine.connector(), server.uri,
                    with(TlsSettings.DEFAULT.withCa(certs.ca).withHostname("nbd.example.org"))));
            assertTrue(failure.getMessage().startsWith("TLS handshake with the server failed: the server's certificate "
                    + "is not issued to 'nbd.example.org'"), failure.getMessage());
            // The same certificate, asked for by a name it carries, is fine.
            NbdSession.connect(engine.connector(), server.uri,
                    with(TlsSettings.DEFAULT.withCa(certs.ca).withHostname("localhost"))).get(10, TimeUnit.SECONDS).close();
        }
    }

    @Test
    void serverRequiringTlsTellsAPlainClientToUseIt() throws Exception {
        try (PeerServer server = x509Server(dir.resolve("disk.img"))) {
            Throwable failure = failureOf(NbdSession.connect(engine.connector(), server.uri, SessionOptions.DEFAULT));
            assertTrue(failure.getMessage().startsWith("NBD_OPT_STRUCTURED_REPLY refused: the server requires TLS first (NBD_REP_ERR_TLS_REQD)"), failure.getMessage());
            assertTrue(failure.getMessage().contains("--tls"), failure.getMessage());
        }
    }

    @Test
    void serverWithoutTlsIsRefusedWithNothingElseSentInPlainText() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(1 << 20).start()) {
            Throwable failure = failureOf(NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()),
                    with(TlsSettings.DEFAULT.withCa(certs.ca))));
            assertEquals("NBD_OPT_STARTTLS refused: the server does not support this option (NBD_REP_ERR_UNSUP): "
                    + "NBD_OPT_STARTTLS is not supported; the server does not offer TLS, which is required: "
                    + "not going on in plain text", failure.getMessage());
            waitForOptions(server, 2);
            assertEquals(List.of(ScriptedNbdProtocol.NBD_OPT_STARTTLS, ScriptedNbdProtocol.NBD_OPT_ABORT),
                    server.options(), "STARTTLS, then a polite abort: no NBD_OPT_GO or anything else in plain text");
            assertTrue(server.requests().isEmpty(), "no transmission request");
        }
    }

    private static void waitForOptions(ScriptedNbdServer server, int count) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
        while (server.options().size() < count && System.nanoTime() < deadline) {
            Thread.sleep(10);
        }
    }

    @Test
    void nbdsUriOnAPlainServerIsRefused() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(1 << 20).start()) {
            String plain = server.uri();
            NbdUri uri = NbdUri.parse(plain.replace("nbd://", "nbds://") + "?tls-verify-peer=0");
            Throwable failure = failureOf(NbdSession.connect(engine.connector(), uri, SessionOptions.DEFAULT));
            assertTrue(failure.getMessage().startsWith("NBD_OPT_STARTTLS refused"), failure.getMessage());
            waitForOptions(server, 2);
            assertEquals(ScriptedNbdProtocol.NBD_OPT_STARTTLS, server.options().get(0));
            assertTrue(!server.options().contains(ScriptedNbdProtocol.NBD_OPT_GO), "no NBD_OPT_GO: " + server.options());
        }
    }

    /**
     * A server that acknowledges STARTTLS and then does something else: bytes in the clear
     * right behind the acknowledgement (they must not count as if TLS carried them), or no TLS
     * at all.
     */
    @Test
    void bytesInTheClearAfterStartTlsAreAProtocolError() throws Exception {
        try (RawServer server = new RawServer(new byte[] {0, 0, 0, 0, 'x', 'y'})) {
            Throwable failure = failureOf(NbdSession.connect(engine.connector(), server.uri(),
                    with(TlsSettings.DEFAULT.withCa(certs.ca))));
            assertInstanceOf(NbdProtocolException.class, failure);
            assertEquals("the server sent 6 bytes in the clear after acknowledging NBD_OPT_STARTTLS, before TLS",
                    failure.getMessage());
        }
    }

    @Test
    void acknowledgedStartTlsWithoutTlsFailsTheTlsHandshake() throws Exception {
        try (RawServer server = new RawServer(null)) {
            SessionOptions options = with(TlsSettings.DEFAULT.withCa(certs.ca));
            Throwable failure = failureOf(NbdSession.connect(engine.connector(), server.uri(),
                    options.withHandshakeTimeout(Duration.ofSeconds(2))));
            assertTrue(failure.getMessage().contains("TLS handshake"), failure.getMessage());
        }
    }

    /** A TLS session survives nbdkit's restart: TLS is done again with what was read at the start. */
    @Test
    void reconnectRedoesTlsWithKeysHeldInMemory() throws Exception {
        for (boolean psk : new boolean[] {false, true}) {
            Path disk = dir.resolve("disk-" + psk + ".img");
            PeerServer server = psk ? nbdkit(disk, "--tls-psk=" + certs.pskFile) : x509Server(disk);
            // The client's copies of its files disappear once connected: a reconnect must not need them.
            Path clientCopy = dir.resolve("client-" + psk);
            Files.copy(psk ? certs.pskFile : certs.ca, clientCopy);
            TlsConfig tls = (psk ? TlsSettings.DEFAULT.withPsk(clientCopy, null) : TlsSettings.DEFAULT.withCa(clientCopy))
                    .load();
            Files.delete(clientCopy);
            SessionOptions options = SessionOptions.DEFAULT.withTls(tls)
                    .withReconnect(new ReconnectPolicy(Duration.ofMillis(50), Duration.ofMillis(500), 0));
            reconnectUnderLoad(server, disk, options);
        }
    }

    private void reconnectUnderLoad(PeerServer server, Path disk, SessionOptions options) throws Exception {
        WriteLoad load;
        try (NbdSession session = NbdSession.connect(engine.connector(), server.uri, options).get(10, TimeUnit.SECONDS)) {
            int count = 1500;
            load = new WriteLoad(session, DISK, 17).window(16).at(count / 3, () -> {
                server.kill9();
                server.restartLater(Duration.ofSeconds(1));
            }).run(count, Duration.ofSeconds(60));
            assertEquals(List.of(), load.failures(), "no write failed: they waited for the server");
            assertTrue(session.reconnects() >= 1, "the session reconnected");
            session.flush().get(10, TimeUnit.SECONDS);
            load.verify(session); // read back over the new TLS connection
        } finally {
            server.close();
        }
        load.verifyFile(disk); // the backing file holds every acknowledged write
    }

    /**
     * Greets, takes the client's flags and one option, acknowledges it, then sends {@code trailer}
     * in the clear (or, when null, plain text where TLS should be) and waits for the client to go.
     */
    private static final class RawServer implements AutoCloseable {
        private final ServerSocket socket = new ServerSocket(0, 1, InetAddress.getLoopbackAddress());
        private final Thread thread;

        RawServer(byte[] trailer) throws Exception {
            thread = new Thread(() -> {
                try (Socket s = socket.accept()) {
                    DataInputStream in = new DataInputStream(s.getInputStream());
                    DataOutputStream out = new DataOutputStream(new java.io.BufferedOutputStream(s.getOutputStream()));
                    out.writeLong(ScriptedNbdProtocol.NBDMAGIC);
                    out.writeLong(ScriptedNbdProtocol.IHAVEOPT);
                    out.writeShort(ScriptedNbdProtocol.NBD_FLAG_FIXED_NEWSTYLE | ScriptedNbdProtocol.NBD_FLAG_NO_ZEROES);
                    out.flush();
                    in.readInt(); // client flags
                    in.readLong(); // IHAVEOPT
                    int option = in.readInt();
                    in.skipNBytes(in.readInt());
                    out.writeLong(ScriptedNbdProtocol.NBD_REP_MAGIC);
                    out.writeInt(option);
                    out.writeInt(ScriptedNbdProtocol.NBD_REP_ACK);
                    out.writeInt(0);
                    if (trailer != null) {
                        out.write(trailer);
                    }
                    out.flush();
                    if (trailer == null) {
                        in.readNBytes(5); // the ClientHello's record header: answer it with plain garbage
                        out.write("this is not TLS\n".getBytes(java.nio.charset.StandardCharsets.US_ASCII));
                        out.flush();
                    }
                    in.readAllBytes();
                } catch (Exception e) {
                    // the client hung up: done
                }
            });
            thread.setDaemon(true);
            thread.start();
        }

        NbdUri uri() {
            return NbdUri.parse("nbd://127.0.0.1:" + socket.getLocalPort() + "/");
        }

        @Override
        public void close() throws Exception {
            socket.close();
            thread.join(5000);
        }
    }
}
