package org.nbdroot.proto.wire;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.code_intelligence.jazzer.junit.FuzzTest;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.Size;
import org.nbdroot.proto.FuzzInput;
import org.nbdroot.proto.NbdProtocolException;
import org.nbdroot.proto.TrackingAllocator;
import org.nbdroot.proto.WireBytes;

/**
 * The reply decoder fed a stream the fuzzer builds from well-formed replies, wrong ones and
 * raw bytes, for outstanding requests the fuzzer also chooses, cut into socket reads, under
 * each of the three header styles a handshake can agree: simple replies only; simple replies
 * and 20-byte structured chunks; 32-byte extended chunks only. Compact and extended replies
 * come on every style, so each also meets those it must refuse. The decoder must decode
 * exactly what a second, straightforward decoder written here from {@code doc/proto.md} finds
 * in the whole stream: the same replies, and an {@link NbdProtocolException} (never any other
 * exception) exactly when that decoder meets a malformed header (a magic the style does not
 * allow, an unknown handle, a length over the request's bound, an extended chunk naming
 * another offset than its request's); nothing after it; no payload longer than the request
 * allows; nothing unreleased.
 *
 * <p>{@code mvn verify} replays the seeds in {@code ReplyDecoderFuzzTestInputs} (the
 * {@code extended-*} ones reach extended chunks) and runs the jqwik property on random inputs;
 * {@code -Pfuzz-long} runs Jazzer, coverage-guided.
 */
class ReplyDecoderFuzzTest {

    @FuzzTest(maxExecutions = 1_000_000, maxDuration = "3h")
    void decodesWhatTheReferenceDecodes(byte[] input) {
        run(input);
    }

    @Property(tries = 10_000)
    void decodesWhatTheReferenceDecodesOnRandomInput(@ForAll @Size(max = 600) byte[] input) {
        run(input);
    }

    static void run(byte[] input) {
        FuzzInput in = new FuzzInput(input);
        HeaderStyle style = in.pick(HeaderStyle.values());
        Expectations expect = new Expectations();
        int requests = in.intIn(0, 6);
        for (int i = 0; i < requests; i++) {
            long handle = in.bool() ? i + 1 : in.u64();
            int simple = in.pick(0, in.intIn(1, 700), ReplyExpectations.SIMPLE_REPLY_FORBIDDEN);
            expect.put(handle, simple, in.intIn(0, 800), requestOffset(in));
        }
        List<byte[]> items = new ArrayList<>();
        int count = in.intIn(0, 10);
        for (int i = 0; i < count; i++) {
            items.add(item(in, style, expect, items));
        }
        byte[] wire = WireBytes.concat(items.toArray(byte[][]::new));
        Reference reference = Reference.decode(wire, expect, style);

        TrackingAllocator alloc = new TrackingAllocator();
        EmbeddedChannel ch = new EmbeddedChannel();
        ch.config().setAllocator(alloc);
        ch.pipeline().addLast(new ReplyDecoder(expect, style));
        List<ByteBuf> reads = in.socketReads(wire, 12);
        int failures = 0;
        for (ByteBuf read : reads) {
            failures += feed(ch, read);
        }
        List<String> decodedBeforeMore = drain(ch, expect);
        if (failures > 0) {
            // After a malformed reply the decoder emits nothing more, even for a valid one.
            ByteBuf valid = Unpooled.wrappedBuffer(validReply(expect, style));
            reads.add(valid);
            failures += feed(ch, valid);
        }
        List<String> decodedAfter = drain(ch, expect);

        assertEquals(reference.replies, decodedBeforeMore, "decoded replies");
        assertEquals(List.of(), decodedAfter, "replies after the stream broke");
        assertEquals(reference.malformed ? 1 : 0, failures, "protocol errors (reference: " + reference.why + ")");
        assertFalse(ch.finish());
        reads.forEach(r -> assertEquals(0, r.refCnt(), "an inbound buffer was not released"));
        assertEquals(List.of(), alloc.unreleased(), "buffers the decoder allocated were not released");
    }

