package org.nbdroot.client.ggate;

import jnr.ffi.Pointer;

/**
 * G_GATE_CMD_DONE for one unit, callable from any thread at once: the replies complete on
 * Netty's event loops (and a request that fails at once, on the START thread).
 *
 * <p>Every caller shares one control descriptor of its own, never a START thread's: on
 * FreeBSD concurrent ioctls on one descriptor are fine (ggatec's receiver thread calls DONE
 * on the descriptor its sender is blocked in START on), and the emulator serves each call on
 * a connection of its own. The ioctl struct is per thread, as the kernel reads and writes it.
 */
final class GgateDone implements AutoCloseable {
    private final GgateControl control;
    private final int unit;
    private final ThreadLocal<Pointer> structs = new PerThreadStruct();

    GgateDone(GgateControl control, int unit) {
        this.control = control;
        this.unit = unit;
    }

    /** A named class rather than withInitial's lambda: nothing to spin or load once serving. */
    private final class PerThreadStruct extends ThreadLocal<Pointer> {
        @Override
        protected Pointer initialValue() {
            return control.struct(GgateAbi.IO_SIZE);
        }
    }

    /**
     * Completes bio {@code seq} with {@code error} (0: success; for a READ the kernel then
     * copies its length from {@code data}). Returns 0 or the ioctl's errno.
     */
    int done(long seq, int command, long length, long data, int error) {
        Pointer io = structs.get();
        io.putInt(GgateAbi.Io.UNIT, unit);
        io.putLong(GgateAbi.Io.SEQ, seq);
        io.putInt(GgateAbi.Io.CMD, command);
        io.putLong(GgateAbi.Io.LENGTH, length);
        io.putLong(GgateAbi.Io.DATA, data);
        io.putInt(GgateAbi.Io.ERROR, error);
        return control.ioctl(GgateAbi.CMD_DONE, io);
    }

    @Override
    public void close() {
        control.close();
    }
}
