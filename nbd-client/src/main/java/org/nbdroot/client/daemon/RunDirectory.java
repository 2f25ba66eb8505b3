package org.nbdroot.client.daemon;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;

/**
 * Where running daemons keep their control sockets: {@code -Dnbd.rundir}, default
 * {@code /var/run/nbd-client}. The directory is made mode 0700, so only its owner (root)
 * can reach the sockets in it: that is the control socket's access control.
 */
public final class RunDirectory {
    private RunDirectory() {}

    public static Path path() {
        return Path.of(System.getProperty("nbd.rundir", "/var/run/nbd-client"));
    }

    public static Path ensure() throws IOException {
        Path dir = path();
        Files.createDirectories(dir);
        Files.setPosixFilePermissions(dir, PosixFilePermissions.fromString("rwx------"));
        return dir;
    }

    /** The control socket of the daemon serving {@code device} (e.g. ggate0). */
    public static Path socketFor(String device) {
        return path().resolve(device + ".sock");
    }
}
