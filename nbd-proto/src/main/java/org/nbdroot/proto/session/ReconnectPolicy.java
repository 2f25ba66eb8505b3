package org.nbdroot.proto.session;

import java.time.Duration;

/**
 * How a session gets a lost connection back: attempts with exponential backoff from
 * {@code initialDelay} up to {@code maxDelay}, at most {@code maxAttempts} of them (0: keep
 * trying for ever, right for a device: its requests simply wait, as a disk's would).
 */
public record ReconnectPolicy(Duration initialDelay, Duration maxDelay, int maxAttempts) {
    public static final ReconnectPolicy FOREVER = new ReconnectPolicy(Duration.ofMillis(100), Duration.ofSeconds(5), 0);

    public ReconnectPolicy {
        if (initialDelay.isNegative() || maxDelay.compareTo(initialDelay) < 0 || maxAttempts < 0) {
            throw new IllegalArgumentException("reconnect delays must be positive and ordered, attempts not negative");
        }
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
