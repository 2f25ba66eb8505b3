package org.nbdroot.client.ggate;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
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
import jnr.constants.platform.Errno;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nbdroot.client.ggate.emu.GgateEmulator;
import org.nbdroot.client.ggate.emu.GgateEmulator.BioResult;
import org.nbdroot.proto.interop.PeerServer;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.session.SessionOptions;
import org.nbdroot.proto.testing.ScriptedNbdProtocol;
import org.nbdroot.proto.testing.ScriptedNbdServer;
import org.nbdroot.proto.transport.NbdConnector;
import org.nbdroot.proto.transport.NbdUri;
import org.nbdroot.proto.transport.Transport;

/**
 * The GEOM Gate daemon end to end: bios queued in the emulator of FreeBSD's kernel side,
 * served through the JNR binding and the engine by a real nbdkit, with the backing file
 * compared byte for byte with what the bios wrote.
 */
class GgateDaemonTest {
    static final int DISK = 64 << 20;
    static final Duration WAIT = Duration.ofSeconds(30);

    @TempDir
    Path dir;
    GgateEmulator kernel;
    Transport transport;
    NbdConnector connector;
    byte[] model;
    Path backing;

    @BeforeEach
    void start() throws Exception {
        kernel = GgateEmulator.start();
        kernel.configureBinding();
        System.setProperty("nbd.rundir", dir.resolve("run").toString());
        transport = Transport.create(2);
        connector = new NbdConnector(transport, Duration.ofSeconds(5));
        model = new byte[DISK];
        new Random(1).nextBytes(model);
        backing = dir.resolve("disk.img");
        Files.write(backing, model);
    }

    @AfterEach
    void stop() {
        transport.close();
        kernel.close();
    }

    private PeerServer nbdkit(String... options) throws Exception {
        return PeerServer.nbdkit("nbdkit", dir, backing, List.of(options), "file", "file=" + backing);
    }

    private NbdSession session(NbdUri uri) throws Exception {
        return NbdSession.connect(connector, uri, SessionOptions.DEFAULT).get(10, TimeUnit.SECONDS);
    }

    private static GgateOptions options(int workers) {
        return new GgateOptions(GgateAbi.UNIT_AUTO, 0, GgateOptions.DEFAULT_QUEUE_SIZE, 0, false, workers);
    }

    /** Writes of assorted sizes (up to 1 MiB: more than a worker's first buffer) to disjoint places. */
    private List<long[]> queueWrites(int unit, Random random, int count, List<Long> ids) throws Exception {
        List<long[]> ranges = new ArrayList<>();
        int slot = (DISK / count) & ~511; // bios are whole sectors
        for (int i = 0; i < count; i++) {
            int length = i % 10 == 0 ? 1 << 20 : 512 * (1 + random.nextInt(256));
            length = Math.min(length, slot - slot % 512);
            long offset = (long) i * slot;
            byte[] data = new byte[length];
            random.nextBytes(data);
            System.arraycopy(data, 0, model, (int) offset, length);
            ids.add(kernel.queueWrite(unit, offset, data));
            ranges.add(new long[] {offset, length});
        }
        return ranges;
    }

    private void assertReadsMatchModel(int unit, List<long[]> ranges) throws Exception {
        List<Long> ids = new ArrayList<>();
        for (long[] r : ranges) {
            ids.add(kernel.queueRead(unit, r[0], (int) r[1]));
        }
        for (int i = 0; i < ids.size(); i++) {
            BioResult result = kernel.awaitBio(ids.get(i), WAIT);
            assertTrue(result.ok(), "read " + i + ": " + result);
            int offset = (int) ranges.get(i)[0];
            assertArrayEquals(Arrays.copyOfRange(model, offset, offset + result.data().length), result.data(),
                    "read of " + result.data().length + " bytes at " + offset);
        }
    }

    private void assertBackingMatchesModel() throws Exception {
        byte[] file = Files.readAllBytes(backing);
        assertEquals(-1, Arrays.mismatch(model, file), "the backing file differs from what the bios wrote");
    }

