package org.nbdroot.proto.handshake;

import static java.nio.charset.StandardCharsets.UTF_8;
import static org.nbdroot.proto.wire.NbdConstants.FLAG_C_FIXED_NEWSTYLE;
import static org.nbdroot.proto.wire.NbdConstants.FLAG_C_NO_ZEROES;
import static org.nbdroot.proto.wire.NbdConstants.FLAG_FIXED_NEWSTYLE;
import static org.nbdroot.proto.wire.NbdConstants.FLAG_NO_ZEROES;
import static org.nbdroot.proto.wire.NbdConstants.IHAVEOPT;
import static org.nbdroot.proto.wire.NbdConstants.MAX_STRING_LENGTH;
import static org.nbdroot.proto.wire.NbdConstants.NBDMAGIC;
import static org.nbdroot.proto.wire.NbdConstants.OLDSTYLE_MAGIC;
import static org.nbdroot.proto.wire.NbdConstants.OPTION_REPLY_MAGIC;

import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.ByteToMessageDecoder;
import io.netty.util.concurrent.Promise;
import io.netty.util.concurrent.ScheduledFuture;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.function.BiConsumer;
import org.nbdroot.proto.BlockSize;
import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.ExportListing;
import org.nbdroot.proto.NbdException;
import org.nbdroot.proto.NbdOptionException;
import org.nbdroot.proto.NbdProtocolException;
import org.nbdroot.proto.wire.NbdConstants;
import org.nbdroot.proto.wire.NbdOption;
import org.nbdroot.proto.wire.OptionReplyType;

/**
 * The client side of the fixed newstyle handshake, as a state machine.
 *
 * <p>The options to send are queued up front from the {@link HandshakePlan}; each reply
 * either moves to the next one or changes the queue (a server without {@code NBD_OPT_GO}
 * gets {@code NBD_OPT_EXPORT_NAME}). Anything malformed ends in one place, {@link #fail},
 * with a message that names the option and the field. On success the handler calls
 * {@code beforeTransmission} so the transmission handlers are in place, then removes itself:
 * no byte the server sends afterwards is lost.
 *
 * <p>{@code NBD_OPT_EXTENDED_HEADERS} (when the plan asks) comes before everything but TLS:
 * granted, it stands for structured replies too, so {@code NBD_OPT_STRUCTURED_REPLY} is not sent;
 * refused in any way, the handshake goes on exactly as without it.
 *
 * <p>With TLS in the plan, {@code NBD_OPT_STARTTLS} is the first option and the only thing
 * sent in plain text: a server that refuses it, or a TLS handshake that fails, ends the
 * attempt; there is no fallback. The other options are negotiated afresh inside TLS.
 */
public final class Handshaker extends ByteToMessageDecoder {
    private enum State {
        GREETING,
        OPTION_REPLY,
        TLS_HANDSHAKE,
        EXPORT_NAME_REPLY,
        /** The server is in transmission; the client is putting its handlers in place. */
        TRANSMISSION_SETUP,
        DONE,
        DEAD
    }

    /** Option replies carry at most a name and a description, each bounded by the spec. */
    static final int MAX_OPTION_REPLY_LENGTH = 4 + 2 * MAX_STRING_LENGTH + 64;
    /**
     * Each reply is bounded, their number is not: a server that never ends a list of exports or
     * of meta contexts would otherwise fill the heap of a daemon that serves a root disk.
     */
    static final int MAX_KEPT_PER_OPTION = 4 << 20;
    /** Also in number: a reply of 4 bytes costs far more than 4 bytes of heap once kept. */
    static final int MAX_REPLIES_PER_OPTION = 65536;
    private static final int EXPORT_NAME_REPLY_LENGTH = 8 + 2;
    private static final int EXPORT_NAME_REPLY_ZEROES = 124;

    private final HandshakePlan plan;
    private final Promise<HandshakeResult> result;
    private final BiConsumer<ChannelHandlerContext, HandshakeResult> beforeTransmission;
    private final Deque<NbdOption> pending = new ArrayDeque<>();

