package org.nbdroot.proto.session;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.nbdroot.proto.WireBytes.bytes;

import com.code_intelligence.jazzer.junit.FuzzTest;
import io.netty.buffer.ByteBuf;
import io.netty.channel.embedded.EmbeddedChannel;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.Size;
import org.nbdroot.proto.BlockSize;
import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.Extent;
import org.nbdroot.proto.FuzzInput;
import org.nbdroot.proto.NbdException;
import org.nbdroot.proto.TrackingAllocator;
import org.nbdroot.proto.WireBytes;
import org.nbdroot.proto.wire.Command;
import org.nbdroot.proto.wire.ReplyDecoder;

/**
 * No wrong data from the session layer: requests on one connection are answered with proper
 * replies from a fixed server image, which the fuzzer interleaves, splits into chunks and then
 * breaks with mutations a client can detect by the protocol's rules (a chunk dropped, repeated,
 * moved, cut short, retyped, its flags, handle, offset or hole length changed, a bad magic,
 * garbage, the stream cut). Every request completes exactly once; a READ that succeeds holds
 * exactly the image's bytes; a BLOCK_STATUS that succeeds reports extents within its range;
 * every failure is an {@link NbdException}; nothing is unreleased.
 *
 * <p>Left out on purpose, as no client could notice them: changing data bytes, or in simple
 * mode an error into success or a reply's handle into another outstanding request's (simple
 * replies carry neither offsets nor lengths).
 */
class NbdConnectionFuzzTest {
    private static final int BLOCK = 512;
    private static final int BLOCKS = 128;
    private static final int BASE_ALLOCATION_ID = 1;
    /** The server's image: every third block a hole, the rest bytes 1..63 (no reply magic can start in data). */
    private static final byte[] IMAGE = new byte[BLOCKS * BLOCK];

    static {
        for (int i = 0; i < IMAGE.length; i++) {
            IMAGE[i] = hole(i / BLOCK) ? 0 : (byte) (1 + (i * 13 + (i >>> 9)) % 63);
        }
    }

    private static boolean hole(int block) {
        return block % 3 == 0;
    }

    @FuzzTest(maxExecutions = 1_000_000, maxDuration = "3h")
    void whatSucceedsHoldsTheServersBytes(byte[] input) {
        run(input);
    }

    @Property(tries = 5000)
    void whatSucceedsHoldsTheServersBytesOnRandomInput(@ForAll @Size(max = 400) byte[] input) {
        run(input);
    }

    static void run(byte[] input) {
        new Scenario(new FuzzInput(input)).play();
    }

    /** One reply message, kept as fields so a mutation changes one of them. */
    private static final class Message {
        boolean simple;
        int magic;
        int error;
        int flags;
        int type;
        long handle;
        long offset;
        long holeLength;
        byte[] data = new byte[0];
        int errorValue;
        String text = "";
        int textLengthDelta;
        long[] extents = new long[0];
        long lengthOverride = -1;

        Message copy() {
            Message m = new Message();
            m.simple = simple;
            m.magic = magic;
            m.error = error;
            m.flags = flags;
            m.type = type;
            m.handle = handle;
            m.offset = offset;
            m.holeLength = holeLength;
            m.data = data;
            m.errorValue = errorValue;
            m.text = text;
            m.textLengthDelta = textLengthDelta;
            m.extents = extents;
            m.lengthOverride = lengthOverride;
            return m;
        }

        byte[] wire() {
            if (simple) {
                return bytes().u32(magic).u32(error).u64(handle).raw(data).array();
            }
            WireBytes payload = bytes();
            byte[] t = text.getBytes(StandardCharsets.US_ASCII);
            switch (type) {
                case 1 -> payload.u64(offset).raw(data);
                case 2 -> payload.u64(offset).u32(holeLength);
                case 5 -> {
                    payload.u32(BASE_ALLOCATION_ID);
                    for (long v : extents) {
                        payload.u32(v);
                    }
                }
                case 32769 -> payload.u32(errorValue).u16(t.length + textLengthDelta).raw(t);
                case 32770 -> payload.u32(errorValue).u16(t.length + textLengthDelta).raw(t).u64(offset);
                default -> payload.raw(data);
            }
            byte[] p = payload.array();
            long length = lengthOverride >= 0 ? lengthOverride : p.length;
            return bytes().u32(magic).u16(flags).u16(type).u64(handle).u32(length).raw(p).array();
        }
    }

