package org.nbdroot.client.ggate;

import org.nbdroot.client.daemon.ErrnoException;

/** A g_gate control ioctl failed; carries the platform's errno. */
public final class GgateException extends ErrnoException {
    public GgateException(String operation, int errno) {
        super(operation, errno);
    }

    public GgateException(String message) {
        super(message);
    }
}
