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
 * raw bytes, for outstanding requests the fuzzer also chooses, cut into socket reads. It must
 * decode exactly what a second, straightforward decoder written here from {@code doc/proto.md}
 * finds in the whole stream: the same replies, and an {@link NbdProtocolException} (never any
 * other exception) exactly when that decoder meets a malformed header; nothing after it; no
 * payload longer than the request allows; nothing unreleased.
 *
 * <p>{@code mvn verify} replays the seeds in {@code ReplyDecoderFuzzTestInputs} and runs
 * the jqwik property on random inputs; {@code -Pfuzz-long} runs Jazzer, coverage-guided.
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
        boolean structured = in.bool();
        Expectations expect = new Expectations();
        int requests = in.intIn(0, 6);
        for (int i = 0; i < requests; i++) {
            long handle = in.bool() ? i + 1 : in.u64();
            int simple = in.pick(0, in.intIn(1, 700), ReplyExpectations.SIMPLE_REPLY_FORBIDDEN);
            expect.put(handle, simple, in.intIn(0, 800));
        }
        List<byte[]> items = new ArrayList<>();
        int count = in.intIn(0, 10);
        for (int i = 0; i < count; i++) {
            items.add(item(in, expect, items));
        }
        byte[] wire = WireBytes.concat(items.toArray(byte[][]::new));
        Reference reference = Reference.decode(wire, expect, structured);

        TrackingAllocator alloc = new TrackingAllocator();
        EmbeddedChannel ch = new EmbeddedChannel();
        ch.config().setAllocator(alloc);
        ch.pipeline().addLast(new ReplyDecoder(expect, structured));
        List<ByteBuf> reads = in.socketReads(wire, 12);
        int failures = 0;
        for (ByteBuf read : reads) {
            failures += feed(ch, read);
        }
        List<String> decodedBeforeMore = drain(ch, expect);
        if (failures > 0) {
            // After a malformed reply the decoder emits nothing more, even for a valid one.
            ByteBuf valid = Unpooled.wrappedBuffer(validReply(expect));
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

    /** One piece of the stream: a reply (well-formed, or not), or raw bytes. */
    private static byte[] item(FuzzInput in, Expectations expect, List<byte[]> earlier) {
        long handle = expect.handles.isEmpty() || in.u8() == 255 ? in.u64() : in.pick(expect.handles);
        switch (in.intIn(0, 5)) {
            case 0 -> {
                int error = in.bool() ? 0 : in.intIn(1, 255);
                int length = error == 0 ? Math.max(0, expect.simpleReplyDataLength(handle)) : 0;
                return WireBytes.simpleReply(error, handle, WireBytes.pattern(length, 1));
            }
            case 1 -> {
                int max = Math.max(0, expect.maxChunkPayload(handle));
                int type = in.pick(0, 1, 2, 5, 32769, 32770, in.u16());
                int flags = in.pick(0, 1, in.u16());
                int length = in.intIn(0, 7) == 0 ? max + 1 : in.intIn(0, max);
                return WireBytes.chunk(flags, type, handle, WireBytes.pattern(length, 2));
            }
            case 2 -> {
                // A chunk header claiming any length, its payload left to whatever follows.
                return WireBytes.bytes().u32(WireBytes.STRUCTURED_REPLY_MAGIC).u16(in.u16()).u16(in.u16())
                        .u64(handle).u32(in.u32()).array();
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

    private static byte[] validReply(Expectations expect) {
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

    /** Outstanding requests: handle to {simple reply data length, longest chunk payload}. */
    static final class Expectations implements ReplyExpectations {
        final List<Long> handles = new ArrayList<>();
        private final Map<Long, int[]> byHandle = new LinkedHashMap<>();

        void put(long handle, int simple, int chunkMax) {
            if (byHandle.put(handle, new int[] {simple, chunkMax}) == null) {
                handles.add(handle);
            }
        }

        @Override
        public int simpleReplyDataLength(long handle) {
            int[] e = byHandle.get(handle);
            return e == null ? UNKNOWN_HANDLE : e[0];
        }

        @Override
        public int maxChunkPayload(long handle) {
            int[] e = byHandle.get(handle);
            return e == null ? UNKNOWN_HANDLE : e[1];
        }

        /** Only extended reply headers carry an offset, and this fuzzer speaks the compact ones. */
        @Override
        public long requestOffset(long handle) {
            return byHandle.containsKey(handle) ? 0 : UNKNOWN_OFFSET;
        }
    }

    /**
     * The stream decoded all at once, from proto.md ("Simple reply message", "Structured reply
     * chunk message"), the way a reader with no buffering concerns would.
     */
    static final class Reference {
        final List<String> replies = new ArrayList<>();
        boolean malformed;
        String why = "well-formed";

        static Reference decode(byte[] wire, ReplyExpectations expect, boolean structured) {
            Reference r = new Reference();
            ByteBuffer b = ByteBuffer.wrap(wire);
            while (b.remaining() >= 4) {
                int magic = b.getInt(b.position());
                boolean simple = magic == WireBytes.SIMPLE_REPLY_MAGIC;
                if (!simple && (magic != WireBytes.STRUCTURED_REPLY_MAGIC || !structured)) {
                    return r.broken(String.format("magic %#x", magic));
                }
                int headerLength = simple ? 16 : 20;
                if (b.remaining() < headerLength) {
                    return r;
                }
                b.getInt();
                String description;
                long payloadLength;
                if (simple) {
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
                    payloadLength = b.getInt() & 0xffffffffL;
                    int max = expect.maxChunkPayload(handle);
                    if (max < 0 || payloadLength > max) {
                        return r.broken("chunk for handle " + handle + " of " + payloadLength + " (max " + max + ")");
                    }
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

        private Reference broken(String reason) {
            malformed = true;
            why = reason;
            return this;
        }
    }
}
