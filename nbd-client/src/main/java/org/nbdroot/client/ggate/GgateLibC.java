package org.nbdroot.client.ggate;

import jnr.ffi.Pointer;
import jnr.ffi.annotations.SaveError;
import jnr.ffi.types.u_int64_t;

/**
 * The three C functions the binding calls, loaded through JNR from the library named by
 * {@code -Dnbd.ggate.libc} (default: the C library). Tests point it at an emulator of the
 * kernel side that exports the same symbols.
 */
public interface GgateLibC {
    @SaveError
    int open(String path, int flags);

    /** {@code ioctl(2)} takes its request as an unsigned long: 64 bits on LP64. */
    @SaveError
    int ioctl(int fd, @u_int64_t long request, Pointer argument);

    @SaveError
    int close(int fd);
}
