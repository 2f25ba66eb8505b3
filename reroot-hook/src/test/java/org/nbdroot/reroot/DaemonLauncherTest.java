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
        StagedImage staged = new StagedImage(dir);
        Files.createDirectories(staged.libraries());
        Path linker = staged.libraries().resolve("fake-ld.so");
        Files.writeString(linker, "#!/bin/sh\n" + script);
        Files.setPosixFilePermissions(linker, PosixFilePermissions.fromString("rwxr-xr-x"));
        Files.writeString(staged.runtimeLinkerNote(), "fake-ld.so\n");
        return new DaemonLauncher(staged, false, false, err);
    }

    /** -Xlog or -verbose:gc in nbdroot.java.options: the JVM's line is no sign that the device serves. */
    @Test
    void aLineOfTheJvmsIsNotTakenForReadiness(@TempDir Path dir) throws Exception {
        DaemonLauncher launcher = launcherPlaying(dir, "echo '" + JVM_LOG_LINE + "'\nexit 3\n");
        IOException e = assertThrows(IOException.class, () -> launcher.start(nbd0, Duration.ofMillis(1500), List.of()));
        assertTrue(e.getMessage().startsWith("the daemon for /dev/nbd0 failed"), e.getMessage());
        assertTrue(errBytes.toString(StandardCharsets.UTF_8).contains(JVM_LOG_LINE), "the JVM's line is passed on");
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
