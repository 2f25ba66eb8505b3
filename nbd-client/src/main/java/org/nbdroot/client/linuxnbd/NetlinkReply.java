package org.nbdroot.client.linuxnbd;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * A message the kernel sent on a netlink socket, decoded from what one recv returned (which
 * may hold several). An NLMSG_ERROR carries a negative errno, or 0 for an ack, and the
 * header of the request it answers; a generic netlink reply carries a genlmsghdr and
 * attributes. Lengths that do not fit what was received end the decoding with an
 * {@link IllegalArgumentException} naming what was seen.
 */
record NetlinkReply(int type, int flags, int sequence, ByteBuffer payload) {

    /** Splits a received datagram into its messages (each nlmsghdr's length, aligned to 4). */
    static List<NetlinkReply> decode(byte[] data, int length) {
        ByteBuffer buf = ByteBuffer.wrap(data, 0, length).order(ByteOrder.nativeOrder());
        List<NetlinkReply> replies = new ArrayList<>();
        int at = 0;
        while (length - at >= NetlinkMessage.NLMSG_HDRLEN) {
            int len = buf.getInt(at);
            if (len < NetlinkMessage.NLMSG_HDRLEN || len > length - at) {
                throw new IllegalArgumentException("netlink message at byte " + at + " says it is " + len
                        + " bytes long; " + (length - at) + " were received from there (at least "
                        + NetlinkMessage.NLMSG_HDRLEN + " needed)");
            }
            ByteBuffer payload = buf.slice(at + NetlinkMessage.NLMSG_HDRLEN, len - NetlinkMessage.NLMSG_HDRLEN)
                    .order(ByteOrder.nativeOrder());
            replies.add(new NetlinkReply(buf.getShort(at + 4) & 0xffff, buf.getShort(at + 6) & 0xffff,
                    buf.getInt(at + 8), payload));
            at += NetlinkMessage.align(len);
        }
        if (at < length) {
            throw new IllegalArgumentException(length - at + " bytes after the last netlink message, fewer than a header ("
                    + NetlinkMessage.NLMSG_HDRLEN + ")");
        }
        return replies;
    }

    boolean isError() {
        return type == NetlinkMessage.NLMSG_ERROR;
    }

    /** An NLMSG_ERROR's code: 0 for an ack, else minus the errno. */
    int errorCode() {
        if (!isError() || payload.remaining() < 4) {
            throw new IllegalArgumentException("not an NLMSG_ERROR with a code: type " + type + ", " + payload.remaining()
                    + " bytes");
        }
        return payload.getInt(0);
    }

    /** The attributes after the genlmsghdr, by type (flags masked off; the last of a type wins). */
    Map<Integer, ByteBuffer> genericAttributes() {
        if (payload.remaining() < NetlinkMessage.GENL_HDRLEN) {
            throw new IllegalArgumentException("generic netlink reply of " + payload.remaining()
                    + " bytes has no genlmsghdr (" + NetlinkMessage.GENL_HDRLEN + ")");
        }
        return attributes(payload.slice(NetlinkMessage.GENL_HDRLEN, payload.remaining() - NetlinkMessage.GENL_HDRLEN));
    }

    /** Decodes a run of nlattrs (a message's, or a nested attribute's payload). */
    static Map<Integer, ByteBuffer> attributes(ByteBuffer buf) {
        buf = buf.slice().order(ByteOrder.nativeOrder());
        Map<Integer, ByteBuffer> attributes = new HashMap<>();
        int at = 0;
        int length = buf.remaining();
        while (length - at >= NetlinkMessage.NLA_HDRLEN) {
            int len = buf.getShort(at) & 0xffff;
            if (len < NetlinkMessage.NLA_HDRLEN || len > length - at) {
                throw new IllegalArgumentException("netlink attribute at byte " + at + " says it is " + len
                        + " bytes long; " + (length - at) + " remain (at least " + NetlinkMessage.NLA_HDRLEN + " needed)");
            }
            int type = buf.getShort(at + 2) & NetlinkMessage.NLA_TYPE_MASK;
            attributes.put(type, buf.slice(at + NetlinkMessage.NLA_HDRLEN, len - NetlinkMessage.NLA_HDRLEN)
                    .order(ByteOrder.nativeOrder()));
            at += NetlinkMessage.align(len);
        }
        return attributes;
    }

    static int u16(ByteBuffer attribute, String name) {
        if (attribute == null || attribute.remaining() < 2) {
            throw new IllegalArgumentException(name + ": expected a 16-bit attribute, got "
                    + (attribute == null ? "none" : attribute.remaining() + " bytes"));
        }
        return attribute.getShort(0) & 0xffff;
    }

    static int u32(ByteBuffer attribute, String name) {
        if (attribute == null || attribute.remaining() < 4) {
            throw new IllegalArgumentException(name + ": expected a 32-bit attribute, got "
                    + (attribute == null ? "none" : attribute.remaining() + " bytes"));
        }
        return attribute.getInt(0);
    }
}
