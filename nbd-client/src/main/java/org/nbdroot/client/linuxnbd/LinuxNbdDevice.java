package org.nbdroot.client.linuxnbd;

import io.netty.channel.epoll.Epoll;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.logging.Logger;
import org.nbdroot.client.daemon.ServedDevice;
import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.transport.Transport;

/**
 * A Linux NBD device ({@code /dev/nbdN}) with the daemon in its data path: the kernel gets
 * one end of a Unix socket pair and speaks NBD on it; the daemon serves the other end
 * ({@link KernelBridge}) through its own NBD session, which reconnects to the server
 * underneath without the kernel noticing.
 *
 * <p>The kernel gets its socket through generic netlink ({@link NbdNetlink}): nothing of the
 * daemon sleeps in the kernel, so a signal to it (systemd's shutdown stops every process)
 * cannot end the device, and when the daemon dies the device waits
 * {@link LinuxNbdOptions#deadTimeout()} for {@link #rescue}. Only a kernel without the
 * netlink family gets the ioctls (NBD_SET_SOCK, then NBD_DO_IT on a thread of its own for
 * as long as the device lives, which any signal to the daemon interrupts, ending the device).
 */
public final class LinuxNbdDevice implements ServedDevice {
    private static final Logger LOG = Logger.getLogger(LinuxNbdDevice.class.getName());
    private static final long START_TIMEOUT_MS = 10_000;

    private final NbdSession session;
    private final LinuxNbdOptions options;
    /** The ioctl attachment's open /dev/nbdN; null with netlink (an open device would make CONNECT fail EBUSY). */
    private final NbdDeviceControl control;
    /** The netlink attachment; null with ioctls. */
    private final NbdNetlink netlink;
    private final int blockSize;
    private volatile long mediaSize;
    private final KernelBridge bridge;
    private final CountDownLatch done = new CountDownLatch(1);
    private volatile Throwable failure;
    private volatile boolean stopping;

    private LinuxNbdDevice(NbdSession session, LinuxNbdOptions options, NbdDeviceControl control, NbdNetlink netlink,
            int blockSize, long mediaSize, KernelBridge bridge) {
        this.session = session;
        this.options = options;
        this.control = control;
        this.netlink = netlink;
        this.blockSize = blockSize;
        this.mediaSize = mediaSize;
        this.bridge = bridge;
        if (options.timeout() > 0) {
            bridge.readAlways(); // the kernel's timeout must not wait behind a bridge that stopped reading
        }
    }

    /** The block size for an export: as asked, else 512 or the export's minimum block if larger. */
    static int blockSizeFor(ExportInfo export, LinuxNbdOptions options) {
        int minimum = export.blockSize().minimum();
        int size = options.blockSize() != 0 ? options.blockSize() : Math.max(LinuxNbdAbi.MIN_BLOCK_SIZE, minimum);
        if (size > LinuxNbdAbi.MAX_BLOCK_SIZE) {
            throw new IllegalArgumentException("the export's minimum block size " + minimum
                    + " is larger than a Linux NBD device's largest block size " + LinuxNbdAbi.MAX_BLOCK_SIZE);
        }
        if (size % minimum != 0) {
            throw new IllegalArgumentException("block size " + size + " is not a multiple of the export's minimum block size "
                    + minimum);
        }
        return size;
    }

