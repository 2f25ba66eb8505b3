package org.nbdroot.client.cli;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.logging.Logger;
import org.nbdroot.client.daemon.ControlServer;
import org.nbdroot.client.daemon.DaemonControl;
import org.nbdroot.client.daemon.Daemonizer;
import org.nbdroot.client.daemon.RootStorageMark;
import org.nbdroot.client.daemon.RunDirectory;
import org.nbdroot.client.daemon.ServedDevice;
import org.nbdroot.client.ggate.GgateAbi;
import org.nbdroot.client.ggate.GgateDevice;
import org.nbdroot.client.ggate.GgateOptions;
import org.nbdroot.client.linuxnbd.LinuxNbdAbi;
import org.nbdroot.client.linuxnbd.LinuxNbdDevice;
import org.nbdroot.client.linuxnbd.LinuxNbdOptions;
import org.nbdroot.client.metrics.DeviceMetrics;
import org.nbdroot.client.metrics.StartingMetrics;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.session.SessionOptions;
import org.nbdroot.proto.transport.NbdUri;
import org.nbdroot.proto.wire.NbdConstants;

/**
 * The daemon's main job: {@code nbd-client HOST [PORT] [DEVICE]} or {@code nbd-client URI
 * [DEVICE]} serves the export as a block device until the device is destroyed.
 */
final class ServeCommand {
    private static final Logger LOG = Logger.getLogger(ServeCommand.class.getName());

    /** The three ways the positional arguments can be read. */
    record Target(NbdUri uri, String device) {
        static Target parse(List<String> args, String exportName) {
            if (args.isEmpty() || args.size() > 3) {
                throw new IllegalArgumentException("expected HOST [PORT] [DEVICE] or URI [DEVICE]");
            }
            String first = args.get(0);
            if (NbdUri.looksLikeUri(first)) {
                if (args.size() > 2) {
                    throw new IllegalArgumentException("after a URI only a DEVICE may follow");
                }
                if (exportName != null) {
                    throw new IllegalArgumentException("-N/--name goes with HOST [PORT], not with a URI");
                }
                return new Target(NbdUri.parse(first), args.size() == 2 ? args.get(1) : null);
            }
            int port = NbdConstants.DEFAULT_PORT;
            String device = null;
            int next = 1;
            if (args.size() > 1 && args.get(1).chars().allMatch(Character::isDigit)) {
                port = Integer.parseInt(args.get(1));
                next = 2;
            }
            if (args.size() > next) {
                device = args.get(next);
                next++;
            }
            if (args.size() > next) {
                throw new IllegalArgumentException("unexpected argument '" + args.get(next) + "'");
            }
            String host = first.startsWith("[") && first.endsWith("]") ? first.substring(1, first.length() - 1) : first;
            return new Target(NbdUri.ofHost(host, port, exportName), device);
        }
    }

    /** Which bridge serves a device name. */
    /** The name a device's daemon answers under (ggate0, nbd0), from /dev/ggateN, ggateN, /dev/nbdN or nbdN. */
    static String daemonName(String device) {
        return Bridge.of(device) == Bridge.LINUX_NBD
                ? org.nbdroot.client.linuxnbd.LinuxNbdAbi.DEVICE_PREFIX + org.nbdroot.client.linuxnbd.LinuxNbdAbi.indexOf(device)
                : GgateAbi.PROVIDER_NAME + GgateOptions.unitOf(device);
    }

    enum Bridge {
        GGATE, LINUX_NBD;

        static Bridge of(String device) {
            String name = device == null ? null : device.startsWith("/dev/") ? device.substring(5) : device;
            if (name == null) {
                // No device named: GEOM Gate on FreeBSD, or wherever its control device was pointed.
                boolean ggate = System.getProperty("os.name").toLowerCase(java.util.Locale.ROOT).contains("freebsd")
                        || System.getProperty("nbd.ggate.ctl") != null;
                if (!ggate) {
                    throw new IllegalArgumentException("name the device to serve (on Linux: /dev/nbdN)");
                }
                return GGATE;
            }
            if (name.startsWith(GgateAbi.PROVIDER_NAME)) {
                return GGATE;
            }
            if (name.startsWith("nbd")) {
                return LINUX_NBD;
            }
            throw new IllegalArgumentException("'" + device + "' is neither a GEOM Gate device (/dev/ggateN) "
                    + "nor a Linux NBD device (/dev/nbdN)");
        }
    }

