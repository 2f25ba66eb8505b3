package org.nbdroot.proto.handshake;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.nbdroot.proto.WireBytes.bytes;
import static org.nbdroot.proto.WireBytes.optionReply;

import com.code_intelligence.jazzer.junit.FuzzTest;
import io.netty.buffer.ByteBuf;
import io.netty.channel.embedded.EmbeddedChannel;
import io.netty.util.concurrent.Promise;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.Size;
import org.nbdroot.proto.BlockSize;
import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.ExportListing;
import org.nbdroot.proto.FuzzInput;
import org.nbdroot.proto.NbdException;
import org.nbdroot.proto.TrackingAllocator;
import org.nbdroot.proto.WireBytes;

/**
 * The handshake against a fuzzed server: it answers each option the client sends with replies
 * the fuzzer picks (proper ones carrying fuzzed values, ones of the wrong type or for the wrong
 * option, corrupted ones, raw bytes), split into socket reads. The handshake must end, within
 * a bounded number of exchanges plus a close or its timeout, either with a result that holds
 * exactly what the server sent (when nothing was corrupted) or with an {@link NbdException}
 * that has a message; the client only ever sends well-formed options; nothing is unreleased.
 */
class HandshakerFuzzTest {
    private static final int OPT_EXPORT_NAME = 1;
    private static final int OPT_ABORT = 2;
    private static final int OPT_LIST = 3;
    private static final int OPT_STARTTLS = 5;
    private static final int OPT_INFO = 6;
    private static final int OPT_GO = 7;
    private static final int OPT_STRUCTURED_REPLY = 8;
    private static final int OPT_LIST_META_CONTEXT = 9;
    private static final int OPT_SET_META_CONTEXT = 10;
    private static final int OPT_EXTENDED_HEADERS = 11;
    private static final long REP_ACK = 1;
    private static final long REP_SERVER = 2;
    private static final long REP_INFO = 3;
    private static final long REP_META_CONTEXT = 4;
    private static final long REP_ERR = 1L << 31;
    private static final Duration TIMEOUT = Duration.ofSeconds(10);

    @FuzzTest(maxExecutions = 1_000_000, maxDuration = "3h")
    void endsWithWhatTheServerSentOrAnNbdException(byte[] input) {
        run(input);
    }

    @Property(tries = 10_000)
    void endsWithWhatTheServerSentOrAnNbdExceptionOnRandomInput(@ForAll @Size(max = 600) byte[] input) {
        run(input);
    }

    static void run(byte[] input) {
        new Scenario(new FuzzInput(input)).play();
    }

    /** What the server has told the client so far, as the handshake is meant to record it. */
    private static final class Model {
        boolean tainted; // something corrupted went out: only the kind of outcome is checked
        boolean mustFail; // something the client must refuse was sent (an impossible size or block size)
        boolean noZeroes;
        long size = -1;
        int flags;
        String name;
        String description;
        BlockSize blockSize;
        boolean structured;
        boolean extended;
        final Map<Integer, String> metaContexts = new LinkedHashMap<>();
        final List<String> available = new ArrayList<>();
        final List<ExportListing> exports = new ArrayList<>();
    }

    private static final class FakeTls implements TlsStarter {
        Promise<Void> started;

        @Override
        public io.netty.util.concurrent.Future<?> start(io.netty.channel.ChannelHandlerContext ctx) {
            started = ctx.executor().newPromise();
            return started;
        }

        @Override
        public String describe() {
            return "fake TLS";
        }
    }

    private static final class Scenario {
        final FuzzInput in;
        final TrackingAllocator alloc = new TrackingAllocator();
        final List<ByteBuf> fed = new ArrayList<>();
        final List<HandshakeResult> installed = new ArrayList<>();
        final Model model = new Model();
        final HandshakePlan plan;
        final FakeTls tls;
        final EmbeddedChannel ch = new EmbeddedChannel();
        final Promise<HandshakeResult> result;
        /** The client's bytes not yet parsed; its flags come first. */
        ByteBuffer client = ByteBuffer.allocate(0);
        boolean flagsSeen;

