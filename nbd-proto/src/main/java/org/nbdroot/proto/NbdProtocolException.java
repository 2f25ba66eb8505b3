package org.nbdroot.proto;

/**
 * The server broke the protocol. The connection it came on is closed and every request on it
 * fails with this exception; nothing it sent is handed up as data.
 */
public class NbdProtocolException extends NbdException {
    public NbdProtocolException(String message) {
        super(message);
    }
}
