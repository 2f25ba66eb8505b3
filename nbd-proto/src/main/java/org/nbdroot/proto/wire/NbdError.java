package org.nbdroot.proto.wire;

/**
 * Error values a server puts in a reply. They are the Linux errno numbers by definition of
 * the protocol, whatever platform either side runs on; a device bridge maps them to its own
 * platform's errno.
 */
public enum NbdError {
    EPERM(1, "operation not permitted"),
    EIO(5, "input/output error"),
    ENOMEM(12, "cannot allocate memory"),
    EINVAL(22, "invalid argument"),
    ENOSPC(28, "no space left on device"),
    EOVERFLOW(75, "value too large"),
    ENOTSUP(95, "operation not supported"),
    ESHUTDOWN(108, "server is shutting down");

    private final int code;
    private final String description;

    NbdError(int code, String description) {
        this.code = code;
        this.description = description;
    }

    public int code() {
        return code;
    }

    public String description() {
        return description;
    }

    /** The spec tells clients to treat an unknown error value as EINVAL. */
    public static NbdError ofCode(int code) {
        for (NbdError error : values()) {
            if (error.code == code) {
                return error;
            }
        }
        return EINVAL;
    }
}
