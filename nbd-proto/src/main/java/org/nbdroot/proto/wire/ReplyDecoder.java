package org.nbdroot.proto.wire;

import static org.nbdroot.proto.wire.NbdConstants.EXTENDED_REPLY_HEADER_LENGTH;
import static org.nbdroot.proto.wire.NbdConstants.EXTENDED_REPLY_MAGIC;
import static org.nbdroot.proto.wire.NbdConstants.SIMPLE_REPLY_HEADER_LENGTH;
import static org.nbdroot.proto.wire.NbdConstants.SIMPLE_REPLY_MAGIC;
import static org.nbdroot.proto.wire.NbdConstants.STRUCTURED_REPLY_HEADER_LENGTH;
import static org.nbdroot.proto.wire.NbdConstants.STRUCTURED_REPLY_MAGIC;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.CompositeByteBuf;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import org.nbdroot.proto.NbdProtocolException;

/**
 * Decodes transmission replies into {@link Reply} messages.
 *
 * <p>Payloads are handed on as retained slices of the buffers the socket filled, so a READ's
 * data is never copied here: a payload that arrived in several socket reads becomes a
 * composite of their slices. Only a header split across reads is gathered in a small buffer.
 * After the first malformed reply the decoder drops everything; the handler behind it closes
 * the connection.
 *
 * <p>Each {@link HeaderStyle} accepts only its own magics: once extended headers are agreed, a
 * simple or a 20-byte structured reply is as wrong as a bad magic, and the other way round.
 */
public final class ReplyDecoder extends ChannelInboundHandlerAdapter {
    private enum State { HEADER, PAYLOAD, BROKEN }

    private static final int MAX_HEADER_LENGTH = EXTENDED_REPLY_HEADER_LENGTH;

    private final ReplyExpectations expectations;
    private final HeaderStyle style;

    private State state = State.HEADER;
    private ByteBuf partialHeader;
    // The reply whose payload is being gathered.
    private long handle;
    private int error;
    private int chunkFlags;
    private int chunkType;
    private boolean chunk;
    private int payloadRemaining;
    private ByteBuf payload;

    public ReplyDecoder(ReplyExpectations expectations, HeaderStyle style) {
        this.expectations = expectations;
        this.style = style;
    }