    @Test
    void servesManyOutstandingBiosAgainstTheBackingFile() throws Exception {
        try (PeerServer server = nbdkit()) {
            NbdSession session = session(server.uri);
            GgateDevice device = GgateDevice.create(session, options(16), server.uri.toString());
            GgateEmulator.Unit unit = kernel.unit(device.unit()).orElseThrow();
            assertEquals(DISK, unit.mediaSize());
            assertEquals(512, unit.sectorSize());
            assertEquals(server.uri.toString(), unit.info(), "geom gate list shows the source");

            List<Long> ids = new ArrayList<>();
            List<long[]> ranges = queueWrites(device.unit(), new Random(2), 200, ids);
            for (long id : ids) {
                BioResult r = kernel.awaitBio(id, WAIT);
                assertTrue(r.ok(), "write: " + r);
            }
            assertTrue(kernel.awaitBio(kernel.queueBio(device.unit(), GgateEmulator.BIO_FLUSH, 0, 0, null), WAIT).ok());
            assertReadsMatchModel(device.unit(), ranges);

            device.destroy(false);
            assertNull(device.awaitTermination(), "workers end cleanly");
            assertTrue(kernel.unit(device.unit()).isEmpty(), "the unit is gone");
            assertEquals(0, kernel.signExtensionWarnings(), "ioctl numbers reach the kernel as 64-bit unsigned values");
            session.disconnect().get(10, TimeUnit.SECONDS);
        }
        assertBackingMatchesModel();
    }

    @Test
    void aReadOnlyExportMakesAReadOnlyDevice() throws Exception {
        try (PeerServer server = nbdkit("-r")) {
            NbdSession session = session(server.uri);
            GgateDevice device = GgateDevice.create(session, options(4), server.uri.toString());
            assertTrue(kernel.unit(device.unit()).orElseThrow().readOnly());
            BioResult write = kernel.awaitBio(kernel.queueWrite(device.unit(), 0, new byte[512]), WAIT);
            assertTrue(write.failedWith(Errno.EPERM), write.toString());
            assertReadsMatchModel(device.unit(), List.of(new long[] {4096, 8192}));
            device.destroy(true);
            device.awaitTermination();
            session.close();
        }
    }

    @Test
    void aServerErrorFailsThatBioOnly() throws Exception {
        try (PeerServer server = PeerServer.nbdkit("nbdkit error", dir, backing, List.of("--filter=error"), "file",
                "file=" + backing, "error=ENOSPC", "error-pwrite-rate=100%")) {
            NbdSession session = session(server.uri);
            GgateDevice device = GgateDevice.create(session, options(4), server.uri.toString());
            BioResult write = kernel.awaitBio(kernel.queueWrite(device.unit(), 0, new byte[4096]), WAIT);
            assertTrue(write.failedWith(Errno.ENOSPC), "NBD's ENOSPC as the platform's: " + write);
            assertReadsMatchModel(device.unit(), List.of(new long[] {0, 4096}, new long[] {1 << 20, 65536}));
            device.destroy(true);
            device.awaitTermination();
            session.close();
        }
    }