    private State state = State.GREETING;
    private NbdOption current;
    /** Bytes of the current option's replies kept (export names, meta contexts): bounded by {@link #MAX_KEPT_PER_OPTION}. */
    private long keptForOption;
    /** How many replies to the current option were kept: bounded by {@link #MAX_REPLIES_PER_OPTION}. */
    private int repliesForOption;
    private ScheduledFuture<?> timeout;
    private boolean noZeroes;
    /** Options answered since TLS was set up; -1 before (or without) TLS. */
    private int optionsSinceTls = -1;

    // What the server told us so far.
    private boolean structuredReplies;
    private boolean extendedHeaders;
    private final Map<Integer, String> metaContexts = new LinkedHashMap<>();
    private final List<String> availableMetaContexts = new ArrayList<>();
    private final List<ExportListing> exports = new ArrayList<>();
    private long size = -1;
    private int transmissionFlags;
    private String canonicalName;
    private String description;
    private BlockSize blockSize;

    public Handshaker(HandshakePlan plan, Promise<HandshakeResult> result,
            BiConsumer<ChannelHandlerContext, HandshakeResult> beforeTransmission) {
        this.plan = plan;
        this.result = result;
        this.beforeTransmission = beforeTransmission;
        if (plan.exportName().getBytes(UTF_8).length > MAX_STRING_LENGTH) {
            throw new IllegalArgumentException("export name is longer than " + MAX_STRING_LENGTH + " bytes");
        }
    }

    @Override
    public void handlerAdded(ChannelHandlerContext ctx) {
        long nanos = plan.timeout().toNanos();
        timeout = ctx.executor().schedule(() -> fail(ctx, new NbdException(
                "handshake timed out after " + describe(plan.timeout()) + " " + stage())), nanos, TimeUnit.NANOSECONDS);
    }

    @Override
    protected void decode(ChannelHandlerContext ctx, ByteBuf in, List<Object> out) {
        try {
            switch (state) {
                case GREETING -> decodeGreeting(ctx, in);
                case OPTION_REPLY -> decodeOptionReply(ctx, in);
                case TLS_HANDSHAKE -> throw new NbdProtocolException("the server sent " + in.readableBytes()
                        + " bytes in the clear after acknowledging NBD_OPT_STARTTLS, before TLS");
                case EXPORT_NAME_REPLY -> decodeExportNameReply(ctx, in);
                case DONE, DEAD -> in.skipBytes(in.readableBytes());
            }
        } catch (NbdException e) {
            fail(ctx, e);
        }
    }

    // GREETING: "NBDMAGIC", "IHAVEOPT", 16 bits of handshake flags.
    private void decodeGreeting(ChannelHandlerContext ctx, ByteBuf in) throws NbdException {
        if (in.readableBytes() < 18) {
            return;
        }
        long magic = in.readLong();
        if (magic != NBDMAGIC) {
            throw new NbdProtocolException(String.format(
                    "not an NBD server: greeting starts with %#018x (expected: %#018x, \"NBDMAGIC\")", magic, NBDMAGIC));
        }
        long style = in.readLong();
        if (style == OLDSTYLE_MAGIC) {
            throw new NbdProtocolException("the server speaks the oldstyle handshake, which has no export names "
                    + "and is not supported; configure the server for the newstyle handshake");
        }
        if (style != IHAVEOPT) {
            throw new NbdProtocolException(String.format(
                    "bad handshake magic %#018x (expected: %#018x, \"IHAVEOPT\")", style, IHAVEOPT));
        }
        int serverFlags = in.readUnsignedShort();
        boolean fixedNewstyle = (serverFlags & FLAG_FIXED_NEWSTYLE) != 0;
        noZeroes = (serverFlags & FLAG_NO_ZEROES) != 0;
        int clientFlags = (fixedNewstyle ? FLAG_C_FIXED_NEWSTYLE : 0) | (noZeroes ? FLAG_C_NO_ZEROES : 0);
        ctx.write(ctx.alloc().buffer(4).writeInt(clientFlags));
        planOptions(fixedNewstyle);
        sendNextOption(ctx);
    }

