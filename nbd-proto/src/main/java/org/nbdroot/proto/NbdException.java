package org.nbdroot.proto;

import java.io.IOException;

/** Base of every failure the engine reports; the message is meant for a user to read. */
public class NbdException extends IOException {
    public NbdException(String message) {
        super(message);
    }

    public NbdException(String message, Throwable cause) {
        super(message, cause);
    }
}