    /** A decoder for compact headers: simple replies, and structured chunks if {@code structuredReplies}. */
    public ReplyDecoder(ReplyExpectations expectations, boolean structuredReplies) {
        this(expectations, HeaderStyle.of(structuredReplies, false));
    }

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) throws Exception {
        if (!(msg instanceof ByteBuf in)) {
            ctx.fireChannelRead(msg);
            return;
        }
        try {
            while (in.isReadable() && state != State.BROKEN) {
                if (state == State.HEADER) {
                    decodeHeader(ctx, in);
                } else {
                    decodePayload(ctx, in);
                }
            }
        } catch (NbdProtocolException e) {
            state = State.BROKEN;
            releasePending();
            throw e;
        } finally {
            in.release();
        }
    }

    private void decodeHeader(ChannelHandlerContext ctx, ByteBuf in) throws NbdProtocolException {
        ByteBuf source = in;
        if (partialHeader != null && partialHeader.isReadable()) {
            source = gatherHeader(ctx, in);
            if (source == null) {
                return;
            }
        } else if (in.readableBytes() < 4 || in.readableBytes() < headerLength(in.getInt(in.readerIndex()))) {
            gatherHeader(ctx, in);
            return;
        }
        int magic = source.readInt();
        if (magic == SIMPLE_REPLY_MAGIC) {
            error = source.readInt();
            handle = source.readLong();
            chunk = false;
            int length = expectations.simpleReplyDataLength(handle);
            if (length == ReplyExpectations.UNKNOWN_HANDLE) {
                throw new NbdProtocolException(String.format(
                        "server sent a simple reply for handle %#x, which has no outstanding request", handle));
            }
            if (length == ReplyExpectations.SIMPLE_REPLY_FORBIDDEN) {
                throw new NbdProtocolException(String.format("server sent a simple reply to the NBD_CMD_READ "
                        + "with handle %#x, although structured replies were negotiated", handle));
            }
            startPayload(ctx, error == 0 ? length : 0);
        } else if (magic == STRUCTURED_REPLY_MAGIC) {
            chunkFlags = source.readUnsignedShort();
            chunkType = source.readUnsignedShort();
            handle = source.readLong();
            startChunk(ctx, source.readUnsignedInt());
        } else {
            chunkFlags = source.readUnsignedShort();
            chunkType = source.readUnsignedShort();
            handle = source.readLong();
            long offset = source.readLong();
            long length = source.readLong();
            checkExtendedOffset(offset);
            startChunk(ctx, length);
        }
        if (source != in) {
            source.clear();
        }
    }

    /**
     * A chunk's length, 32 bits (structured) or 64 (extended), against the request it answers:
     * compared as unsigned, so a length of 2^63 or more is refused, never read as negative.
     */
    private void startChunk(ChannelHandlerContext ctx, long length) throws NbdProtocolException {
        chunk = true;
        int max = expectations.maxChunkPayload(handle);
        if (max == ReplyExpectations.UNKNOWN_HANDLE) {
            throw new NbdProtocolException(String.format(
                    "server sent a reply chunk for handle %#x, which has no outstanding request", handle));
        }
        if (Long.compareUnsigned(length, max) > 0) {
            throw new NbdProtocolException(String.format(
                    "reply chunk of type %d for handle %#x is %s bytes long (expected: <= %d)",
                    chunkType, handle, Long.toUnsignedString(length), max));
        }
        startPayload(ctx, (int) length);
    }

    /** An extended reply header repeats its request's offset; any other offset means it is not that request's. */
    private void checkExtendedOffset(long offset) throws NbdProtocolException {
        long expected = expectations.requestOffset(handle);
        if (expected == ReplyExpectations.UNKNOWN_OFFSET) {
            throw new NbdProtocolException(String.format(
                    "server sent a reply chunk for handle %#x, which has no outstanding request", handle));
        }
        if (offset != expected) {
            throw new NbdProtocolException(String.format(
                    "extended reply chunk of type %d for handle %#x names offset %s (expected: %s, its request's)",
                    chunkType, handle, Long.toUnsignedString(offset), Long.toUnsignedString(expected)));
        }
    }

    /** The full header length the magic announces, checking it is one this header style allows. */
    private int headerLength(int magic) throws NbdProtocolException {
        if (magic == SIMPLE_REPLY_MAGIC && style != HeaderStyle.EXTENDED) {
            return SIMPLE_REPLY_HEADER_LENGTH;
        }
        if (magic == STRUCTURED_REPLY_MAGIC && style == HeaderStyle.STRUCTURED) {
            return STRUCTURED_REPLY_HEADER_LENGTH;
        }
        if (magic == EXTENDED_REPLY_MAGIC && style == HeaderStyle.EXTENDED) {
            return EXTENDED_REPLY_HEADER_LENGTH;
        }
        String seen = switch (magic) {
            case SIMPLE_REPLY_MAGIC -> "a simple reply";
            case STRUCTURED_REPLY_MAGIC -> "a structured reply chunk";
            case EXTENDED_REPLY_MAGIC -> "an extended reply chunk";
            default -> null;
        };
        String allowed = switch (style) {
            case SIMPLE -> String.format("%#010x (simple replies only: structured replies were not negotiated, "
                    + "nor extended headers)", SIMPLE_REPLY_MAGIC);
            case STRUCTURED -> String.format("%#010x or %#010x (simple replies or structured reply chunks: structured "
                    + "replies were negotiated, extended headers were not)", SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC);
            case EXTENDED -> String.format("%#010x (only extended reply chunks: extended headers were negotiated)",
                    EXTENDED_REPLY_MAGIC);
        };
        throw new NbdProtocolException(seen == null
                ? String.format("bad reply magic %#010x (expected: %s)", magic, allowed)
                : String.format("server sent %s (magic %#010x), which this connection does not allow (expected: %s)",
                        seen, magic, allowed));
    }

    /** Copies header bytes into the side buffer; returns it once the whole header is there. */
    private ByteBuf gatherHeader(ChannelHandlerContext ctx, ByteBuf in) throws NbdProtocolException {
        if (partialHeader == null) {
            partialHeader = ctx.alloc().heapBuffer(MAX_HEADER_LENGTH, MAX_HEADER_LENGTH);
        }
        if (partialHeader.readableBytes() < 4) {
            in.readBytes(partialHeader, Math.min(4 - partialHeader.readableBytes(), in.readableBytes()));
            if (partialHeader.readableBytes() < 4) {
                return null;
            }
        }
        int needed = headerLength(partialHeader.getInt(partialHeader.readerIndex())) - partialHeader.readableBytes();
        in.readBytes(partialHeader, Math.min(needed, in.readableBytes()));
        return partialHeader.readableBytes() == headerLength(partialHeader.getInt(partialHeader.readerIndex()))
                ? partialHeader : null;
    }

    private void startPayload(ChannelHandlerContext ctx, int length) {
        payloadRemaining = length;
        payload = null;
        if (length == 0) {
            emit(ctx);
        } else {
            state = State.PAYLOAD;
        }
    }

    private void decodePayload(ChannelHandlerContext ctx, ByteBuf in) {
        int take = Math.min(payloadRemaining, in.readableBytes());
        ByteBuf piece = in.readRetainedSlice(take);
        payloadRemaining -= take;
        if (payload == null && payloadRemaining == 0) {
            payload = piece;
        } else {
            if (payload == null) {
                payload = ctx.alloc().compositeDirectBuffer(Integer.MAX_VALUE);
            }
            ((CompositeByteBuf) payload).addComponent(true, piece);
        }
        if (payloadRemaining == 0) {
            state = State.HEADER;
            emit(ctx);
        }
    }

    private void emit(ChannelHandlerContext ctx) {
        ByteBuf data = payload;
        payload = null;
        state = State.HEADER;
        ctx.fireChannelRead(chunk
                ? new Reply.Chunk(handle, chunkFlags, chunkType, data)
                : new Reply.Simple(handle, error, data));
    }

    private void releasePending() {
        if (payload != null) {
            payload.release();
            payload = null;
        }
    }

    @Override
    public void handlerRemoved(ChannelHandlerContext ctx) {
        releasePending();
        if (partialHeader != null) {
            partialHeader.release();
            partialHeader = null;
        }
    }
}