    private void planOptions(boolean fixedNewstyle) throws NbdException {
        if (plan.tls() != null) {
            if (!fixedNewstyle) {
                throw new NbdException("TLS is required, but the server does not speak fixed newstyle and so cannot "
                        + "start TLS (NBD_OPT_STARTTLS); not going on in plain text");
            }
            pending.add(NbdOption.STARTTLS);
        }
        if (plan.goal() == HandshakePlan.Goal.LIST_EXPORTS) {
            if (!fixedNewstyle) {
                throw new NbdException("the server does not speak fixed newstyle, so it cannot list its exports");
            }
            pending.add(NbdOption.LIST);
            return;
        }
        if (!fixedNewstyle) {
            // Plain newstyle servers understand nothing but NBD_OPT_EXPORT_NAME.
            pending.add(NbdOption.EXPORT_NAME);
            return;
        }
        if (plan.structuredReplies()) {
            if (plan.extendedHeaders()) {
                // First, as the spec orders it: granted, it takes the place of NBD_OPT_STRUCTURED_REPLY.
                pending.add(NbdOption.EXTENDED_HEADERS);
            }
            pending.add(NbdOption.STRUCTURED_REPLY);
            if (plan.listMetaContexts()) {
                pending.add(NbdOption.LIST_META_CONTEXT);
            }
            if (!plan.metaContexts().isEmpty()) {
                pending.add(NbdOption.SET_META_CONTEXT);
            }
        }
        pending.add(plan.goal() == HandshakePlan.Goal.INFO ? NbdOption.INFO : NbdOption.GO);
    }

    private void sendNextOption(ChannelHandlerContext ctx) {
        current = pending.poll();
        keptForOption = 0;
        repliesForOption = 0;
        ByteBuf data = ctx.alloc().buffer();
        switch (current) {
            case EXPORT_NAME -> data.writeBytes(plan.exportName().getBytes(UTF_8));
            case GO, INFO -> {
                writeString(data, plan.exportName());
                data.writeShort(3);
                data.writeShort(NbdConstants.INFO_NAME);
                data.writeShort(NbdConstants.INFO_DESCRIPTION);
                data.writeShort(NbdConstants.INFO_BLOCK_SIZE);
            }
            case LIST_META_CONTEXT -> {
                writeString(data, plan.exportName());
                data.writeInt(0); // no queries: every context the server has
            }
            case SET_META_CONTEXT -> {
                writeString(data, plan.exportName());
                data.writeInt(plan.metaContexts().size());
                plan.metaContexts().forEach(name -> writeString(data, name));
            }
            default -> { } // LIST, STRUCTURED_REPLY and EXTENDED_HEADERS carry no data
        }
        ByteBuf header = ctx.alloc().buffer(16);
        header.writeLong(IHAVEOPT).writeInt(current.code()).writeInt(data.readableBytes());
        ctx.write(header);
        ctx.writeAndFlush(data).addListener(ChannelFutureListener.FIRE_EXCEPTION_ON_FAILURE);
        state = current == NbdOption.EXPORT_NAME ? State.EXPORT_NAME_REPLY : State.OPTION_REPLY;
    }

    private static void writeString(ByteBuf out, String s) {
        byte[] bytes = s.getBytes(UTF_8);
        out.writeInt(bytes.length).writeBytes(bytes);
    }

