package org.nbdroot.client.ggate;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nbdroot.client.cli.CommandLineRunner;
import org.nbdroot.client.ggate.emu.GgateEmulator;
import org.nbdroot.client.ggate.emu.GgateEmulator.BioResult;
import org.nbdroot.proto.interop.PeerServer;
import org.nbdroot.proto.testing.TestCertificates;

/**
 * The GEOM Gate daemon (its own JVM, {@code nbd-client -f nbds://... ggateN}) over TLS to an
 * nbdkit that requires it: bios through the kernel emulator, the backing file compared with
 * what they wrote; then nbdkit killed and started again after the daemon's copies of its key
 * files are deleted, so the new TLS handshake can only use what the daemon read at its start.
 */
class GgateTlsDaemonTest {
    static final int DISK = 16 << 20;
    static final Duration WAIT = Duration.ofSeconds(40);

    @TempDir
    Path dir;
    GgateEmulator kernel;
    TestCertificates certs;
    Path backing;
    byte[] model;

    @BeforeEach
    void start() throws Exception {
        kernel = GgateEmulator.start();
        System.setProperty("nbd.rundir", dir.resolve("run").toString());
        certs = TestCertificates.create(Files.createDirectories(dir.resolve("certs")));
        model = new byte[DISK];
        new Random(21).nextBytes(model);
        backing = dir.resolve("disk.img");
        Files.write(backing, model);
    }

    @AfterEach
    void stop() {
        kernel.close();
    }

    @Test
    void x509WithAClientCertificateSurvivesARestartWithItsFilesDeleted() throws Exception {
        // --tls-verify-peer: nbdkit wants the client's certificate too, so the key is needed on every handshake.
        PeerServer server = PeerServer.nbdkit("nbdkit x509", dir, backing,
                List.of("--tls=require", "--tls-certificates=" + certs.serverDir, "--tls-verify-peer"), "file",
                "file=" + backing);
        List<Path> copies = List.of(copy(certs.ca), copy(certs.clientCert), copy(certs.clientKey));
        servesAcrossARestart(server, copies, 3, "--tls-ca", copies.get(0).toString(),
                "--tls-cert", copies.get(1).toString(), "--tls-key", copies.get(2).toString());
    }

    @Test
    void pskSurvivesARestartWithItsKeyFileDeleted() throws Exception {
        PeerServer server = PeerServer.nbdkit("nbdkit psk", dir, backing,
                List.of("--tls=require", "--tls-psk=" + certs.pskFile), "file", "file=" + backing);
        Path key = copy(certs.pskFile);
        servesAcrossARestart(server, List.of(key), 4, "--tls-psk", key.toString(), "--tls-username", certs.pskUser);
    }

    /** The client's own copy of a file, to delete while nbdkit keeps the original. */
    private Path copy(Path file) throws Exception {
        Path copy = Files.createDirectories(dir.resolve("client")).resolve(file.getFileName());
        return Files.copy(file, copy);
    }

