package org.nbdroot.client.linuxnbd;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;

/**
 * One generic netlink request as the kernel lays it out ({@code include/uapi/linux/netlink.h},
 * {@code genetlink.h}): a 16-byte nlmsghdr (length, type, flags, sequence, port id), a 4-byte
 * genlmsghdr (command, version, reserved), then attributes, each a 4-byte nlattr (length,
 * type) and its payload padded to 4 bytes. Nested attributes carry NLA_F_NESTED and their
 * own length covers what they hold. Host byte order throughout, as the kernel reads it.
 */
final class NetlinkMessage {
    static final int NLMSG_HDRLEN = 16;
    static final int GENL_HDRLEN = 4;
    static final int NLA_HDRLEN = 4;
    static final int NLA_F_NESTED = 0x8000;
    static final int NLA_TYPE_MASK = 0x3fff;

    static final int NLM_F_REQUEST = 0x1;
    static final int NLM_F_ACK = 0x4;

    static final int NLMSG_NOOP = 1;
    static final int NLMSG_ERROR = 2;
    static final int NLMSG_DONE = 3;

    private static final int MAX_LENGTH = 8192;

    private final ByteBuffer buffer = ByteBuffer.allocate(MAX_LENGTH).order(ByteOrder.nativeOrder());

    /** A request of the family {@code type} for its command {@code command}, asking for an ack. */
    NetlinkMessage(int type, int sequence, int command, int version) {
        buffer.putInt(0); // length, set by bytes()
        buffer.putShort((short) type);
        buffer.putShort((short) (NLM_F_REQUEST | NLM_F_ACK));
        buffer.putInt(sequence);
        buffer.putInt(0); // port id: 0, the kernel fills in ours
        buffer.put((byte) command);
        buffer.put((byte) version);
        buffer.putShort((short) 0);
    }

    static int align(int length) {
        return (length + 3) & ~3;
    }

    private void pad() {
        while (buffer.position() % 4 != 0) {
            buffer.put((byte) 0);
        }
    }

    NetlinkMessage u32(int type, int value) {
        buffer.putShort((short) (NLA_HDRLEN + 4)).putShort((short) type).putInt(value);
        return this;
    }

    NetlinkMessage u64(int type, long value) {
        buffer.putShort((short) (NLA_HDRLEN + 8)).putShort((short) type).putLong(value);
        return this;
    }

    /** A NUL-terminated string (NLA_NUL_STRING / NLA_STRING), padded. */
    NetlinkMessage string(int type, String value) {
        byte[] bytes = value.getBytes(StandardCharsets.UTF_8);
        buffer.putShort((short) (NLA_HDRLEN + bytes.length + 1)).putShort((short) type).put(bytes).put((byte) 0);
        pad();
        return this;
    }

    /** Opens a nested attribute; returns where it starts, for {@link #endNested}. */
    int beginNested(int type) {
        int start = buffer.position();
        buffer.putShort((short) 0).putShort((short) (type | NLA_F_NESTED));
        return start;
    }

    NetlinkMessage endNested(int start) {
        buffer.putShort(start, (short) (buffer.position() - start));
        return this;
    }

    byte[] bytes() {
        int length = buffer.position();
        buffer.putInt(0, length);
        byte[] out = new byte[length];
        buffer.get(0, out);
        return out;
    }
}
