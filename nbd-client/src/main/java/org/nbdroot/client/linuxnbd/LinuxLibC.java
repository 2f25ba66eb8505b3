package org.nbdroot.client.linuxnbd;

import jnr.ffi.annotations.Out;
import jnr.ffi.annotations.SaveError;
import jnr.ffi.types.u_int64_t;

/** The C library functions the Linux NBD bridge calls, through JNR. */
public interface LinuxLibC {
    int O_RDONLY = 0;
    int O_RDWR = 2;
    int O_EXCL = 0200;
    int O_NONBLOCK = 04000;
    int O_CLOEXEC = 02000000;
    int AF_UNIX = 1;
    int SOCK_STREAM = 1;
    int SOCK_CLOEXEC = 02000000;
    int F_GETFL = 3;
    int F_SETFL = 4;

    @SaveError
    int open(String path, int flags);

    @SaveError
    int close(int fd);

    /** {@code ioctl(2)} with an integer argument; both are unsigned long (64 bits) to the kernel. */
    @SaveError
    int ioctl(int fd, @u_int64_t long request, @u_int64_t long argument);

    @SaveError
    int fsync(int fd);

    @SaveError
    int fcntl(int fd, int command, int argument);

    @SaveError
    int socketpair(int domain, int type, int protocol, @Out int[] fds);
}
