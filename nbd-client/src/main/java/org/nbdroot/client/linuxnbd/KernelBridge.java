package org.nbdroot.client.linuxnbd;

import io.netty.buffer.ByteBuf;
import io.netty.channel.Channel;
import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.EventLoop;
import io.netty.channel.epoll.EpollDomainSocketChannel;
import io.netty.util.ReferenceCountUtil;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import java.util.logging.Logger;
import org.nbdroot.proto.NbdServerErrorException;
import org.nbdroot.proto.NbdUnsupportedException;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.transport.Transport;
import org.nbdroot.proto.wire.Command;
import org.nbdroot.proto.wire.CommandFlag;
import org.nbdroot.proto.wire.NbdConstants;
import org.nbdroot.proto.wire.NbdError;

/**
 * The daemon's end of the kernel's socket: every request the kernel sends is served through
 * the NBD session and answered with a simple reply carrying the kernel's handle. Requests
 * run concurrently and are answered in the order they complete. A READ is answered with
 * data only when the session delivered exactly the bytes asked for; any failure is an
 * error reply (the kernel turns it into EIO). While the session reconnects, requests wait
 * in it: the kernel sees a slow device, not an error.
 *
 * <p>State lives on the channel's event loop; the session's futures complete on its own
 * loops and hop here.
 */
final class KernelBridge extends ChannelInboundHandlerAdapter {
    private static final Logger LOG = Logger.getLogger(KernelBridge.class.getName());
    /**
     * Replies share one flush per turn of the loop, except that once this much is waiting it
     * goes out at once: the loop may be busy for a while yet (reading the NBD socket's whole
     * batch, up to 16 MiB), and the kernel should not wait that long for a large read.
     */
    static final int FLUSH_AFTER_BYTES = 256 * 1024;
    /**
     * The data of the requests taken and not yet answered (a WRITE's payload, a READ's reply):
     * past this the bridge stops reading the kernel's socket until half of it is answered. The
     * kernel may send 128 requests of up to 32 MiB each; a slow server must not make them all
     * sit in a small JVM's direct memory (which the journal shares).
     */
    static final long MAX_OUTSTANDING_BYTES = 32L << 20;

    private final String name;
    private final NbdSession session;
    private final CompletableFuture<Void> closed = new CompletableFuture<>();
    private ChannelHandlerContext ctx;
    private EventLoop loop;
    private int inFlight;
    private long outstandingBytes;
    /** Set once the bridge must read whatever is outstanding (see {@link #readAlways}). */
    private volatile boolean readAlways;
    private volatile long mostOutstandingBytes;
    private volatile boolean disconnectRequested;
    private boolean flushScheduled;
    private long unflushedBytes;
    private volatile long served;
    private volatile long failed;

    KernelBridge(String name, NbdSession session) {
        this.name = name;
        this.session = session;
    }

    /** Serves the daemon's end of the kernel's socket pair, {@code fd} (non-blocking), on the transport's event loops. */
    static KernelBridge attach(Transport transport, int fd, String name, NbdSession session) {
        KernelBridge bridge = new KernelBridge(name, session);
        EpollDomainSocketChannel channel = new EpollDomainSocketChannel(fd);
        channel.pipeline().addLast("requests", new KernelRequestDecoder(LinuxNbdAbi.MAX_REQUEST_LENGTH));
        channel.pipeline().addLast("bridge", bridge);
        transport.group().register(channel).syncUninterruptibly();
        return bridge;
    }

    /** Completes when the socket is closed: the kernel dropped it, or the bridge ended after NBD_CMD_DISC. */
    CompletableFuture<Void> closed() {
        return closed;
    }

    EventLoop loop() {
        return loop;
    }

    /** Whether the kernel sent NBD_CMD_DISC: a socket it shut without one was marked dead (its request timeout). */
    boolean disconnectRequested() {
        return disconnectRequested;
    }

    long served() {
        return served;
    }

    long failed() {
        return failed;
    }

