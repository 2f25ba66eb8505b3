package org.nbdroot.reroot;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The launcher waits for the daemon's line naming its device. The staged runtime linker is a
 * script here that plays the daemon: what it prints on stdout, and whether it lives on.
 */
class DaemonLauncherTest {
    private static final String JVM_LOG_LINE = "[0.004s][info][gc] Using G1";
    private final ByteArrayOutputStream errBytes = new ByteArrayOutputStream();
    private final PrintStream err = new PrintStream(errBytes, true, StandardCharsets.UTF_8);
    private final RerootConfig.Device nbd0 = new RerootConfig.Device(0, List.of("nbd://server/root"), List.of());

    private DaemonLauncher launcherPlaying(Path dir, String script) throws IOException {
        return launcherPlaying(dir, script, false);
    }

    /** {@code attached}: whether the kernel has nbd0 attached already, its daemon gone. */
    private DaemonLauncher launcherPlaying(Path dir, String script, boolean attached) throws IOException {
        StagedImage staged = new StagedImage(dir);
        Files.createDirectories(staged.libraries());
        Path linker = staged.libraries().resolve("fake-ld.so");
        Files.writeString(linker, "#!/bin/sh\n" + script);
        Files.setPosixFilePermissions(linker, PosixFilePermissions.fromString("rwxr-xr-x"));
        Files.writeString(staged.runtimeLinkerNote(), "fake-ld.so\n");
        return new DaemonLauncher(staged, false, false, err, d -> attached);
    }

    /** -Xlog or -verbose:gc in nbdroot.java.options: the JVM's line is no sign that the device serves. */
    @Test
    void aLineOfTheJvmsIsNotTakenForReadiness(@TempDir Path dir) throws Exception {
        DaemonLauncher launcher = launcherPlaying(dir, "echo '" + JVM_LOG_LINE + "'\nexit 3\n");
        IOException e = assertThrows(IOException.class, () -> launcher.start(nbd0, Duration.ofMillis(1500), List.of()));
        assertTrue(e.getMessage().startsWith("the daemon for /dev/nbd0 failed"), e.getMessage());
        assertTrue(errBytes.toString(StandardCharsets.UTF_8).contains(JVM_LOG_LINE), "the JVM's line is passed on");
    }

    /**
     * A retry after an attempt that failed late (a root that would not mount): init killed the
     * daemon, the kernel kept nbd0. Creating it again would fail; the new daemon takes it over.
     */
    @Test
    void aUnitLeftAttachedByAnEarlierAttemptIsTakenOver(@TempDir Path dir) throws Exception {
        String command = commandOfADaemonStarted(dir, true);
        assertTrue(command.contains(" org.nbdroot.client/org.nbdroot.client.Main rescue --foreground "), command);
        assertTrue(errBytes.toString(StandardCharsets.UTF_8).contains(
                "/dev/nbd0 is still attached from an earlier attempt, its daemon gone: taking it over"), errBytes.toString());
    }

    /** The arguments a daemon for nbd0 was started with, the kernel having it {@code attached} or not. */
    private String commandOfADaemonStarted(Path dir, boolean attached) throws Exception {
        Path args = dir.resolve("args");
        DaemonLauncher launcher = launcherPlaying(dir, "echo \"$@\" > '" + args + "'\necho nbd0\nexec sleep 30\n", attached);
        DaemonLauncher.Started started = launcher.start(nbd0, Duration.ofSeconds(20), List.of());
        try {
            return Files.readString(args);
        } finally {
            ProcessHandle.of(started.pid()).ifPresent(ProcessHandle::destroyForcibly);
        }
    }

    @Test
    void theDaemonsEnvironmentNeedsNoFileOfTheRoot(@TempDir Path dir) throws Exception {
        java.util.Map<String, String> env = new java.util.HashMap<>(java.util.Map.of("HOME", "/root", "TZ", "Europe/Paris"));
        launcherPlaying(dir, "exit 0\n").environment(env);
        assertEquals(java.util.Map.of("LD_LIBRARY_PATH", dir.resolve("lib").toString(), "LC_ALL", "C", "TZ", "UTC",
                "PATH", "/sbin:/bin:/usr/sbin:/usr/bin"), env);
        java.util.Map<String, String> bsd = new java.util.HashMap<>();
        new DaemonLauncher(new StagedImage(dir), true, false, err, d -> false).environment(bsd);
        assertEquals("1", bsd.get("LD_LIBMAP_DISABLE"), "FreeBSD's runtime linker reads no libmap.conf");
    }

    @Test
    void aFirstAttemptCreatesTheUnit(@TempDir Path dir) throws Exception {
        String command = commandOfADaemonStarted(dir, false);
        assertTrue(command.contains(" org.nbdroot.client/org.nbdroot.client.Main --foreground "), command);
    }

    @Test
    void theDeviceNameAfterTheJvmsLinesIsReadiness(@TempDir Path dir) throws Exception {
        DaemonLauncher launcher = launcherPlaying(dir, "echo '" + JVM_LOG_LINE + "'\necho nbd0\nexec sleep 30\n");
        DaemonLauncher.Started started = launcher.start(nbd0, Duration.ofSeconds(20), List.of());
        try {
            assertEquals("/dev/nbd0", started.devicePath());
            assertTrue(ProcessHandle.of(started.pid()).map(ProcessHandle::isAlive).orElse(false), "the daemon lives on");
            assertTrue(errBytes.toString(StandardCharsets.UTF_8).contains(JVM_LOG_LINE));
        } finally {
            ProcessHandle.of(started.pid()).ifPresent(ProcessHandle::destroyForcibly);
        }
    }
}
