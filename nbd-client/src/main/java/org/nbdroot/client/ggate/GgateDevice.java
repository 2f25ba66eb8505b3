package org.nbdroot.client.ggate;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.CompositeByteBuf;
import io.netty.buffer.PooledByteBufAllocator;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.logging.Logger;
import org.nbdroot.client.daemon.ServedDevice;
import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.NbdServerErrorException;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.wire.NbdError;

/**
 * A GEOM Gate unit served from an NBD session: creates the unit (or takes over one whose
 * daemon died), runs the workers, and resizes or destroys it.
 *
 * <p>It has ended once every START thread has stopped and every request they took has been
 * answered with DONE (or the unit is gone): {@code live} counts both.
 */
public final class GgateDevice implements ServedDevice, AutoCloseable {
    private static final Logger LOG = Logger.getLogger(GgateDevice.class.getName());

    private final NbdSession session;
    private final GgateOptions options;
    private final int unit;
    private volatile long mediaSize;
    private final int sectorSize;
    private final AtomicInteger live;
    private final CountDownLatch terminated = new CountDownLatch(1);
    private final List<Thread> threads = new ArrayList<>();
    private GgateDone done;
    private volatile boolean stopping;
    private volatile Throwable workerFailure;

    private GgateDevice(NbdSession session, GgateOptions options, int unit, long mediaSize, int sectorSize) {
        this.session = session;
        this.options = options;
        this.unit = unit;
        this.mediaSize = mediaSize;
        this.sectorSize = sectorSize;
        this.live = new AtomicInteger(options.workers());
    }

    /** The sector size for an export: as asked, else 512 or the export's minimum block if larger. */
    static int sectorSizeFor(ExportInfo export, GgateOptions options) {
        int minimum = export.blockSize().minimum();
        int sector = options.sectorSize() != 0 ? options.sectorSize() : Math.max(512, minimum);
        if (sector % minimum != 0) {
            throw new IllegalArgumentException("sector size " + sector + " is not a multiple of the export's minimum block size "
                    + minimum);
        }
        return sector;
    }

    /** Creates a new unit for the session's export and starts serving it. */
    public static GgateDevice create(NbdSession session, GgateOptions options, String info) throws GgateException {
        ExportInfo export = session.export();
        int sector = sectorSizeFor(export, options);
        long size = export.size() - export.size() % sector;
        if (size != export.size()) {
            LOG.warning("the export's size " + export.size() + " is not a multiple of the sector size " + sector
                    + ": the device ends at " + size);
        }
        if (size <= 0) {
            throw new GgateException("the export (" + export.size() + " bytes) is smaller than one sector");
        }
        int flags = export.readOnly() || options.readOnly() ? GgateAbi.FLAG_READONLY : 0;
        int unit;
        try (GgateControl control = GgateControl.open()) {
            unit = control.create(options.unit(), size, sector, flags, options.queueSize(), options.timeout(), info);
        }
        GgateDevice device = new GgateDevice(session, options, unit, size, sector);
        try {
            device.startWorkers();
        } catch (GgateException | RuntimeException e) {
            // A unit nobody serves would hold its requests for ever: it goes with the failure.
            try (GgateControl control = GgateControl.open()) {
                control.destroy(unit, true);
            } catch (GgateException | RuntimeException cleanup) {
                e.addSuppressed(cleanup);
            }
            throw e;
        }
        return device;
    }

    /**
     * Takes over a unit whose daemon died: puts every request it had taken back in the queue
     * (CANCEL with seq 0), then serves it.
     */
    public static GgateDevice rescue(NbdSession session, GgateOptions options, int unit) throws GgateException {
        ExportInfo export = session.export();
        int sector = sectorSizeFor(export, options);
        try (GgateControl control = GgateControl.open()) {
            control.cancel(unit, 0);
        }
        GgateDevice device = new GgateDevice(session, options, unit, export.size() - export.size() % sector, sector);
        device.startWorkers();
        return device;
    }

    /** Opens every descriptor first: if one cannot be opened, those already open are closed and nothing runs. */
    private void startWorkers() throws GgateException {
        List<GgateControl> opened = new ArrayList<>();
        try {
            for (int i = 0; i <= options.workers(); i++) {
                opened.add(GgateControl.open());
            }
        } catch (GgateException | RuntimeException e) {
            opened.forEach(GgateControl::close);
            throw e;
        }
        done = new GgateDone(opened.get(0), unit);
        warmUp();
        for (int i = 0; i < options.workers(); i++) {
            Thread t = new Thread(new GgateWorker(this, opened.get(i + 1), session), name() + "-worker-" + i);
            t.setDaemon(true);
            threads.add(t);
        }
        threads.forEach(Thread::start);
    }

