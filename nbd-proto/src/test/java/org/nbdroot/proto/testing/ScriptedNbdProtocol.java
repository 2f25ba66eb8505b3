package org.nbdroot.proto.testing;

/**
 * The numbers of the NBD protocol as {@code doc/proto.md} of NetworkBlockDevice/nbd names them,
 * written out again for the test server.
 *
 * <p>Deliberately a copy: the scripted server is an oracle for the client engine, so it must not
 * share the engine's constants. A wrong number in the engine then shows up as a failing test
 * instead of being agreed on by both ends.
 */
public final class ScriptedNbdProtocol {
    private ScriptedNbdProtocol() {}

    // Handshake magics.
    public static final long NBDMAGIC = 0x4e42444d41474943L; // "NBDMAGIC", also INIT_PASSWD
    public static final long IHAVEOPT = 0x49484156454F5054L; // "IHAVEOPT"
    public static final long CLISERV_MAGIC = 0x00420281861253L; // oldstyle greeting
    public static final long NBD_REP_MAGIC = 0x3e889045565a9L; // option reply magic

    // Handshake flags (server, 16 bits) and client flags (32 bits).
    public static final int NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
    public static final int NBD_FLAG_NO_ZEROES = 1 << 1;
    public static final int NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
    public static final int NBD_FLAG_C_NO_ZEROES = 1 << 1;

    // Transmission flags (16 bits).
    public static final int NBD_FLAG_HAS_FLAGS = 1 << 0;
    public static final int NBD_FLAG_READ_ONLY = 1 << 1;
    public static final int NBD_FLAG_SEND_FLUSH = 1 << 2;
    public static final int NBD_FLAG_SEND_FUA = 1 << 3;
    public static final int NBD_FLAG_ROTATIONAL = 1 << 4;
    public static final int NBD_FLAG_SEND_TRIM = 1 << 5;
    public static final int NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
    public static final int NBD_FLAG_SEND_DF = 1 << 7;
    public static final int NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
    public static final int NBD_FLAG_SEND_RESIZE = 1 << 9;
    public static final int NBD_FLAG_SEND_CACHE = 1 << 10;
    public static final int NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

    // Options.
    public static final int NBD_OPT_EXPORT_NAME = 1;
    public static final int NBD_OPT_ABORT = 2;
    public static final int NBD_OPT_LIST = 3;
    public static final int NBD_OPT_PEEK_EXPORT = 4;
    public static final int NBD_OPT_STARTTLS = 5;
    public static final int NBD_OPT_INFO = 6;
    public static final int NBD_OPT_GO = 7;
    public static final int NBD_OPT_STRUCTURED_REPLY = 8;
    // Early drafts numbered these 10 and 11 (with NBD_OPT_BLOCK_SIZE at 9); the merged spec uses 9 and 10.
    public static final int NBD_OPT_LIST_META_CONTEXT = 9;
    public static final int NBD_OPT_SET_META_CONTEXT = 10;
    public static final int NBD_OPT_EXTENDED_HEADERS = 11;

    // Option reply types; errors have bit 31 set.
    public static final int NBD_REP_ACK = 1;
    public static final int NBD_REP_SERVER = 2;
    public static final int NBD_REP_INFO = 3;
    public static final int NBD_REP_META_CONTEXT = 4;
    public static final int NBD_REP_FLAG_ERROR = 1 << 31;
    public static final int NBD_REP_ERR_UNSUP = NBD_REP_FLAG_ERROR + 1;
    public static final int NBD_REP_ERR_POLICY = NBD_REP_FLAG_ERROR + 2;
    public static final int NBD_REP_ERR_INVALID = NBD_REP_FLAG_ERROR + 3;
    public static final int NBD_REP_ERR_PLATFORM = NBD_REP_FLAG_ERROR + 4;
    public static final int NBD_REP_ERR_TLS_REQD = NBD_REP_FLAG_ERROR + 5;
    public static final int NBD_REP_ERR_UNKNOWN = NBD_REP_FLAG_ERROR + 6;
    public static final int NBD_REP_ERR_SHUTDOWN = NBD_REP_FLAG_ERROR + 7;
    public static final int NBD_REP_ERR_BLOCK_SIZE_REQD = NBD_REP_FLAG_ERROR + 8;
    public static final int NBD_REP_ERR_TOO_BIG = NBD_REP_FLAG_ERROR + 9;
    public static final int NBD_REP_ERR_EXT_HEADER_REQD = NBD_REP_FLAG_ERROR + 10;

    // NBD_REP_INFO information types.
    public static final int NBD_INFO_EXPORT = 0;
    public static final int NBD_INFO_NAME = 1;
    public static final int NBD_INFO_DESCRIPTION = 2;
    public static final int NBD_INFO_BLOCK_SIZE = 3;

    // Transmission: requests.
    public static final int NBD_REQUEST_MAGIC = 0x25609513;
    public static final int REQUEST_HEADER_LENGTH = 28;
    /** With NBD_OPT_EXTENDED_HEADERS: 32-byte requests, a 64-bit length. */
    public static final int NBD_EXTENDED_REQUEST_MAGIC = 0x21e41c71;