    /**
     * A request's offset as a client sends it: below 2^63, since a session refuses negative
     * offsets (so none is ever read as {@link ReplyExpectations#UNKNOWN_OFFSET}).
     */
    private static long requestOffset(FuzzInput in) {
        return switch (in.intIn(0, 2)) {
            case 0 -> 0;
            case 1 -> 512L * in.u16();
            default -> in.u64() >>> 1;
        };
    }

    /** One piece of the stream: a reply (well-formed, or not), or raw bytes. */
    private static byte[] item(FuzzInput in, HeaderStyle style, Expectations expect, List<byte[]> earlier) {
        switch (in.intIn(0, 5)) {
            case 0, 1, 2 -> {
                long handle = expect.handles.isEmpty() || in.u8() == 255 ? in.u64() : in.pick(expect.handles);
                // Three replies in four speak the connection's own family, so streams get past
                // their first reply; the rest speak the other, which the decoder must refuse.
                boolean extended = (style == HeaderStyle.EXTENDED) == (in.intIn(0, 3) != 0);
                return extended ? extendedItem(in, expect, handle) : compactItem(in, expect, handle);
            }
            case 3 -> {
                if (!earlier.isEmpty()) {
                    byte[] copy = earlier.get(earlier.size() - 1).clone();
                    copy[in.intIn(0, copy.length - 1)] ^= (byte) in.intIn(1, 255);
                    return copy;
                }
                return in.bytes(in.intIn(1, 40));
            }
            default -> {
                return in.bytes(in.intIn(1, 40));
            }
        }
    }

    /**
     * A simple reply or a 20-byte structured chunk (proto.md, "Simple reply message", "Structured
     * reply chunk message").
     */
    private static byte[] compactItem(FuzzInput in, Expectations expect, long handle) {
        switch (in.intIn(0, 2)) {
            case 0 -> {
                int error = in.bool() ? 0 : in.intIn(1, 255);
                int length = error == 0 ? Math.max(0, expect.simpleReplyDataLength(handle)) : 0;
                return WireBytes.simpleReply(error, handle, WireBytes.pattern(length, 1));
            }
            case 1 -> {
                int max = Math.max(0, expect.maxChunkPayload(handle));
                int length = in.intIn(0, 7) == 0 ? max + 1 : in.intIn(0, max);
                return WireBytes.chunk(chunkFlags(in), chunkType(in), handle, WireBytes.pattern(length, 2));
            }
            default -> {
                // A chunk header claiming any length, its payload left to whatever follows.
                return WireBytes.bytes().u32(WireBytes.STRUCTURED_REPLY_MAGIC).u16(in.u16()).u16(in.u16())
                        .u64(handle).u32(in.u32()).array();
            }
        }
    }

    /** A 32-byte extended chunk (proto.md, "Extended reply chunk message"). */
    private static byte[] extendedItem(FuzzInput in, Expectations expect, long handle) {
        int max = Math.max(0, expect.maxChunkPayload(handle));
        long offset = expect.requestOffset(handle);
        // Half of them well-formed, so that streams go on past their first extended chunk.
        switch (in.intIn(0, 5)) {
            case 0, 1, 2 -> {
                return WireBytes.extendedChunk(chunkFlags(in), chunkType(in), handle, offset,
                        WireBytes.pattern(in.intIn(0, max), 3));
            }
            case 3 -> {
                return WireBytes.extendedChunk(chunkFlags(in), chunkType(in), handle, wrongOffset(in, offset),
                        WireBytes.pattern(in.intIn(0, max), 4));
            }
            case 4 -> {
                // Refused from the header alone: no payload needs to follow.
                return extendedHeader(chunkFlags(in), chunkType(in), handle, offset, overLongLength(in, max));
            }
            default -> {
                // Any offset and length, the payload left to whatever follows.
                long anyOffset = in.bool() ? offset : in.u64();
                long anyLength = in.bool() ? in.intIn(0, 800) : in.u64();
                return extendedHeader(in.u16(), in.u16(), handle, anyOffset, anyLength);
            }
        }
    }

    /** Near misses of the request's offset, one with only the sign bit different, or anything. */
    private static long wrongOffset(FuzzInput in, long offset) {
        return switch (in.intIn(0, 3)) {
            case 0 -> offset + 1;
            case 1 -> offset - 1; // from 0: 2^64 - 1
            case 2 -> offset ^ Long.MIN_VALUE;
            default -> in.u64();
        };
    }

