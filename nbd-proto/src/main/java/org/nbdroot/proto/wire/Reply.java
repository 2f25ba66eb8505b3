package org.nbdroot.proto.wire;

import io.netty.buffer.ByteBuf;

/**
 * One decoded transmission reply: a simple reply, or one chunk of a structured reply. The
 * receiver owns {@link #payload()} (which may be null) and must release it.
 */
public sealed interface Reply permits Reply.Simple, Reply.Chunk {
    long handle();

    ByteBuf payload();

    /** A simple reply; for a successful READ the payload is the data, otherwise null. */
    record Simple(long handle, int error, ByteBuf payload) implements Reply {
        @Override
        public String toString() {
            return String.format("Simple[handle=%#x, error=%d, length=%d]",
                    handle, error, payload == null ? 0 : payload.readableBytes());
        }
    }

    /** A structured reply chunk with its raw payload (for OFFSET_DATA: the offset, then the data). */
    record Chunk(long handle, int flags, int type, ByteBuf payload) implements Reply {
        public boolean isDone() {
            return (flags & NbdConstants.REPLY_FLAG_DONE) != 0;
        }

        @Override
        public String toString() {
            return String.format("Chunk[handle=%#x, flags=%d, type=%d, length=%d]",
                    handle, flags, type, payload == null ? 0 : payload.readableBytes());
        }
    }
}