    /** A daemon without the mark still serves; only a later shutdown would kill it too early. */
    private static void markRootStorage() {
        try {
            RootStorageMark.apply();
        } catch (IOException | RuntimeException e) {
            LOG.warning("--root-storage: cannot mark the process (" + e.getMessage()
                    + "); a shutdown may kill it before the root's last writes");
        }
    }

    static int serve(DeviceOptions options, boolean rescue, String[] originalArgs) throws Exception {
        Target target = Target.parse(options.positional, options.exportName);
        if (rescue && target.device() == null) {
            throw new IllegalArgumentException("rescue needs the DEVICE to take over");
        }
        Bridge bridge = Bridge.of(target.device());
        LinuxNbdOptions linux = null;
        GgateOptions ggate = null;
        if (bridge == Bridge.LINUX_NBD) {
            linux = new LinuxNbdOptions(LinuxNbdAbi.indexOf(target.device()), options.sectorSize, options.timeout,
                    options.deadTimeout, "ro".equals(options.mode));
        } else {
            ggate = new GgateOptions(
                    target.device() == null ? GgateAbi.UNIT_AUTO : GgateOptions.unitOf(target.device()),
                    options.sectorSize, options.queueSize, options.timeout, "ro".equals(options.mode), options.workers);
        }
        if (!options.foreground) {
            // rescue's own options follow its name: picocli would give them to the top-level command otherwise.
            int optionsAt = rescue ? List.of(originalArgs).indexOf("rescue") + 1 : 0;
            return Daemonizer.runDetached(originalArgs, optionsAt, System.out, System.err);
        }
        if (options.detached) {
            Daemonizer.enterOwnSession();
        }
        if (options.rootStorage) {
            markRootStorage();
        }
        // Every meter registered and every path reading them run before the device takes requests
        // (after a reroot no class can be loaded), on another thread while the connection opens.
        StartingMetrics startingMetrics = StartingMetrics.begin();
        SessionOptions sessionOptions = options.connection.sessionOptions(target.uri()).withObserver(startingMetrics);
        try (Engine engine = new Engine(Math.max(1, sessionOptions.connections()), sessionOptions)) {
            NbdSession session = engine.open(target.uri(), sessionOptions);
            DeviceMetrics metrics = startingMetrics.await();
            metrics.watch(session);
            ServedDevice device;
            if (linux != null) {
                device = rescue
                        ? LinuxNbdDevice.rescue(session, engine.transport, linux)
                        : LinuxNbdDevice.create(session, engine.transport, linux, target.uri().toString());
            } else {
                device = rescue
                        ? GgateDevice.rescue(session, ggate, GgateOptions.unitOf(target.device()))
                        : GgateDevice.create(session, ggate, target.uri().toString());
            }
            // Seen on a reconnect, on the engine's event loop: the device follows, from another
            // thread, as the kernel may want I/O served by that loop while it resizes.
            session.onExportGrowth(grown -> CompletableFuture.runAsync(() -> {
                try {
                    device.resize(grown.size());
                } catch (Exception e) {
                    LOG.warning(device.name() + ": cannot grow to " + grown.size() + " bytes: " + e.getMessage());
                }
            }));
            Path socket = RunDirectory.socketFor(device.name());
            String source = target.uri().toString();
            DaemonControl handler = new DaemonControl(device, target.uri(), metrics);
            ControlServer started;
            try {
                handler.handle("stats json"); // this device's own meters read once (the warm-up read others)
                started = ControlServer.start(socket, handler);
            } catch (Exception | Error e) {
                // A unit it made is not left attached with no daemon: its I/O would hang until --dead-timeout (a
                // year). One it took over is left as it was, for another rescue: its old daemon may still serve it.
                if (!rescue) {
                    try {
                        device.destroy(true);
                    } catch (Exception destroyFailed) {
                        e.addSuppressed(destroyFailed);
                    }
                }
                throw e;
            }
            try (ControlServer control = started) {
                System.out.println(device.name());
                System.out.flush();
                if (options.detached) {
                    Daemonizer.redirectOutput(RunDirectory.path().resolve(device.name() + ".log"));
                }
                LOG.info(device.name() + ": serving " + source + " (" + device.mediaSize() + " bytes, sector "
                        + device.sectorSize() + ")");
                Throwable failure = device.awaitTermination();
                LOG.info(device.name() + ": destroyed; disconnecting");
                session.disconnect().get(10, TimeUnit.SECONDS);
                if (failure != null) {
                    throw new IllegalStateException(device.name() + " failed: " + failure.getMessage(), failure);
                }
            }
        }
        return 0;
    }

}