    // OPTION_REPLY: magic, option, reply type, length, then that many bytes.
    private void decodeOptionReply(ChannelHandlerContext ctx, ByteBuf in) throws NbdException {
        if (in.readableBytes() < 20) {
            return;
        }
        int start = in.readerIndex();
        long magic = in.getLong(start);
        if (magic != OPTION_REPLY_MAGIC) {
            throw new NbdProtocolException(String.format("bad option reply magic %#x to %s (expected: %#x)",
                    magic, current.specName(), OPTION_REPLY_MAGIC));
        }
        int option = in.getInt(start + 8);
        if (option != current.code()) {
            throw new NbdProtocolException(String.format("server answered %s while %s was asked",
                    NbdOption.nameOf(option), current.specName()));
        }
        int type = in.getInt(start + 12);
        long length = in.getUnsignedInt(start + 16);
        if (length > MAX_OPTION_REPLY_LENGTH) {
            throw new NbdProtocolException(String.format("reply to %s is %d bytes long (expected: <= %d)",
                    current.specName(), length, MAX_OPTION_REPLY_LENGTH));
        }
        if (in.readableBytes() < 20 + length) {
            return;
        }
        in.skipBytes(20);
        ByteBuf payload = in.readSlice((int) length);
        if (optionsSinceTls >= 0) {
            optionsSinceTls++;
        }
        if (current == NbdOption.STARTTLS && type == OptionReplyType.ACK.code()) {
            expectLength(payload, 0, "NBD_REP_ACK");
            if (in.isReadable()) {
                // Bytes that arrived in the clear must not pass for what TLS will carry.
                throw new NbdProtocolException("the server sent " + in.readableBytes()
                        + " bytes in the clear after acknowledging NBD_OPT_STARTTLS, before TLS");
            }
            startTls(ctx);
        } else if (OptionReplyType.isError(type)) {
            onOptionError(ctx, type, readErrorMessage(payload));
        } else if (type == OptionReplyType.ACK.code()) {
            expectLength(payload, 0, "NBD_REP_ACK");
            onOptionAck(ctx);
        } else {
            onOptionData(type, payload);
        }
    }

    private void startTls(ChannelHandlerContext ctx) {
        state = State.TLS_HANDSHAKE;
        plan.tls().start(ctx).addListener(f -> {
            if (state != State.TLS_HANDSHAKE) {
                return;
            }
            if (!f.isSuccess()) {
                fail(ctx, f.cause());
                return;
            }
            state = State.OPTION_REPLY;
            optionsSinceTls = 0;
            try {
                sendNextOption(ctx);
            } catch (RuntimeException e) {
                fail(ctx, e);
            }
        });
    }

    private void onOptionData(int type, ByteBuf payload) throws NbdException {
        keptForOption += payload.readableBytes();
        if (keptForOption > MAX_KEPT_PER_OPTION || ++repliesForOption > MAX_REPLIES_PER_OPTION) {
            throw new NbdProtocolException(String.format("the server sent more than %d MiB or %d replies to %s",
                    MAX_KEPT_PER_OPTION >> 20, MAX_REPLIES_PER_OPTION, current.specName()));
        }
        if (current == NbdOption.LIST && type == OptionReplyType.SERVER.code()) {
            String name = readString(payload, "export name in NBD_REP_SERVER");
            String desc = readRest(payload, "export description in NBD_REP_SERVER");
            exports.add(new ExportListing(name, desc));
        } else if ((current == NbdOption.SET_META_CONTEXT || current == NbdOption.LIST_META_CONTEXT)
                && type == OptionReplyType.META_CONTEXT.code()) {
            if (payload.readableBytes() < 4) {
                throw new NbdProtocolException("NBD_REP_META_CONTEXT is " + payload.readableBytes() + " bytes long (expected: >= 4)");
            }
            int id = payload.readInt();
            String name = readRest(payload, "meta context name");
            if (current == NbdOption.SET_META_CONTEXT) {
                // One reply per context selected, each selected by a query: nothing else is kept.
                if (!asked(name)) {
                    throw new NbdProtocolException("the server selected meta context '" + name + "', which was not asked for"
                            + " (asked: " + String.join(", ", plan.metaContexts()) + ")");
                }
                if (metaContexts.containsValue(name)) {
                    throw new NbdProtocolException("the server selected meta context '" + name + "' twice");
                }
                String earlier = metaContexts.putIfAbsent(id, name);
                if (earlier != null) {
                    throw new NbdProtocolException(String.format(
                            "the server gave meta context id %d to both '%s' and '%s'", id, earlier, name));
                }
            } else {
                availableMetaContexts.add(name);
            }
        } else if ((current == NbdOption.GO || current == NbdOption.INFO) && type == OptionReplyType.INFO.code()) {
            onInfo(payload);
        } else {
            throw new NbdProtocolException(String.format("unexpected reply type %#x to %s", type, current.specName()));
        }
    }

