package org.nbdroot.client.ggate;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.PooledByteBufAllocator;
import java.util.concurrent.CompletableFuture;
import java.util.function.BiConsumer;
import java.util.logging.Level;
import java.util.logging.Logger;
import jnr.constants.platform.Errno;
import org.nbdroot.proto.session.NbdSession;

/**
 * One bio taken from the kernel: sent to the NBD session, and answered with DONE by the
 * reply's completion (on the event loop), so the START thread never waits for it. Answered
 * exactly once, whatever happens, and every buffer it holds is released after the DONE.
 */
final class GgateRequest implements BiConsumer<Object, Throwable> {
    private static final Logger LOG = Logger.getLogger(GgateRequest.class.getName());
    /** No bio has it (the kernel numbers them from 1): a DONE for it is ignored, which the warm-up uses. */
    static final long WARM_UP_SEQ = 0;

    private final GgateDevice device;
    private final long seq;
    private final int command;
    private final long offset;
    private final long length;
    private ByteBuf payload; // a WRITE's data, the request's own: released after the DONE
    private final long reserved; // of the device's outstanding bytes, given back after the DONE

    /** Counts itself as outstanding on the device until answered. */
    GgateRequest(GgateDevice device, long seq, int command, long offset, long length, ByteBuf payload, long reserved) {
        this.device = device;
        this.reserved = reserved;
        this.seq = seq;
        this.command = command;
        this.offset = offset;
        this.length = length;
        this.payload = payload;
        device.requestTaken();
    }

    /** Sends the request; the reply answers the kernel. Never throws. */
    void submit(NbdSession session) {
        CompletableFuture<?> reply;
        try {
            boolean carriesData = command == GgateAbi.BIO_READ || command == GgateAbi.BIO_WRITE;
            if (carriesData && length > Integer.MAX_VALUE) {
                answer(Errno.EINVAL.intValue(), 0);
                return;
            }
            int len = (int) length;
            reply = switch (command) {
                case GgateAbi.BIO_READ -> session.read(offset, len);
                // The session takes this reference; what it keeps beyond the reply it copies.
                case GgateAbi.BIO_WRITE -> session.writeBorrowed(offset, payload.retainedSlice(0, len), false);
                case GgateAbi.BIO_DELETE -> session.trim(offset, length, false); // split by the session if need be
                case GgateAbi.BIO_FLUSH -> session.flush();
                default -> null;
            };
        } catch (RuntimeException | Error e) {
            reply = CompletableFuture.failedFuture(e);
        }
        if (reply == null) {
            answer(Errno.EOPNOTSUPP.intValue(), 0);
            return;
        }
        reply.whenComplete(this);
    }

    /** The reply: DONE with its data or its errno. Runs on the event loop, so nothing may escape. */
    @Override
    public void accept(Object value, Throwable failure) {
        ByteBuf data = value instanceof ByteBuf b ? b : null;
        ByteBuf copy = null;
        int error = 0;
        long address = 0;
        try {
            if (failure != null) {
                error = ErrnoMapping.toErrno(failure);
                if (seq != WARM_UP_SEQ) {
                    LOG.warning(device.name() + ": " + GgateWorker.bioName(command) + " of " + length + " bytes at " + offset
                            + " failed: " + cause(failure).getMessage());
                }
            } else if (data != null) {
                if (data.readableBytes() < length) {
                    throw new IllegalStateException("a read of " + length + " bytes returned " + data.readableBytes());
                }
                if (data.hasMemoryAddress() && data.nioBufferCount() == 1) {
                    address = data.memoryAddress() + data.readerIndex(); // the kernel copies from the reply itself
                } else {
                    // In pieces (a reply over several socket reads, or a read the session split): one copy.
                    copy = copyOrNull((int) length);
                    if (copy == null) {
                        // No direct memory for it: DONE with EAGAIN puts the bio back at the head of the
                        // kernel's queue to be taken again, rather than failing a read that would succeed.
                        error = Errno.EAGAIN.intValue();
                    } else {
                        data.getBytes(data.readerIndex(), copy, 0, (int) length);
                        address = copy.memoryAddress();
                    }
                }
            }
        } catch (RuntimeException | Error e) {
            LOG.log(Level.SEVERE, device.name() + ": completing " + GgateWorker.bioName(command) + " of " + length
                    + " bytes at " + offset + " failed", e);
            error = Errno.EIO.intValue();
            address = 0;
        }
        try {
            answer(error, address);
        } finally {
            release(data);
            release(copy);
        }
    }

    private ByteBuf copyOrNull(int size) {
        try {
            return PooledByteBufAllocator.DEFAULT.directBuffer(size, size);
        } catch (OutOfMemoryError e) {
            return null;
        }
    }

    /** DONE, then the request is no longer outstanding. */
    private void answer(int error, long address) {
        try {
            int errno = device.doneCall().done(seq, command, length, address, error);
            if (errno != 0 && !(device.stopping() && unitGone(errno))) {
                LOG.warning(device.name() + ": G_GATE_CMD_DONE failed: " + GgateException.describe(errno));
            }
        } catch (RuntimeException | Error e) {
            LOG.log(Level.SEVERE, device.name() + ": G_GATE_CMD_DONE failed", e);
            device.workerFailed(e);
        } finally {
            release(payload);
            payload = null;
            device.unreserve(reserved);
            device.requestAnswered();
        }
    }

    /** DONE's errno for a unit that is gone: its bios were failed by the kernel already. */
    static boolean unitGone(int errno) {
        return errno == Errno.ENOENT.intValue() || errno == Errno.ENXIO.intValue();
    }

    /** What failed: a stage built on the reply wraps it in a CompletionException. */
    private static Throwable cause(Throwable t) {
        return t instanceof java.util.concurrent.CompletionException && t.getCause() != null ? t.getCause() : t;
    }

    private static void release(ByteBuf b) {
        if (b != null) {
            b.release();
        }
    }
}
