package org.nbdroot.proto.session;

import static java.nio.charset.StandardCharsets.UTF_8;

import io.netty.buffer.ByteBuf;
import io.netty.channel.Channel;
import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.util.internal.PlatformDependent;
import java.util.ArrayList;
import java.util.List;
import java.util.Queue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.nbdroot.proto.Extent;
import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.NbdException;
import org.nbdroot.proto.NbdProtocolException;
import org.nbdroot.proto.NbdUnsupportedException;
import org.nbdroot.proto.NbdServerErrorException;
import org.nbdroot.proto.wire.NbdError;
import org.nbdroot.proto.wire.Command;
import org.nbdroot.proto.wire.NbdConstants;
import org.nbdroot.proto.wire.Reply;
import org.nbdroot.proto.wire.RequestEncoder;

/**
 * One connection in the transmission phase: sends requests, matches replies to them by
 * handle in any order, and checks every reply against the request it answers.
 *
 * <p>Any thread may {@link #submit}; requests go through a queue that the event loop drains
 * in batches, one flush per batch. Everything else runs on the event loop. When the server
 * breaks the protocol or the connection drops, every outstanding request fails with the cause
 * and the channel is closed: nothing is handed up that the server did not properly send.
 */
public final class NbdConnection extends ChannelInboundHandlerAdapter {
    static final int SEND_AFTER_REPLY_BYTES = 256 * 1024;
    private final Channel channel;
    private final ExportInfo export;
    private final InFlightTable inFlight;
    private final RequestEncoder encoder;
    private final Queue<NbdRequest> submitted = PlatformDependent.newMpscQueue();
    private final AtomicBoolean drainScheduled = new AtomicBoolean();
    private final Runnable drain = this::drain;
    private final CompletableFuture<Void> closed = new CompletableFuture<>();
    private volatile Throwable failure;
    private volatile int inFlightEstimate;
    private boolean disconnecting;
    /** What replies brought in since the queue was last drained (event loop only); see {@link #afterReply}. */
    private int replyBytesSinceDrain;

    /**
     * Takes the requests of a connection that was lost before they were answered, so they can
     * be sent again elsewhere. Without one, they fail with the cause.
     */
    interface LossListener {
        void connectionLost(NbdConnection connection, Throwable cause, List<NbdRequest> unanswered);
    }

    private volatile LossListener lossListener;
    private boolean lossReported;
    /** Set when the connection is retired: where requests that reach it from then on go instead. */
    private volatile java.util.function.Consumer<NbdRequest> handOver;
    /** Answered with NBD_ESHUTDOWN: to be sent again like the unanswered ones (event loop only). */
    private final List<NbdRequest> refusedForShutdown = new java.util.ArrayList<>();
    /** A retiring connection's last request, sent once everything else is answered; then NBD_CMD_DISC. */
    private NbdRequest finalFlush;
    /** Requests the server answered here, with data or an error (written on the event loop only). */
    private volatile long answered;
    private static final java.util.concurrent.atomic.AtomicLongFieldUpdater<NbdConnection> ANSWERED =
            java.util.concurrent.atomic.AtomicLongFieldUpdater.newUpdater(NbdConnection.class, "answered");

    NbdConnection(Channel channel, ExportInfo export) {
        this(channel, export, null);
    }

    NbdConnection(Channel channel, ExportInfo export, LossListener lossListener) {
        this.lossListener = lossListener;
        this.channel = channel;
        this.export = export;
        this.inFlight = new InFlightTable(export.headerStyle(), export.blockSize().minimum());
        this.encoder = RequestEncoder.of(export.headerStyle());
    }

