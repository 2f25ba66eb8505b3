package org.nbdroot.client.ggate;

import static java.nio.charset.StandardCharsets.UTF_8;

import jnr.constants.platform.Errno;
import jnr.ffi.LastError;
import jnr.ffi.LibraryLoader;
import jnr.ffi.Memory;
import jnr.ffi.Pointer;
import jnr.ffi.Runtime;

/**
 * One open descriptor of the GEOM Gate control device and the ioctls on it. Each worker
 * thread opens its own, as a blocked START holds the descriptor it was called on.
 *
 * <p>{@code -Dnbd.ggate.libc} names the library providing open/ioctl/close (default: the C
 * library) and {@code -Dnbd.ggate.ctl} the control device (default /dev/ggctl).
 */
public final class GgateControl implements AutoCloseable {
    private static final int O_RDWR = 2; // the same on FreeBSD and Linux

    private static volatile GgateLibC libc;

    private final GgateLibC lib;
    private final Runtime runtime;
    private final int fd;

    private GgateControl(GgateLibC lib, int fd) {
        this.lib = lib;
        this.runtime = Runtime.getRuntime(lib);
        this.fd = fd;
    }

    /** The library the binding calls, loaded once. */
    public static GgateLibC library() {
        GgateLibC l = libc;
        if (l == null) {
            synchronized (GgateControl.class) {
                if (libc == null) {
                    libc = LibraryLoader.create(GgateLibC.class).load(System.getProperty("nbd.ggate.libc", "c"));
                }
                l = libc;
            }
        }
        return l;
    }

    public static String controlDevicePath() {
        return System.getProperty("nbd.ggate.ctl", GgateAbi.CONTROL_DEVICE);
    }

    public static GgateControl open() throws GgateException {
        GgateLibC lib = library();
        String path = controlDevicePath();
        int fd = lib.open(path, O_RDWR);
        if (fd < 0) {
            int errno = LastError.getLastError(Runtime.getRuntime(lib));
            String hint = errno == Errno.ENOENT.intValue() ? " (is the geom_gate module loaded? kldload geom_gate)" : "";
            throw new GgateException("cannot open " + path + ": " + GgateException.describe(errno) + hint);
        }
        return new GgateControl(lib, fd);
    }

    public Runtime runtime() {
        return runtime;
    }

    /** A zeroed struct of {@code size} bytes carrying G_GATE_VERSION. */
    public Pointer struct(int size) {
        Pointer p = Memory.allocateDirect(runtime, size, true);
        p.putInt(0, GgateAbi.VERSION);
        return p;
    }

    /** Calls ioctl; returns 0, or the errno when it failed. */
    public int ioctl(long request, Pointer argument) {
        int rc = lib.ioctl(fd, request, argument);
        return rc == 0 ? 0 : LastError.getLastError(runtime);
    }

    void call(String name, long request, Pointer argument) throws GgateException {
        int errno = ioctl(request, argument);
        if (errno != 0) {
            throw new GgateException(name, errno);
        }
    }

    /**
     * G_GATE_CMD_CREATE: makes a provider {@code ggate<unit>} and returns its unit.
     *
     * @param unit {@link GgateAbi#UNIT_AUTO} for the first free one
     * @param timeout seconds after which the kernel fails a request on its own; 0 for never
     */
    public int create(int unit, long mediaSize, int sectorSize, int flags, int maxCount, int timeout, String info)
            throws GgateException {
        Pointer s = struct(GgateAbi.CREATE_SIZE);
        s.putLong(GgateAbi.Create.MEDIASIZE, mediaSize);
        s.putInt(GgateAbi.Create.SECTORSIZE, sectorSize);
        s.putInt(GgateAbi.Create.FLAGS, flags);
        s.putInt(GgateAbi.Create.MAXCOUNT, maxCount);
        s.putInt(GgateAbi.Create.TIMEOUT, timeout);
        putString(s, GgateAbi.Create.INFO, info, GgateAbi.INFOSIZE);
        s.putInt(GgateAbi.Create.UNIT, unit);
        call("G_GATE_CMD_CREATE", GgateAbi.CMD_CREATE, s);
        return s.getInt(GgateAbi.Create.UNIT);
    }

    /** G_GATE_CMD_MODIFY with GG_MODIFY_MEDIASIZE: the provider grows or shrinks. */
    public void resize(int unit, long mediaSize) throws GgateException {
        Pointer s = struct(GgateAbi.MODIFY_SIZE);
        s.putInt(GgateAbi.Modify.UNIT, unit);
        s.putInt(GgateAbi.Modify.MODIFY, GgateAbi.MODIFY_MEDIASIZE);
        s.putLong(GgateAbi.Modify.MEDIASIZE, mediaSize);
        call("G_GATE_CMD_MODIFY", GgateAbi.CMD_MODIFY, s);
    }

    /** G_GATE_CMD_DESTROY; with force, outstanding requests fail with ENXIO. */
    public void destroy(int unit, boolean force) throws GgateException {
        Pointer s = struct(GgateAbi.DESTROY_SIZE);
        s.putInt(GgateAbi.Destroy.UNIT, unit);
        s.putInt(GgateAbi.Destroy.FORCE, force ? 1 : 0);
        call("G_GATE_CMD_DESTROY", GgateAbi.CMD_DESTROY, s);
    }

    /** G_GATE_CMD_CANCEL: requests taken but not done go back to the queue; seq 0 means all of them. */
    public void cancel(int unit, long seq) throws GgateException {
        Pointer s = struct(GgateAbi.CANCEL_SIZE);
        s.putInt(GgateAbi.Cancel.UNIT, unit);
        s.putLong(GgateAbi.Cancel.SEQ, seq);
        call("G_GATE_CMD_CANCEL", GgateAbi.CMD_CANCEL, s);
    }

    private static void putString(Pointer s, int offset, String value, int size) {
        byte[] bytes = value.getBytes(UTF_8);
        int n = Math.min(bytes.length, size - 1); // the kernel wants it NUL-terminated
        s.put(offset, bytes, 0, n);
        s.putByte(offset + n, (byte) 0);
    }

    @Override
    public void close() {
        lib.close(fd);
    }
}
