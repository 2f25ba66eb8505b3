package org.nbdroot.client.linuxnbd;

import io.netty.channel.epoll.Epoll;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.logging.Logger;
import org.nbdroot.client.daemon.ServedDevice;
import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.transport.Transport;
import org.nbdroot.proto.wire.TransmissionFlag;

/**
 * A Linux NBD device ({@code /dev/nbdN}) with the daemon in its data path: the kernel gets
 * one end of a Unix socket pair (NBD_SET_SOCK) and speaks NBD on it; the daemon serves the
 * other end ({@link KernelBridge}) through its own NBD session, which reconnects to the
 * server underneath without the kernel noticing. NBD_DO_IT runs on a thread of its own
 * for as long as the device lives.
 */
public final class LinuxNbdDevice implements ServedDevice {
    private static final Logger LOG = Logger.getLogger(LinuxNbdDevice.class.getName());
    private static final long START_TIMEOUT_MS = 10_000;

    private final NbdSession session;
    private final LinuxNbdOptions options;
    private final NbdDeviceControl control;
    private final int blockSize;
    private volatile long mediaSize;
    private final KernelBridge bridge;
    private final CountDownLatch done = new CountDownLatch(1);
    private volatile Throwable failure;
    private volatile boolean stopping;

    private LinuxNbdDevice(NbdSession session, LinuxNbdOptions options, NbdDeviceControl control, int blockSize,
            long mediaSize, KernelBridge bridge) {
        this.session = session;
        this.options = options;
        this.control = control;
        this.blockSize = blockSize;
        this.mediaSize = mediaSize;
        this.bridge = bridge;
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
        Path pid = sysfs(options.index()).resolve("pid");
        if (Files.exists(pid)) {
            throw new LinuxNbdException(options.name() + " is already connected (served by pid "
                    + Files.readString(pid).strip() + ")");
        }
        NbdDeviceControl control = NbdDeviceControl.open(options.index());
        int[] pair;
        try {
            int flags = LinuxNbdAbi.kernelFlags(export.flags(), options.readOnly());
            control.configure(block, size, flags, options.timeout());
            pair = NbdDeviceControl.socketPair();
            NbdDeviceControl.setNonBlocking(pair[1]);
        } catch (IOException | RuntimeException e) {
            control.close();
            throw e;
        }
        KernelBridge bridge = KernelBridge.attach(transport, pair[1], options.name(), session);
        LinuxNbdDevice device = new LinuxNbdDevice(session, options, control, block, size, bridge);
        device.start(pair[0]);
        return device;
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

    /** Grows or shrinks the device (NBD_SET_SIZE while it runs) to a new export size, in whole blocks. */
    @Override
    public void resize(long newExportSize) throws IOException {
        checkRunning();
        long size = newExportSize - newExportSize % blockSize;
        control.resize(size);
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
    @Override
    public void destroy(boolean force) throws IOException {
        checkRunning();
        if (!force && NbdDeviceControl.heldExclusively(options.index())) {
            throw new LinuxNbdException("in use (mounted or held): unmount it first, or destroy -f");
        }
        boolean writable = !session.export().readOnly() && !options.readOnly();
        if (!force) {
            control.fsync();
        }
        if (writable && session.export().has(TransmissionFlag.SEND_FLUSH)) {
            try {
                var flush = session.flush();
                if (force) {
                    flush.get(2, TimeUnit.SECONDS);
                } else {
                    flush.get();
                }
            } catch (Exception e) {
                if (!force) {
                    throw new LinuxNbdException(name() + ": flush before destroy failed: " + e.getMessage());
                }
                LOG.warning(name() + ": flush before destroy failed: " + e);
            }
        }
        stopping = true;
        control.disconnect();
        if (force) {
            bridge.abort();
            session.disconnect(); // requests held for a reconnect that will not come end now
        }
    }
}
