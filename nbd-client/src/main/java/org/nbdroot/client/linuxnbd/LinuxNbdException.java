package org.nbdroot.client.linuxnbd;

import org.nbdroot.client.daemon.ErrnoException;

/** A call on the Linux NBD driver failed; carries the errno. */
public final class LinuxNbdException extends ErrnoException {
    public LinuxNbdException(String operation, int errno) {
        super(operation, errno);
    }

    public LinuxNbdException(String message) {
        super(message);
    }
}