    /** Sets up /dev/nbdN for the session's export and serves it; returns once the kernel has started the device. */
    public static LinuxNbdDevice create(NbdSession session, Transport transport, LinuxNbdOptions options, String source)
            throws IOException, InterruptedException {
        if (!Epoll.isAvailable() || !"epoll".equals(transport.name())) {
            throw new LinuxNbdException("the Linux NBD bridge needs Netty's epoll transport"
                    + (Epoll.isAvailable() ? " (not -Dnbd.transport=nio)" : ": " + Epoll.unavailabilityCause()));
        }
        ExportInfo export = session.export();
        int block = blockSizeFor(export, options);
        long size = export.size() - export.size() % block;
        if (size != export.size()) {
            LOG.warning("the export's size " + export.size() + " is not a multiple of the block size " + block
                    + ": the device ends at " + size);
        }
        if (size <= 0) {
            throw new LinuxNbdException("the export (" + export.size() + " bytes) is smaller than one block");
        }
        if (Files.exists(sysfs(options.index()).resolve("pid"))) {
            // (The pid file is not read: on some kernels it names a task that may have exited.)
            throw new LinuxNbdException(options.name() + " is already connected (to take over from a daemon that died: "
                    + "nbd-client rescue)");
        }
        int flags = LinuxNbdAbi.kernelFlags(export.flags(), options.readOnly());
        // -Dnbd.linux.attach=ioctl: the ioctls even where netlink works (to compare them; tests).
        boolean ioctl = "ioctl".equals(System.getProperty("nbd.linux.attach"));
        NbdNetlink netlink = ioctl ? null : NbdNetlink.openIfAvailable();
        if (ioctl) {
            LOG.warning(options.name() + ": attaching with ioctls (-Dnbd.linux.attach=ioctl)");
            return createWithIoctls(session, transport, options, block, size, flags);
        }
        if (netlink == null) {
            LOG.warning(options.name() + ": the kernel has no \"" + NbdNetlink.FAMILY_NAME + "\" netlink family: attaching "
                    + "with ioctls (NBD_DO_IT), which a signal to the daemon or its death ends");
            return createWithIoctls(session, transport, options, block, size, flags);
        }
        Pair pair = Pair.bridged(session, transport, options, netlink);
        KernelBridge bridge = pair.bridge();
        try {
            netlink.connect(new NbdNetlink.Connect(options.index(), size, block, flags, options.timeout(),
                    options.deadTimeout(), pair.kernelFd()));
        } catch (LinuxNbdException e) {
            bridge.abort();
            netlink.close();
            if (e.errno() == jnr.constants.platform.Errno.EBUSY.intValue()) {
                throw new LinuxNbdException(e.getMessage() + " (is " + NbdDeviceControl.devicePath(options.index())
                        + " open or being set up elsewhere?)");
            }
            throw e;
        } finally {
            NbdDeviceControl.closeDescriptor(pair.kernelFd()); // the kernel holds its own reference now
        }
        LinuxNbdDevice device = new LinuxNbdDevice(session, options, null, netlink, block, size, bridge);
        device.watchBridge();
        LOG.info(options.name() + ": attached through netlink; a dead daemon's device waits " + options.deadTimeout()
                + " s for nbd-client rescue");
        return device;
    }

    private static LinuxNbdDevice createWithIoctls(NbdSession session, Transport transport, LinuxNbdOptions options,
            int block, long size, int flags) throws IOException, InterruptedException {
        NbdDeviceControl control = NbdDeviceControl.open(options.index());
        int[] pair;
        try {
            control.configure(block, size, flags, options.timeout());
            pair = NbdDeviceControl.socketPair();
            NbdDeviceControl.setNonBlocking(pair[1]);
        } catch (IOException | RuntimeException e) {
            control.close();
            throw e;
        }
        KernelBridge bridge = KernelBridge.attach(transport, pair[1], options.name(), session);
        LinuxNbdDevice device = new LinuxNbdDevice(session, options, control, null, block, size, bridge);
        device.start(pair[0]);
        return device;
    }

