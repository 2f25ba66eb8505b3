package org.nbdroot.client.bench;

/**
 * What a benchmark run measured.
 *
 * @param config         the run
 * @param connections    connections the session used
 * @param elapsedNanos   from the first request to the last completion
 * @param ios            requests that succeeded
 * @param bytes          bytes they moved
 * @param errors         requests that failed, plus every verify mismatch
 * @param verifyFailures blocks whose content did not match what was written
 * @param verifiedBlocks blocks whose content was checked
 * @param latency        per-request latency
 * @param stopReason     why the run ended early, or null
 * @param reconnects     connections lost and opened again during the run
 */
public record BenchResult(BenchConfig config, int connections, long elapsedNanos, long ios, long bytes,
        long errors, long verifyFailures, long verifiedBlocks, LatencyHistogram latency, String stopReason,
        long reconnects) {

    public double seconds() {
        return elapsedNanos / 1e9;
    }

    public double iops() {
        return elapsedNanos == 0 ? 0 : ios / seconds();
    }

    public double bytesPerSecond() {
        return elapsedNanos == 0 ? 0 : bytes / seconds();
    }

    public long percentileMicros(double percent) {
        return latency.percentile(percent) / 1000;
    }
}
