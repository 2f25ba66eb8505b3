package org.nbdroot.client.linuxnbd;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nbdroot.client.testing.QemuGuest;
import org.nbdroot.proto.interop.PeerServer;

/**
 * The Linux NBD bridge in a real kernel: Debian's kernel boots under qemu (TCG), and the
 * guest runs the daemon on /dev/nbd0 against nbdkit on the host's loopback, with the
 * project's classes shared from the host. The guest script
 * ({@code src/test/qemu/linuxnbd-guest.sh}) does the I/O and prints a CHECK line per step;
 * the test asserts every step, then compares nbdkit's backing file byte for byte.
 */
class LinuxNbdKernelTest {
    private static final int MIB = 1024 * 1024;
    private static final long SIZE = 64L * MIB;
    private static final long GROWN = 80L * MIB;
    private static final Path GUEST_SCRIPT = Path.of("src/test/qemu/linuxnbd-guest.sh");

    @TempDir
    Path dir;

    /** The guest's /out, kept under target/ after the test: console, guest log, daemon log. */
    private static Path outDir(String name) throws Exception {
        Path out = Path.of("target", "qemu-guests", "linuxnbd-" + name).toAbsolutePath();
        if (Files.exists(out)) {
            try (var files = Files.walk(out)) {
                files.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
            }
        }
        Files.createDirectories(out);
        return out;
    }

    private byte[] pattern(Path file, long seed) throws Exception {
        byte[] data = new byte[4 * MIB];
        new Random(seed).nextBytes(data);
        Files.write(file, data);
        return data;
    }

