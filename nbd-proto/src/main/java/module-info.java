/** The NBD protocol engine. */
module org.nbdroot.proto {
    requires transitive io.netty.buffer;
    requires transitive io.netty.common;
    requires transitive io.netty.transport;
    requires transitive io.netty.codec;
    requires io.netty.transport.unix.common;
    // TLS: X.509 through Netty's SslHandler and the JDK, PSK through BouncyCastle's TLS engine
    requires io.netty.handler;
    // optional: TLS-PSK only, 11 MiB with what it drags in (the image links it with -Dimage.psk=true)
    requires static org.bouncycastle.tls;
    requires io.netty.transport.classes.epoll;
    requires java.logging;
    // TCP keepalive timings on the NIO transport (ExtendedSocketOptions)
    requires jdk.net;

    exports org.nbdroot.proto;
    exports org.nbdroot.proto.handshake;
    exports org.nbdroot.proto.session;
    exports org.nbdroot.proto.tls;
    exports org.nbdroot.proto.transport;
    exports org.nbdroot.proto.wire;
}
