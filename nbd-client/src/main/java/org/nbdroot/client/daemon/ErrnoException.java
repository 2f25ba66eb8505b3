package org.nbdroot.client.daemon;

import jnr.constants.platform.Errno;

/** A call into a kernel device (an ioctl, an open) failed; carries the platform's errno. */
public class ErrnoException extends java.io.IOException {
    private final int errno;

    public ErrnoException(String operation, int errno) {
        super(operation + " failed: " + describe(errno));
        this.errno = errno;
    }

    public ErrnoException(String message) {
        super(message);
        this.errno = 0;
    }

    public int errno() {
        return errno;
    }

    public boolean is(Errno e) {
        return errno == e.intValue();
    }

    public static String describe(int errno) {
        Errno e = Errno.valueOf(errno);
        return e == null || e == Errno.__UNKNOWN_CONSTANT__ ? "errno " + errno : e.name() + " (" + e.description() + ")";
    }
}
