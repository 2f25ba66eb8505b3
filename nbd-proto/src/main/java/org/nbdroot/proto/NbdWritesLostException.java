package org.nbdroot.proto;

/**
 * A FLUSH that the server may well have answered, failed all the same: writes acknowledged
 * earlier may be missing on the server (a replay it refused, a FLUSH of the session's own it
 * failed...). The callers who relied on those writes must hear of it, as Linux reports a page
 * it could not write back at the next fsync.
 */
public class NbdWritesLostException extends NbdException {
    public static final String PREFIX = "writes acknowledged before this flush may be missing on the server: ";

    public NbdWritesLostException(String why) {
        super(PREFIX + why);
    }
}