        Scenario(FuzzInput in) {
            this.in = in;
            HandshakePlan p = HandshakePlan.transmission(in.pick("", "disk"))
                    .withGoal(in.pick(HandshakePlan.Goal.values()))
                    .withStructuredReplies(in.bool())
                    .withMetaContexts(in.bool() ? List.of("base:allocation") : List.of())
                    .withListMetaContexts(in.bool())
                    .withExtendedHeaders(in.bool())
                    .withTimeout(TIMEOUT);
            tls = in.u8() >= 224 ? new FakeTls() : null;
            plan = tls != null ? p.withTls(tls) : p;
            ch.config().setAllocator(alloc);
            result = ch.eventLoop().newPromise();
            ch.pipeline().addLast(new Handshaker(plan, result, (ctx, r) -> installed.add(r)));
        }

        void play() {
            greeting();
            for (int round = 0; round < 24 && !result.isDone(); round++) {
                if (tls != null && tls.started != null && !tls.started.isDone()) {
                    if (in.u8() < 224) {
                        tls.started.setSuccess(null);
                    } else {
                        tls.started.setFailure(new javax.net.ssl.SSLException("fake TLS refused"));
                    }
                    continue;
                }
                int option = lastOptionSent();
                if (option < 0) {
                    break;
                }
                answer(option);
            }
            if (!result.isDone()) {
                if (in.bool()) {
                    ch.close();
                } else {
                    ch.advanceTimeBy(TIMEOUT.toNanos() + 1, TimeUnit.NANOSECONDS);
                    ch.runScheduledPendingTasks();
                }
            }
            lastOptionSent(); // what the client sent last (an ABORT) must be well-formed too
            assertTrue(result.isDone(), "the handshake ended: closed or timed out at the latest");
            if (result.isSuccess()) {
                checkConsistent(result.getNow());
            } else {
                Throwable cause = result.cause();
                if (!(cause instanceof NbdException)) {
                    throw new AssertionError("a failed handshake fails with an NbdException", cause);
                }
                assertTrue(cause.getMessage() != null && !cause.getMessage().isBlank(), "the failure says why");
            }
            WireBytes.drainOutbound(ch);
            ch.finishAndReleaseAll();
            fed.forEach(b -> assertEquals(0, b.refCnt(), "an inbound buffer was not released"));
            assertEquals(List.of(), alloc.unreleased(), "buffers the handshaker allocated were not released");
        }

        private void greeting() {
            switch (in.intIn(0, 7)) {
                case 0 -> send(bytes().u64(WireBytes.NBDMAGIC).u64(WireBytes.OLDSTYLE_MAGIC).u64(1 << 20).u32(0)
                        .zeroes(124).array(), true);
                case 1 -> send(in.bytes(in.intIn(1, 24)), true);
                default -> {
                    int flags = in.pick(1, 3, 3, 3, 0, 2, in.u16());
                    model.noZeroes = (flags & 2) != 0;
                    send(WireBytes.greeting(flags), false);
                }
            }
        }

        /** Reads what the client sent; the option awaiting an answer, or -1 if it sent none. */
        private int lastOptionSent() {
            byte[] sent = WireBytes.drainOutbound(ch);
            ByteBuffer all = ByteBuffer.allocate(client.remaining() + sent.length);
            all.put(client).put(sent).flip();
            client = all;
            if (!flagsSeen) {
                if (client.remaining() < 4) {
                    return -1;
                }
                int flags = client.getInt();
                assertEquals(0, flags & ~3, "client flags: only FIXED_NEWSTYLE and NO_ZEROES");
                flagsSeen = true;
            }
            int option = -1;
            while (client.remaining() >= 16) {
                int start = client.position();
                assertEquals(WireBytes.IHAVEOPT, client.getLong(), "every option starts with IHAVEOPT");
                int code = client.getInt();
                long length = client.getInt() & 0xffffffffL;
                if (client.remaining() < length) {
                    client.position(start);
                    break;
                }
                client.position(client.position() + (int) length);
                assertTrue(code >= OPT_EXPORT_NAME && code <= OPT_EXTENDED_HEADERS, "a known option: " + code);
                assertTrue(model.tainted || !model.extended || code != OPT_STRUCTURED_REPLY,
                        "no NBD_OPT_STRUCTURED_REPLY once extended headers were granted");
                option = code == OPT_ABORT ? -1 : code;
            }
            client = client.slice();
            return option;
        }