    /**
     * Takes over a device attached through netlink whose daemon died: the kernel keeps what
     * it could not send waiting (for the dead-connection timeout) and gets a new socket
     * (NBD_CMD_RECONFIGURE with NBD_ATTR_SOCKETS); requests the dead daemon had taken
     * unanswered go again once the kernel sees them stuck on the old socket (its request
     * timer, 30 s with no --timeout).
     */
    public static LinuxNbdDevice rescue(NbdSession session, Transport transport, LinuxNbdOptions options)
            throws IOException {
        if (!Epoll.isAvailable() || !"epoll".equals(transport.name())) {
            throw new LinuxNbdException("the Linux NBD bridge needs Netty's epoll transport");
        }
        Path sys = sysfs(options.index());
        if (!Files.exists(sys.resolve("pid"))) {
            throw new LinuxNbdException(options.name() + " is not connected: nothing to take over (attach it instead)");
        }
        long deviceSize = readLong(sys.resolve("size")) * 512;
        long block = readLong(sys.resolve("queue/logical_block_size"));
        if (deviceSize <= 0 || block <= 0) {
            throw new LinuxNbdException("cannot read " + options.name() + "'s size and block size from " + sys);
        }
        ExportInfo export = session.export();
        long exportSize = export.size() - export.size() % block;
        if (exportSize < deviceSize) {
            throw new LinuxNbdException("the export (" + export.size() + " bytes) is smaller than " + options.name()
                    + " (" + deviceSize + " bytes): not the export it served?");
        }
        if (export.blockSize().minimum() > block || block % export.blockSize().minimum() != 0) {
            throw new LinuxNbdException(options.name() + "'s block size " + block
                    + " does not fit the export's minimum block size " + export.blockSize().minimum());
        }
        NbdNetlink netlink = NbdNetlink.openIfAvailable();
        if (netlink == null) {
            throw new LinuxNbdException("rescue needs the kernel's \"" + NbdNetlink.FAMILY_NAME + "\" netlink family, "
                    + "which this kernel does not have (a device set up with ioctls ends with its daemon)");
        }
        Pair pair = Pair.bridged(session, transport, options, netlink);
        KernelBridge bridge = pair.bridge();
        try {
            netlink.reconnect(options.index(), pair.kernelFd());
        } catch (LinuxNbdException e) {
            bridge.abort();
            netlink.close();
            throw e;
        } finally {
            NbdDeviceControl.closeDescriptor(pair.kernelFd());
        }
        // The kernel answers 0 also when no socket of the device was dead and it dropped ours:
        // then our end is the last, and its peer has hung up.
        if (NbdDeviceControl.peerHungUp(pair.daemonFd())) {
            bridge.abort();
            netlink.close();
            throw new LinuxNbdException(options.name() + "'s connection is alive: the kernel kept it and refused the new "
                    + "socket (is its daemon still running, or stopped?)");
        }
        LinuxNbdDevice device = new LinuxNbdDevice(session, options, null, netlink, (int) block, deviceSize, bridge);
        device.watchBridge();
        LOG.info(options.name() + ": taken over; the kernel sends its waiting requests here");
        if (exportSize > deviceSize) {
            try {
                device.resize(exportSize);
            } catch (Exception e) {
                // The device serves already: a failed growth must not undo the takeover.
                LOG.warning(options.name() + ": taken over, but cannot grow to " + exportSize + " bytes: " + e.getMessage());
            }
        }
        return device;
    }

    /**
     * Ends a device no daemon serves (it died), as {@code nbd-client -d} does: through netlink
     * NBD_CMD_DISCONNECT, which also wakes the requests waiting for a new socket and fails
     * them (the ioctls would leave those waiting out the dead-connection timeout); without
     * the family, NBD_DISCONNECT and NBD_CLEAR_SOCK.
     */
    public static void disconnectWithoutDaemon(int index) throws LinuxNbdException {
        NbdNetlink netlink = NbdNetlink.openIfAvailable();
        if (netlink != null) {
            try (netlink) {
                netlink.disconnect(index);
            }
            return;
        }
        try (NbdDeviceControl control = NbdDeviceControl.open(index)) {
            control.disconnect();
            control.clearSocket();
        }
    }

    /** A socket pair with the bridge on the daemon's end; the kernel's end is for netlink to pass on. */
    private record Pair(int kernelFd, int daemonFd, KernelBridge bridge) {
        static Pair bridged(NbdSession session, Transport transport, LinuxNbdOptions options, NbdNetlink netlink)
                throws IOException {
            int[] fds;
            try {
                fds = NbdDeviceControl.socketPair();
            } catch (LinuxNbdException e) {
                netlink.close();
                throw e;
            }
            try {
                NbdDeviceControl.setNonBlocking(fds[1]);
                return new Pair(fds[0], fds[1], KernelBridge.attach(transport, fds[1], options.name(), session));
            } catch (IOException | RuntimeException e) {
                NbdDeviceControl.closeDescriptor(fds[0]);
                NbdDeviceControl.closeDescriptor(fds[1]);
                netlink.close();
                throw e;
            }
        }
    }

