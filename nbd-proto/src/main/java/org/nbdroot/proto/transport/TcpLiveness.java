package org.nbdroot.proto.transport;

import java.time.Duration;

/**
 * How the kernel finds a TCP peer gone when the connection is idle or its data goes
 * unacknowledged: keepalive probes after {@code keepIdle} of silence, every
 * {@code keepInterval}, {@code keepCount} of them unanswered ending the connection; and
 * TCP_USER_TIMEOUT, data left unacknowledged this long ending it (Linux only; zero: the
 * kernel's default of about 15 minutes of retransmissions). The connection's end then starts a
 * reconnect. On epoll all four are set; on NIO the keepalive ones where the JDK offers them.
 *
 * <p>The defaults find a dead idle peer in about 25 s (10 + 3 × 5) and a peer that stopped
 * acknowledging in 30 s, like the request timeout; Linux's own keepalive default is two hours.
 */
public record TcpLiveness(Duration keepIdle, Duration keepInterval, int keepCount, Duration userTimeout) {
    public static final TcpLiveness DEFAULT = new TcpLiveness(Duration.ofSeconds(10), Duration.ofSeconds(5), 3,
            Duration.ofSeconds(30));

    public TcpLiveness {
        if (keepIdle.toSeconds() < 1 || keepInterval.toSeconds() < 1 || keepCount < 1 || userTimeout.isNegative()) {
            throw new IllegalArgumentException("keepalive idle and interval must be at least 1 s, the count at least 1, "
                    + "the user timeout not negative");
        }
    }

    public TcpLiveness withUserTimeout(Duration timeout) {
        return new TcpLiveness(keepIdle, keepInterval, keepCount, timeout);
    }
}