        /** Up to three data replies, then (most often) the ACK or error that ends the option's turn. */
        private void answer(int option) {
            if (option == OPT_EXPORT_NAME) {
                if (in.u8() < 16) {
                    send(in.bytes(in.intIn(1, 140)), true);
                } else {
                    long size = size();
                    int flags = in.u16();
                    model.size = size;
                    model.flags = flags;
                    send(bytes().u64(size).u16(flags).zeroes(model.noZeroes ? 0 : 124).array(), false);
                }
                return;
            }
            int replies = in.intIn(0, 3);
            for (int i = 0; i < replies; i++) {
                dataReply(option);
            }
            int end = in.intIn(0, 9);
            if (end <= 5) {
                send(optionReply(option, REP_ACK, new byte[0]), false);
                if (option == OPT_STRUCTURED_REPLY) {
                    model.structured = true;
                } else if (option == OPT_EXTENDED_HEADERS) {
                    // extended headers stand in for structured replies
                    model.structured = true;
                    model.extended = true;
                }
            } else if (end <= 8) {
                long type = in.bool() ? REP_ERR + in.intIn(1, 10) : REP_ERR + in.u16();
                send(optionReply(option, type, ascii(in.intIn(0, 20))), false);
                if (option == OPT_SET_META_CONTEXT) {
                    model.metaContexts.clear();
                } else if (option == OPT_LIST_META_CONTEXT) {
                    model.available.clear();
                }
            } // else: no end; the client must wait (and the close or timeout end it)
        }

        private void dataReply(int option) {
            int kind = in.intIn(0, 11);
            switch (kind) {
                case 0 -> {
                    byte[] info = infoExport();
                    infoReply(option, info, model.size >= 0);
                }
                case 1 -> {
                    String name = text();
                    model.name = name;
                    infoReply(option, bytes().u16(1).utf8(name).array());
                }
                case 2 -> {
                    String d = text();
                    model.description = d;
                    infoReply(option, bytes().u16(2).utf8(d).array());
                }
                case 3 -> {
                    long min = in.pick(1L, 512L, 4096L, 65536L, 3L, 131072L, in.u32());
                    long preferred = in.pick(4096L, 512L, min, 1L << 20, in.u32());
                    long max = in.pick(1L << 25, 0xffffffffL, min, 1000L, in.u32());
                    boolean valid = BlockSizeRules.valid(min, preferred, max);
                    if (valid) {
                        model.blockSize = BlockSize.fromWire(min, preferred, max);
                    }
                    infoReply(option, bytes().u16(3).u32(min).u32(preferred).u32(max).array(), valid);
                }
                case 4 -> infoReply(option, bytes().u16(in.intIn(4, 0xffff)).raw(in.bytes(in.intIn(0, 8))).array());
                case 5 -> {
                    String name = text();
                    String desc = text();
                    if (option == OPT_LIST) {
                        model.exports.add(new ExportListing(name, desc));
                    }
                    send(optionReply(option, REP_SERVER, bytes().string(name).utf8(desc).array()), !(option == OPT_LIST));
                }
                case 6 -> {
                    int id = (int) in.u32();
                    String name = in.bool() ? "base:allocation" : text();
                    // SET: one reply per context asked for, with its own id; anything else is refused.
                    boolean refused = option == OPT_SET_META_CONTEXT && (!plan.metaContexts().contains(name)
                            || model.metaContexts.containsKey(id) || model.metaContexts.containsValue(name));
                    if (option == OPT_SET_META_CONTEXT && !refused) {
                        model.metaContexts.put(id, name);
                    } else if (option == OPT_LIST_META_CONTEXT) {
                        model.available.add(name);
                    }
                    send(optionReply(option, REP_META_CONTEXT, bytes().u32(id).utf8(name).array()),
                            refused || option != OPT_SET_META_CONTEXT && option != OPT_LIST_META_CONTEXT);
                }
                case 7 -> { // a reply for another option
                    send(optionReply(in.intIn(0, 12), REP_ACK, new byte[0]), true);
                }
                case 8 -> { // a well-formed reply with one byte changed
                    byte[] reply = optionReply(option, REP_INFO, infoExport());
                    reply[in.intIn(0, reply.length - 1)] ^= (byte) in.intIn(1, 255);
                    send(reply, true);
                }
                case 9 -> send(optionReply(option, in.u32(), in.bytes(in.intIn(0, 16))), true); // any type
                case 10 -> send(bytes().u64(WireBytes.OPTION_REPLY_MAGIC).u32(option).u32(REP_INFO)
                        .u32(in.pick(0L, 5000L, 0xffffffffL, in.u32())).array(), true); // a length, no payload
                default -> send(in.bytes(in.intIn(1, 40)), true);
            }
        }