    /**
     * A length over {@code max}, among them those a decoder that cut it to 32 bits, or compared
     * it signed, would take for one within bound.
     */
    private static long overLongLength(FuzzInput in, int max) {
        return switch (in.intIn(0, 4)) {
            case 0 -> max + 1L;
            case 1 -> (1L << 32) + in.intIn(0, max); // within bound once cut to 32 bits
            case 2 -> in.u64() >>> 1 | 1L << 31; // in [2^31, 2^63)
            case 3 -> Long.MIN_VALUE + in.intIn(0, max); // 2^63 and just above: negative if signed
            default -> in.u64() | Long.MIN_VALUE; // 2^63 or more
        };
    }

    private static int chunkFlags(FuzzInput in) {
        return in.pick(0, 1, in.u16());
    }

    private static int chunkType(FuzzInput in) {
        return in.pick(0, 1, 2, 5, 6, 32769, 32770, in.u16());
    }

    private static byte[] extendedHeader(int flags, int type, long handle, long offset, long length) {
        return WireBytes.bytes().u32(WireBytes.EXTENDED_REPLY_MAGIC).u16(flags).u16(type)
                .u64(handle).u64(offset).u64(length).array();
    }

    /** A reply the style allows, to an outstanding request if there is one. */
    private static byte[] validReply(Expectations expect, HeaderStyle style) {
        if (style == HeaderStyle.EXTENDED) {
            long handle = expect.handles.isEmpty() ? 1 : expect.handles.get(0);
            return WireBytes.extendedChunk(WireBytes.FLAG_DONE, WireBytes.TYPE_NONE, handle,
                    expect.requestOffset(handle), new byte[0]);
        }
        for (long h : expect.handles) {
            int length = expect.simpleReplyDataLength(h);
            if (length >= 0) {
                return WireBytes.simpleReply(0, h, new byte[length]);
            }
        }
        return WireBytes.simpleReply(0, 1, new byte[0]);
    }

    /** Writes one socket read; 1 if the pipeline raised the decoder's protocol error, which is the only one allowed. */
    private static int feed(EmbeddedChannel ch, ByteBuf read) {
        try {
            ch.writeInbound(read);
            return 0;
        } catch (Exception e) { // EmbeddedChannel rethrows what reached the end of the pipeline, checked or not
            if (!(e instanceof NbdProtocolException)) {
                throw new AssertionError("only NbdProtocolException may come out of the decoder", e);
            }
            assertTrue(e.getMessage() != null && !e.getMessage().isBlank(), "a protocol error says what was wrong");
            return 1;
        }
    }

    /** The decoded replies, described; checks each against its request's bound and releases it. */
    private static List<String> drain(EmbeddedChannel ch, Expectations expect) {
        List<String> out = new ArrayList<>();
        for (Object msg; (msg = ch.readInbound()) != null; ) {
            Reply r = (Reply) msg;
            int length = r.payload() == null ? 0 : r.payload().readableBytes();
            if (r instanceof Reply.Simple s) {
                int allowed = s.error() == 0 ? expect.simpleReplyDataLength(s.handle()) : 0;
                assertEquals(allowed, length, "a simple reply's data is exactly the READ's length");
            } else {
                assertTrue(length <= expect.maxChunkPayload(r.handle()), "a chunk within its request's bound");
            }
            out.add(ReplyDecoderTest.describe(r));
            if (r.payload() != null) {
                r.payload().release();
            }
        }
        return out;
    }

    /** Outstanding requests by handle. */
    static final class Expectations implements ReplyExpectations {
        /** What the decoder may learn of one request: see {@link ReplyExpectations}. */
        private record Request(int simpleReplyDataLength, int maxChunkPayload, long offset) {}

        final List<Long> handles = new ArrayList<>();
        private final Map<Long, Request> byHandle = new LinkedHashMap<>();

        void put(long handle, int simpleReplyDataLength, int maxChunkPayload, long offset) {
            if (byHandle.put(handle, new Request(simpleReplyDataLength, maxChunkPayload, offset)) == null) {
                handles.add(handle);
            }
        }

        boolean outstanding(long handle) {
            return byHandle.containsKey(handle);
        }

