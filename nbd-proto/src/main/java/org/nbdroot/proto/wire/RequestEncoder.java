package org.nbdroot.proto.wire;

import static org.nbdroot.proto.wire.NbdConstants.REQUEST_HEADER_LENGTH;
import static org.nbdroot.proto.wire.NbdConstants.REQUEST_MAGIC;

import io.netty.buffer.ByteBuf;

/** Writes transmission request headers ({@code struct nbd_request}). */
public final class RequestEncoder {
    private RequestEncoder() {}

    public static final int HEADER_LENGTH = REQUEST_HEADER_LENGTH;

    /** Appends one 28-byte request header; a WRITE's payload follows it on the wire. */
    public static void writeHeader(ByteBuf out, Command command, int flags, long handle, long offset, int length) {
        out.writeInt(REQUEST_MAGIC);
        out.writeShort(flags);
        out.writeShort(command.code());
        out.writeLong(handle);
        out.writeLong(offset);
        out.writeInt(length);
    }
}
