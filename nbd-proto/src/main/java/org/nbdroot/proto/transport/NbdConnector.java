package org.nbdroot.proto.transport;

import io.netty.bootstrap.Bootstrap;
import io.netty.channel.Channel;
import io.netty.channel.ChannelFuture;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.ChannelOption;
import io.netty.util.concurrent.Promise;
import java.net.ConnectException;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.function.BiFunction;
import org.nbdroot.proto.NbdException;
import org.nbdroot.proto.handshake.HandshakePlan;
import org.nbdroot.proto.handshake.HandshakeResult;
import org.nbdroot.proto.handshake.Handshaker;

/**
 * Opens a connection and runs the handshake on it. What comes after the handshake is the
 * caller's: {@code transmission} builds the handlers for the transmission phase, which are
 * put in place before any byte after the handshake is read.
 */
public final class NbdConnector {
    public static final Duration DEFAULT_CONNECT_TIMEOUT = Duration.ofSeconds(10);
    private static final int MAX_SOCKET_READ = 1 << 20;

    private final Transport transport;
    private final Duration connectTimeout;
    private final TcpLiveness liveness;

    public NbdConnector(Transport transport, Duration connectTimeout) {
        this(transport, connectTimeout, TcpLiveness.DEFAULT);
    }

    public NbdConnector(Transport transport, Duration connectTimeout, TcpLiveness liveness) {
        this.transport = transport;
        this.connectTimeout = connectTimeout;
        this.liveness = liveness;
    }

    public Transport transport() {
        return transport;
    }

    /**
     * Connects and hands the handshake's outcome to {@code transmission}, which runs on the
     * channel's event loop and returns what the future completes with. When the handshake ends
     * without entering transmission (goals LIST_EXPORTS and INFO), the channel is closed and
     * {@code listing} makes the answer instead.
     */
    public <T> CompletableFuture<T> connect(NbdEndpoint endpoint, HandshakePlan plan,
            BiFunction<ChannelHandlerContext, HandshakeResult, T> transmission,
            java.util.function.Function<HandshakeResult, T> listing) {
        CompletableFuture<T> outcome = new CompletableFuture<>();
        SocketAddress address;
        try {
            address = transport.address(endpoint);
        } catch (RuntimeException e) {
            outcome.completeExceptionally(new NbdException("cannot resolve " + endpoint + ": " + e.getMessage(), e));
            return outcome;
        }
        if (address instanceof InetSocketAddress inet && inet.isUnresolved()) {
            outcome.completeExceptionally(new NbdException("cannot resolve host name '" + inet.getHostString() + "'"));
            return outcome;
        }
        Object[] built = new Object[1];
        Bootstrap bootstrap = new Bootstrap()
                .group(transport.group())
                .channel(transport.channelType(endpoint))
                .option(ChannelOption.CONNECT_TIMEOUT_MILLIS, (int) connectTimeout.toMillis())
                // Large reads arrive in large socket reads: fewer system calls and buffer pieces per payload.
                .option(ChannelOption.RCVBUF_ALLOCATOR, new io.netty.channel.AdaptiveRecvByteBufAllocator(
                        512, 16 * 1024, MAX_SOCKET_READ))
                .handler(new ChannelInitializer<Channel>() {
                    @Override
                    protected void initChannel(Channel ch) {
                        Promise<HandshakeResult> handshake = ch.eventLoop().newPromise();
                        handshake.addListener(f -> {
                            if (!f.isSuccess()) {
                                outcome.completeExceptionally(f.cause());
                            } else if (!handshake.getNow().transmission()) {
                                ch.close();
                                outcome.complete(listing.apply(handshake.getNow()));
                            } else {
                                @SuppressWarnings("unchecked")
                                T value = (T) built[0];
                                outcome.complete(value);
                            }
                        });
                        ch.pipeline().addLast("handshake", new Handshaker(plan, handshake,
                                (ctx, result) -> built[0] = transmission.apply(ctx, result)));
                    }
                });
        if (endpoint instanceof NbdEndpoint.Tcp) {
            bootstrap.option(ChannelOption.TCP_NODELAY, true).option(ChannelOption.SO_KEEPALIVE, true);
            transport.keepalive(bootstrap, liveness);
        }
        ChannelFuture connecting = bootstrap.connect(address);
        connecting.addListener(f -> {
            if (!f.isSuccess()) {
                outcome.completeExceptionally(connectFailure(endpoint, f.cause()));
            }
        });
        return outcome;
    }

    private static NbdException connectFailure(NbdEndpoint endpoint, Throwable cause) {
        return new NbdException("cannot connect to " + endpoint + ": " + reason(cause), cause);
    }

    /** Why a connect failed, in words: Netty's native transport reports bare errno values. */
    static String reason(Throwable cause) {
        if (cause instanceof io.netty.channel.ConnectTimeoutException) {
            return "timed out";
        }
        if (cause instanceof java.io.FileNotFoundException) {
            return "no such socket file";
        }
        java.util.regex.Matcher errno = java.util.regex.Pattern.compile("error\\((-?\\d+)\\)")
                .matcher(String.valueOf(cause.getMessage()));
        if (errno.find()) {
            // Netty's native transport reports a bare errno; it exists on Linux only, so these are Linux values.
            return switch (Math.abs(Integer.parseInt(errno.group(1)))) {
                case 2 -> "no such socket file";
                case 13 -> "permission denied";
                case 101 -> "network is unreachable";
                case 110 -> "timed out";
                case 111 -> "connection refused";
                case 113 -> "no route to host";
                default -> "error " + errno.group(1);
            };
        }
        String message = cause.getMessage();
        if (message == null) {
            return cause.toString();
        }
        int colon = message.indexOf(": ");
        return (colon > 0 ? message.substring(0, colon) : message).toLowerCase(java.util.Locale.ROOT);
    }
}
