package org.nbdroot.proto.transport;

import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.nio.file.Path;

/** Where a server listens: a TCP host and port, or a Unix domain socket. */
public sealed interface NbdEndpoint permits NbdEndpoint.Tcp, NbdEndpoint.Unix {
    SocketAddress socketAddress();

    record Tcp(String host, int port) implements NbdEndpoint {
        public Tcp {
            if (port < 1 || port > 65535) {
                throw new IllegalArgumentException("port " + port + " is not between 1 and 65535");
            }
        }

        @Override
        public SocketAddress socketAddress() {
            return new InetSocketAddress(host, port); // resolved on each call: a reconnect sees DNS changes
        }

        @Override
        public String toString() {
            return (host.contains(":") ? "[" + host + "]" : host) + ":" + port;
        }
    }

    record Unix(Path socket) implements NbdEndpoint {
        @Override
        public SocketAddress socketAddress() {
            return new io.netty.channel.unix.DomainSocketAddress(socket.toString());
        }

        @Override
        public String toString() {
            return "unix:" + socket;
        }
    }
}
