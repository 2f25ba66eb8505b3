package org.nbdroot.client.linuxnbd;

import jnr.constants.platform.Errno;

/** A call on the Linux NBD driver failed; carries the errno. */
public final class LinuxNbdException extends java.io.IOException {
    private final int errno;

    public LinuxNbdException(String operation, int errno) {
        super(operation + " failed: " + describe(errno));
        this.errno = errno;
    }

    public LinuxNbdException(String message) {
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
