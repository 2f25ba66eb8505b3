package org.nbdroot.proto.wire;

/** Reply types of the option haggling phase ({@code NBD_REP_*}), with a user-facing text for the errors. */
public enum OptionReplyType {
    ACK(1, null),
    SERVER(2, null),
    INFO(3, null),
    META_CONTEXT(4, null),
    ERR_UNSUP(err(1), "the server does not support this option"),
    ERR_POLICY(err(2), "the server's policy forbids it"),
    ERR_INVALID(err(3), "the server found the request invalid"),
    ERR_PLATFORM(err(4), "the server's platform cannot do it"),
    ERR_TLS_REQD(err(5), "the server requires TLS first"),
    ERR_UNKNOWN(err(6), "no such export"),
    ERR_SHUTDOWN(err(7), "the server is shutting down"),
    ERR_BLOCK_SIZE_REQD(err(8), "the server requires the client to honour block sizes"),
    ERR_TOO_BIG(err(9), "the request or reply is too big"),
    ERR_EXT_HEADER_REQD(err(10), "the server requires extended headers");

    private static int err(int n) {
        return (1 << 31) + n;
    }

    private final int code;
    private final String explanation;

    OptionReplyType(int code, String explanation) {
        this.code = code;
        this.explanation = explanation;
    }

    public int code() {
        return code;
    }

    public boolean isError() {
        return isError(code);
    }

    public String specName() {
        return "NBD_REP_" + name();
    }

    public String explanation() {
        return explanation;
    }

    public static boolean isError(int code) {
        return code < 0;
    }

    /** The reply type with this code, or null when the code is unknown. */
    public static OptionReplyType ofCode(int code) {
        for (OptionReplyType type : values()) {
            if (type.code == code) {
                return type;
            }
        }
        return null;
    }
}
