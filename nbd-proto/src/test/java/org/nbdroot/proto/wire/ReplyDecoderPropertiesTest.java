package org.nbdroot.proto.wire;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.TreeSet;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.constraints.Size;
import org.nbdroot.proto.TrackingAllocator;
import org.nbdroot.proto.WireBytes;

/**
 * Any sequence of well-formed replies, cut into reads at any points, decodes to the same
 * replies in the same order, with the same payload bytes, and leaves nothing unreleased.
 */
class ReplyDecoderPropertiesTest {

    /** One reply as the server meant it. Simple replies have type -1. */
    record Sent(long handle, int type, int flagsOrError, byte[] payload) {
        boolean simple() {
            return type < 0;
        }

        byte[] wire() {
            return simple()
                    ? WireBytes.simpleReply(flagsOrError, handle, payload)
                    : WireBytes.chunk(flagsOrError, type, handle, payload);
        }

        /** As ReplyDecoderTest.describe renders the decoded reply. */
        String expected() {
            String p = payload.length == 0 ? "-" : HexFormat.of().formatHex(payload);
            return simple()
                    ? "simple " + handle + " error " + flagsOrError + " " + p
                    : "chunk " + handle + " flags " + flagsOrError + " type " + type + " " + p;
        }
    }

    @Property(tries = 500)
    void decodesTheSameRepliesWhereverTheReadsAreCut(
            @ForAll("replies") List<Sent> replies,
            @ForAll @Size(max = 40) List<@IntRange(min = 0, max = 1 << 20) Integer> cutSeeds) {
        ReplyDecoderTest.FakeExpectations expect = new ReplyDecoderTest.FakeExpectations();
        List<byte[]> parts = new ArrayList<>();
        for (int i = 0; i < replies.size(); i++) {
            Sent r = replies.get(i);
            if (r.simple()) {
                expect.simple(r.handle(), r.payload().length);
            } else {
                expect.chunkMax(r.handle(), r.payload().length + (i % 3)); // exactly the limit, or under it
            }
            parts.add(r.wire());
        }
        byte[] wire = WireBytes.concat(parts.toArray(byte[][]::new));
        TreeSet<Integer> cuts = new TreeSet<>();
        if (wire.length > 1) {
            cutSeeds.forEach(s -> cuts.add(1 + s % (wire.length - 1)));
        }

        TrackingAllocator alloc = new TrackingAllocator();
        EmbeddedChannel ch = new EmbeddedChannel();
        ch.config().setAllocator(alloc);
        ch.pipeline().addLast(new ReplyDecoder(expect, true));
        List<ByteBuf> pieces = WireBytes.split(wire, cuts.stream().mapToInt(Integer::intValue).toArray());
        pieces.forEach(ch::writeInbound);

        List<String> decoded = new ArrayList<>();
        for (Object msg; (msg = ch.readInbound()) != null; ) {
            Reply reply = (Reply) msg;
            decoded.add(ReplyDecoderTest.describe(reply));
            if (reply.payload() != null) {
                reply.payload().release();
            }
        }
        assertEquals(replies.stream().map(Sent::expected).toList(), decoded);
        assertFalse(ch.finish());
        pieces.stream().filter(p -> p.capacity() > 0) // Unpooled.EMPTY_BUFFER is never freed
                .forEach(p -> assertEquals(0, p.refCnt()));
        assertEquals(List.of(), alloc.unreleased());
    }

    @Provide
    Arbitrary<List<Sent>> replies() {
        Arbitrary<byte[]> data = Arbitraries.bytes().array(byte[].class).ofMaxSize(300);
        Arbitrary<Integer> chunkType = Arbitraries.of(0, 1, 2, 5, 32769, 32770, 12345);
        Arbitrary<Sent> simple = Combinators.combine(Arbitraries.integers().between(0, 200), data)
                .as((error, payload) -> new Sent(0, -1, error, error == 0 ? payload : new byte[0]));
        Arbitrary<Sent> chunk = Combinators.combine(chunkType, Arbitraries.integers().between(0, 0xffff), data)
                .as((type, flags, payload) -> new Sent(0, type, flags, type == 0 ? new byte[0] : payload));
        // Handles are made distinct afterwards: each reply answers its own request here.
        return Arbitraries.oneOf(simple, chunk).list().ofMaxSize(30).map(list -> {
            List<Sent> out = new ArrayList<>();
            for (int i = 0; i < list.size(); i++) {
                Sent s = list.get(i);
                out.add(new Sent(((long) (i * 7 + 1) << 32) | i, s.type(), s.flagsOrError(),
                        Arrays.copyOf(s.payload(), s.payload().length)));
            }
            return out;
        });
    }
}
