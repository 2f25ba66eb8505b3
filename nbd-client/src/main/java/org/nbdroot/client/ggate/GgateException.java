package org.nbdroot.client.ggate;

import jnr.constants.platform.Errno;

/** A g_gate control ioctl failed; carries the platform's errno. */
public final class GgateException extends java.io.IOException {
    private final int errno;

    public GgateException(String operation, int errno) {
        super(operation + " failed: " + describe(errno));
        this.errno = errno;
    }

    public GgateException(String message) {
        super(message);
        this.errno = 0;
    }

    public int errno() {
        return errno;
    }

    public boolean is(Errno e) {
        return errno == e.intValue();
    }

    static String describe(int errno) {
        Errno e = Errno.valueOf(errno);
        return e == null || e == Errno.__UNKNOWN_CONSTANT__ ? "errno " + errno : e.name() + " (" + e.description() + ")";
    }
}