    private static final class Pending implements NbdRequest.Completion {
        final NbdRequest request;
        int calls;
        Throwable failure;
        byte[] data;
        List<Extent> extents;

        Pending(Command command, long offset, int length, ByteBuf payload) {
            request = new NbdRequest(command, 0, offset, length, payload, this);
        }

        @Override
        public void complete(NbdRequest r, Throwable f) {
            calls++;
            failure = f;
            if (f == null && r.data != null) {
                data = WireBytes.toArray(r.data);
                r.data.release();
                r.data = null;
            }
            if (f == null) {
                extents = r.extents;
            }
        }
    }

    private static final class Scenario {
        final FuzzInput in;
        final TrackingAllocator alloc = new TrackingAllocator();
        final List<ByteBuf> fed = new ArrayList<>();
        final EmbeddedChannel ch = new EmbeddedChannel();
        final boolean structured;
        final NbdConnection conn;
        final List<Pending> requests = new ArrayList<>();

        Scenario(FuzzInput in) {
            this.in = in;
            structured = in.bool();
            ch.config().setAllocator(alloc);
            ExportInfo export = new ExportInfo("disk", null, IMAGE.length, 0b1101, new BlockSize(BLOCK, 4096, 1 << 20),
                    true, structured, structured ? Map.of(BASE_ALLOCATION_ID, "base:allocation") : Map.of());
            conn = new NbdConnection(ch, export);
            ch.pipeline().addLast(new ReplyDecoder(conn.expectations(), structured), conn);
        }

        void play() {
            int n = in.intIn(1, 8);
            for (int i = 0; i < n; i++) {
                Command command = in.pick(Command.READ, Command.READ, Command.READ, Command.WRITE, Command.FLUSH,
                        structured ? Command.BLOCK_STATUS : Command.READ);
                int blocks = command == Command.FLUSH ? 0 : in.intIn(1, 8);
                long offset = command == Command.FLUSH ? 0 : (long) BLOCK * in.intIn(0, BLOCKS - blocks);
                ByteBuf payload = command == Command.WRITE ? alloc.directBuffer(blocks * BLOCK).writeZero(blocks * BLOCK) : null;
                Pending p = new Pending(command, offset, blocks * BLOCK, payload);
                if (command == Command.BLOCK_STATUS) {
                    p.request.metaContextId = BASE_ALLOCATION_ID;
                }
                requests.add(p);
                conn.submit(p.request);
            }
            ch.runPendingTasks();
            WireBytes.drainOutbound(ch);

            List<List<Message>> perRequest = new ArrayList<>();
            for (Pending p : requests) {
                perRequest.add(replies(p.request));
            }
            List<Message> stream = interleave(perRequest);
            byte[] wire = mutate(stream);
            for (ByteBuf read : in.socketReads(wire, 8)) {
                if (!ch.isOpen()) {
                    read.release();
                    continue;
                }
                fed.add(read);
                try {
                    ch.writeInbound(read);
                } catch (Exception e) {
                    throw new AssertionError("the connection let an exception out of the pipeline", e);
                }
            }
            ch.close(); // what is still unanswered now fails
            ch.runPendingTasks();

            for (Pending p : requests) {
                assertEquals(1, p.calls, () -> p.request.describe() + " completes exactly once");
                if (p.failure != null) {
                    if (!(p.failure instanceof NbdException)) {
                        throw new AssertionError("failures are the engine's own", p.failure);
                    }
                    assertTrue(p.failure.getMessage() != null && !p.failure.getMessage().isBlank());
                    continue;
                }
                switch (p.request.command) {
                    case READ -> assertArrayEquals(Arrays.copyOfRange(IMAGE, (int) p.request.offset,
                            (int) p.request.offset + p.request.length), p.data, () -> p.request.describe()
                            + " succeeded with bytes the server does not hold");
                    case BLOCK_STATUS -> {
                        assertTrue(p.extents != null && !p.extents.isEmpty(), "a block status reports extents");
                        long position = p.request.offset;
                        for (Extent e : p.extents) {
                            assertEquals(position, e.offset(), "extents follow each other from the request's offset");
                            position += e.length();
                        }
                        assertTrue(position <= p.request.offset + p.request.length, "extents within the request");
                    }
                    default -> assertEquals(null, p.data);
                }
            }
            WireBytes.drainOutbound(ch);
            ch.finishAndReleaseAll();
            fed.forEach(b -> assertEquals(0, b.refCnt(), "an inbound buffer was not released"));
            assertEquals(List.of(), alloc.unreleased(), "buffers the connection allocated were not released");
        }

