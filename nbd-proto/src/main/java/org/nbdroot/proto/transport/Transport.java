package org.nbdroot.proto.transport;

import io.netty.channel.Channel;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.IoHandlerFactory;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.Epoll;
import io.netty.channel.epoll.EpollChannelOption;
import io.netty.channel.epoll.EpollDomainSocketChannel;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.epoll.EpollSocketChannel;
import io.netty.channel.nio.NioIoHandler;
import io.netty.channel.socket.nio.NioChannelOption;
import io.netty.channel.socket.nio.NioDomainSocketChannel;
import io.netty.channel.socket.nio.NioSocketChannel;
import io.netty.util.concurrent.DefaultThreadFactory;
import java.util.concurrent.TimeUnit;

/**
 * The event loops and channel types the engine runs on: Netty's native epoll transport on
 * Linux, NIO elsewhere (Netty has no native transport for FreeBSD; NIO uses kqueue there).
 * One transport serves every connection of a process.
 */
public final class Transport implements AutoCloseable {
    /** How long an event loop polls without sleeping after its last work (see {@link SpinThenSleep}). */
    static final long DEFAULT_SPIN_MICROS = 50;

    private final EventLoopGroup group;
    private final boolean epoll;

    private Transport(int threads, boolean useEpoll) {
        this.epoll = useEpoll;
        // Only epoll polls before it sleeps: NIO (FreeBSD) keeps Netty's default strategy, whose
        // selector-rebuild heuristics count empty wake-ups, and is not measured here.
        long spinNanos = useEpoll ? TimeUnit.MICROSECONDS.toNanos(spinMicros()) : 0;
        IoHandlerFactory io = !useEpoll ? NioIoHandler.newFactory()
                : spinNanos > 0 ? EpollIoHandler.newFactory(0, () -> new SpinThenSleep(spinNanos))
                : EpollIoHandler.newFactory();
        this.group = new MultiThreadIoEventLoopGroup(threads, new DefaultThreadFactory("nbd-io", true), io);
    }

    /**
     * How long an epoll loop polls before it sleeps: {@code -Dnbd.spin-us}, else
     * {@link #DEFAULT_SPIN_MICROS}; 0 on a single CPU, where a loop that polls only takes the time
     * the peer or the kernel needs to answer it.
     */
    static long spinMicros() {
        String value = System.getProperty("nbd.spin-us");
        long micros = DEFAULT_SPIN_MICROS;
        if (value != null) {
            try {
                micros = Long.parseLong(value.trim());
            } catch (NumberFormatException e) {
                micros = -1;
            }
            if (micros < 0 || micros > 1_000_000) {
                throw new IllegalArgumentException(
                        "-Dnbd.spin-us must be a whole number of microseconds from 0 to 1000000, not '" + value + "'");
            }
        }
        return Runtime.getRuntime().availableProcessors() > 1 ? micros : 0;
    }

    /** The best transport for this platform; set {@code -Dnbd.transport=nio} to force NIO. */
    public static Transport create(int threads) {
        boolean wantEpoll = !"nio".equals(System.getProperty("nbd.transport"));
        return new Transport(threads, wantEpoll && Epoll.isAvailable());
    }

    public EventLoopGroup group() {
        return group;
    }

    public String name() {
        return epoll ? "epoll" : "nio";
    }

    Class<? extends Channel> channelType(NbdEndpoint endpoint) {
        boolean unix = endpoint instanceof NbdEndpoint.Unix;
        if (epoll) {
            return unix ? EpollDomainSocketChannel.class : EpollSocketChannel.class;
        }
        return unix ? NioDomainSocketChannel.class : NioSocketChannel.class;
    }

    /** Sets the keepalive timing and TCP_USER_TIMEOUT on a TCP bootstrap: epoll's options, or the JDK's on NIO. */
    void keepalive(io.netty.bootstrap.Bootstrap bootstrap, TcpLiveness liveness) {
        int idle = (int) liveness.keepIdle().toSeconds();
        int interval = (int) liveness.keepInterval().toSeconds();
        if (epoll) {
            bootstrap.option(EpollChannelOption.TCP_KEEPIDLE, idle)
                    .option(EpollChannelOption.TCP_KEEPINTVL, interval)
                    .option(EpollChannelOption.TCP_KEEPCNT, liveness.keepCount())
                    .option(EpollChannelOption.TCP_USER_TIMEOUT, (int) liveness.userTimeout().toMillis());
            return;
        }
        // The JDK has these on Linux and macOS; where it lacks one, Netty skips it with a warning.
        bootstrap.option(NioChannelOption.of(jdk.net.ExtendedSocketOptions.TCP_KEEPIDLE), idle)
                .option(NioChannelOption.of(jdk.net.ExtendedSocketOptions.TCP_KEEPINTERVAL), interval)
                .option(NioChannelOption.of(jdk.net.ExtendedSocketOptions.TCP_KEEPCOUNT), liveness.keepCount());
    }

    java.net.SocketAddress address(NbdEndpoint endpoint) {
        if (endpoint instanceof NbdEndpoint.Unix u && !epoll) {
            return java.net.UnixDomainSocketAddress.of(u.socket());
        }
        return endpoint.socketAddress();
    }

    @Override
    public void close() {
        group.shutdownGracefully(0, 2, TimeUnit.SECONDS).syncUninterruptibly();
    }
}