    @Override
    public void handlerAdded(ChannelHandlerContext ctx) {
        this.ctx = ctx;
        this.loop = ctx.channel().eventLoop();
    }

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
        KernelRequest r = (KernelRequest) msg;
        Command command = Command.ofCode(r.command());
        if (command == Command.DISC) {
            LOG.info(name + ": the kernel sent NBD_CMD_DISC; " + inFlight + " requests still being served");
            disconnectRequested = true;
            closeWhenIdle();
            return;
        }
        inFlight++;
        outstandingBytes += dataBytes(r);
        if (outstandingBytes > mostOutstandingBytes) {
            mostOutstandingBytes = outstandingBytes;
        }
        if (outstandingBytes > MAX_OUTSTANDING_BYTES && !readAlways && ctx.channel().config().isAutoRead()) {
            ctx.channel().config().setAutoRead(false); // what the decoder already holds is still served
        }
        boolean fua = (r.flags() & CommandFlag.FUA) != 0;
        CompletableFuture<?> result;
        if (command == Command.READ && r.length() > Integer.MAX_VALUE) {
            // TRIM and WRITE_ZEROES may be longer (the kernel sends discards of up to 4 GiB): the session splits them.
            result = CompletableFuture.failedFuture(new IllegalArgumentException("read length " + r.length()));
        } else if (command == Command.WRITE && r.payload() == null) {
            result = CompletableFuture.failedFuture(new IllegalArgumentException("a WRITE of no bytes"));
        } else if (command == Command.READ) {
            int length = (int) r.length();
            session.read(r.offset(), length).whenComplete((data, failure) -> completeRead(r, data, failure));
            return;
        } else if (command == Command.WRITE) {
            // A slice of what the decoder read: nothing writes over those bytes while it is held (a decoder
            // never discards nor overwrites read bytes of a buffer someone else retains), so the session may keep it.
            result = session.write(r.offset(), r.payload(), fua);
        } else if (command == Command.FLUSH) {
            result = session.flush();
        } else if (command == Command.TRIM) {
            result = session.trim(r.offset(), r.length(), fua);
        } else if (command == Command.WRITE_ZEROES) {
            result = session.writeZeroes(r.offset(), r.length(), r.flags() & (CommandFlag.FUA | CommandFlag.NO_HOLE));
        } else {
            ReferenceCountUtil.release(r.payload());
            result = CompletableFuture.failedFuture(new NbdUnsupportedException("command " + r.command()
                    + " is not served by the bridge"));
        }
        result.whenComplete((v, failure) -> complete(r, null, failure));
    }

    private void completeRead(KernelRequest r, ByteBuf data, Throwable failure) {
        if (failure == null && data.readableBytes() != r.length()) {
            // The engine never does this; a reply with the wrong length would desynchronise the kernel.
            failure = new IllegalStateException("the session returned " + data.readableBytes() + " bytes for a read of "
                    + r.length());
            data.release();
            data = null;
        }
        complete(r, data, failure);
    }

    /**
     * From now on the kernel's socket is read whatever is outstanding. nbd.c sends a disconnect,
     * and handles a request timeout, under the lock its sender holds while it waits for room in
     * the socket: with the bridge not reading, both would wait for the server to answer.
     */
    void readAlways() {
        readAlways = true;
        loop.execute(() -> ctx.channel().config().setAutoRead(true));
    }

    /** What a request's data counts against {@link #MAX_OUTSTANDING_BYTES} until it is answered. */
    private static long dataBytes(KernelRequest r) {
        int command = r.command();
        return command == Command.READ.code() || command == Command.WRITE.code() ? r.length() : 0;
    }

    /** The most request data outstanding at once so far. */
    long mostOutstandingBytes() {
        return mostOutstandingBytes;
    }

    /** Sends the reply for one request; on the channel's loop (or hops there). */
    void complete(KernelRequest r, ByteBuf data, Throwable failure) {
        if (!loop.inEventLoop()) {
            loop.execute(() -> complete(r, data, failure));
            return;
        }
        inFlight--;
        outstandingBytes -= dataBytes(r);
        Channel channel = ctx.channel();
        if (!channel.config().isAutoRead() && outstandingBytes <= MAX_OUTSTANDING_BYTES / 2) {
            channel.config().setAutoRead(true);
        }
        int error = 0;
        if (failure != null) {
            error = errorOf(failure).code();
            failed++;
            LOG.warning(name + ": " + describe(r) + " failed (" + NbdError.ofCode(error) + " to the kernel): "
                    + unwrap(failure).getMessage());
        } else {
            served++;
        }
        if (!channel.isActive()) {
            ReferenceCountUtil.release(data); // the kernel has gone: nobody to answer
        } else {
            ByteBuf header = ctx.alloc().directBuffer(NbdConstants.SIMPLE_REPLY_HEADER_LENGTH);
            header.writeInt(NbdConstants.SIMPLE_REPLY_MAGIC).writeInt(error).writeLong(r.handle());
            unflushedBytes += header.readableBytes() + (data == null ? 0 : data.readableBytes());
            ctx.write(header, ctx.voidPromise());
            if (data != null) {
                ctx.write(data, ctx.voidPromise());
            }
            if (unflushedBytes >= FLUSH_AFTER_BYTES) {
                flushNow();
            } else {
                scheduleFlush();
            }
        }
        if (disconnectRequested) {
            closeWhenIdle();
        }
    }

    /** One flush for every reply completed in this turn of the loop. */
    private void scheduleFlush() {
        if (!flushScheduled) {
            flushScheduled = true;
            loop.execute(() -> {
                flushScheduled = false;
                if (unflushedBytes > 0) {
                    flushNow();
                }
            });
        }
    }

    private void flushNow() {
        unflushedBytes = 0;
        ctx.flush();
    }

    private void closeWhenIdle() {
        if (inFlight == 0 && ctx.channel().isOpen()) {
            ctx.writeAndFlush(io.netty.buffer.Unpooled.EMPTY_BUFFER).addListener(ChannelFutureListener.CLOSE);
        }
    }

    /** Closes the socket now: what is still being served is answered to no one. */
    void abort() {
        ctx.channel().close();
    }

    @Override
    public void channelInactive(ChannelHandlerContext ctx) {
        closed.complete(null);
        ctx.fireChannelInactive();
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
        LOG.severe(name + ": the kernel's request stream is broken (" + cause.getMessage() + "); closing it");
        closed.completeExceptionally(cause);
        ctx.close();
    }

    static NbdError errorOf(Throwable failure) {
        Throwable t = unwrap(failure);
        if (t instanceof NbdServerErrorException e) {
            return e.error();
        }
        if (t instanceof NbdUnsupportedException) {
            return NbdError.ENOTSUP;
        }
        if (t instanceof IllegalArgumentException) {
            return NbdError.EINVAL;
        }
        return NbdError.EIO;
    }

    private static Throwable unwrap(Throwable failure) {
        Throwable t = failure;
        while ((t instanceof CompletionException || t instanceof ExecutionException) && t.getCause() != null) {
            t = t.getCause();
        }
        return t;
    }

    private static String describe(KernelRequest r) {
        Command c = Command.ofCode(r.command());
        return (c == null ? "command " + r.command() : "NBD_CMD_" + c) + " of " + r.length() + " bytes at " + r.offset();
    }
}