    private Path backing(long size) throws Exception {
        Path backing = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(backing.toFile(), "rw")) {
            f.setLength(size);
        }
        return backing;
    }

    private static byte[] range(Path file, long offset, int length) throws Exception {
        byte[] data = new byte[length];
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "r")) {
            f.seek(offset);
            f.readFully(data);
        }
        return data;
    }

    /** -Dnbd.test.attach=ioctl runs the guests with the ioctl attachment, to compare (the stop test then fails). */
    private void writeEnv(Path out, int port, String mode) throws Exception {
        writeEnv(out, port, mode, System.getProperty("nbd.test.attach", "netlink"));
    }

    private void writeEnv(Path out, int port, String mode, String attach) throws Exception {
        Files.createDirectories(out);
        Files.writeString(out.resolve("test.env"), String.join("\n",
                "JAVA=" + QemuGuest.guestJava(),
                "CP=" + QemuGuest.guestClassPath(),
                "PORT=" + port,
                "SIZE=" + SIZE,
                "GROWN=" + GROWN,
                "MODE=" + mode,
                "ATTACH=" + attach, ""));
    }

    private static int portOf(PeerServer server) {
        return server.uri.endpoint().socketAddress() instanceof java.net.InetSocketAddress a ? a.getPort() : -1;
    }

    private static void assertChecks(QemuGuest.Run run, List<String> expected) throws Exception {
        Map<String, String> checks = run.checks();
        List<String> failed = new ArrayList<>();
        for (String name : expected) {
            if (!"ok".equals(checks.get(name))) {
                failed.add(name + ": " + checks.getOrDefault(name, "never ran"));
            }
        }
        checks.forEach((name, result) -> {
            if (!"ok".equals(result) && !expected.contains(name)) {
                failed.add(name + ": " + result);
            }
        });
        Path daemonLog = run.outDir().resolve("daemon.log");
        String daemon = Files.exists(daemonLog) ? "--- daemon log\n" + Files.readString(daemonLog) : "";
        assertTrue(failed.isEmpty(), "guest checks failed: " + failed + "\n" + run.diagnostics() + daemon);
        assertEquals(0, run.exitStatus(), run.diagnostics());
    }

    private static final List<String> KERNEL_SOCKET_ERRORS = List.of("Receive control failed", "Send data failed",
            "Send control failed");

    private static void assertNoKernelIoErrors(QemuGuest.Run run) throws Exception {
        assertNoKernelIoErrors(run, false);
    }

    /** With {@code socketDied}, the kernel may log its socket's end (the daemon was killed), never an I/O error. */
    private static void assertNoKernelIoErrors(QemuGuest.Run run, boolean socketDied) throws Exception {
        String console = run.console();
        List<String> bad = new ArrayList<>(List.of("I/O error", "Other side returned error", "Connection timed out",
                "Wrong magic", "Unexpected reply", "Double reply"));
        if (!socketDied) {
            bad.addAll(KERNEL_SOCKET_ERRORS);
        }
        for (String b : bad) {
            assertFalse(console.contains(b), "the kernel logged '" + b + "':\n" + run.diagnostics());
        }
    }

    @Test
    void servesDataThroughTheKernelAndDestroysWithoutLosingWrites() throws Exception {
        Path backing = backing(SIZE);
        Path out = outDir("data");
        byte[] pattern = pattern(out.resolve("pattern.bin"), 1);
        byte[] pattern2 = pattern(out.resolve("pattern2.bin"), 2);
        try (PeerServer server = PeerServer.nbdkit("nbdkit", dir, backing, List.of(), "file", "file=" + backing)) {
            writeEnv(out, portOf(server), "data");
            QemuGuest.Run run;
            try (QemuGuest.Run started = new QemuGuest(GUEST_SCRIPT, out).timeout(300).start()) {
                run = started.await();
            }
            assertChecks(run, List.of("attach", "kernel-size", "kernel-timeout-none", "kernel-flags", "list-devices",
                    "write-direct", "write-buffered", "read-direct", "read-buffered", "read-many-in-flight", "mkfs", "mount",
                    "copy-in", "destroy-refused-while-mounted", "umount", "remount", "file-reads-back", "write-unsynced",
                    "destroy", "device-stopped", "daemon-exited"));
            assertTrue(run.guestLog().contains("nbd0: in use (mounted or held)"), run.diagnostics());
            assertNoKernelIoErrors(run);
            System.out.println("data guest: " + run.elapsedMillis() + " ms");
        }
        assertArrayEquals(pattern, range(backing, 40L * MIB, pattern.length), "O_DIRECT write at 40 MiB");
        assertArrayEquals(pattern2, range(backing, 48L * MIB, pattern2.length), "buffered write at 48 MiB");
        assertArrayEquals(pattern2, range(backing, 56L * MIB, pattern2.length),
                "a buffered write never synced by the guest: the graceful destroy must have written it back");
        Process fsck = new ProcessBuilder("e2fsck", "-fn", backing.toString()).redirectErrorStream(true).start();
        String fsckOut = new String(fsck.getInputStream().readAllBytes());
        assertEquals(0, fsck.waitFor(), "e2fsck of the guest's ext4: " + fsckOut);
        Path copied = dir.resolve("copied.bin");
        Process debugfs = new ProcessBuilder("debugfs", "-R", "dump /pattern.bin " + copied, backing.toString())
                .redirectErrorStream(true).start();
        debugfs.getInputStream().readAllBytes();
        assertEquals(0, debugfs.waitFor());
        assertArrayEquals(pattern, Files.readAllBytes(copied), "the file the guest copied into ext4");
    }

    @Test
    void aServerRestartUnderLoadOnlyDelaysTheKernelAndTheDeviceGrows() throws Exception {
        Path backing = backing(SIZE);
        Path out = outDir("reconnect");
        byte[] pattern = pattern(out.resolve("pattern.bin"), 3);
        PeerServer server = PeerServer.nbdkit("nbdkit", dir, backing, List.of(), "file", "file=" + backing);
        try {
            writeEnv(out, portOf(server), "reconnect");
            QemuGuest.Run run;
            try (QemuGuest.Run started = new QemuGuest(GUEST_SCRIPT, out).timeout(300).start()) {
                run = started;
                if (!run.awaitFile("load-started", 240)) {
                    throw new AssertionError("the guest never started its load\n" + run.await().diagnostics());
                }
                server.kill9();
                Files.writeString(out.resolve("server-killed"), ""); // the guest's load goes on, with no server
                try (RandomAccessFile f = new RandomAccessFile(backing.toFile(), "rw")) {
                    f.setLength(GROWN); // the export comes back larger
                }
                Thread.sleep(2000);
                server.restart();
                run.await();
            }
            assertChecks(run, List.of("attach", "kernel-size", "kernel-timeout-none", "kernel-flags", "list-devices",
                    "server-killed", "load-complete", "reads-back", "device-grew", "write-past-old-end", "destroy", "device-stopped",
                    "daemon-exited"));
            assertNoKernelIoErrors(run);
            String daemonLog = Files.readString(out.resolve("daemon.log"));
            assertTrue(daemonLog.contains("reconnected to"), "the daemon never reconnected:\n" + daemonLog);
            assertTrue(daemonLog.contains("nbd0: now " + GROWN + " bytes"), "the device did not follow:\n" + daemonLog);
            System.out.println("reconnect guest: " + run.elapsedMillis() + " ms");
        } finally {
            server.close();
        }
        for (int i = 0; i < 4; i++) {
            assertArrayEquals(pattern, range(backing, (long) i * pattern.length, pattern.length), "copy " + i + " of the load");
        }
        assertArrayEquals(pattern, range(backing, SIZE, pattern.length), "the write past the export's old end");
        assertEquals(GROWN, Files.size(backing));
    }

    /** The load the guest writes in stop and rescue modes: 64 chunks of 256 KiB, the pattern 4 times over. */
    private static void assertLoadWritten(Path backing, byte[] pattern) throws Exception {
        for (int i = 0; i < 4; i++) {
            assertArrayEquals(pattern, range(backing, (long) i * pattern.length, pattern.length), "copy " + i + " of the load");
        }
    }

    @Test
    void aStoppedAndContinuedDaemonOnlyDelaysTheKernel() throws Exception {
        // systemd's shutdown stops every process (kill(-1, SIGSTOP)), then continues them: with
        // NBD_DO_IT that signal ended the device; attached through netlink nothing notices.
        Path backing = backing(SIZE);
        Path out = outDir("stop");
        byte[] pattern = pattern(out.resolve("pattern.bin"), 5);
        try (PeerServer server = PeerServer.nbdkit("nbdkit", dir, backing, List.of(), "file", "file=" + backing)) {
            writeEnv(out, portOf(server), "stop");
            QemuGuest.Run run;
            try (QemuGuest.Run started = new QemuGuest(GUEST_SCRIPT, out).timeout(300).start()) {
                run = started.await();
            }
            assertChecks(run, List.of("attach", "kernel-size", "kernel-timeout-none", "kernel-flags", "list-devices",
                    "daemon-stopped", "load-waits-while-stopped", "load-complete", "reads-back", "device-still-connected",
                    "destroy", "device-stopped", "daemon-exited"));
            assertNoKernelIoErrors(run);
            assertTrue(Files.readString(out.resolve("daemon.log")).contains("attached through netlink"),
                    "the daemon did not attach through netlink:\n" + run.diagnostics());
            System.out.println("stop guest: " + run.elapsedMillis() + " ms");
        }
        assertLoadWritten(backing, pattern);
    }

    @Test
    void aNewDaemonTakesOverFromOneKilledUnderLoad() throws Exception {
        Path backing = backing(SIZE);
        Path out = outDir("rescue");
        byte[] pattern = pattern(out.resolve("pattern.bin"), 7);
        try (PeerServer server = PeerServer.nbdkit("nbdkit", dir, backing, List.of(), "file", "file=" + backing)) {
            writeEnv(out, portOf(server), "rescue");
            QemuGuest.Run run;
            try (QemuGuest.Run started = new QemuGuest(GUEST_SCRIPT, out).timeout(420).start()) {
                run = started.await();
            }
            String rescueLog = Files.exists(out.resolve("rescue.log")) ? Files.readString(out.resolve("rescue.log")) : "";
            assertChecks(run, List.of("attach", "kernel-size", "kernel-timeout-none", "kernel-flags", "list-devices",
                    "daemon-killed", "device-waits", "load-waits-for-rescue", "rescued", "load-complete", "reads-back",
                    "rescue-of-a-live-device-refused", "rescue-refusal-says-why", "destroy", "device-stopped",
                    "daemon-exited"));
            assertNoKernelIoErrors(run, true);
            assertTrue(run.console().contains("Receive control failed"),
                    "the kernel never saw its socket die (was the daemon killed?):\n" + run.diagnostics());
            assertTrue(rescueLog.contains("nbd0: taken over"), "the rescue never took over:\n" + rescueLog);
            System.out.println("rescue guest: " + run.elapsedMillis() + " ms");
        }
        assertLoadWritten(backing, pattern);
    }
}
