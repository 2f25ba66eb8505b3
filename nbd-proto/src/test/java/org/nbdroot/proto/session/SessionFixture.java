package org.nbdroot.proto.session;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.nbdroot.proto.WireBytes.REQUEST_MAGIC;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import java.lang.reflect.Constructor;
import java.util.ArrayList;
import java.util.List;
import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.TrackingAllocator;
import org.nbdroot.proto.wire.ReplyDecoder;

/**
 * An {@link NbdSession} on one {@link NbdConnection} over an EmbeddedChannel, with no network:
 * the session's constructor is private (sessions come from {@code connect}), so it is called
 * reflectively. The test plays the server with {@link #sent()} and {@link #reply}.
 */
final class SessionFixture {
    /** One request as it went out, with a WRITE's payload. */
    record Request(int flags, int type, long handle, long offset, long length, byte[] payload) {}

    final TrackingAllocator alloc = new TrackingAllocator();
    final List<ByteBuf> fed = new ArrayList<>();
    final EmbeddedChannel ch;
    final NbdConnection conn;
    final NbdSession session;

    SessionFixture(ExportInfo export) {
        ch = new EmbeddedChannel();
        ch.config().setAllocator(alloc);
        conn = new NbdConnection(ch, export);
        ch.pipeline().addLast(new ReplyDecoder(conn.expectations(), export.structuredReplies()), conn);
        session = newSession(export, List.of(conn));
    }

    static NbdSession newSession(ExportInfo export, List<NbdConnection> connections) {
        try {
            Constructor<NbdSession> c = NbdSession.class.getDeclaredConstructor(ExportInfo.class, List.class);
            c.setAccessible(true);
            return c.newInstance(export, connections);
        } catch (ReflectiveOperationException e) {
            throw new AssertionError("NbdSession's private constructor changed", e);
        }
    }

    /** Lets the event loop send what was submitted, then parses it (payloads copied, buffers released). */
    List<Request> sent() {
        ch.runPendingTasks();
        List<Request> out = new ArrayList<>();
        Request pendingWrite = null;
        for (Object msg; (msg = ch.readOutbound()) != null; ) {
            ByteBuf buf = (ByteBuf) msg;
            try {
                if (pendingWrite != null) { // a WRITE's payload is written as its own buffer
                    byte[] payload = new byte[buf.readableBytes()];
                    buf.readBytes(payload);
                    assertEquals(pendingWrite.length(), payload.length);
                    out.add(new Request(pendingWrite.flags(), pendingWrite.type(), pendingWrite.handle(),
                            pendingWrite.offset(), pendingWrite.length(), payload));
                    pendingWrite = null;
                    continue;
                }
                while (buf.isReadable()) {
                    assertEquals(REQUEST_MAGIC, buf.readInt());
                    Request r = new Request(buf.readUnsignedShort(), buf.readUnsignedShort(), buf.readLong(),
                            buf.readLong(), buf.readUnsignedInt(), null);
                    if (r.type() == 1) {
                        pendingWrite = r;
                        assertEquals(0, buf.readableBytes(), "a WRITE's payload must follow its header");
                    } else {
                        out.add(r);
                    }
                }
            } finally {
                buf.release();
            }
        }
        assertEquals(null, pendingWrite, "a WRITE header without its payload");
        return out;
    }

    void reply(byte[]... messages) {
        for (byte[] m : messages) {
            ByteBuf buf = Unpooled.wrappedBuffer(m);
            fed.add(buf);
            ch.writeInbound(buf);
        }
    }

    /** Closes the channel and checks every buffer was released. */
    void finishWithoutLeaks() {
        ch.runPendingTasks();
        for (Object msg; (msg = ch.readOutbound()) != null; ) {
            ((ByteBuf) msg).release();
        }
        ch.finishAndReleaseAll();
        fed.stream().filter(b -> b.capacity() > 0).forEach(b -> assertEquals(0, b.refCnt(), "inbound buffer not released"));
        assertEquals(List.of(), alloc.unreleased(), "buffers the engine allocated were not released");
    }

    /** The byte at an absolute export offset, so any piece of data can be checked on its own. */
    static byte byteAt(long position) {
        return (byte) (position * 131 + (position >>> 9) + 7);
    }

    static byte[] dataAt(long offset, int length) {
        byte[] b = new byte[length];
        for (int i = 0; i < length; i++) {
            b[i] = byteAt(offset + i);
        }
        return b;
    }
}
