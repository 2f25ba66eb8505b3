package org.nbdroot.client.linuxnbd;

import jnr.ffi.annotations.In;
import jnr.ffi.annotations.Out;
import jnr.ffi.annotations.SaveError;
import jnr.ffi.types.size_t;
import jnr.ffi.types.ssize_t;
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
    int AF_NETLINK = 16;
    int SOCK_RAW = 3;
    int NETLINK_GENERIC = 16;
    int SOL_SOCKET = 1;
    int SO_RCVTIMEO = 20;
    int EINTR = 4;
    short POLLHUP = 0x10;
    short POLLRDHUP = 0x2000;

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

    @SaveError
    int socket(int domain, int type, int protocol);

    @SaveError
    int bind(int fd, @In byte[] address, int length);

    @SaveError
    int setsockopt(int fd, int level, int name, @In byte[] value, int length);

    @SaveError
    @ssize_t
    long send(int fd, @In byte[] buffer, @size_t long length, int flags);

    @SaveError
    @ssize_t
    long recv(int fd, @Out byte[] buffer, @size_t long length, int flags);

    /** {@code poll(2)} on an array of struct pollfd (int fd, short events, short revents). */
    @SaveError
    int poll(@In @Out byte[] fds, @u_int64_t long count, int timeoutMillis);
}
