package org.nbdroot.client.linuxnbd;

import jnr.constants.platform.Errno;
import jnr.ffi.LastError;
import jnr.ffi.LibraryLoader;
import jnr.ffi.Runtime;

/**
 * One open descriptor of {@code /dev/nbdN} and the driver's ioctls on it (they need
 * CAP_SYS_ADMIN). {@code -Dnbd.linux.dev} names the directory of the device nodes
 * (default /dev).
 */
public final class NbdDeviceControl implements AutoCloseable {
    private static volatile LinuxLibC libc;

    private final LinuxLibC lib;
    private final Runtime runtime;
    private final String path;
    private final int fd;

    private NbdDeviceControl(LinuxLibC lib, String path, int fd) {
        this.lib = lib;
        this.runtime = Runtime.getRuntime(lib);
        this.path = path;
        this.fd = fd;
    }

    /** The C library, loaded once. */
    public static LinuxLibC library() {
        LinuxLibC l = libc;
        if (l == null) {
            synchronized (NbdDeviceControl.class) {
                if (libc == null) {
                    libc = LibraryLoader.create(LinuxLibC.class).load("c");
                }
                l = libc;
            }
        }
        return l;
    }

    public static String devicePath(int index) {
        return System.getProperty("nbd.linux.dev", "/dev") + "/" + LinuxNbdAbi.DEVICE_PREFIX + index;
    }

    public static NbdDeviceControl open(int index) throws LinuxNbdException {
        return open(index, LinuxLibC.O_RDWR);
    }

    private static NbdDeviceControl open(int index, int flags) throws LinuxNbdException {
        LinuxLibC lib = library();
        String path = devicePath(index);
        int fd = lib.open(path, flags | LinuxLibC.O_CLOEXEC);
        if (fd < 0) {
            int errno = LastError.getLastError(Runtime.getRuntime(lib));
            String hint = errno == Errno.ENOENT.intValue() ? " (is the nbd module loaded? modprobe nbd)" : "";
            throw new LinuxNbdException("cannot open " + path + ": " + LinuxNbdException.describe(errno) + hint);
        }
        return new NbdDeviceControl(lib, path, fd);
    }

    /**
     * Whether something holds the device exclusively: a mounted filesystem, a device-mapper
     * or md member, a program that opened it with O_EXCL. (Plain opens do not show.)
     */
    public static boolean heldExclusively(int index) throws LinuxNbdException {
        LinuxLibC lib = library();
        int fd = lib.open(devicePath(index), LinuxLibC.O_RDONLY | LinuxLibC.O_EXCL | LinuxLibC.O_CLOEXEC);
        if (fd >= 0) {
            lib.close(fd);
            return false;
        }
        int errno = LastError.getLastError(Runtime.getRuntime(lib));
        if (errno == Errno.EBUSY.intValue()) {
            return true;
        }
        throw new LinuxNbdException("cannot open " + devicePath(index) + ": " + LinuxNbdException.describe(errno));
    }

    public String path() {
        return path;
    }

    /** Calls ioctl; returns 0, or the errno when it failed. */
    public int ioctl(long request, long argument) {
        int rc = lib.ioctl(fd, request, argument);
        return rc == 0 ? 0 : LastError.getLastError(runtime);
    }

    void call(String name, long request, long argument) throws LinuxNbdException {
        int errno = ioctl(request, argument);
        if (errno != 0) {
            throw new LinuxNbdException(name + " on " + path, errno);
        }
    }

    /** Sets block size, size, flags and timeout before the device starts. */
    public void configure(int blockSize, long size, int flags, int timeoutSeconds) throws LinuxNbdException {
        call("NBD_SET_BLKSIZE", LinuxNbdAbi.SET_BLKSIZE, blockSize);
        call("NBD_SET_SIZE", LinuxNbdAbi.SET_SIZE, size);
        // 0: the kernel never fails a request for being slow (it logs "Possible stuck
        // request" every 30 s and waits): the daemon reconnects underneath.
        call("NBD_SET_TIMEOUT", LinuxNbdAbi.SET_TIMEOUT, timeoutSeconds);
        call("NBD_SET_FLAGS", LinuxNbdAbi.SET_FLAGS, flags);
    }

    /** NBD_SET_SIZE on a running device: its capacity changes at once (set_capacity_and_notify). */
    public void resize(long size) throws LinuxNbdException {
        call("NBD_SET_SIZE", LinuxNbdAbi.SET_SIZE, size);
    }

    /** NBD_DISCONNECT: the kernel sends NBD_CMD_DISC on its socket; the daemon's end then closes. */
    public void disconnect() throws LinuxNbdException {
        call("NBD_DISCONNECT", LinuxNbdAbi.DISCONNECT, 0);
    }

    /** NBD_CLEAR_SOCK: shuts the kernel's sockets and fails what is still queued. */
    public void clearSocket() throws LinuxNbdException {
        call("NBD_CLEAR_SOCK", LinuxNbdAbi.CLEAR_SOCK, 0);
    }

    /** Writes back the device's page cache and flushes it (fsync on a block device). */
    public void fsync() throws LinuxNbdException {
        if (lib.fsync(fd) != 0) {
            throw new LinuxNbdException("fsync of " + path, LastError.getLastError(runtime));
        }
    }

    /** A connected pair of Unix stream sockets, close-on-exec: {kernel's end, daemon's end}. */
    public static int[] socketPair() throws LinuxNbdException {
        LinuxLibC lib = library();
        int[] fds = new int[2];
        if (lib.socketpair(LinuxLibC.AF_UNIX, LinuxLibC.SOCK_STREAM | LinuxLibC.SOCK_CLOEXEC, 0, fds) != 0) {
            throw new LinuxNbdException("socketpair", LastError.getLastError(Runtime.getRuntime(lib)));
        }
        return fds;
    }

    /** Netty's epoll loop reads until EAGAIN: its descriptor must not block. */
    public static void setNonBlocking(int fd) throws LinuxNbdException {
        LinuxLibC lib = library();
        int flags = lib.fcntl(fd, LinuxLibC.F_GETFL, 0);
        if (flags < 0 || lib.fcntl(fd, LinuxLibC.F_SETFL, flags | LinuxLibC.O_NONBLOCK) != 0) {
            throw new LinuxNbdException("fcntl(O_NONBLOCK)", LastError.getLastError(Runtime.getRuntime(lib)));
        }
    }

    /** Whether the other end of a stream socket has gone (poll: POLLHUP or POLLRDHUP), without waiting. */
    public static boolean peerHungUp(int fd) throws LinuxNbdException {
        LinuxLibC lib = library();
        java.nio.ByteBuffer pollfd = java.nio.ByteBuffer.allocate(8).order(java.nio.ByteOrder.nativeOrder());
        pollfd.putInt(0, fd).putShort(4, (short) (LinuxLibC.POLLHUP | LinuxLibC.POLLRDHUP));
        byte[] bytes = pollfd.array();
        if (lib.poll(bytes, 1, 0) < 0) {
            throw new LinuxNbdException("poll", LastError.getLastError(Runtime.getRuntime(lib)));
        }
        short revents = java.nio.ByteBuffer.wrap(bytes).order(java.nio.ByteOrder.nativeOrder()).getShort(6);
        return (revents & (LinuxLibC.POLLHUP | LinuxLibC.POLLRDHUP)) != 0;
    }

    public static void closeDescriptor(int fd) {
        library().close(fd);
    }

    @Override
    public void close() {
        lib.close(fd);
    }
}