    private void servesAcrossARestart(PeerServer server, List<Path> clientFiles, int unit, String... tlsOptions)
            throws Exception {
        String device = "ggate" + unit;
        String uri = server.uri.toString().replaceFirst("^nbd://", "nbds://");
        assertTrue(uri.startsWith("nbds://127.0.0.1:"), uri);
        Path log = dir.resolve("daemon.log");
        try {
            Process daemon = daemon(uri, device, log, tlsOptions);
            assertEquals(uri, kernel.unit(unit).orElseThrow().info(), "geom gate list shows the nbds:// source");

            Random random = new Random(unit);
            List<long[]> ranges = writeAndAwait(unit, random, 0, 24);
            assertTrue(kernel.awaitBio(kernel.queueBio(unit, GgateEmulator.BIO_FLUSH, 0, 0, null), WAIT).ok());
            assertReadsMatchModel(unit, ranges);
            assertEquals(-1, Arrays.mismatch(model, Files.readAllBytes(backing)), "nbdkit's file holds what the bios wrote");

            for (Path file : clientFiles) {
                Files.delete(file);
            }
            server.kill9();
            server.restartLater(Duration.ofSeconds(1));
            // Queued while nbdkit is down: served once the daemon has done TLS again, without the files.
            List<long[]> after = writeAndAwait(unit, random, DISK / 2, 24);
            assertTrue(kernel.awaitBio(kernel.queueBio(unit, GgateEmulator.BIO_FLUSH, 0, 0, null), WAIT).ok());
            assertReadsMatchModel(unit, ranges);
            assertReadsMatchModel(unit, after);
            String logged = Files.readString(log);
            assertTrue(logged.contains(device + ": serving " + uri), logged);
            assertTrue(logged.contains("reconnected to nbds://"), "the daemon did TLS again after the restart: " + logged);
            assertFalse(logged.contains("does not exist"), "no key file was looked for again: " + logged);

            var destroy = CommandLineRunner.run("destroy", device);
            assertEquals(0, destroy.status(), destroy.err());
            assertTrue(daemon.waitFor(20, TimeUnit.SECONDS), "the daemon exits once its device is destroyed");
            assertEquals(0, daemon.exitValue(), Files.readString(log));
        } finally {
            server.close();
        }
        assertEquals(-1, Arrays.mismatch(model, Files.readAllBytes(backing)),
                "nbdkit's file holds every write, before and after the restart");
    }

    /** {@code count} writes of up to 256 KiB to disjoint places from {@code start}, all outstanding, then awaited. */
    private List<long[]> writeAndAwait(int unit, Random random, int start, int count) throws Exception {
        List<long[]> ranges = new ArrayList<>();
        List<Long> ids = new ArrayList<>();
        int slot = (DISK / 2 / count) & ~511;
        for (int i = 0; i < count; i++) {
            int length = Math.min(512 * (1 + random.nextInt(512)), slot);
            long offset = start + (long) i * slot;
            byte[] data = new byte[length];
            random.nextBytes(data);
            System.arraycopy(data, 0, model, (int) offset, length);
            ids.add(kernel.queueWrite(unit, offset, data));
            ranges.add(new long[] {offset, length});
        }
        for (long id : ids) {
            BioResult r = kernel.awaitBio(id, WAIT);
            assertTrue(r.ok(), "write: " + r);
        }
        return ranges;
    }

    private void assertReadsMatchModel(int unit, List<long[]> ranges) throws Exception {
        for (long[] r : ranges) {
            BioResult read = kernel.awaitBio(kernel.queueRead(unit, r[0], (int) r[1]), WAIT);
            assertTrue(read.ok(), "read: " + read);
            assertArrayEquals(Arrays.copyOfRange(model, (int) r[0], (int) (r[0] + r[1])), read.data(),
                    "read of " + r[1] + " bytes at " + r[0]);
        }
    }

    /** The daemon in its own JVM, in the foreground; returns once it prints its device (it serves then). */
    private Process daemon(String uri, String device, Path log, String... tlsOptions) throws Exception {
        List<String> command = new ArrayList<>(List.of(ProcessHandle.current().info().command().orElse("java"),
                "-cp", System.getProperty("java.class.path"),
                "-Dnbd.ggate.libc=" + GgateEmulator.libraryPath(),
                "-Dnbd.ggate.ctl=" + kernel.socketPath(),
                "-Dnbd.rundir=" + System.getProperty("nbd.rundir"),
                "org.nbdroot.client.Main", "-f", "--workers", "4"));
        command.addAll(List.of(tlsOptions));
        command.addAll(List.of(uri, device));
        Process p = new ProcessBuilder(command).redirectError(log.toFile()).start();
        String line = new BufferedReader(new InputStreamReader(p.getInputStream())).readLine();
        assertEquals(device, line, "the daemon prints its device once serving; log: " + Files.readString(log));
        return p;
    }
}