        @Override
        public int simpleReplyDataLength(long handle) {
            Request r = byHandle.get(handle);
            return r == null ? UNKNOWN_HANDLE : r.simpleReplyDataLength();
        }

        @Override
        public int maxChunkPayload(long handle) {
            Request r = byHandle.get(handle);
            return r == null ? UNKNOWN_HANDLE : r.maxChunkPayload();
        }

        @Override
        public long requestOffset(long handle) {
            Request r = byHandle.get(handle);
            return r == null ? UNKNOWN_OFFSET : r.offset();
        }
    }

    /**
     * The stream decoded all at once, from proto.md ("Simple reply message", "Structured reply
     * chunk message", "Extended reply chunk message"), the way a reader with no buffering
     * concerns would.
     */
    static final class Reference {
        final List<String> replies = new ArrayList<>();
        boolean malformed;
        String why = "well-formed";

        static Reference decode(byte[] wire, Expectations expect, HeaderStyle style) {
            Reference r = new Reference();
            ByteBuffer b = ByteBuffer.wrap(wire);
            while (b.remaining() >= 4) {
                int magic = b.getInt(b.position());
                if (!allowed(magic, style)) {
                    return r.broken(String.format("magic %#x with %s headers", magic, style));
                }
                int headerLength = switch (magic) {
                    case WireBytes.SIMPLE_REPLY_MAGIC -> 16;
                    case WireBytes.STRUCTURED_REPLY_MAGIC -> 20;
                    default -> 32;
                };
                if (b.remaining() < headerLength) {
                    return r;
                }
                b.getInt();
                String description;
                long payloadLength;
                if (magic == WireBytes.SIMPLE_REPLY_MAGIC) {
                    int error = b.getInt();
                    long handle = b.getLong();
                    int length = expect.simpleReplyDataLength(handle);
                    if (length < 0) {
                        return r.broken("simple reply for handle " + handle + ": " + length);
                    }
                    payloadLength = error == 0 ? length : 0;
                    description = "simple " + handle + " error " + error + " ";
                } else {
                    int flags = b.getShort() & 0xffff;
                    int type = b.getShort() & 0xffff;
                    long handle = b.getLong();
                    boolean extended = magic == WireBytes.EXTENDED_REPLY_MAGIC;
                    long offset = extended ? b.getLong() : 0;
                    payloadLength = extended ? b.getLong() : b.getInt() & 0xffffffffL;
                    if (!expect.outstanding(handle)) {
                        return r.broken("chunk for handle " + handle + ", which has no request");
                    }
                    if (extended && offset != expect.requestOffset(handle)) {
                        return r.broken("extended chunk for handle " + handle + " at offset "
                                + Long.toUnsignedString(offset) + " (request's: " + expect.requestOffset(handle) + ")");
                    }
                    int max = expect.maxChunkPayload(handle);
                    if (Long.compareUnsigned(payloadLength, max) > 0) {
                        return r.broken("chunk for handle " + handle + " of " + Long.toUnsignedString(payloadLength)
                                + " (max " + max + ")");
                    }
                    // Extended chunks decode into the same Reply.Chunk, described the same way.
                    description = "chunk " + handle + " flags " + flags + " type " + type + " ";
                }
                if (b.remaining() < payloadLength) {
                    return r;
                }
                byte[] payload = new byte[(int) payloadLength];
                b.get(payload);
                r.replies.add(description + (payload.length == 0 ? "-" : java.util.HexFormat.of().formatHex(payload)));
            }
            return r;
        }

        /**
         * The magics proto.md lets a server send: simple replies unless extended headers were
         * agreed, structured chunks only with structured replies, extended chunks only with
         * extended headers.
         */
        private static boolean allowed(int magic, HeaderStyle style) {
            return switch (style) {
                case SIMPLE -> magic == WireBytes.SIMPLE_REPLY_MAGIC;
                case STRUCTURED -> magic == WireBytes.SIMPLE_REPLY_MAGIC || magic == WireBytes.STRUCTURED_REPLY_MAGIC;
                case EXTENDED -> magic == WireBytes.EXTENDED_REPLY_MAGIC;
            };
        }

        private Reference broken(String reason) {
            malformed = true;
            why = reason;
            return this;
        }
    }
}