    /** Whether a query of the plan selects {@code name}: the same name, or a namespace query ("x-foo:") it lies in. */
    private boolean asked(String name) {
        for (String query : plan.metaContexts()) {
            if (query.equals(name) || (query.endsWith(":") && name.startsWith(query))) {
                return true;
            }
        }
        return false;
    }

    private void onInfo(ByteBuf payload) throws NbdException {
        if (payload.readableBytes() < 2) {
            throw new NbdProtocolException("NBD_REP_INFO is " + payload.readableBytes() + " bytes long (expected: >= 2)");
        }
        int info = payload.readUnsignedShort();
        switch (info) {
            case NbdConstants.INFO_EXPORT -> {
                expectLength(payload, 10, "NBD_INFO_EXPORT");
                size = checkSize(payload.readLong());
                transmissionFlags = payload.readUnsignedShort();
            }
            case NbdConstants.INFO_NAME -> canonicalName = readRest(payload, "NBD_INFO_NAME");
            case NbdConstants.INFO_DESCRIPTION -> description = readRest(payload, "NBD_INFO_DESCRIPTION");
            case NbdConstants.INFO_BLOCK_SIZE -> {
                expectLength(payload, 12, "NBD_INFO_BLOCK_SIZE");
                long min = payload.readUnsignedInt();
                long preferred = payload.readUnsignedInt();
                long max = payload.readUnsignedInt();
                String violation = BlockSize.violation(min, preferred, max);
                if (violation != null) {
                    throw new NbdProtocolException("NBD_INFO_BLOCK_SIZE: " + violation);
                }
                blockSize = BlockSize.fromWire(min, preferred, max);
            }
            default -> payload.skipBytes(payload.readableBytes()); // the spec says to ignore unknown info
        }
    }

    private void onOptionAck(ChannelHandlerContext ctx) throws NbdException {
        switch (current) {
            case STRUCTURED_REPLY -> structuredReplies = true;
            case EXTENDED_HEADERS -> {
                // Extended headers bring structured replies with them; asking for those too could only be refused.
                extendedHeaders = true;
                structuredReplies = true;
                pending.remove(NbdOption.STRUCTURED_REPLY);
            }
            case LIST -> {
                finish(ctx, new HandshakeResult(null, List.copyOf(exports), List.of(), false));
                return;
            }
            case GO, INFO -> {
                if (size < 0) {
                    throw new NbdProtocolException(current.specName() + " was acknowledged without NBD_INFO_EXPORT");
                }
                describeExport(ctx, current == NbdOption.GO);
                return;
            }
            default -> { }
        }
        sendNextOption(ctx);
    }