    public static final int NBD_CMD_READ = 0;
    public static final int NBD_CMD_WRITE = 1;
    public static final int NBD_CMD_DISC = 2;
    public static final int NBD_CMD_FLUSH = 3;
    public static final int NBD_CMD_TRIM = 4;
    public static final int NBD_CMD_CACHE = 5;
    public static final int NBD_CMD_WRITE_ZEROES = 6;
    public static final int NBD_CMD_BLOCK_STATUS = 7;

    public static final int NBD_CMD_FLAG_FUA = 1 << 0;
    public static final int NBD_CMD_FLAG_NO_HOLE = 1 << 1;
    public static final int NBD_CMD_FLAG_DF = 1 << 2;
    public static final int NBD_CMD_FLAG_REQ_ONE = 1 << 3;
    public static final int NBD_CMD_FLAG_FAST_ZERO = 1 << 4;
    /** Extended headers only: the length is a payload length; MUST be set on NBD_CMD_WRITE. */
    public static final int NBD_CMD_FLAG_PAYLOAD_LEN = 1 << 5;

    // Transmission: replies.
    public static final int NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
    public static final int NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;
    public static final int SIMPLE_REPLY_HEADER_LENGTH = 16;
    public static final int STRUCTURED_REPLY_HEADER_LENGTH = 20;
    /** With NBD_OPT_EXTENDED_HEADERS: every reply, 32 bytes (magic, flags, type, cookie, offset, 64-bit length). */
    public static final int NBD_EXTENDED_REPLY_MAGIC = 0x6e8a278c;
    public static final int EXTENDED_REPLY_HEADER_LENGTH = 32;

    public static final int NBD_REPLY_FLAG_DONE = 1 << 0;

    public static final int NBD_REPLY_TYPE_NONE = 0;
    public static final int NBD_REPLY_TYPE_OFFSET_DATA = 1;
    public static final int NBD_REPLY_TYPE_OFFSET_HOLE = 2;
    public static final int NBD_REPLY_TYPE_BLOCK_STATUS = 5;
    public static final int NBD_REPLY_TYPE_BLOCK_STATUS_EXT = 6;
    public static final int NBD_REPLY_TYPE_ERROR = (1 << 15) + 1;
    public static final int NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;

    // base:allocation status flags.
    public static final String BASE_ALLOCATION = "base:allocation";
    public static final int NBD_STATE_HOLE = 1 << 0;
    public static final int NBD_STATE_ZERO = 1 << 1;

    // Errors, as sent in the error field of replies and error chunks.
    public static final int NBD_EPERM = 1;
    public static final int NBD_EIO = 5;
    public static final int NBD_ENOMEM = 12;
    public static final int NBD_EINVAL = 22;
    public static final int NBD_ENOSPC = 28;
    public static final int NBD_EOVERFLOW = 75;
    public static final int NBD_ENOTSUP = 95;
    public static final int NBD_ESHUTDOWN = 108;

    /** Every string in the protocol (names, descriptions, messages) MUST be at most this long. */
    public static final int MAX_STRING_LENGTH = 4096;

    /** Block size defaults a server should support when none were advertised. */
    public static final int DEFAULT_MINIMUM_BLOCK_SIZE = 1;
    public static final int DEFAULT_PREFERRED_BLOCK_SIZE = 4096;
    public static final long NO_MAXIMUM_BLOCK_SIZE = 0xffffffffL;

    public static String commandName(int type) {
        return switch (type) {
            case NBD_CMD_READ -> "NBD_CMD_READ";
            case NBD_CMD_WRITE -> "NBD_CMD_WRITE";
            case NBD_CMD_DISC -> "NBD_CMD_DISC";
            case NBD_CMD_FLUSH -> "NBD_CMD_FLUSH";
            case NBD_CMD_TRIM -> "NBD_CMD_TRIM";
            case NBD_CMD_CACHE -> "NBD_CMD_CACHE";
            case NBD_CMD_WRITE_ZEROES -> "NBD_CMD_WRITE_ZEROES";
            case NBD_CMD_BLOCK_STATUS -> "NBD_CMD_BLOCK_STATUS";
            default -> "command " + type;
        };
    }

    public static String optionName(int option) {
        return switch (option) {
            case NBD_OPT_EXPORT_NAME -> "NBD_OPT_EXPORT_NAME";
            case NBD_OPT_ABORT -> "NBD_OPT_ABORT";
            case NBD_OPT_LIST -> "NBD_OPT_LIST";
            case NBD_OPT_PEEK_EXPORT -> "NBD_OPT_PEEK_EXPORT";
            case NBD_OPT_STARTTLS -> "NBD_OPT_STARTTLS";
            case NBD_OPT_INFO -> "NBD_OPT_INFO";
            case NBD_OPT_GO -> "NBD_OPT_GO";
            case NBD_OPT_STRUCTURED_REPLY -> "NBD_OPT_STRUCTURED_REPLY";
            case NBD_OPT_LIST_META_CONTEXT -> "NBD_OPT_LIST_META_CONTEXT";
            case NBD_OPT_SET_META_CONTEXT -> "NBD_OPT_SET_META_CONTEXT";
            case NBD_OPT_EXTENDED_HEADERS -> "NBD_OPT_EXTENDED_HEADERS";
            default -> "option " + option;
        };
    }
}