    /**
     * Declares the connection dead when a request waits longer than {@code timeout} for its
     * reply: a server that accepts but stopped answering must not hold a disk for ever. The
     * connection then fails as if it had dropped, so a reconnecting session sends its requests
     * again elsewhere. Zero: no deadline. Checked a few times per timeout, at most once a second.
     */
    void watchReplies(java.time.Duration timeout) {
        if (timeout.isZero() || timeout.isNegative()) {
            return;
        }
        long nanos = timeout.toNanos();
        long period = Math.max(TimeUnit.MILLISECONDS.toNanos(50), Math.min(TimeUnit.SECONDS.toNanos(1), nanos / 10));
        ScheduledFuture<?> watchdog = channel.eventLoop().scheduleAtFixedRate(() -> {
            if (failure != null) {
                return;
            }
            NbdRequest oldest = inFlight.oldest();
            if (oldest != null && System.nanoTime() - oldest.sentAt > nanos) {
                failEverything(new NbdException(String.format(
                        "no reply to %s within %s: the server stopped answering; dropping the connection",
                        oldest.describe(), describe(timeout))));
            }
        }, period, period, TimeUnit.NANOSECONDS);
        closed.whenComplete((v, e) -> watchdog.cancel(false));
    }

    private static String describe(java.time.Duration d) {
        return d.toMillis() % 1000 == 0 ? d.toSeconds() + " s" : d.toMillis() + " ms";
    }

    /** Set once, before requests are submitted: the session that takes this connection's lost requests. */
    void setLossListener(LossListener listener) {
        this.lossListener = listener;
    }

    /** The table the reply decoder consults; the same one this connection fills. */
    InFlightTable expectations() {
        return inFlight;
    }

    public ExportInfo export() {
        return export;
    }

    public Channel channel() {
        return channel;
    }

    /** Completes when the connection is closed, with its cause if it failed. */
    public CompletableFuture<Void> closeFuture() {
        return closed;
    }

    public boolean isUsable() {
        return failure == null && channel.isActive();
    }

    /**
     * Whether nothing is waiting to be sent or awaiting a reply here (or the connection has
     * ended), looked at on the connection's event loop: every answered request's completion,
     * a write's journal entry included, has run by then.
     */
    CompletableFuture<Boolean> quiet() {
        CompletableFuture<Boolean> answer = new CompletableFuture<>();
        try {
            channel.eventLoop().execute(() -> answer.complete(!channel.isActive()
                    || submitted.isEmpty() && inFlight.isEmpty() && refusedForShutdown.isEmpty()));
        } catch (RejectedExecutionException e) {
            answer.complete(true); // the loop has shut down: nothing more happens here
        }
        return answer;
    }

    /** Requests awaiting a reply at the last look; a hint for load balancing, read without locking. */
    int load() {
        return inFlightEstimate;
    }

    void submit(NbdRequest request) {
        java.util.function.Consumer<NbdRequest> elsewhere = handOver;
        if (elsewhere != null) {
            elsewhere.accept(request); // retired: picked just before the session replaced it
            return;
        }
        Throwable cause = failure;
        if (cause != null) {
            if (lossListener != null && !disconnecting) {
                lossListener.connectionLost(this, cause, List.of(request));
            } else {
                fail(request, cause);
            }
            return;
        }
        submitted.add(request);
        if (drainScheduled.compareAndSet(false, true)) {
            try {
                channel.eventLoop().execute(drain);
            } catch (RejectedExecutionException e) {
                failEverything(new NbdException("the connection's event loop has shut down"));
            }
        }
    }

