package org.nbdroot.proto;

/**
 * The caller asked for something the export did not advertise (a command, a flag, a write
 * to a read-only export). Nothing was sent: the protocol forbids sending it.
 */
public class NbdUnsupportedException extends NbdException {
    public NbdUnsupportedException(String message) {
        super(message);
    }
}
