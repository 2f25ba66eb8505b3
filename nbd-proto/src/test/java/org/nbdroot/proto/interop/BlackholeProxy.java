package org.nbdroot.proto.interop;

import io.netty.bootstrap.Bootstrap;
import io.netty.bootstrap.ServerBootstrap;
import io.netty.channel.Channel;
import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.ChannelOption;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.nio.NioEventLoopGroup;
import io.netty.channel.socket.SocketChannel;
import io.netty.channel.socket.nio.NioServerSocketChannel;
import io.netty.channel.socket.nio.NioSocketChannel;
import io.netty.util.ReferenceCountUtil;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import org.nbdroot.proto.transport.NbdUri;

/**
 * A TCP proxy on loopback between a client and a server that can become a black hole: from
 * {@link #blackhole} on, every byte either side sends is read and thrown away, nothing is
 * closed, and connections accepted meanwhile are never passed on. The sockets stay open and
 * their kernels acknowledge everything, so neither TCP keepalive nor TCP_USER_TIMEOUT sees a
 * problem: only the client's own deadlines can. {@link #heal} passes connections accepted from
 * then on; those that lived through the black hole lost bytes in the middle of their streams
 * and stay black holes until the client gives up on them.
 */
final class BlackholeProxy implements AutoCloseable {
    private final EventLoopGroup group = new NioEventLoopGroup(1);
    private final InetSocketAddress target;
    private final Channel listener;
    private final Set<Pair> pairs = ConcurrentHashMap.newKeySet();
    private volatile boolean blackholed;
    private volatile long healedAt;
    private final AtomicInteger acceptedWhileBlackholed = new AtomicInteger();
    private final AtomicInteger accepted = new AtomicInteger();

    /** One client connection and, unless it was accepted into the black hole, its server connection. */
    private static final class Pair {
        final Channel client;
        volatile Channel server;
        volatile boolean dropping;

        Pair(Channel client, boolean dropping) {
            this.client = client;
            this.dropping = dropping;
        }

        void close() {
            client.close();
            Channel s = server;
            if (s != null) {
                s.close();
            }
        }
    }

    BlackholeProxy(InetSocketAddress target) throws InterruptedException {
        this.target = target;
        this.listener = new ServerBootstrap().group(group).channel(NioServerSocketChannel.class)
                .childOption(ChannelOption.AUTO_READ, false)
                .childHandler(new ChannelInitializer<SocketChannel>() {
                    @Override
                    protected void initChannel(SocketChannel ch) {
                        accepted(ch);
                    }
                })
                .bind(InetAddress.getLoopbackAddress(), 0).sync().channel();
    }

    NbdUri uri(String export) {
        return NbdUri.parse("nbd://127.0.0.1:" + ((InetSocketAddress) listener.localAddress()).getPort() + "/" + export);
    }

    private void accepted(SocketChannel client) {
        accepted.incrementAndGet();
        Pair pair = new Pair(client, blackholed);
        pairs.add(pair);
        client.closeFuture().addListener(f -> {
            if (!pair.dropping) {
                pair.close();
                pairs.remove(pair);
            }
        });
        client.pipeline().addLast(new Relay(pair, true));
        if (pair.dropping) {
            acceptedWhileBlackholed.incrementAndGet();
            client.config().setAutoRead(true); // read, to throw away; the server never hears of it
            return;
        }
        new Bootstrap().group(group).channel(NioSocketChannel.class)
                .handler(new Relay(pair, false))
                .connect(target).addListener((ChannelFutureListener) f -> {
                    if (!f.isSuccess()) {
                        client.close();
                        return;
                    }
                    pair.server = f.channel();
                    f.channel().closeFuture().addListener(c -> {
                        if (!pair.dropping) {
                            pair.close();
                            pairs.remove(pair);
                        }
                    });
                    client.config().setAutoRead(true);
                });
    }

    /** Passes bytes to the other side, or throws them away once the pair is a black hole. */
    private static final class Relay extends ChannelInboundHandlerAdapter {
        private final Pair pair;
        private final boolean fromClient;

        Relay(Pair pair, boolean fromClient) {
            this.pair = pair;
            this.fromClient = fromClient;
        }

        @Override
        public void channelRead(ChannelHandlerContext ctx, Object msg) {
            Channel other = fromClient ? pair.server : pair.client;
            if (pair.dropping || other == null) {
                ReferenceCountUtil.release(msg);
                return;
            }
            other.writeAndFlush(msg);
        }

        @Override
        public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
            ctx.close();
        }
    }

    /** From now on nothing passes, in either direction, on any connection, old or new. */
    void blackhole() {
        blackholed = true;
        pairs.forEach(p -> p.dropping = true);
    }

    /** Connections accepted from now on pass again; {@link System#nanoTime} when healed. */
    long heal() {
        healedAt = System.nanoTime();
        blackholed = false;
        return healedAt;
    }

    /** Connections accepted while the proxy was a black hole: reconnect attempts that got no handshake. */
    int acceptedWhileBlackholed() {
        return acceptedWhileBlackholed.get();
    }

    int accepted() {
        return accepted.get();
    }

    @Override
    public void close() {
        listener.close().syncUninterruptibly();
        pairs.forEach(Pair::close);
        group.shutdownGracefully(0, 1, java.util.concurrent.TimeUnit.SECONDS).syncUninterruptibly();
    }
}