    /** With netlink the device's end shows as the end of the bridge: the kernel shut its socket. */
    private void watchBridge() {
        bridge.closed().whenComplete((v, cause) -> {
            if (cause != null) {
                failure = cause;
                LOG.severe(name() + ": the bridge failed (" + cause.getMessage() + "); the device waits "
                        + options.deadTimeout() + " s for another daemon (nbd-client rescue)");
            } else if (!stopping && !bridge.disconnectRequested()) {
                // nbd.c marks a socket dead and shuts it when a request outlives --timeout, then
                // waits for another: not an end the daemon may report as a clean disconnect.
                failure = new LinuxNbdException("the kernel shut the device's socket without NBD_CMD_DISC "
                        + "(a request older than --timeout?)");
                LOG.severe(name() + ": " + failure.getMessage() + "; the device waits " + options.deadTimeout()
                        + " s for another daemon (nbd-client rescue)");
            } else if (!stopping) {
                LOG.info(name() + ": the kernel closed the device's socket (disconnected)");
            }
            netlink.close();
            done.countDown();
        });
    }

    /** SET_SOCK and DO_IT on one thread (the kernel wants the task that gave the socket to start the device). */
    private void start(int kernelFd) throws IOException, InterruptedException {
        CountDownLatch given = new CountDownLatch(1);
        int[] setSock = {0};
        Thread t = new Thread(() -> {
            try {
                setSock[0] = control.ioctl(LinuxNbdAbi.SET_SOCK, kernelFd);
                given.countDown();
                if (setSock[0] != 0) {
                    return;
                }
                int errno = control.ioctl(LinuxNbdAbi.DO_IT, 0);
                if (errno != 0 && !stopping) {
                    failure = new LinuxNbdException("NBD_DO_IT on " + control.path(), errno);
                } else if (bridge.closed().isCompletedExceptionally()) {
                    // The kernel returns 0 when the socket just ended: a broken request stream is ours to report.
                    failure = bridge.closed().handle((v, cause) -> cause).join();
                }
                LOG.info(name() + ": the kernel stopped the device" + (errno == 0 ? "" : " ("
                        + LinuxNbdException.describe(errno) + ")"));
                int clear = control.ioctl(LinuxNbdAbi.CLEAR_SOCK, 0);
                if (clear != 0) {
                    LOG.warning(name() + ": NBD_CLEAR_SOCK failed: " + LinuxNbdException.describe(clear));
                }
            } finally {
                given.countDown();
                NbdDeviceControl.closeDescriptor(kernelFd);
                bridge.abort();
                control.close();
                done.countDown();
            }
        }, name() + "-do-it");
        t.setDaemon(true);
        t.start();
        given.await();
        if (setSock[0] != 0) {
            done.await();
            throw new LinuxNbdException("NBD_SET_SOCK on " + control.path(), setSock[0]);
        }
        // DO_IT does not return while the device runs: its start shows in sysfs (the pid file, then the size).
        Path sys = sysfs(options.index());
        long deadline = System.currentTimeMillis() + START_TIMEOUT_MS;
        while (!(Files.exists(sys.resolve("pid")) && readLong(sys.resolve("size")) > 0)) {
            if (done.await(10, TimeUnit.MILLISECONDS)) {
                throw new LinuxNbdException(name() + " did not start: "
                        + (failure != null ? failure.getMessage() : "NBD_DO_IT returned at once"));
            }
            if (System.currentTimeMillis() > deadline) {
                throw new LinuxNbdException(name() + " did not start within " + START_TIMEOUT_MS / 1000 + " s");
            }
        }
    }

    private void checkRunning() throws LinuxNbdException {
        if (done.getCount() == 0) {
            throw new LinuxNbdException(name() + " has already stopped");
        }
    }

    static Path sysfs(int index) {
        return Path.of(System.getProperty("nbd.linux.sysfs", "/sys/block"), LinuxNbdAbi.DEVICE_PREFIX + index);
    }

    private static long readLong(Path file) {
        try {
            return Long.parseLong(Files.readString(file).strip());
        } catch (IOException | NumberFormatException e) {
            return -1;
        }
    }

    @Override
    public NbdSession session() {
        return session;
    }

