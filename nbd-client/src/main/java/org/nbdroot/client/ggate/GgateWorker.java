package org.nbdroot.client.ggate;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.PooledByteBufAllocator;
import java.util.logging.Level;
import java.util.logging.Logger;
import jnr.constants.platform.Errno;
import jnr.ffi.Pointer;
import org.nbdroot.proto.session.NbdSession;

/**
 * One START thread of a GEOM Gate unit: takes a request from the kernel (START), sends it to
 * the NBD session and goes straight back to START; the reply's completion answers the kernel
 * ({@link GgateRequest}), as ggatec's sender and receiver threads share the work. Each START
 * thread has its own control descriptor and ioctl struct, and a payload buffer the kernel
 * copies a WRITE's data into; it grows when the kernel asks for a longer one (START
 * answering ENOMEM with the length it needs).
 */
final class GgateWorker implements Runnable {
    private static final Logger LOG = Logger.getLogger(GgateWorker.class.getName());
    private static final int INITIAL_BUFFER = 128 * 1024;

    private final GgateDevice device;
    private final GgateControl control;
    private final NbdSession session;
    private final Pointer io;
    private int bufferSize = INITIAL_BUFFER;
    private ByteBuf buffer;

    GgateWorker(GgateDevice device, GgateControl control, NbdSession session) {
        this.device = device;
        this.control = control;
        this.session = session;
        this.io = control.struct(GgateAbi.IO_SIZE);
    }

    @Override
    public void run() {
        try {
            while (takeAndSubmit()) {
                // one request per turn
            }
        } catch (RuntimeException | Error e) {
            LOG.log(Level.SEVERE, device.name() + ": worker failed", e);
            device.workerFailed(e);
        } finally {
            if (buffer != null) {
                buffer.release();
            }
            control.close();
            device.workerExited();
        }
    }

    /** One START, and the request sent on its way; false when the unit is going away. */
    private boolean takeAndSubmit() {
        if (buffer == null) {
            try {
                buffer = allocate(bufferSize);
            } catch (OutOfMemoryError e) {
                // No bio taken yet: wait for memory rather than leave the unit with no START thread.
                LOG.warning(device.name() + ": no memory for a " + bufferSize + "-byte buffer yet: " + e.getMessage());
                return !device.stopping() && pause(100);
            }
        }
        io.putInt(GgateAbi.Io.UNIT, device.unit());
        io.putLong(GgateAbi.Io.DATA, buffer.memoryAddress());
        io.putLong(GgateAbi.Io.LENGTH, buffer.capacity());
        io.putInt(GgateAbi.Io.ERROR, 0); // set before each START to tell its outcomes apart
        int errno = control.ioctl(GgateAbi.CMD_START, io);
        if (errno != 0) {
            if (errno == Errno.EINTR.intValue()) {
                return true; // a destroy ends the loop with ECANCELED or ENXIO, never with EINTR
            }
            if (errno != Errno.ENXIO.intValue()) {
                LOG.warning(device.name() + ": G_GATE_CMD_START failed: " + GgateException.describe(errno));
            }
            return false;
        }
        int error = io.getInt(GgateAbi.Io.ERROR);
        if (error == Errno.ECANCELED.intValue()) {
            // Our destroy, or a signal that interrupted the wait: only the first ends serving. A
            // destroy from elsewhere answers ECANCELED until the unit is gone, then ENXIO ends it.
            return !device.stopping() && pause(10);
        }
        if (error == Errno.ENOMEM.intValue()) {
            grow(io.getLong(GgateAbi.Io.LENGTH)); // the kernel kept the request queued for us
            return true;
        }
        if (error != 0) {
            LOG.warning(device.name() + ": G_GATE_CMD_START reported " + GgateException.describe(error));
            return !device.stopping();
        }
        int command = io.getInt(GgateAbi.Io.CMD);
        long seq = io.getLong(GgateAbi.Io.SEQ);
        long length = io.getLong(GgateAbi.Io.LENGTH);
        // Its data (a WRITE's copy, a READ's reply) counts until the DONE; over the bound, this waits.
        long reserved = command == GgateAbi.BIO_READ || command == GgateAbi.BIO_WRITE ? length : 0;
        GgateRequest request;
        device.reserve(reserved);
        try {
            ByteBuf payload = command == GgateAbi.BIO_WRITE ? takePayload((int) length) : null;
            request = new GgateRequest(device, seq, command, io.getLong(GgateAbi.Io.OFFSET), length, payload, reserved);
        } catch (RuntimeException | Error e) {
            // Out of direct memory, most likely. The bio is ours now: give it back to the head of the
            // kernel's queue (EAGAIN) rather than leave it unanswered, and take it again later.
            // Answered first, logged after: a log that fails must not leave it unanswered.
            device.unreserve(reserved);
            int doneErrno = device.doneCall().done(seq, command, length, 0, Errno.EAGAIN.intValue());
            LOG.log(Level.WARNING, device.name() + ": cannot take " + bioName(command) + " of " + length
                    + " bytes; the kernel keeps it queued" + (doneErrno == 0 ? ""
                    : " (G_GATE_CMD_DONE failed: " + GgateException.describe(doneErrno) + ")"), e);
            return pause(100);
        }
        request.submit(session);
        return true;
    }

    /** Sleeps a little before the next START; true: serve on. Nothing stops a worker by interrupting it. */
    private static boolean pause(long millis) {
        try {
            Thread.sleep(millis);
        } catch (InterruptedException ignored) {
            // serve on: only ENXIO or our own destroy ends the loop
        }
        return true;
    }

    /**
     * The WRITE's data, for the request to keep until its DONE. A write that fills most of the
     * buffer takes it (the next START gets a fresh one); a small one is copied into a buffer of
     * its own size, so that many small writes outstanding hold only about their own bytes.
     */
    private ByteBuf takePayload(int length) {
        if (length >= buffer.capacity() / 2) {
            ByteBuf taken = buffer;
            buffer = null;
            return taken;
        }
        ByteBuf own = allocate(length);
        own.writeBytes(buffer, 0, length);
        return own;
    }

    private void grow(long needed) {
        if (needed > Integer.MAX_VALUE - 8) {
            throw new IllegalStateException("the kernel asked for a " + needed + "-byte buffer");
        }
        bufferSize = (int) needed;
        buffer.release();
        buffer = null;
    }

    /** Where buffers come from; a test swaps it for one that fails, as a full direct memory does. */
    static volatile java.util.function.IntFunction<ByteBuf> allocator =
            size -> PooledByteBufAllocator.DEFAULT.directBuffer(size, size);

    private static ByteBuf allocate(int size) {
        return allocator.apply(size);
    }

    static String bioName(int command) {
        return switch (command) {
            case GgateAbi.BIO_READ -> "BIO_READ";
            case GgateAbi.BIO_WRITE -> "BIO_WRITE";
            case GgateAbi.BIO_DELETE -> "BIO_DELETE";
            case GgateAbi.BIO_FLUSH -> "BIO_FLUSH";
            default -> "bio command " + command;
        };
    }
}
