package org.nbdroot.proto.wire;

import static org.nbdroot.proto.wire.NbdConstants.EXTENDED_REQUEST_HEADER_LENGTH;
import static org.nbdroot.proto.wire.NbdConstants.EXTENDED_REQUEST_MAGIC;
import static org.nbdroot.proto.wire.NbdConstants.REQUEST_HEADER_LENGTH;
import static org.nbdroot.proto.wire.NbdConstants.REQUEST_MAGIC;

import io.netty.buffer.ByteBuf;

/** Writes transmission request headers: the compact {@code struct nbd_request}, or the extended one. */
public enum RequestEncoder {
    /** 28 bytes: magic, flags, type, cookie, offset, 32-bit length. */
    COMPACT(REQUEST_HEADER_LENGTH) {
        @Override
        public void writeHeader(ByteBuf out, Command command, int flags, long handle, long offset, int length) {
            out.writeInt(REQUEST_MAGIC);
            out.writeShort(flags);
            out.writeShort(command.code());
            out.writeLong(handle);
            out.writeLong(offset);
            out.writeInt(length);
        }
    },
    /**
     * 32 bytes, with NBD_OPT_EXTENDED_HEADERS: magic, flags, type, cookie, offset, 64-bit length.
     * The length is a payload length only with {@link CommandFlag#PAYLOAD_LEN}, which the spec
     * requires for WRITE and which nothing else here sends (the other commands carry no payload,
     * so their length is the effect length).
     */
    EXTENDED(EXTENDED_REQUEST_HEADER_LENGTH) {
        @Override
        public void writeHeader(ByteBuf out, Command command, int flags, long handle, long offset, int length) {
            out.writeInt(EXTENDED_REQUEST_MAGIC);
            out.writeShort(command == Command.WRITE ? flags | CommandFlag.PAYLOAD_LEN : flags);
            out.writeShort(command.code());
            out.writeLong(handle);
            out.writeLong(offset);
            out.writeLong(Integer.toUnsignedLong(length));
        }
    };

    private final int headerLength;

    RequestEncoder(int headerLength) {
        this.headerLength = headerLength;
    }

    public static RequestEncoder of(HeaderStyle style) {
        return style == HeaderStyle.EXTENDED ? EXTENDED : COMPACT;
    }

    public int headerLength() {
        return headerLength;
    }

    /** Appends one request header; a WRITE's payload follows it on the wire. */
    public abstract void writeHeader(ByteBuf out, Command command, int flags, long handle, long offset, int length);
}
