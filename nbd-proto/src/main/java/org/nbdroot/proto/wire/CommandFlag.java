package org.nbdroot.proto.wire;

/** Flags of a transmission request ({@code NBD_CMD_FLAG_*}). */
public final class CommandFlag {
    private CommandFlag() {}

    public static final int FUA = 1 << 0;
    public static final int NO_HOLE = 1 << 1;
    public static final int DF = 1 << 2;
    public static final int REQ_ONE = 1 << 3;
    public static final int FAST_ZERO = 1 << 4;
    /** Extended headers only: the length field is a payload length (WRITE must set it), not an effect length. */
    public static final int PAYLOAD_LEN = 1 << 5;
}
