package org.nbdroot.client.cli;

import java.util.ArrayList;
import java.util.List;
import org.nbdroot.client.ggate.GgateOptions;
import org.nbdroot.client.linuxnbd.LinuxNbdOptions;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/** What serving a device takes: the server, the device, and how to serve it (ggatec's and nbd-client's options). */
final class DeviceOptions {
    @Parameters(arity = "0..3", paramLabel = "ARGS",
            description = "HOST [PORT] [DEVICE], or URI [DEVICE]; DEVICE like /dev/ggate0 or ggate0 "
                    + "(omitted: the next free unit, printed on stdout), or on Linux /dev/nbd0 (required)")
    List<String> positional = new ArrayList<>();

    @Option(names = {"-N", "--name"}, paramLabel = "NAME", description = "Export name, with HOST (default: the server's default export).")
    String exportName;

    @Option(names = {"-f", "--foreground"}, description = "Stay in the foreground (default: go to the background once serving).")
    boolean foreground;

    /** Set on the child that {@code Daemonizer} starts; not for users. */
    @Option(names = "--detached", hidden = true)
    boolean detached;

    @Option(names = "--root-storage",
            description = "Linux: mark the daemon as the storage daemon of the root file system (argv[0] starts with @), "
                    + "which systemd's shutdown does not kill; nbd-client reroot start sets it.")
    boolean rootStorage;

    @Option(names = {"-t", "--timeout"}, paramLabel = "SECONDS", defaultValue = "0",
            description = "The kernel fails a request older than this on its own; 0 (default) never does, right for a root disk.")
    int timeout;

    @Option(names = "--dead-timeout", paramLabel = "SECONDS", defaultValue = "" + LinuxNbdOptions.DEFAULT_DEAD_TIMEOUT,
            description = "Linux: how long the device waits, once its daemon died, for nbd-client rescue before failing "
                    + "its requests; default ${DEFAULT-VALUE} (a year: effectively forever for a root disk).")
    long deadTimeout;

    @Option(names = {"-q", "--queue-size"}, paramLabel = "N", defaultValue = "" + GgateOptions.DEFAULT_QUEUE_SIZE,
            description = "Requests the kernel queues before refusing new ones; default ${DEFAULT-VALUE} (GEOM Gate only).")
    int queueSize;

    @Option(names = {"-s", "--sector-size"}, paramLabel = "BYTES", defaultValue = "0",
            description = "Sector size (default: 512, or the export's minimum block size if larger; 512 to 4096 on Linux).")
    int sectorSize;

    @Option(names = "-o", paramLabel = "ro|rw", defaultValue = "rw", description = "Read-only or read-write (default rw; a read-only export is always ro).")
    String mode;

    @Option(names = "--workers", paramLabel = "N", defaultValue = "" + GgateOptions.DEFAULT_WORKERS,
            description = "Threads taking requests from the kernel (each sends one and takes the next; the replies complete them); default ${DEFAULT-VALUE} (GEOM Gate only).")
    int workers;

    @Mixin
    ConnectionOptions connection;

    void check() {
        if (!"ro".equals(mode) && !"rw".equals(mode)) {
            throw new IllegalArgumentException("-o must be ro or rw, not '" + mode + "'");
        }
    }
}
