package org.nbdroot.proto;

import static java.nio.charset.StandardCharsets.UTF_8;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import java.io.ByteArrayOutputStream;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Big-endian byte building for tests, plus the server's side of the wire written out from
 * {@code doc/proto.md} with literal numbers: deliberately not the engine's constants, so a
 * wrong number in the engine fails a test instead of being agreed on by both sides.
 */
public final class WireBytes {
    // Transmission (proto.md, "Simple reply message", "Structured reply chunk message").
    public static final int SIMPLE_REPLY_MAGIC = 0x67446698;
    public static final int STRUCTURED_REPLY_MAGIC = 0x668e33ef;
    public static final int EXTENDED_REPLY_MAGIC = 0x6e8a278c;
    public static final int REQUEST_MAGIC = 0x25609513;
    public static final int EXTENDED_REQUEST_MAGIC = 0x21e41c71;
    public static final int FLAG_DONE = 1;
    public static final int TYPE_NONE = 0;
    public static final int TYPE_OFFSET_DATA = 1;
    public static final int TYPE_OFFSET_HOLE = 2;
    public static final int TYPE_BLOCK_STATUS = 5;
    public static final int TYPE_BLOCK_STATUS_EXT = 6;
    public static final int TYPE_ERROR = 32769;        // 2^15 + 1
    public static final int TYPE_ERROR_OFFSET = 32770; // 2^15 + 2

    // Handshake.
    public static final long NBDMAGIC = 0x4e42444d41474943L;
    public static final long IHAVEOPT = 0x49484156454F5054L;
    public static final long OLDSTYLE_MAGIC = 0x00420281861253L;
    public static final long OPTION_REPLY_MAGIC = 0x3e889045565a9L;

    private final ByteArrayOutputStream out = new ByteArrayOutputStream();

    public static WireBytes bytes() {
        return new WireBytes();
    }

    public WireBytes u8(int v) {
        out.write(v);
        return this;
    }

    public WireBytes u16(int v) {
        return u8(v >>> 8).u8(v);
    }

    public WireBytes u32(long v) {
        return u16((int) (v >>> 16)).u16((int) v);
    }

    public WireBytes u64(long v) {
        return u32(v >>> 32).u32(v);
    }

    public WireBytes raw(byte[] b) {
        out.writeBytes(b);
        return this;
    }

    public WireBytes zeroes(int n) {
        return raw(new byte[n]);
    }

    /** UTF-8 bytes without a length. */
    public WireBytes utf8(String s) {
        return raw(s.getBytes(UTF_8));
    }

    /** A 32-bit length, then the UTF-8 bytes. */
    public WireBytes string(String s) {
        byte[] b = s.getBytes(UTF_8);
        return u32(b.length).raw(b);
    }

    public byte[] array() {
        return out.toByteArray();
    }

    public ByteBuf buf() {
        return Unpooled.wrappedBuffer(array());
    }

    // ---- Transmission replies ----

    public static byte[] simpleReply(int error, long handle, byte[] data) {
        return bytes().u32(SIMPLE_REPLY_MAGIC).u32(error).u64(handle).raw(data == null ? new byte[0] : data).array();
    }

    public static byte[] chunk(int flags, int type, long handle, byte[] payload) {
        return bytes().u32(STRUCTURED_REPLY_MAGIC).u16(flags).u16(type).u64(handle).u32(payload.length).raw(payload).array();
    }

    public static byte[] offsetData(int flags, long handle, long offset, byte[] data) {
        return chunk(flags, TYPE_OFFSET_DATA, handle, bytes().u64(offset).raw(data).array());
    }

    public static byte[] offsetHole(int flags, long handle, long offset, long length) {
        return chunk(flags, TYPE_OFFSET_HOLE, handle, bytes().u64(offset).u32(length).array());
    }

    public static byte[] none(long handle) {
        return chunk(FLAG_DONE, TYPE_NONE, handle, new byte[0]);
    }

    public static byte[] errorChunk(int flags, long handle, int error, String message) {
        byte[] m = message.getBytes(UTF_8);
        return chunk(flags, TYPE_ERROR, handle, bytes().u32(error).u16(m.length).raw(m).array());
    }

