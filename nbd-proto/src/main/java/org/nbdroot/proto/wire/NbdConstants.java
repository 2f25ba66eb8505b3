package org.nbdroot.proto.wire;

/**
 * Numbers of the NBD protocol, named as {@code doc/proto.md} names them. Values that form a
 * set the engine needs to name (commands, flags, option and reply types, errors) live in
 * their own enums next to this class.
 */
public final class NbdConstants {
    private NbdConstants() {}

    // Handshake.
    public static final long NBDMAGIC = 0x4e42444d41474943L;
    public static final long IHAVEOPT = 0x49484156454F5054L;
    public static final long OLDSTYLE_MAGIC = 0x00420281861253L;
    public static final long OPTION_REPLY_MAGIC = 0x3e889045565a9L;

    public static final int FLAG_FIXED_NEWSTYLE = 1 << 0;
    public static final int FLAG_NO_ZEROES = 1 << 1;
    public static final int FLAG_C_FIXED_NEWSTYLE = 1 << 0;
    public static final int FLAG_C_NO_ZEROES = 1 << 1;

    public static final int INFO_EXPORT = 0;
    public static final int INFO_NAME = 1;
    public static final int INFO_DESCRIPTION = 2;
    public static final int INFO_BLOCK_SIZE = 3;

    /** The spec limits every string (names, descriptions, messages) to 4096 bytes. */
    public static final int MAX_STRING_LENGTH = 4096;

    // Transmission.
    public static final int REQUEST_MAGIC = 0x25609513;
    public static final int SIMPLE_REPLY_MAGIC = 0x67446698;
    public static final int STRUCTURED_REPLY_MAGIC = 0x668e33ef;
    /** With NBD_OPT_EXTENDED_HEADERS every request and every reply has a 32-byte header of its own magic. */
    public static final int EXTENDED_REQUEST_MAGIC = 0x21e41c71;
    public static final int EXTENDED_REPLY_MAGIC = 0x6e8a278c;
    public static final int REQUEST_HEADER_LENGTH = 28;
    public static final int EXTENDED_REQUEST_HEADER_LENGTH = 32;
    public static final int SIMPLE_REPLY_HEADER_LENGTH = 16;
    public static final int STRUCTURED_REPLY_HEADER_LENGTH = 20;
    public static final int EXTENDED_REPLY_HEADER_LENGTH = 32;

    public static final int REPLY_FLAG_DONE = 1 << 0;

    public static final int REPLY_TYPE_NONE = 0;
    public static final int REPLY_TYPE_OFFSET_DATA = 1;
    public static final int REPLY_TYPE_OFFSET_HOLE = 2;
    public static final int REPLY_TYPE_BLOCK_STATUS = 5;
    /** Block status with 64-bit extent lengths and status: the only kind allowed once extended headers are on. */
    public static final int REPLY_TYPE_BLOCK_STATUS_EXT = 6;
    public static final int REPLY_TYPE_ERROR = (1 << 15) + 1;
    public static final int REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;

    /** Chunk types with bit 15 set are errors; clients must accept unknown ones as errors. */
    public static boolean isErrorReplyType(int type) {
        return (type & (1 << 15)) != 0;
    }

    /** The meta context that reports allocation: holes and zeroes. */
    public static final String BASE_ALLOCATION = "base:allocation";
    public static final int STATE_HOLE = 1 << 0;
    public static final int STATE_ZERO = 1 << 1;

    public static final int DEFAULT_PORT = 10809;

    /** What a client should assume when the server states no block sizes (proto.md, "Block size constraints"). */
    public static final int DEFAULT_MINIMUM_BLOCK = 1;
    public static final int DEFAULT_PREFERRED_BLOCK = 4096;
    public static final int DEFAULT_MAXIMUM_PAYLOAD = 32 * 1024 * 1024;
}
