package org.nbdroot.proto.tls;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufUtil;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelDuplexHandler;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelPromise;
import io.netty.util.ReferenceCountUtil;
import io.netty.util.concurrent.Future;
import io.netty.util.concurrent.Promise;
import java.io.IOException;
import java.security.SecureRandom;
import org.bouncycastle.tls.AlertDescription;
import org.bouncycastle.tls.BasicTlsPSKIdentity;
import org.bouncycastle.tls.PSKTlsClient;
import org.bouncycastle.tls.TlsClientProtocol;
import org.bouncycastle.tls.TlsFatalAlert;
import org.bouncycastle.tls.TlsFatalAlertReceived;
import org.bouncycastle.tls.crypto.TlsCrypto;
import org.bouncycastle.tls.crypto.impl.bc.BcTlsCrypto;
import org.nbdroot.proto.NbdException;

/**
 * TLS-PSK on a Netty pipeline: BouncyCastle's TLS protocol engine ({@link TlsClientProtocol}
 * in its non-blocking mode) with a {@link PSKTlsClient}. The JDK's TLS has no PSK cipher
 * suites; BouncyCastle's has the TLS 1.2 (EC)DHE-PSK ones that GnuTLS servers (nbdkit,
 * nbd-server) accept. Only forward-secret suites are offered: BouncyCastle's defaults for
 * a PSK client, all ECDHE_PSK or DHE_PSK.
 *
 * <p>Bytes go through byte arrays: BouncyCastle's API takes no buffers of Netty's. This path
 * is for the connections that cannot use certificates, and costs a copy each way.
 */
final class PskTlsHandler extends ChannelDuplexHandler {
    private final Client client;
    private final TlsClientProtocol protocol = new TlsClientProtocol();
    private Promise<Void> handshake;

    PskTlsHandler(TlsCrypto crypto, String identity, byte[] key) {
        this.client = new Client(crypto, new BasicTlsPSKIdentity(identity, key));
    }

    /** One per configuration: its SecureRandom is opened once, at start, not at a reconnect after a reroot. */
    static TlsCrypto newCrypto() {
        return new BcTlsCrypto(new SecureRandom());
    }

    Future<Void> handshakeFuture() {
        return handshake;
    }

