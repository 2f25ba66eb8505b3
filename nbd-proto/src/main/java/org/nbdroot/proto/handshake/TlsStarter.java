package org.nbdroot.proto.handshake;

import io.netty.channel.ChannelHandlerContext;
import io.netty.util.concurrent.Future;

/**
 * Starts TLS on a connection once the server has acknowledged {@code NBD_OPT_STARTTLS}: puts
 * the TLS handler in front of the pipeline (nearest the socket) and begins the TLS handshake.
 */
public interface TlsStarter {
    /** The returned future completes when the TLS handshake is done, or fails with why it failed. */
    Future<?> start(ChannelHandlerContext ctx);

    /** What is being used, for messages: "X.509, verifying host nbd.example", "PSK as alice". */
    String describe();
}
