package org.nbdroot.client.ggate;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.PooledByteBufAllocator;
import java.util.concurrent.CompletableFuture;
import java.util.logging.Level;
import java.util.logging.Logger;
import jnr.constants.platform.Errno;
import jnr.ffi.Pointer;
import org.nbdroot.proto.session.NbdSession;

/**
 * One worker of a GEOM Gate unit: takes a request from the kernel (START), serves it through
 * the NBD session, and hands the result back (DONE), over and over. Each worker has its own
 * control descriptor, ioctl struct and payload buffer; the buffer grows when the kernel asks
 * for a longer one (START answering ENOMEM with the length it needs).
 */
final class GgateWorker implements Runnable {
    private static final Logger LOG = Logger.getLogger(GgateWorker.class.getName());
    private static final int INITIAL_BUFFER = 128 * 1024;

    private final GgateDevice device;
    private final GgateControl control;
    private final NbdSession session;
    private final Pointer io;
    private ByteBuf buffer;

    GgateWorker(GgateDevice device, GgateControl control, NbdSession session) {
        this.device = device;
        this.control = control;
        this.session = session;
        this.io = control.struct(GgateAbi.IO_SIZE);
        this.buffer = PooledByteBufAllocator.DEFAULT.directBuffer(INITIAL_BUFFER, INITIAL_BUFFER);
    }

    @Override
    public void run() {
        try {
            while (takeAndServe()) {
                // one request per turn
            }
        } catch (RuntimeException | Error e) {
            LOG.log(Level.SEVERE, device.name() + ": worker failed", e);
            device.workerFailed(e);
        } finally {
            buffer.release();
            control.close();
            device.workerExited();
        }
    }

    /** One START, serve, DONE; false when the unit is going away. */
    private boolean takeAndServe() {
        io.putInt(GgateAbi.Io.UNIT, device.unit());
        io.putLong(GgateAbi.Io.DATA, buffer.memoryAddress());
        io.putLong(GgateAbi.Io.LENGTH, buffer.capacity());
        io.putInt(GgateAbi.Io.ERROR, 0); // set before each START to tell its outcomes apart
        int errno = control.ioctl(GgateAbi.CMD_START, io);
        if (errno != 0) {
            if (errno == Errno.EINTR.intValue()) {
                return !device.stopping();
            }
            if (errno != Errno.ENXIO.intValue()) {
                LOG.warning(device.name() + ": G_GATE_CMD_START failed: " + GgateException.describe(errno));
            }
            return false;
        }
        int error = io.getInt(GgateAbi.Io.ERROR);
        if (error == Errno.ECANCELED.intValue()) {
            return false; // the unit is being destroyed, or a signal interrupted the wait
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
        long offset = io.getLong(GgateAbi.Io.OFFSET);
        long length = io.getLong(GgateAbi.Io.LENGTH);
        int result = serve(command, offset, length);
        io.putInt(GgateAbi.Io.ERROR, result);
        io.putLong(GgateAbi.Io.DATA, buffer.memoryAddress()); // a READ may have grown the buffer
        errno = control.ioctl(GgateAbi.CMD_DONE, io);
        if (errno != 0) {
            LOG.warning(device.name() + ": G_GATE_CMD_DONE failed: " + GgateException.describe(errno));
            return errno != Errno.ENOENT.intValue() && errno != Errno.ENXIO.intValue();
        }
        return true;
    }

    /** Serves one kernel request; returns the errno it completes with. */
    private int serve(int command, long offset, long length) {
        if (length > Integer.MAX_VALUE) {
            return Errno.EINVAL.intValue();
        }
        int len = (int) length;
        try {
            switch (command) {
                case GgateAbi.BIO_READ -> {
                    if (len > buffer.capacity()) {
                        grow(len);
                    }
                    ByteBuf data = await(session.read(offset, len));
                    try {
                        buffer.setBytes(0, data, data.readerIndex(), len);
                    } finally {
                        data.release();
                    }
                }
                // The next request is read into the same buffer: the session copies what it keeps.
                case GgateAbi.BIO_WRITE -> await(session.writeBorrowed(offset, buffer.retainedSlice(0, len), false));
                case GgateAbi.BIO_DELETE -> await(session.trim(offset, len, false));
                case GgateAbi.BIO_FLUSH -> await(session.flush());
                default -> {
                    return Errno.EOPNOTSUPP.intValue();
                }
            }
            return 0;
        } catch (Throwable failure) {
            int errno = ErrnoMapping.toErrno(failure);
            LOG.warning(device.name() + ": " + bioName(command) + " of " + len + " bytes at " + offset + " failed: "
                    + failure.getMessage());
            return errno;
        }
    }

    private static <T> T await(CompletableFuture<T> future) throws Throwable {
        try {
            return future.get();
        } catch (java.util.concurrent.ExecutionException e) {
            throw e.getCause();
        }
    }

    private void grow(long needed) {
        if (needed > Integer.MAX_VALUE - 8) {
            throw new IllegalStateException("the kernel asked for a " + needed + "-byte buffer");
        }
        buffer.release();
        buffer = PooledByteBufAllocator.DEFAULT.directBuffer((int) needed, (int) needed);
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
