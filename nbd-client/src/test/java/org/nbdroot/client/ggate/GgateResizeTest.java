package org.nbdroot.client.ggate;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.RandomAccessFile;
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

/**
 * {@code nbd-client resize DEVICE} against a daemon serving nbdkit's file plugin through the
 * GEOM Gate emulator: the file is made longer (then shorter) behind the daemon's back, and the
 * device follows when asked, a shrink only with --force.
 */
class GgateResizeTest {
    static final int DISK = 16 << 20;
    static final Duration WAIT = Duration.ofSeconds(30);
    static final int UNIT = 5;

    @TempDir
    Path dir;
    GgateEmulator kernel;
    Path backing;
    byte[] model;

    @BeforeEach
    void start() throws Exception {
        kernel = GgateEmulator.start();
        kernel.configureBinding();
        System.setProperty("nbd.rundir", dir.resolve("run").toString());
        model = new byte[DISK];
        new Random(21).nextBytes(model);
        backing = dir.resolve("disk.img");
        Files.write(backing, model);
    }

    @AfterEach
    void stop() {
        kernel.close();
    }

    private void setFileLength(long length) throws Exception {
        try (RandomAccessFile f = new RandomAccessFile(backing.toFile(), "rw")) {
            f.setLength(length);
        }
        model = Arrays.copyOf(model, (int) length); // a longer file reads as zeroes past its old end
    }

    private void write(long offset, byte[] data) throws Exception {
        BioResult r = kernel.awaitBio(kernel.queueWrite(UNIT, offset, data), WAIT);
        assertTrue(r.ok(), "write of " + data.length + " bytes at " + offset + ": " + r);
        System.arraycopy(data, 0, model, (int) offset, data.length);
    }

    private void assertReads(long offset, int length) throws Exception {
        BioResult r = kernel.awaitBio(kernel.queueRead(UNIT, offset, length), WAIT);
        assertTrue(r.ok(), "read of " + length + " bytes at " + offset + ": " + r);
        assertArrayEquals(Arrays.copyOfRange(model, (int) offset, (int) offset + length), r.data(),
                "read of " + length + " bytes at " + offset);
    }

    @Test
    void theDeviceFollowsAGrownExportAndShrinksOnlyWithForce() throws Exception {
        Random random = new Random(22);
        try (PeerServer server = PeerServer.nbdkit("nbdkit", dir, backing, List.of(), "file", "file=" + backing)) {
            Process daemon = daemon(server.uri.toString(), "ggate" + UNIT);
            assertEquals(DISK, kernel.unit(UNIT).orElseThrow().mediaSize());

            var same = CommandLineRunner.run("resize", "ggate" + UNIT);
            assertEquals(0, same.status(), same.err());
            assertEquals("ggate5: " + DISK + " bytes, unchanged\n", same.out());

            setFileLength(2L * DISK);
            var grow = CommandLineRunner.run("resize", "/dev/ggate" + UNIT);
            assertEquals(0, grow.status(), grow.err());
            assertEquals("ggate5: " + 2 * DISK + " bytes (was " + DISK + ")\n", grow.out());
            assertEquals(2L * DISK, kernel.unit(UNIT).orElseThrow().mediaSize(), "MODIFY reached the kernel");

            byte[] across = new byte[256 << 10];
            random.nextBytes(across);
            write(DISK - (128 << 10), across); // across the old end
            byte[] last = new byte[4096];
            random.nextBytes(last);
            write(2L * DISK - 4096, last); // the new last block
            assertReads(DISK - (128 << 10), 256 << 10);
            assertReads(2L * DISK - (1 << 20), 1 << 20); // zeroes, then the last block
            assertTrue(kernel.awaitBio(kernel.queueBio(UNIT, GgateEmulator.BIO_FLUSH, 0, 0, null), WAIT).ok());
            assertEquals(-1, Arrays.mismatch(model, Files.readAllBytes(backing)), "the file holds the writes past the old end");

            long smaller = DISK + DISK / 2;
            setFileLength(smaller);
            var refused = CommandLineRunner.run("resize", "ggate" + UNIT);
            assertEquals(1, refused.status(), refused.out());
            assertEquals("nbd-client: ggate5: the export shrank from " + 2 * DISK + " to " + smaller
                    + " bytes; ggate5 keeps its " + 2 * DISK + " bytes (shrink what is on it first, then resize --force)\n",
                    refused.err());
            assertEquals(2L * DISK, kernel.unit(UNIT).orElseThrow().mediaSize(), "no shrink without --force");
            assertReads(DISK - (128 << 10), 256 << 10); // still served

            var forced = CommandLineRunner.run("resize", "--force", "ggate" + UNIT);
            assertEquals(0, forced.status(), forced.err());
            assertEquals("ggate5: " + smaller + " bytes (was " + 2 * DISK + ")\n", forced.out());
            assertEquals(smaller, kernel.unit(UNIT).orElseThrow().mediaSize());
            random.nextBytes(last);
            write(smaller - 4096, last);
            assertReads(smaller - (1 << 20), 1 << 20);
            BioResult beyond = kernel.awaitBio(kernel.queueRead(UNIT, smaller, 4096), WAIT);
            assertTrue(!beyond.ok(), "the kernel refuses a read past the new end: " + beyond);

            assertEquals(0, CommandLineRunner.run("destroy", "ggate" + UNIT).status());
            assertTrue(daemon.waitFor(20, TimeUnit.SECONDS), "the daemon exits once its device is destroyed");
            assertEquals(0, daemon.exitValue());
        }
        assertEquals(-1, Arrays.mismatch(model, Files.readAllBytes(backing)), "the file holds every write");
    }

    @Test
    void withoutADaemonResizeSaysSo() {
        var run = CommandLineRunner.run("resize", "ggate7");
        assertEquals(1, run.status());
        assertTrue(run.err().startsWith("nbd-client: no daemon serves ggate7"), run.err());
    }

    /** Starts the daemon in its own JVM, in the foreground, and waits for the device name it prints. */
    private Process daemon(String uri, String device) throws Exception {
        List<String> command = new ArrayList<>(List.of(ProcessHandle.current().info().command().orElse("java"),
                "-cp", System.getProperty("java.class.path"),
                "-Dnbd.ggate.libc=" + GgateEmulator.libraryPath(),
                "-Dnbd.ggate.ctl=" + kernel.socketPath(),
                "-Dnbd.rundir=" + System.getProperty("nbd.rundir"),
                "org.nbdroot.client.Main", "-f", "--workers", "4", uri, device));
        Path log = dir.resolve("daemon.log");
        Process p = new ProcessBuilder(command).redirectError(log.toFile()).start();
        String line = new BufferedReader(new InputStreamReader(p.getInputStream())).readLine();
        assertEquals(device, line, "the daemon prints its device once serving; log: " + Files.readString(log));
        return p;
    }
}