    private void onOptionError(ChannelHandlerContext ctx, int type, String message) throws NbdException {
        NbdOptionException refusal = new NbdOptionException(current.code(), type, message);
        if (refusal.is(OptionReplyType.ERR_SHUTDOWN)) {
            throw refusal; // the spec asks for a soft disconnect: fail() sends NBD_OPT_ABORT
        }
        if (current == NbdOption.EXTENDED_HEADERS) {
            // Any other refusal, NBD_REP_ERR_TLS_REQD too: go on as without it, so what follows is
            // answered (and reported) exactly as it was before extended headers were asked for.
            sendNextOption(ctx);
            return;
        }
        if (current == NbdOption.STARTTLS) {
            throw new NbdOptionException(current.code(), type, message, (refusal.is(OptionReplyType.ERR_UNSUP)
                    ? "the server does not offer TLS" : "the server would not start TLS")
                    + ", which is required: not going on in plain text");
        }
        if (refusal.is(OptionReplyType.ERR_TLS_REQD) && plan.tls() == null) {
            throw new NbdOptionException(current.code(), type, message, "connect with TLS (--tls, or an nbds:// URI)");
        }
        switch (current) {
            case STRUCTURED_REPLY -> {
                // Without structured replies there are no meta contexts either: go on without both.
                pending.remove(NbdOption.LIST_META_CONTEXT);
                pending.remove(NbdOption.SET_META_CONTEXT);
                sendNextOption(ctx);
            }
            case LIST_META_CONTEXT -> {
                availableMetaContexts.clear(); // replies before an error do not count
                sendNextOption(ctx);
            }
            case SET_META_CONTEXT -> {
                metaContexts.clear(); // a failed SET_META_CONTEXT still replaces every earlier context
                sendNextOption(ctx);
            }
            case GO, INFO -> {
                if (refusal.is(OptionReplyType.ERR_UNSUP) && current == NbdOption.GO && extendedHeaders) {
                    // The spec forbids both: a server that granted extended headers must support GO, and
                    // NBD_OPT_EXPORT_NAME must not follow them.
                    throw new NbdProtocolException("the server refused NBD_OPT_GO as unsupported after granting "
                            + "NBD_OPT_EXTENDED_HEADERS, which requires it (and rules out NBD_OPT_EXPORT_NAME)");
                }
                if (refusal.is(OptionReplyType.ERR_UNSUP)) {
                    // An older server: INFO falls back to GO, GO to the export name option (without block sizes).
                    pending.add(current == NbdOption.INFO ? NbdOption.GO : NbdOption.EXPORT_NAME);
                    sendNextOption(ctx);
                } else if (refusal.is(OptionReplyType.ERR_UNKNOWN)) {
                    throw new NbdException("no such export '" + plan.exportName() + "' on the server"
                            + (message.isEmpty() ? "" : ": " + message));
                } else {
                    throw refusal;
                }
            }
            default -> throw refusal;
        }
    }

    // EXPORT_NAME_REPLY: size, transmission flags, and 124 zero bytes unless NO_ZEROES was agreed.
    private void decodeExportNameReply(ChannelHandlerContext ctx, ByteBuf in) throws NbdException {
        int length = EXPORT_NAME_REPLY_LENGTH + (noZeroes ? 0 : EXPORT_NAME_REPLY_ZEROES);
        if (in.readableBytes() < length) {
            return;
        }
        size = checkSize(in.readLong());
        transmissionFlags = in.readUnsignedShort();
        in.skipBytes(length - EXPORT_NAME_REPLY_LENGTH);
        describeExport(ctx, true);
    }

    private void describeExport(ChannelHandlerContext ctx, boolean transmission) throws NbdException {
        BlockSize blocks = blockSize != null ? blockSize : BlockSize.DEFAULT;
        if (size % blocks.minimum() != 0) {
            throw new NbdProtocolException(String.format(
                    "export size %d is not a multiple of the minimum block size %d", size, blocks.minimum()));
        }
        String name = canonicalName != null && !canonicalName.isEmpty() ? canonicalName : plan.exportName();
        ExportInfo export = new ExportInfo(name, description, size, transmissionFlags, blocks, blockSize != null,
                structuredReplies, extendedHeaders, Map.copyOf(metaContexts));
        finish(ctx, new HandshakeResult(export, List.of(), List.copyOf(availableMetaContexts), transmission));
    }

    private void finish(ChannelHandlerContext ctx, HandshakeResult outcome) {
        if (outcome.transmission()) {
            try {
                beforeTransmission.accept(ctx, outcome);
            } catch (RuntimeException | Error e) {
                // Not DONE yet, so that the failure ends the handshake (and the connection) rather than leave it
                // waiting; and no NBD_OPT_ABORT, as the server is in transmission already.
                state = State.TRANSMISSION_SETUP;
                fail(ctx, new NbdException("setting up the connection for transmission failed: " + e, e));
                return;
            }
        } else {
            sendAbort(ctx);
        }
        state = State.DONE;
        timeout.cancel(false);
        ctx.pipeline().remove(this);
        result.trySuccess(outcome);
    }