        /** NBD_INFO_EXPORT with a fuzzed size and flags; the model takes them only if the client may. */
        private byte[] infoExport() {
            long size = size();
            int flags = in.u16();
            model.size = size;
            model.flags = flags;
            return bytes().u16(0).u64(size).u16(flags).array();
        }

        private long size() {
            return in.pick(1L << 20, 4096L * in.u16(), 0L, 1000L, -4096L, in.u64());
        }

        /** An INFO reply: the model's values count only when the option is GO or INFO. */
        private void infoReply(int option, byte[] info) {
            infoReply(option, info, true);
        }

        /** {@code valid}: false for an INFO the client must refuse at once. */
        private void infoReply(int option, byte[] info, boolean valid) {
            boolean meaningful = option == OPT_GO || option == OPT_INFO;
            model.mustFail |= meaningful && !valid;
            send(optionReply(option, REP_INFO, info), !meaningful);
        }

        private String text() {
            return in.intIn(0, 15) == 0 ? "n".repeat(5000) : new String(ascii(in.intIn(0, 12)), StandardCharsets.US_ASCII);
        }

        private byte[] ascii(int n) {
            byte[] b = in.bytes(n);
            for (int i = 0; i < n; i++) {
                b[i] = (byte) ('a' + (b[i] & 0xff) % 26);
            }
            return b;
        }

        /** Sends bytes in fuzzed socket reads; {@code tainted}: the model cannot say what they mean. */
        private void send(byte[] wire, boolean tainted) {
            model.tainted |= tainted;
            for (ByteBuf read : in.socketReads(wire, 3)) {
                if (!ch.isOpen()) { // the client hung up: what the server still sends goes nowhere
                    read.release();
                    continue;
                }
                fed.add(read);
                ch.writeInbound(read);
                ch.runPendingTasks();
            }
        }

        private void checkConsistent(HandshakeResult r) {
            if (plan.goal() == HandshakePlan.Goal.LIST_EXPORTS) {
                assertTrue(r.export() == null && !r.transmission(), "a listing enters no transmission");
                if (!model.tainted) {
                    assertEquals(model.exports, r.exports(), "the exports the server listed");
                }
                return;
            }
            ExportInfo e = r.export();
            assertNotNull(e, "a successful GO or INFO describes the export");
            assertEquals(r.transmission() ? 1 : 0, installed.size(), "transmission handlers installed once, on GO");
            assertTrue(plan.goal() == HandshakePlan.Goal.INFO || r.transmission(), "GO enters transmission");
            // Whatever was accepted obeys the spec, corrupted input or not.
            assertTrue(e.size() >= 0 && e.size() % e.blockSize().minimum() == 0, "size a multiple of the minimum block");
            BlockSize b = e.blockSize();
            assertTrue(BlockSizeRules.valid(b.minimum(), b.preferred(), b.maximum()), "block sizes as the spec allows: " + b);
            assertTrue(e.name().length() <= 4096 && (e.description() == null || e.description().length() <= 4096),
                    "strings within the spec's limit");
            if (model.tainted) {
                return;
            }
            assertTrue(!model.mustFail, "the handshake accepted a size or block size the spec forbids");
            assertEquals(model.size, e.size(), "the size the server sent last");
            assertEquals(model.flags, e.flags(), "the transmission flags the server sent last");
            String expectedName = model.name != null && !model.name.isEmpty() ? model.name : plan.exportName();
            assertEquals(expectedName, e.name());
            assertEquals(model.description, e.description());
            assertEquals(model.blockSize != null ? model.blockSize : BlockSize.DEFAULT, e.blockSize());
            assertEquals(model.blockSize != null, e.blockSizeFromServer());
            assertEquals(model.structured, e.structuredReplies());
            assertEquals(model.extended, e.extendedHeaders());
            assertEquals(model.metaContexts, e.metaContexts());
            assertEquals(model.available, r.availableMetaContexts());
        }
    }

    /** proto.md, "Block size constraints", written out here rather than taken from the engine. */
    static final class BlockSizeRules {
        static boolean valid(long min, long preferred, long max) {
            boolean minOk = min >= 1 && min <= 65536 && Long.bitCount(min) == 1;
            boolean preferredOk = preferred >= Math.max(512, min) && Long.bitCount(preferred) == 1;
            boolean maxOk = max == 0xffffffffL || max >= min && max % Math.max(min, 1) == 0;
            return minOk && preferredOk && maxOk;
        }
    }
}
