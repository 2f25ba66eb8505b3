package org.nbdroot.proto.wire;

/** Transmission commands ({@code NBD_CMD_*}). */
public enum Command {
    READ(0),
    WRITE(1),
    DISC(2),
    FLUSH(3),
    TRIM(4),
    CACHE(5),
    WRITE_ZEROES(6),
    BLOCK_STATUS(7);

    private static final Command[] BY_CODE = values();

    private final int code;

    Command(int code) {
        this.code = code;
    }

    public int code() {
        return code;
    }

    /** The command with this wire code, or null when the code is not one we send. */
    public static Command ofCode(int code) {
        return code >= 0 && code < BY_CODE.length ? BY_CODE[code] : null;
    }
}