    private void fail(ChannelHandlerContext ctx, Throwable cause) {
        if (state == State.DONE || state == State.DEAD) {
            return;
        }
        boolean polite = !(cause instanceof NbdProtocolException) && state == State.OPTION_REPLY;
        if (state == State.TLS_HANDSHAKE && !(cause instanceof NbdException)) {
            cause = new NbdException("TLS handshake with the server failed (" + plan.tls().describe() + "): "
                    + cause.getMessage(), cause);
        } else if (cause instanceof java.io.IOException && !(cause instanceof NbdException)) {
            cause = new NbdException("connection failed during the handshake, " + stage() + ": " + cause.getMessage()
                    + afterTlsHint(), cause);
        }
        state = State.DEAD;
        if (timeout != null) {
            timeout.cancel(false);
        }
        result.tryFailure(cause);
        if (polite) {
            sendAbort(ctx);
        }
        ctx.close();
    }

    /** NBD_OPT_ABORT ends the haggling politely; we need not wait for the server's ACK. */
    private static void sendAbort(ChannelHandlerContext ctx) {
        ByteBuf abort = ctx.alloc().buffer(16);
        abort.writeLong(IHAVEOPT).writeInt(NbdOption.ABORT.code()).writeInt(0);
        ctx.writeAndFlush(abort);
    }

    private static String describe(java.time.Duration d) {
        return d.toMillis() % 1000 == 0 ? d.toSeconds() + " s" : d.toMillis() + " ms";
    }

    /**
     * In TLS 1.3 a client's TLS handshake is over before the server has checked the client's
     * certificate: a server refusing it drops the connection while the first option waits.
     */
    private String afterTlsHint() {
        return optionsSinceTls == 0 ? " (right after TLS was set up: the server may have refused the client's "
                + "certificate, or wants one; see --tls-cert and --tls-key)" : "";
    }

    private String stage() {
        return switch (state) {
            case GREETING -> "waiting for the server's greeting";
            case OPTION_REPLY, EXPORT_NAME_REPLY -> "waiting for the reply to " + current.specName();
            case TLS_HANDSHAKE -> "during the TLS handshake (" + plan.tls().describe() + ")";
            default -> "";
        };
    }

    @Override
    public void channelInactive(ChannelHandlerContext ctx) throws Exception {
        String hint = current == NbdOption.EXPORT_NAME
                ? " (after NBD_OPT_EXPORT_NAME this usually means there is no export '" + plan.exportName() + "')" : "";
        fail(ctx, new NbdException("server closed the connection during the handshake, " + stage() + hint
                + afterTlsHint()));
        super.channelInactive(ctx);
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
        fail(ctx, cause);
    }

    private static long checkSize(long size) throws NbdProtocolException {
        if (size < 0) {
            throw new NbdProtocolException("export size " + Long.toUnsignedString(size) + " is 2^63 bytes or more");
        }
        return size;
    }

    private static void expectLength(ByteBuf payload, int expected, String what) throws NbdProtocolException {
        if (payload.readableBytes() != expected) {
            throw new NbdProtocolException(String.format("%s is %d bytes long (expected: %d)",
                    what, payload.readableBytes(), expected));
        }
    }

    private static String readString(ByteBuf payload, String what) throws NbdProtocolException {
        if (payload.readableBytes() < 4) {
            throw new NbdProtocolException(what + ": length field missing");
        }
        long length = payload.readUnsignedInt();
        if (length > MAX_STRING_LENGTH || length > payload.readableBytes()) {
            throw new NbdProtocolException(String.format("%s is %d bytes long (expected: <= %d and within the reply)",
                    what, length, Math.min(MAX_STRING_LENGTH, payload.readableBytes())));
        }
        return payload.readCharSequence((int) length, UTF_8).toString();
    }

    private static String readRest(ByteBuf payload, String what) throws NbdProtocolException {
        if (payload.readableBytes() > MAX_STRING_LENGTH) {
            throw new NbdProtocolException(String.format("%s is %d bytes long (expected: <= %d)",
                    what, payload.readableBytes(), MAX_STRING_LENGTH));
        }
        return payload.readCharSequence(payload.readableBytes(), UTF_8).toString();
    }

    private static String readErrorMessage(ByteBuf payload) {
        int length = Math.min(payload.readableBytes(), MAX_STRING_LENGTH);
        return payload.readCharSequence(length, UTF_8).toString().strip();
    }
}
