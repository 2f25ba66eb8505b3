package org.nbdroot.client.linuxnbd;

import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.ByteToMessageDecoder;
import io.netty.handler.codec.DecoderException;
import java.util.List;
import org.nbdroot.proto.wire.Command;
import org.nbdroot.proto.wire.NbdConstants;

/**
 * Decodes the kernel's NBD requests: a 28-byte header (magic, flags and type, handle,
 * offset, length), followed by the data for a WRITE. After NBD_CMD_DISC nothing more is
 * read. A bad magic or an over-long WRITE is a broken stream: the decoder raises, the
 * bridge closes the socket, and the kernel fails what it had sent.
 */
final class KernelRequestDecoder extends ByteToMessageDecoder {
    private final int maxPayload;
    private boolean disconnected;

    KernelRequestDecoder(int maxPayload) {
        this.maxPayload = maxPayload;
    }

    @Override
    protected void decode(ChannelHandlerContext ctx, ByteBuf in, List<Object> out) {
        if (disconnected) {
            in.skipBytes(in.readableBytes());
            return;
        }
        if (in.readableBytes() < NbdConstants.REQUEST_HEADER_LENGTH) {
            return;
        }
        int start = in.readerIndex();
        int magic = in.getInt(start);
        if (magic != NbdConstants.REQUEST_MAGIC) {
            throw new DecoderException(String.format("request magic: %#010x (expected: %#010x)", magic,
                    NbdConstants.REQUEST_MAGIC));
        }
        int type = in.getInt(start + 4);
        int command = type & 0xffff;
        long length = in.getUnsignedInt(start + 24);
        int payload = 0;
        if (command == Command.WRITE.code()) {
            if (length > maxPayload) {
                throw new DecoderException("write length: " + length + " (expected: <= " + maxPayload + ")");
            }
            payload = (int) length;
            if (in.readableBytes() < NbdConstants.REQUEST_HEADER_LENGTH + payload) {
                return;
            }
        }
        long handle = in.getLong(start + 8);
        long offset = in.getLong(start + 16);
        in.skipBytes(NbdConstants.REQUEST_HEADER_LENGTH);
        ByteBuf data = payload > 0 ? in.readRetainedSlice(payload) : null;
        out.add(new KernelRequest(command, type >>> 16, handle, offset, length, data));
        if (command == Command.DISC.code()) {
            disconnected = true;
        }
    }
}