    @Test
    void whatTheExportDoesNotOfferAnswersEopnotsupp() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(1 << 20)
                .transmissionFlags(ScriptedNbdProtocol.NBD_FLAG_HAS_FLAGS).start()) {
            NbdSession session = session(NbdUri.parse(server.uri()));
            GgateDevice device = GgateDevice.create(session, options(2), server.uri());
            int unit = device.unit();
            assertTrue(kernel.awaitBio(kernel.queueBio(unit, GgateEmulator.BIO_DELETE, 0, 4096, null), WAIT)
                    .failedWith(Errno.EOPNOTSUPP));
            assertTrue(kernel.awaitBio(kernel.queueBio(unit, GgateEmulator.BIO_FLUSH, 0, 0, null), WAIT)
                    .failedWith(Errno.EOPNOTSUPP));
            assertTrue(kernel.awaitBio(kernel.queueWrite(unit, 0, new byte[4096]), WAIT).ok());
            device.destroy(false);
            device.awaitTermination();
            session.close();
            assertEquals(List.of(), server.violations(), "nothing unadvertised was sent");
        }
    }

    @Test
    void destroyWhileBusyEndsEverything() throws Exception {
        try (PeerServer server = PeerServer.nbdkit("nbdkit delay", dir, backing, List.of("--filter=delay"), "file",
                "file=" + backing, "wdelay=300ms")) {
            NbdSession session = session(server.uri);
            GgateDevice device = GgateDevice.create(session, options(8), server.uri.toString());
            List<Long> ids = new ArrayList<>();
            queueWrites(device.unit(), new Random(3), 32, ids);
            Thread.sleep(100);
            device.destroy(true);
            assertNull(device.awaitTermination());
            for (long id : ids) {
                BioResult r = kernel.awaitBio(id, WAIT); // each one ends: served, or failed by the forced destroy
                assertTrue(r.ok() || r.failedWith(Errno.ENXIO), r.toString());
            }
            session.close();
        }
    }

    @Test
    void rescueTakesOverFromAKilledDaemonWithoutLosingARequest() throws Exception {
        // The scripted server stops answering after 40 requests, so the daemon dies holding requests
        // it took from the kernel. (nbdkit 1.32's delay filter would do, but nbdkit asserts and exits
        // when a client vanishes in the middle of a delayed request.)
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(DISK).start()) {
            server.write(0, model);
            NbdUri uri = NbdUri.parse(server.uri());
            server.armFault(ScriptedNbdServer.Fault.STALL, 40);
            Process first = daemon(uri, "ggate0", false);
            List<Long> ids = new ArrayList<>();
            List<long[]> ranges = queueWrites(0, new Random(4), 120, ids);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (server.firedFaults().isEmpty() && System.nanoTime() < deadline) {
                Thread.sleep(5);
            }
            Thread.sleep(200);
            assertTrue(kernel.unit(0).orElseThrow().taken() > 0, "the daemon holds requests it took");
            first.destroyForcibly().waitFor(10, TimeUnit.SECONDS);

            // Without -f, as an admin runs it: it goes to the background once it serves (rescue's own
            // --foreground --detached must reach the child as rescue's options, not the top level's).
            List<String> command = new ArrayList<>(javaCommand());
            command.addAll(List.of("rescue", "--workers", "8", uri.toString(), "ggate0"));
            Process parent = new ProcessBuilder(command).redirectError(dir.resolve("rescue.log").toFile()).start();
            assertTrue(parent.waitFor(30, TimeUnit.SECONDS), "the starting process returns"); // its few bytes fit the pipe
            String printed = new String(parent.getInputStream().readAllBytes()).strip();
            assertEquals(0, parent.exitValue(), Files.readString(dir.resolve("rescue.log")));
            assertEquals("ggate0", printed);
            for (long id : ids) {
                BioResult r = kernel.awaitBio(id, WAIT);
                assertTrue(r.ok(), "every write completes after the rescue: " + r);
            }
            assertReadsMatchModel(0, ranges);

            var listing = org.nbdroot.client.cli.CommandLineRunner.run("list-devices");
            assertTrue(listing.out().startsWith("ggate0 " + uri + " size=" + DISK), listing.out());
            var destroy = org.nbdroot.client.cli.CommandLineRunner.run("destroy", "/dev/ggate0");
            assertEquals(0, destroy.status(), destroy.err());
            Path socket = dir.resolve("run").resolve("ggate0.sock");
            long gone = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (Files.exists(socket) && System.nanoTime() < gone) {
                Thread.sleep(50);
            }
            assertTrue(!Files.exists(socket), "the daemon exits once its device is destroyed");
            String log = Files.readString(dir.resolve("run").resolve("ggate0.log"));
            assertTrue(log.contains("ggate0: destroyed; disconnecting") && !log.contains("ggate0 failed"), log);
            assertTrue(kernel.unit(0).isEmpty());
            assertEquals(-1, Arrays.mismatch(model, server.contents()), "the export holds every write");
            assertEquals(List.of(), server.violations());
        }
    }

    @Test
    void aServerRestartIsInvisibleAndAGrownExportGrowsTheDevice() throws Exception {
        PeerServer server = nbdkit();
        java.util.concurrent.CountDownLatch done = new java.util.concurrent.CountDownLatch(1);
        try {
            Process daemon = daemon(server.uri, "ggate2", false);
            server.kill9();
            // Writes queued while the server is down wait: the device sees no error.
            List<Long> ids = new ArrayList<>();
            List<long[]> ranges = queueWrites(2, new Random(12), 16, ids);
            try (java.io.RandomAccessFile file = new java.io.RandomAccessFile(backing.toFile(), "rw")) {
                file.setLength(DISK * 2L);
            }
            Thread restarter = new Thread(() -> { // lives on: nbdkit's --exit-with-parent watches this thread
                try {
                    Thread.sleep(1500);
                    server.restart();
                    done.await();
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            });
            restarter.start();
            for (long id : ids) {
                BioResult r = kernel.awaitBio(id, WAIT);
                assertTrue(r.ok(), "a write across the restart: " + r);
            }
            assertReadsMatchModel(2, ranges);
            // The daemon resizes the device off the event loop: it may come after the bios' replies.
            long grownBy = System.nanoTime() + WAIT.toNanos();
            while (kernel.unit(2).orElseThrow().mediaSize() != DISK * 2L && System.nanoTime() < grownBy) {
                Thread.sleep(20);
            }
            assertEquals(DISK * 2L, kernel.unit(2).orElseThrow().mediaSize(), "the device grew with the export");
            assertEquals(0, org.nbdroot.client.cli.CommandLineRunner.run("destroy", "ggate2").status());
            assertTrue(daemon.waitFor(20, TimeUnit.SECONDS));
        } finally {
            done.countDown();
            server.close();
        }
        byte[] file = Arrays.copyOf(Files.readAllBytes(backing), DISK);
        assertEquals(-1, Arrays.mismatch(model, file), "the backing file holds every write");
    }

    @Test
    void withoutForegroundTheDaemonGoesToTheBackgroundOnceServing() throws Exception {
        try (PeerServer server = nbdkit()) {
            List<String> command = new ArrayList<>(javaCommand());
            // The JVM's own line comes first on the child's stdout: it must not be taken for the device's.
            command.add(1, "-Xlog:gc");
            command.addAll(List.of("--workers", "4", server.uri.toString())); // no device: the next free unit
            Process parent = new ProcessBuilder(command).redirectError(dir.resolve("parent.log").toFile()).start();
            List<String> printed = new String(parent.getInputStream().readAllBytes()).lines().toList();
            assertTrue(parent.waitFor(30, TimeUnit.SECONDS), "the starting process returns");
            assertEquals(0, parent.exitValue(), Files.readString(dir.resolve("parent.log")));
            // The starting JVM's own line is on its stdout (nothing can keep it off); the child's is passed to stderr.
            assertEquals(List.of("ggate0"), printed.stream().filter(l -> !l.contains("[gc")).toList(),
                    "it prints the unit it made, once: " + printed);
            assertTrue(printed.stream().filter(l -> l.contains("Using")).count() <= 1, "only the parent's: " + printed);
            assertTrue(Files.readString(dir.resolve("parent.log")).contains("Using"), "the child's JVM line was passed on");

            Path socket = dir.resolve("run").resolve("ggate0.sock");
            assertTrue(Files.exists(socket), "the daemon lives on, answering on its control socket");
            List<Long> ids = new ArrayList<>();
            List<long[]> ranges = queueWrites(0, new Random(8), 20, ids);
            for (long id : ids) {
                assertTrue(kernel.awaitBio(id, WAIT).ok());
            }
            assertReadsMatchModel(0, ranges);
            assertEquals(0, org.nbdroot.client.cli.CommandLineRunner.run("destroy", "ggate0").status());
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (Files.exists(socket) && System.nanoTime() < deadline) {
                Thread.sleep(50);
            }
            assertTrue(!Files.exists(socket), "the daemon removed its socket on the way out");
            assertTrue(Files.readString(dir.resolve("run").resolve("ggate0.log")).contains("ggate0: serving"),
                    "the background daemon logs to its file");
        }
        assertBackingMatchesModel();
    }

    /** A daemon that cannot set up its control socket must not leave the unit it made with nobody serving it. */
    @Test
    void aDaemonWithoutItsControlSocketLeavesNoUnitBehind() throws Exception {
        try (PeerServer server = nbdkit()) {
            Path notADirectory = dir.resolve("run-is-a-file");
            Files.writeString(notADirectory, "");
            List<String> command = new ArrayList<>(javaCommand());
            command.replaceAll(a -> a.startsWith("-Dnbd.rundir=") ? "-Dnbd.rundir=" + notADirectory : a);
            command.addAll(List.of("-f", "--workers", "4", server.uri.toString(), "ggate0"));
            Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
            String output = new String(p.getInputStream().readAllBytes());
            assertTrue(p.waitFor(30, TimeUnit.SECONDS));
            assertEquals(1, p.exitValue(), output);
            assertTrue(kernel.unit(0).isEmpty(), "the unit it made is destroyed: " + output);
        }
    }

    private List<String> javaCommand() {
        return List.of(ProcessHandle.current().info().command().orElse("java"),
                "-cp", System.getProperty("java.class.path"),
                "-Dnbd.ggate.libc=" + GgateEmulator.libraryPath(),
                "-Dnbd.ggate.ctl=" + kernel.socketPath(),
                "-Dnbd.rundir=" + System.getProperty("nbd.rundir"),
                "org.nbdroot.client.Main");
    }

    /** Starts the daemon in its own JVM, in the foreground, and waits for the device name it prints. */
    private Process daemon(NbdUri uri, String device, boolean rescue) throws Exception {
        List<String> command = new ArrayList<>(javaCommand());
        if (rescue) {
            command.add("rescue");
        }
        command.addAll(List.of("-f", "--workers", "8", uri.toString(), device));
        Process p = new ProcessBuilder(command).redirectError(dir.resolve("daemon-" + rescue + ".log").toFile()).start();
        BufferedReader out = new BufferedReader(new InputStreamReader(p.getInputStream()));
        String line = out.readLine();
        assertEquals(device, line, "the daemon prints its device once serving; log: "
                + Files.readString(dir.resolve("daemon-" + rescue + ".log")));
        return p;
    }
}
