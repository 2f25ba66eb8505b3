package org.nbdroot.proto;

import org.nbdroot.proto.wire.NbdError;

/** The server answered one request with an error; the connection stays usable. */
public class NbdServerErrorException extends NbdException {
    private final NbdError error;
    private final int code;

    public NbdServerErrorException(int code, String what, String serverMessage) {
        super(describe(code, what, serverMessage));
        this.code = code;
        this.error = NbdError.ofCode(code);
    }

    private static String describe(int code, String what, String serverMessage) {
        NbdError error = NbdError.ofCode(code);
        String text = what + " failed: " + error + " (" + error.description() + ")";
        if (error.code() != code) {
            text += ", server sent unknown error " + code;
        }
        if (serverMessage != null && !serverMessage.isEmpty()) {
            text += ": " + serverMessage;
        }
        return text;
    }

    /** The error, with unknown values mapped to EINVAL as the spec asks. */
    public NbdError error() {
        return error;
    }

    /** The raw value the server sent. */
    public int code() {
        return code;
    }
}