        /** A proper reply to the request, as a server holding IMAGE sends it. */
        private List<Message> replies(NbdRequest r) {
            List<Message> out = new ArrayList<>();
            boolean fail = in.intIn(0, 7) == 0;
            if (!structured || r.command == Command.WRITE || r.command == Command.FLUSH && in.bool()) {
                if (structured && r.command != Command.READ && in.bool() && !fail) {
                    out.add(chunk(r.handle, 1, 0)); // NBD_REPLY_TYPE_NONE
                    return out;
                }
                if (!structured || r.command != Command.READ) {
                    Message m = new Message();
                    m.simple = true;
                    m.magic = WireBytes.SIMPLE_REPLY_MAGIC;
                    m.handle = r.handle;
                    m.error = fail ? in.intIn(1, 255) : 0;
                    if (!fail && r.command == Command.READ) {
                        m.data = Arrays.copyOfRange(IMAGE, (int) r.offset, (int) r.offset + r.length);
                    }
                    out.add(m);
                    return out;
                }
            }
            if (fail) {
                Message e = chunk(r.handle, 0, in.bool() ? WireBytes.TYPE_ERROR : WireBytes.TYPE_ERROR_OFFSET);
                e.errorValue = in.intIn(1, 255);
                e.text = "failed";
                e.offset = r.offset + in.intIn(0, Math.max(0, r.length - 1));
                out.add(e);
                out.add(chunk(r.handle, 1, 0));
                return out;
            }
            switch (r.command) {
                case READ -> {
                    List<Message> pieces = new ArrayList<>();
                    long at = r.offset;
                    long end = r.offset + r.length;
                    while (at < end) {
                        long length = Math.min(end - at, (long) BLOCK * in.intIn(1, 4));
                        boolean zero = true;
                        for (long b = at / BLOCK; b < (at + length) / BLOCK; b++) {
                            zero &= hole((int) b);
                        }
                        Message m;
                        if (zero && in.bool()) {
                            m = chunk(r.handle, 0, WireBytes.TYPE_OFFSET_HOLE);
                            m.holeLength = length;
                        } else {
                            m = chunk(r.handle, 0, WireBytes.TYPE_OFFSET_DATA);
                            m.data = Arrays.copyOfRange(IMAGE, (int) at, (int) (at + length));
                        }
                        m.offset = at;
                        pieces.add(m);
                        at += length;
                    }
                    shuffle(pieces);
                    out.addAll(pieces);
                }
                case BLOCK_STATUS -> {
                    Message m = chunk(r.handle, 0, WireBytes.TYPE_BLOCK_STATUS);
                    List<Long> extents = new ArrayList<>();
                    for (long at = r.offset; at < r.offset + r.length; at += BLOCK) {
                        extents.add((long) BLOCK);
                        extents.add(hole((int) (at / BLOCK)) ? 3L : 0L);
                    }
                    m.extents = extents.stream().mapToLong(Long::longValue).toArray();
                    out.add(m);
                }
                default -> out.add(chunk(r.handle, 0, 0));
            }
            if (in.bool()) {
                out.add(chunk(r.handle, 1, 0));
            } else {
                out.get(out.size() - 1).flags |= 1;
            }
            return out;
        }

