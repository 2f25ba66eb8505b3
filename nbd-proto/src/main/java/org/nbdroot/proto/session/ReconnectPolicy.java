package org.nbdroot.proto.session;

import java.time.Duration;

/**
 * How a session gets a lost connection back: attempts with exponential backoff from
 * {@code initialDelay} up to {@code maxDelay}, at most {@code maxAttempts} of them (0: keep
 * trying for ever, right for a device: its requests simply wait, as a disk's would).
 * {@code replayLimit}: bytes of writes acknowledged since the last FLUSH kept to be written
 * again after a reconnect ({@link WriteJournal}; 0: none kept).
 */
public record ReconnectPolicy(Duration initialDelay, Duration maxDelay, int maxAttempts, long replayLimit) {
    /** 64 MiB: a FLUSH of the session's own comes at 32 MiB, so the limit is seldom reached. */
    public static final long DEFAULT_REPLAY_LIMIT = 64L << 20;

    public static final ReconnectPolicy FOREVER = new ReconnectPolicy(Duration.ofMillis(100), Duration.ofSeconds(5), 0);

    public ReconnectPolicy(Duration initialDelay, Duration maxDelay, int maxAttempts) {
        this(initialDelay, maxDelay, maxAttempts, DEFAULT_REPLAY_LIMIT);
    }

    public ReconnectPolicy {
        if (initialDelay.isNegative() || maxDelay.compareTo(initialDelay) < 0 || maxAttempts < 0) {
            throw new IllegalArgumentException("reconnect delays must be positive and ordered, attempts not negative");
        }
        if (replayLimit < 0) {
            throw new IllegalArgumentException("the replay limit must not be negative");
        }
    }

    public ReconnectPolicy withReplayLimit(long bytes) {
        return new ReconnectPolicy(initialDelay, maxDelay, maxAttempts, bytes);
    }

    /** The wait before attempt {@code n} (1 for the first retry after an immediate attempt 0). */
    Duration delayBefore(int attempt) {
        if (attempt == 0) {
            return Duration.ZERO;
        }
        long millis = initialDelay.toMillis() << Math.min(attempt - 1, 20);
        return Duration.ofMillis(Math.min(millis, maxDelay.toMillis()));
    }

    boolean exhausted(int attemptsMade) {
        return maxAttempts > 0 && attemptsMade >= maxAttempts;
    }
}