    @Override
    public void handlerAdded(ChannelHandlerContext ctx) {
        handshake = ctx.executor().newPromise();
        try {
            protocol.connect(client); // non-blocking: queues the ClientHello
            flushOutput(ctx, ctx.newPromise());
            ctx.flush();
        } catch (IOException | RuntimeException e) {
            fail(ctx, e);
        }
    }

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
        byte[] input;
        try {
            input = ByteBufUtil.getBytes((ByteBuf) msg);
        } finally {
            ReferenceCountUtil.release(msg);
        }
        if (handshake.isDone() && !handshake.isSuccess()) {
            return;
        }
        try {
            protocol.offerInput(input);
        } catch (IOException | RuntimeException e) {
            fail(ctx, e);
            return;
        }
        flushOutput(ctx, ctx.newPromise());
        ctx.flush();
        if (client.complete) {
            handshake.trySuccess(null);
        }
        int available = protocol.getAvailableInputBytes();
        if (available > 0) {
            byte[] plain = new byte[available];
            protocol.readInput(plain, 0, available);
            ctx.fireChannelRead(Unpooled.wrappedBuffer(plain));
        }
        if (protocol.isClosed()) {
            ctx.close(); // the server sent close_notify
        }
    }

    @Override
    public void write(ChannelHandlerContext ctx, Object msg, ChannelPromise promise) {
        if (!(msg instanceof ByteBuf data)) {
            ctx.write(msg, promise);
            return;
        }
        try {
            if (!client.complete) {
                throw new IOException("write before the TLS-PSK handshake is complete");
            }
            int length = data.readableBytes();
            if (data.hasArray()) {
                protocol.writeApplicationData(data.array(), data.arrayOffset() + data.readerIndex(), length);
            } else {
                protocol.writeApplicationData(ByteBufUtil.getBytes(data), 0, length);
            }
        } catch (IOException | RuntimeException e) {
            promise.tryFailure(e);
            return;
        } finally {
            data.release();
        }
        flushOutput(ctx, promise);
    }

    private void flushOutput(ChannelHandlerContext ctx, ChannelPromise promise) {
        int available = protocol.getAvailableOutputBytes();
        if (available == 0) {
            promise.trySuccess();
            return;
        }
        byte[] out = new byte[available];
        protocol.readOutput(out, 0, available);
        ctx.write(Unpooled.wrappedBuffer(out), promise);
    }

    @Override
    public void close(ChannelHandlerContext ctx, ChannelPromise promise) {
        if (client.complete && !protocol.isClosed()) {
            try {
                protocol.close(); // queues close_notify
                flushOutput(ctx, ctx.newPromise());
                ctx.flush();
            } catch (IOException | RuntimeException e) {
                // closing anyway
            }
        }
        ctx.close(promise);
    }

    @Override
    public void channelInactive(ChannelHandlerContext ctx) throws Exception {
        handshake.tryFailure(new NbdException("TLS-PSK handshake with the server failed: "
                + "the server closed the connection" + client.alertText()
                + " (GnuTLS servers such as nbdkit close without a word on an unknown username or a wrong key)"));
        super.channelInactive(ctx);
    }

    private void fail(ChannelHandlerContext ctx, Throwable cause) {
        // Alerts BouncyCastle queued (our side's fatal alert) still go out before the close.
        flushOutput(ctx, ctx.newPromise());
        ctx.flush();
        NbdException failure = new NbdException(client.complete ? "TLS-PSK failure: " + explain(cause)
                : "TLS-PSK handshake with the server failed: " + explain(cause), cause);
        if (!handshake.tryFailure(failure)) {
            ctx.fireExceptionCaught(failure);
        }
        ctx.close();
    }

    private String explain(Throwable cause) {
        if (cause instanceof TlsFatalAlertReceived received) {
            String text = AlertDescription.getText(received.getAlertDescription());
            return "the server sent the TLS alert " + text + switch (received.getAlertDescription()) {
                case AlertDescription.unknown_psk_identity -> " (it does not know the username "
                        + "'" + new String(client.identity.getPSKIdentity(), java.nio.charset.StandardCharsets.UTF_8)
                        + "': see --tls-username)";
                case AlertDescription.decrypt_error, AlertDescription.bad_record_mac ->
                        " (the key does not match the server's for this username)";
                case AlertDescription.handshake_failure -> " (no TLS-PSK cipher suite in common, or the server "
                        + "does not offer TLS-PSK)";
                default -> "";
            };
        }
        if (cause instanceof TlsFatalAlert alert) {
            String text = AlertDescription.getText(alert.getAlertDescription());
            return text + (alert.getMessage() != null ? " (" + alert.getMessage() + ")" : "")
                    + (alert.getAlertDescription() == AlertDescription.decrypt_error
                            || alert.getAlertDescription() == AlertDescription.bad_record_mac
                            ? ": the key does not match the server's for this username" : "");
        }
        return TlsConfig.innermost(cause);
    }

    /** A PSK client that tells when its handshake is complete and which alert the server sent. */
    private static final class Client extends PSKTlsClient {
        final BasicTlsPSKIdentity identity;
        volatile boolean complete;
        volatile short alertReceived = -1;

        Client(TlsCrypto crypto, BasicTlsPSKIdentity identity) {
            super(crypto, identity);
            this.identity = identity;
        }

        @Override
        public void notifyHandshakeComplete() throws IOException {
            super.notifyHandshakeComplete();
            complete = true;
        }

        @Override
        public void notifyAlertReceived(short level, short description) {
            alertReceived = description;
        }

        String alertText() {
            return alertReceived < 0 ? "" : " after the TLS alert " + AlertDescription.getText(alertReceived);
        }
    }
}