    @Override
    public String name() {
        return options.name();
    }

    @Override
    public long mediaSize() {
        return mediaSize;
    }

    @Override
    public int sectorSize() {
        return blockSize;
    }

    /** Requests answered and failed so far. */
    public long served() {
        return bridge.served();
    }

    public long failed() {
        return bridge.failed();
    }

    /** Waits until the kernel has stopped the device; returns why it stopped, if not because it was asked to. */
    @Override
    public Throwable awaitTermination() throws InterruptedException {
        done.await();
        return failure;
    }

    /**
     * Grows or shrinks the device to a new export size, in whole blocks: NBD_CMD_RECONFIGURE
     * with NBD_ATTR_SIZE_BYTES through netlink (the kernel refuses NBD_SET_SIZE on a device
     * netlink set up), NBD_SET_SIZE on one set up with ioctls.
     */
    @Override
    public void resize(long newExportSize) throws IOException {
        checkRunning();
        long size = newExportSize - newExportSize % blockSize;
        if (netlink != null) {
            netlink.resize(options.index(), size);
        } else {
            control.resize(size);
        }
        mediaSize = size;
        LOG.info(name() + ": now " + size + " bytes");
    }

    /**
     * Ends the device. Without force it refuses while the device is mounted or otherwise
     * held, writes back the device's page cache (fsync: the kernel sends the writes and a
     * FLUSH through the bridge), flushes the export, and asks the kernel to disconnect
     * (NBD_CMD_DISC reaches the bridge, which closes its end once every request before it
     * is answered). With force it does not wait for the server: the socket closes at once
     * and whatever the kernel still had queued fails with EIO.
     */
    /**
     * The device's fsync (the kernel writes what it holds, then sends a FLUSH), waited for at most
     * {@code wait}: with the server down it would last until the server is back, and the control
     * socket, which answers one request at a time, with it. A fsync still running is left to
     * end by itself (the server's return, or destroy -f failing it).
     */
    private void fsyncWithin(java.time.Duration wait) throws LinuxNbdException {
        CompletableFuture<Void> fsync = new CompletableFuture<>();
        Thread t = new Thread(() -> {
            try {
                if (control != null) {
                    control.fsync();
                } else {
                    try (NbdDeviceControl c = NbdDeviceControl.open(options.index())) {
                        c.fsync();
                    }
                }
                fsync.complete(null);
            } catch (Throwable e) {
                fsync.completeExceptionally(e);
            }
        }, name() + "-fsync");
        t.setDaemon(true);
        t.start();
        try {
            fsync.get(wait.toMillis(), java.util.concurrent.TimeUnit.MILLISECONDS);
        } catch (java.util.concurrent.TimeoutException e) {
            throw new LinuxNbdException(name() + ": not destroyed: the kernel did not finish writing it out within "
                    + wait.toSeconds() + " s (is the server down?); destroy -f goes on regardless");
        } catch (java.util.concurrent.ExecutionException e) {
            // The kernel's FLUSH failed: the bridge logged why (a server error, or a loss it reported).
            throw new LinuxNbdException(name() + ": not destroyed: " + e.getCause().getMessage()
                    + " (this daemon's log says why); destroy -f goes on regardless");
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new LinuxNbdException(name() + ": not destroyed: interrupted while the kernel wrote it out");
        }
    }

    @Override
    public void destroy(boolean force) throws IOException {
        checkRunning();
        if (!force && NbdDeviceControl.heldExclusively(options.index())) {
            throw new LinuxNbdException("in use (mounted or held): unmount it first, or destroy -f");
        }
        boolean writable = !session.export().readOnly() && !options.readOnly();
        if (!force) {
            fsyncWithin(ServedDevice.flushBeforeDestroy());
        }
        if (writable) {
            ServedDevice.flushBeforeDestroy(this, force);
        }
        stopping = true;
        bridge.readAlways(); // else the kernel's disconnect could wait for a server that is down
        if (netlink != null) {
            netlink.disconnect(options.index());
        } else {
            control.disconnect();
        }
        if (force) {
            bridge.abort();
            session.disconnect(); // requests held for a reconnect that will not come end now
        }
    }
}
