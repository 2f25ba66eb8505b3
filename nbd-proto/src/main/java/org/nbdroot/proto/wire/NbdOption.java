package org.nbdroot.proto.wire;

/** Handshake options ({@code NBD_OPT_*}). */
public enum NbdOption {
    EXPORT_NAME(1),
    ABORT(2),
    LIST(3),
    STARTTLS(5),
    INFO(6),
    GO(7),
    STRUCTURED_REPLY(8),
    LIST_META_CONTEXT(9),
    SET_META_CONTEXT(10),
    EXTENDED_HEADERS(11);

    private final int code;

    NbdOption(int code) {
        this.code = code;
    }

    public int code() {
        return code;
    }

    public String specName() {
        return "NBD_OPT_" + name();
    }

    public static String nameOf(int code) {
        for (NbdOption option : values()) {
            if (option.code == code) {
                return option.specName();
            }
        }
        return "option " + code;
    }
}