    public static byte[] errorOffsetChunk(int flags, long handle, int error, String message, long offset) {
        byte[] m = message.getBytes(UTF_8);
        return chunk(flags, TYPE_ERROR_OFFSET, handle, bytes().u32(error).u16(m.length).raw(m).u64(offset).array());
    }

    /** A block status chunk; {@code extents} alternates length and flags. */
    public static byte[] blockStatus(int flags, long handle, int contextId, long... extents) {
        WireBytes payload = bytes().u32(contextId);
        for (long v : extents) {
            payload.u32(v);
        }
        return chunk(flags, TYPE_BLOCK_STATUS, handle, payload.array());
    }

    // ---- Extended headers (NBD_OPT_EXTENDED_HEADERS) ----

    /** An extended reply chunk: 32-byte header with the request's offset and a 64-bit length. */
    public static byte[] extendedChunk(int flags, int type, long handle, long requestOffset, byte[] payload) {
        return bytes().u32(EXTENDED_REPLY_MAGIC).u16(flags).u16(type).u64(handle).u64(requestOffset)
                .u64(payload.length).raw(payload).array();
    }

    /** A BLOCK_STATUS_EXT payload: context id, descriptor count, then {@code extents} alternating 64-bit length and status. */
    public static byte[] blockStatusExtPayload(int contextId, long count, long... extents) {
        WireBytes payload = bytes().u32(contextId).u32(count);
        for (long v : extents) {
            payload.u64(v);
        }
        return payload.array();
    }

    // ---- Handshake ----

    public static byte[] greeting(int handshakeFlags) {
        return bytes().u64(NBDMAGIC).u64(IHAVEOPT).u16(handshakeFlags).array();
    }

    public static byte[] optionReply(int option, long type, byte[] data) {
        return bytes().u64(OPTION_REPLY_MAGIC).u32(option).u32(type).u32(data.length).raw(data).array();
    }

    /** What the client sends for one option. */
    public static byte[] option(int option, byte[] data) {
        return bytes().u64(IHAVEOPT).u32(option).u32(data.length).raw(data).array();
    }

    // ---- Helpers ----

    public static byte[] concat(byte[]... parts) {
        WireBytes all = bytes();
        for (byte[] p : parts) {
            all.raw(p);
        }
        return all.array();
    }

    public static byte[] pattern(int length, int seed) {
        byte[] b = new byte[length];
        for (int i = 0; i < length; i++) {
            b[i] = (byte) (i * 31 + seed * 7 + (i >>> 8));
        }
        return b;
    }

    /** Every byte the channel wrote so far, in order; the buffers are released. */
    public static byte[] drainOutbound(EmbeddedChannel channel) {
        WireBytes all = bytes();
        for (Object msg; (msg = channel.readOutbound()) != null; ) {
            ByteBuf buf = (ByteBuf) msg;
            byte[] b = new byte[buf.readableBytes()];
            buf.readBytes(b);
            buf.release();
            all.raw(b);
        }
        return all.array();
    }

    /** Cuts bytes into buffers at the given positions (sorted, within the array). */
    public static List<ByteBuf> split(byte[] bytes, int... cuts) {
        List<ByteBuf> pieces = new ArrayList<>();
        int start = 0;
        for (int cut : cuts) {
            pieces.add(Unpooled.wrappedBuffer(Arrays.copyOfRange(bytes, start, cut)));
            start = cut;
        }
        pieces.add(Unpooled.wrappedBuffer(Arrays.copyOfRange(bytes, start, bytes.length)));
        return pieces;
    }

    /** One buffer per byte: proves a decoder resumes correctly at every boundary. */
    public static List<ByteBuf> oneByteEach(byte[] bytes) {
        List<ByteBuf> pieces = new ArrayList<>(bytes.length);
        for (byte b : bytes) {
            pieces.add(Unpooled.wrappedBuffer(new byte[] {b}));
        }
        return pieces;
    }

    public static byte[] toArray(ByteBuf buf) {
        byte[] b = new byte[buf.readableBytes()];
        buf.getBytes(buf.readerIndex(), b);
        return b;
    }

    private WireBytes() {}
}