    /**
     * Runs each way a reply completes once, as DONEs for a sequence number no bio has (the
     * kernel ignores them): after a reroot no class can be loaded any more, so the completion
     * path must not load its classes at the first real reply.
     */
    private void warmUp() {
        ByteBuf direct = PooledByteBufAllocator.DEFAULT.directBuffer(512, 512).writeZero(512);
        CompositeByteBuf pieces = PooledByteBufAllocator.DEFAULT.compositeDirectBuffer(2)
                .addComponent(true, PooledByteBufAllocator.DEFAULT.directBuffer(256).writeZero(256))
                .addComponent(true, PooledByteBufAllocator.DEFAULT.directBuffer(256).writeZero(256));
        CompletableFuture<Object> later = new CompletableFuture<>();
        later.whenComplete(warmUpRequest(GgateAbi.BIO_READ, null)); // zero-copy, completed after whenComplete
        later.complete(direct);
        CompletableFuture.completedFuture((Object) pieces).whenComplete(warmUpRequest(GgateAbi.BIO_READ, null)); // copied
        ByteBuf written = PooledByteBufAllocator.DEFAULT.directBuffer(512, 512);
        // A server's error: its errno mapping (an enum switch) loads a class of its own.
        CompletableFuture.failedFuture(new NbdServerErrorException(NbdError.EIO.code(), "warm-up", null))
                .whenComplete(warmUpRequest(GgateAbi.BIO_WRITE, written));
    }

    private GgateRequest warmUpRequest(int command, ByteBuf payload) {
        return new GgateRequest(this, GgateRequest.WARM_UP_SEQ, command, 0, 512, payload, 0);
    }

    /** The DONE of every request of this unit. */
    GgateDone doneCall() {
        return done;
    }

    public int unit() {
        return unit;
    }

    @Override
    public String name() {
        return GgateAbi.PROVIDER_NAME + unit;
    }

    @Override
    public long mediaSize() {
        return mediaSize;
    }

    @Override
    public int sectorSize() {
        return sectorSize;
    }

    boolean stopping() {
        return stopping;
    }

    void workerFailed(Throwable t) {
        workerFailure = t;
    }

    void workerExited() {
        release();
    }

    /**
     * The READ and WRITE bytes outstanding (taken with START, not yet answered) at most: the
     * START threads no longer wait for replies, and the kernel's queue alone (1024 bios by
     * default, each up to 1 MiB) could hold more than a small JVM's direct memory. The 32
     * workers of before held at most this much too. One request larger than it goes alone.
     */
    static final long MAX_OUTSTANDING_BYTES = 32L << 20;
    private final Object outstandingLock = new Object(); // not the device's own: resize holds that across an ioctl
    private long outstandingBytes; // guarded by outstandingLock

    /** Waits until {@code bytes} more fit among the bytes outstanding, and counts them. */
    void reserve(long bytes) {
        if (bytes == 0) {
            return; // FLUSH and TRIM carry no data
        }
        boolean interrupted = false;
        synchronized (outstandingLock) {
            while (outstandingBytes > 0 && outstandingBytes + bytes > MAX_OUTSTANDING_BYTES) {
                try {
                    outstandingLock.wait();
                } catch (InterruptedException e) {
                    interrupted = true; // the bio is taken: it must be served and answered all the same
                }
            }
            outstandingBytes += bytes;
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }

    /** An answered request's reservation. */
    void unreserve(long bytes) {
        if (bytes > 0) {
            synchronized (outstandingLock) {
                outstandingBytes -= bytes;
                outstandingLock.notifyAll();
            }
        }
    }

    long outstandingBytes() {
        synchronized (outstandingLock) {
            return outstandingBytes;
        }
    }

    void requestTaken() {
        // Taken by a START thread (or the warm-up, before any starts): the count holds it, never 0 here.
        live.incrementAndGet();
    }

    void requestAnswered() {
        release();
    }

    private void release() {
        if (live.decrementAndGet() == 0) {
            done.close(); // no START thread left to take a request, and none left to answer
            terminated.countDown();
        }
    }

    /**
     * Waits until every worker has stopped (the unit was destroyed) and every request taken was
     * answered; returns a worker's failure, if any.
     */
    @Override
    public Throwable awaitTermination() throws InterruptedException {
        terminated.await();
        return workerFailure;
    }

    /** Grows or shrinks the device to a new export size (rounded down to a whole sector). */
    @Override
    public synchronized void resize(long newExportSize) throws GgateException {
        long size = newExportSize - newExportSize % sectorSize;
        if (size <= 0) {
            throw new GgateException(name() + ": the export (" + newExportSize + " bytes) is smaller than one sector");
        }
        if (size == mediaSize) {
            return;
        }
        try (GgateControl control = GgateControl.open()) {
            control.resize(unit, size);
        } catch (GgateException e) {
            String hint = e.is(jnr.constants.platform.Errno.EOPNOTSUPP)
                    ? " (FreeBSD before 14 cannot resize a GEOM Gate device: destroy and create it again)" : "";
            throw new GgateException("cannot resize " + name() + " from " + mediaSize + " to " + size + " bytes: "
                    + e.getMessage() + hint);
        }
        LOG.info(name() + ": resized from " + mediaSize + " to " + size + " bytes");
        mediaSize = size;
    }

    @Override
    public NbdSession session() {
        return session;
    }

    /**
     * Flushes the export if it can, then destroys the unit: without force the kernel refuses
     * while the device is open; with force, requests still queued fail with ENXIO.
     */
    @Override
    public void destroy(boolean force) throws IOException {
        ServedDevice.flushBeforeDestroy(this, force);
        stopping = true;
        try (GgateControl control = GgateControl.open()) {
            control.destroy(unit, force);
        } catch (GgateException e) {
            stopping = false;
            throw e;
        }
        if (force) {
            // Workers may wait on requests held for a reconnect that will not come: end them.
            session.disconnect();
        }
    }

    @Override
    public void close() throws IOException {
        destroy(true);
    }
}