    private void drain() {
        drainScheduled.set(false);
        replyBytesSinceDrain = 0;
        ByteBuf headers = null;
        boolean wrote = false;
        long now = 0;
        NbdRequest request;
        while ((request = submitted.poll()) != null) {
            if (handOver != null) {
                request.resetForResend();
                handOver.accept(request);
                continue;
            }
            if (failure != null || disconnecting) {
                if (failure != null && lossListener != null && !disconnecting) {
                    request.resetForResend();
                    lossListener.connectionLost(this, failure, List.of(request));
                } else {
                    fail(request, failure != null ? failure : new NbdException("the connection is being closed"));
                }
                continue;
            }
            if (request.command == Command.BLOCK_STATUS) {
                // Meta context ids are per connection: a request checked or answered elsewhere carries another's.
                request.metaContextId = export.metaContextId(NbdConstants.BASE_ALLOCATION);
            }
            String misfit = ExportFit.problem(request, export, -1);
            if (misfit != null) {
                // Checked against the session's export just before a reconnect or refresh brought this one.
                fail(request, new NbdUnsupportedException(request.describe() + " fails: the export changed before it was sent: "
                        + misfit));
                continue;
            }
            long handle = inFlight.add(request);
            request.sentAt = now != 0 ? now : (now = System.nanoTime());
            if (headers == null) {
                headers = channel.alloc().directBuffer(encoder.headerLength() * 16);
            }
            encoder.writeHeader(headers, request.command, request.flags, handle, request.offset, request.length);
            if (request.payload != null) {
                channel.write(headers, channel.voidPromise());
                headers = null;
                channel.write(request.payload.retainedDuplicate(), channel.voidPromise());
            }
            wrote = true;
        }
        if (headers != null) {
            if (headers.isReadable()) {
                channel.write(headers, channel.voidPromise());
            } else {
                headers.release();
            }
        }
        inFlightEstimate = inFlight.size();
        if (wrote) {
            channel.flush();
        }
    }

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) throws Exception {
        if (msg instanceof Reply.Simple simple) {
            int length = NbdConstants.SIMPLE_REPLY_HEADER_LENGTH + readable(simple.payload());
            onSimpleReply(simple);
            afterReply(length);
        } else if (msg instanceof Reply.Chunk chunk) {
            int length = NbdConstants.STRUCTURED_REPLY_HEADER_LENGTH + readable(chunk.payload());
            try {
                onChunk(chunk);
            } finally {
                if (chunk.payload() != null) {
                    chunk.payload().release();
                }
            }
            afterReply(length);
        } else {
            ctx.fireChannelRead(msg);
        }
    }

    private static int readable(ByteBuf payload) {
        return payload == null ? 0 : payload.readableBytes();
    }

    /**
     * Sends what the replies read so far made callers submit, once they carried
     * {@link #SEND_AFTER_REPLY_BYTES}: the queued drain would otherwise wait for the end of the
     * event loop's read batch, up to 16 socket reads of 1 MiB, while the server runs out of
     * requests to work on. Small replies still share one flush per 256 KiB (a 32-deep load of 4 KiB
     * reads: one per read batch, as before; more would cost system calls for nothing).
     */
    private void afterReply(int length) {
        replyBytesSinceDrain += length;
        if (replyBytesSinceDrain >= SEND_AFTER_REPLY_BYTES && drainScheduled.get()) {
            drain();
        }
    }

    private void onSimpleReply(Reply.Simple reply) throws NbdProtocolException {
        // Look, check, then remove: a request still in the table when a check throws is failed with the rest.
        NbdRequest request = inFlight.get(reply.handle());
        if (request.data != null || request.coverage != null || request.extents != null || request.serverError != null) {
            if (reply.payload() != null) {
                reply.payload().release();
            }
            throw new NbdProtocolException("server sent a simple reply to " + request.describe()
                    + " after structured reply chunks for it");
        }
        if (reply.error() == 0 && request.command == Command.BLOCK_STATUS) {
            // Success without a single extent: the caller would get nothing to read its answer from.
            throw new NbdProtocolException("server sent a successful simple reply to " + request.describe()
                    + ", which must report its extents in NBD_REPLY_TYPE_BLOCK_STATUS chunks");
        }
        inFlight.remove(reply.handle());
        if (reply.error() != 0) {
            finish(request, new NbdServerErrorException(reply.error(), request.describe(), null));
            return;
        }
        request.data = reply.payload();
        finish(request, null);
    }

    private void onChunk(Reply.Chunk chunk) throws NbdProtocolException {
        NbdRequest request = inFlight.get(chunk.handle());
        ByteBuf payload = chunk.payload();
        int type = chunk.type();
        switch (type) {
            case NbdConstants.REPLY_TYPE_NONE -> {
                if (payload != null || !chunk.isDone()) {
                    throw new NbdProtocolException("NBD_REPLY_TYPE_NONE for " + request.describe()
                            + " must be empty and final");
                }
            }
            case NbdConstants.REPLY_TYPE_OFFSET_DATA -> onOffsetData(request, payload);
            case NbdConstants.REPLY_TYPE_OFFSET_HOLE -> onOffsetHole(request, payload);
            case NbdConstants.REPLY_TYPE_BLOCK_STATUS, NbdConstants.REPLY_TYPE_BLOCK_STATUS_EXT ->
                    onBlockStatus(request, type, payload);
            default -> {
                if (!NbdConstants.isErrorReplyType(type)) {
                    throw new NbdProtocolException(String.format("unknown reply chunk type %d for %s", type,
                            request.describe()));
                }
                onErrorChunk(request, type, payload);
            }
        }
        if (chunk.isDone()) {
            Throwable outcome = completeness(request);
            inFlight.remove(chunk.handle());
            finish(request, outcome);
        }
    }

    private void onOffsetData(NbdRequest request, ByteBuf payload) throws NbdProtocolException {
        if (request.command != Command.READ) {
            throw new NbdProtocolException("NBD_REPLY_TYPE_OFFSET_DATA answers " + request.describe());
        }
        if (payload == null || payload.readableBytes() < 9) {
            throw new NbdProtocolException("NBD_REPLY_TYPE_OFFSET_DATA for " + request.describe()
                    + " is shorter than 9 bytes");
        }
        long offset = payload.readLong();
        int length = payload.readableBytes();
        long start = checkWithin(request, offset, length, "NBD_REPLY_TYPE_OFFSET_DATA");
        if (request.coverage == null && request.data == null && length == request.length) {
            // The whole read in one chunk, the common case: hand the slice up as it is.
            request.data = payload.retain();
            return;
        }
        coverage(request).add(start, start + length, "NBD_REPLY_TYPE_OFFSET_DATA at offset " + offset);
        readBuffer(request).setBytes((int) start, payload, payload.readerIndex(), length);
    }

    private void onOffsetHole(NbdRequest request, ByteBuf payload) throws NbdProtocolException {
        if (request.command != Command.READ) {
            throw new NbdProtocolException("NBD_REPLY_TYPE_OFFSET_HOLE answers " + request.describe());
        }
        if (payload == null || payload.readableBytes() != 12) {
            throw new NbdProtocolException("NBD_REPLY_TYPE_OFFSET_HOLE for " + request.describe()
                    + " is not 12 bytes long");
        }
        long offset = payload.readLong();
        long length = payload.readUnsignedInt();
        if (length == 0) {
            throw new NbdProtocolException("NBD_REPLY_TYPE_OFFSET_HOLE of length 0 for " + request.describe());
        }
        long start = checkWithin(request, offset, length, "NBD_REPLY_TYPE_OFFSET_HOLE");
        coverage(request).add(start, start + length, "NBD_REPLY_TYPE_OFFSET_HOLE at offset " + offset);
        readBuffer(request).setZero((int) start, (int) length);
    }

    private static long checkWithin(NbdRequest request, long offset, long length, String what)
            throws NbdProtocolException {
        long start = offset - request.offset;
        if (start < 0 || start + length > request.length) {
            throw new NbdProtocolException(String.format("%s covers [%d, %d), outside %s", what, offset,
                    offset + length, request.describe()));
        }
        return start;
    }

    /** Coverage of a READ answered in pieces; a whole-read chunk already received counts as covering everything. */
    private static ReadCoverage coverage(NbdRequest request) throws NbdProtocolException {
        if (request.coverage == null) {
            request.coverage = new ReadCoverage();
            if (request.data != null) {
                request.coverage.add(0, request.length, "the first chunk");
            }
        }
        return request.coverage;
    }

    /** The buffer a READ's chunks are assembled in; coverage checks guarantee every byte gets written. */
    private ByteBuf readBuffer(NbdRequest request) {
        if (request.data == null) {
            request.data = channel.alloc().directBuffer(request.length, request.length).writerIndex(request.length);
        }
        return request.data;
    }

    /**
     * NBD_REPLY_TYPE_BLOCK_STATUS (32-bit extents), or with extended headers _EXT (a descriptor
     * count, then 64-bit lengths and status). With extended headers "the client MUST be prepared
     * for the server to use either the compact or extended chunk type" (proto.md): both are read.
     */
    private void onBlockStatus(NbdRequest request, int type, ByteBuf payload) throws NbdProtocolException {
        boolean wide = type == NbdConstants.REPLY_TYPE_BLOCK_STATUS_EXT;
        String name = wide ? "NBD_REPLY_TYPE_BLOCK_STATUS_EXT" : "NBD_REPLY_TYPE_BLOCK_STATUS";
        if (request.command != Command.BLOCK_STATUS) {
            throw new NbdProtocolException(name + " answers " + request.describe());
        }
        if (wide && !export.extendedHeaders()) {
            throw new NbdProtocolException(name + " for " + request.describe()
                    + ", although extended headers were not negotiated (expected: NBD_REPLY_TYPE_BLOCK_STATUS)");
        }
        int prefix = wide ? 8 : 4;
        int descriptor = wide ? 16 : 8;
        if (payload == null || payload.readableBytes() < prefix + descriptor
                || (payload.readableBytes() - prefix) % descriptor != 0) {
            throw new NbdProtocolException(String.format("%s for %s is %d bytes long, not a context id%s followed "
                    + "by whole %d-byte extents", name, request.describe(), payload == null ? 0 : payload.readableBytes(),
                    wide ? " and a descriptor count" : "", descriptor));
        }
        int contextId = payload.readInt();
        if (wide) {
            long count = payload.readUnsignedInt();
            long present = payload.readableBytes() / descriptor;
            // 0: "the number of subsequent descriptors is determined solely by the length" (proto.md)
            if (count != 0 && count != present) {
                throw new NbdProtocolException(String.format("%s for %s announces %d extents but carries %d",
                        name, request.describe(), count, present));
            }
        }
        if (!export.metaContexts().containsKey(contextId)) {
            throw new NbdProtocolException(name + " names meta context id " + contextId
                    + ", which was not negotiated");
        }
        if (contextId != request.metaContextId) {
            return; // a context we did not ask about in this request
        }
        if (request.extents != null) {
            throw new NbdProtocolException("two block status chunks for one context in " + request.describe());
        }
        List<Extent> extents = new ArrayList<>(payload.readableBytes() / descriptor);
        long position = request.offset;
        long end = request.offset + request.length;
        while (payload.isReadable() && position < end) {
            long length = wide ? payload.readLong() : payload.readUnsignedInt();
            long status = wide ? payload.readLong() : payload.readUnsignedInt();
            if (length == 0) {
                throw new NbdProtocolException("block status extent of length 0 in the reply to " + request.describe());
            }
            if (status >>> 32 != 0) {
                // The contexts asked for (base:allocation) define 32 status bits; more would be lost here.
                throw new NbdProtocolException(String.format("block status extent with status %#x in the reply to %s "
                        + "(expected: 32 bits, as %s defines)", status, request.describe(),
                        export.metaContexts().get(contextId)));
            }
            // The last extent may run past the request; unsigned, so a 64-bit length of 2^63 or more clips too.
            long clipped = Long.compareUnsigned(length, end - position) > 0 ? end - position : length;
            extents.add(new Extent(position, clipped, (int) status));
            position += clipped;
        }
        request.extents = extents;
    }

    private void onErrorChunk(NbdRequest request, int type, ByteBuf payload) throws NbdProtocolException {
        if (payload == null || payload.readableBytes() < 6) {
            throw new NbdProtocolException("error chunk for " + request.describe() + " is shorter than 6 bytes");
        }
        int error = payload.readInt();
        int messageLength = payload.readUnsignedShort();
        if (error == 0) {
            throw new NbdProtocolException("error chunk with error value 0 for " + request.describe());
        }
        if (messageLength > payload.readableBytes()) {
            throw new NbdProtocolException(String.format("error chunk message of %d bytes in a %d-byte chunk for %s",
                    messageLength, payload.readableBytes() + 6, request.describe()));
        }
        String message = payload.readCharSequence(messageLength, UTF_8).toString();
        String what = request.describe();
        if (type == NbdConstants.REPLY_TYPE_ERROR_OFFSET) {
            if (payload.readableBytes() != 8) {
                throw new NbdProtocolException("NBD_REPLY_TYPE_ERROR_OFFSET for " + request.describe()
                        + " lacks its 8-byte offset");
            }
            long offset = payload.readLong();
            checkWithin(request, offset, 1, "NBD_REPLY_TYPE_ERROR_OFFSET");
            what += " (at offset " + offset + ")";
        }
        if (request.serverError == null) {
            request.serverError = new NbdServerErrorException(error, what, message);
        }
    }

    /** Why a finished request failed, or null when its reply is complete and valid. */
    private static Throwable completeness(NbdRequest request) throws NbdProtocolException {
        if (request.serverError != null) {
            return request.serverError;
        }
        if (request.command == Command.READ) {
            long covered = request.coverage != null ? request.coverage.covered() : request.data != null ? request.length : 0;
            if (covered != request.length) {
                throw new NbdProtocolException(String.format(
                        "server ended the reply to %s after sending only %d of its bytes", request.describe(), covered));
            }
        }
        if (request.command == Command.BLOCK_STATUS && request.extents == null) {
            throw new NbdProtocolException("server ended the reply to " + request.describe()
                    + " without reporting any extent");
        }
        return null;
    }

    /** How many requests the server has answered (with data or an error) on this connection. */
    long answered() {
        return answered;
    }

    private void finish(NbdRequest request, Throwable failure) {
        // A retiring connection (handOver set) is disconnecting too, but what it had goes to its successor.
        if (failure instanceof NbdServerErrorException e && e.error() == NbdError.ESHUTDOWN
                && (handOver != null || (!disconnecting && lossListener != null))) {
            // The server is going away, not refusing the request (proto.md: a client may send it
            // again on a new connection): this connection is lost, the request goes with the
            // unanswered ones to be sent again.
            refusedForShutdown.add(request);
            failEverything(new NbdException("the server is shutting down (it answered " + request.describe()
                    + " with NBD_ESHUTDOWN)"));
            return;
        }
        inFlightEstimate = inFlight.size();
        ANSWERED.lazySet(this, answered + 1); // one writer, the event loop; no fence on every reply
        if (failure != null) {
            fail(request, failure);
        } else {
            request.completion.complete(request, null); // which may take over the payload: the journal keeps it
            if (request.payload != null) {
                request.payload.release();
                request.payload = null;
            }
        }
        if (disconnecting && inFlight.isEmpty()) {
            lastReplyReceived();
        }
    }

    /** Everything sent is answered on a connection that is ending: its final FLUSH if it has one, else DISC. */
    private void lastReplyReceived() {
        NbdRequest flush = finalFlush;
        if (flush == null) {
            sendDisconnect();
            return;
        }
        finalFlush = null;
        if (!channel.isActive()) {
            handOver.accept(flush);
            return;
        }
        long handle = inFlight.add(flush);
        flush.sentAt = System.nanoTime();
        ByteBuf header = channel.alloc().directBuffer(encoder.headerLength());
        encoder.writeHeader(header, Command.FLUSH, 0, handle, 0, 0);
        channel.writeAndFlush(header, channel.voidPromise());
        inFlightEstimate = inFlight.size();
    }

    private static void fail(NbdRequest request, Throwable cause) {
        request.releaseBuffers();
        request.completion.complete(request, cause);
    }

    /**
     * Waits for every outstanding reply, then sends NBD_CMD_DISC and closes. Requests
     * submitted after this fail.
     */
    public CompletableFuture<Void> disconnect() {
        channel.eventLoop().execute(() -> {
            if (disconnecting) {
                return;
            }
            disconnecting = true;
            drain();
            if (inFlight.isEmpty()) {
                sendDisconnect();
            }
        });
        return closed.handle((v, e) -> null);
    }

    /**
     * Takes this connection out of service gracefully, once the session has put another in its
     * place: requests that still reach it go to {@code elsewhere}; those already sent are
     * answered here; then {@code flush} (if not null) is sent and answered, so the writes made
     * here are covered before the connection ends with NBD_CMD_DISC. If the connection fails
     * meanwhile, what it had not answered (the flush too) goes to {@code elsewhere}, to be sent
     * again. Completes when the connection is closed.
     */
    CompletableFuture<Void> retire(java.util.function.Consumer<NbdRequest> elsewhere, NbdRequest flush) {
        handOver = elsewhere;
        try {
            channel.eventLoop().execute(() -> {
                if (disconnecting) {
                    if (flush != null) {
                        elsewhere.accept(flush);
                    }
                    return;
                }
                disconnecting = true;
                finalFlush = flush;
                drain();
                if (inFlight.isEmpty()) {
                    lastReplyReceived();
                }
            });
        } catch (RejectedExecutionException e) {
            if (flush != null) {
                elsewhere.accept(flush);
            }
        }
        return closed.handle((v, e) -> null);
    }

    private void sendDisconnect() {
        if (!channel.isActive()) {
            return;
        }
        ByteBuf disc = channel.alloc().buffer(encoder.headerLength());
        encoder.writeHeader(disc, Command.DISC, 0, 0, 0, 0);
        channel.writeAndFlush(disc).addListener(ChannelFutureListener.CLOSE);
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
        Throwable root = cause instanceof io.netty.handler.codec.DecoderException && cause.getCause() != null
                ? cause.getCause() : cause;
        failEverything(root instanceof NbdException ? root
                : new NbdException("connection failed: " + describe(root), root));
    }

    /**
     * A socket error in words: Netty's native transport says {@code recvAddress(..) failed with
     * error(-104): Connection reset by peer}; the system's words after the last colon are the
     * part a reader needs.
     */
    static String describe(Throwable error) {
        String message = error.getMessage();
        if (error instanceof java.io.IOException && message != null && message.contains("(..) failed")) {
            String words = message.substring(message.lastIndexOf(": ") + 2);
            return words.isEmpty() ? message : Character.toLowerCase(words.charAt(0)) + words.substring(1);
        }
        return error.toString();
    }

    @Override
    public void channelInactive(ChannelHandlerContext ctx) {
        failEverything(disconnecting ? new NbdException("the connection was closed")
                : new NbdException("server closed the connection"));
    }

    private void failEverything(Throwable cause) {
        if (failure == null) {
            failure = cause;
        }
        if (!channel.eventLoop().inEventLoop()) {
            try {
                channel.eventLoop().execute(() -> failEverything(cause));
                return;
            } catch (RejectedExecutionException e) {
                // The loop is gone: nothing else touches the tables any more.
            }
        }
        List<NbdRequest> unanswered = inFlight.removeAll();
        unanswered.addAll(refusedForShutdown);
        refusedForShutdown.clear();
        NbdRequest request;
        while ((request = submitted.poll()) != null) {
            unanswered.add(request);
        }
        java.util.function.Consumer<NbdRequest> elsewhere = handOver;
        if (elsewhere != null) {
            // Retired: nothing fails here; what was not answered is sent again on the session's other connections.
            if (finalFlush != null) {
                unanswered.add(finalFlush);
                finalFlush = null;
            }
            for (NbdRequest r : unanswered) {
                r.resetForResend();
                elsewhere.accept(r);
            }
        } else if (lossListener != null && !disconnecting) {
            if (!lossReported || !unanswered.isEmpty()) {
                lossReported = true; // channelInactive follows exceptionCaught: report the loss once
                unanswered.forEach(NbdRequest::resetForResend);
                lossListener.connectionLost(this, failure, unanswered);
            }
        } else {
            unanswered.forEach(r -> fail(r, failure));
        }
        inFlightEstimate = 0;
        channel.close();
        if (disconnecting) {
            closed.complete(null);
        } else {
            closed.completeExceptionally(failure);
        }
    }
}