        private static Message chunk(long handle, int flags, int type) {
            Message m = new Message();
            m.magic = WireBytes.STRUCTURED_REPLY_MAGIC;
            m.handle = handle;
            m.flags = flags;
            m.type = type;
            return m;
        }

        private void shuffle(List<Message> list) {
            for (int i = list.size() - 1; i > 0; i--) {
                java.util.Collections.swap(list, i, in.intIn(0, i));
            }
        }

        /** The requests' replies merged in an order the fuzzer picks, each request's own kept in order. */
        private List<Message> interleave(List<List<Message>> perRequest) {
            List<Message> out = new ArrayList<>();
            List<List<Message>> left = new ArrayList<>();
            perRequest.forEach(l -> left.add(new ArrayList<>(l)));
            while (!left.isEmpty()) {
                int i = in.intIn(0, left.size() - 1);
                out.add(left.get(i).remove(0));
                if (left.get(i).isEmpty()) {
                    left.remove(i);
                }
            }
            return out;
        }

        /** Breaks the stream in up to three ways a client can detect. */
        private byte[] mutate(List<Message> stream) {
            Set<Long> handles = new HashSet<>();
            requests.forEach(p -> handles.add(p.request.handle));
            int count = in.pick(0, 0, 1, 1, 2, 3);
            int cut = -1;
            List<byte[]> garbage = new ArrayList<>();
            for (int i = 0; i < count && !stream.isEmpty(); i++) {
                int at = in.intIn(0, stream.size() - 1);
                Message m = stream.get(at);
                switch (in.intIn(0, 12)) {
                    case 0 -> stream.remove(at);
                    case 1 -> stream.add(at + 1, m.copy());
                    case 2 -> m.magic = 0x12345678 ^ (in.u16() << 8); // neither magic
                    case 3 -> {
                        if (structured && in.bool()) {
                            m.handle = in.pick(new ArrayList<>(handles));
                        } else {
                            long h = in.u64();
                            m.handle = handles.contains(h) ? h ^ 0x8000_0000_0000_0000L : h;
                        }
                    }
                    case 4 -> m.offset += in.pick(1L, -1L, (long) BLOCK, (long) -BLOCK, 4096L, in.u32() | 1);
                    case 5 -> {
                        if (m.type == WireBytes.TYPE_OFFSET_HOLE) {
                            m.holeLength = (m.holeLength + in.pick(1L, (long) BLOCK, (long) -BLOCK, in.u32() | 1)) & 0xffffffffL;
                        }
                    }
                    case 6 -> m.flags ^= m.simple ? 0 : 1;
                    case 7 -> {
                        if (!m.simple) {
                            m.type = in.pick(0, 1, 2, 5, 32769, 32770, in.u16());
                        }
                    }
                    case 8 -> {
                        if (m.simple) {
                            m.error = in.intIn(1, 255); // success into an error: never an error into success
                        } else {
                            m.errorValue = 0;
                        }
                    }
                    case 9 -> m.textLengthDelta = in.pick(1, -1, 7, in.intIn(-6, 100));
                    case 10 -> {
                        if (!m.simple) {
                            m.lengthOverride = 0x0200_0000L + in.u16(); // past any request's bound
                        }
                    }
                    case 11 -> garbage.add(WireBytes.concat(new byte[] {0}, in.bytes(in.intIn(0, 30))));
                    default -> cut = in.intIn(0, 1 << 16);
                }
            }
            List<byte[]> parts = new ArrayList<>();
            stream.forEach(m -> parts.add(m.wire()));
            for (byte[] g : garbage) {
                parts.add(in.intIn(0, parts.size()), g); // starts with 0: no magic does
            }
            byte[] wire = WireBytes.concat(parts.toArray(byte[][]::new));
            return cut >= 0 && wire.length > 0 ? Arrays.copyOf(wire, cut % wire.length) : wire;
        }
    }
}
