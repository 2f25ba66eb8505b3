package org.nbdroot.client.bench;

/**
 * Latencies in nanoseconds, counted in log-linear buckets: exact below 64 ns, then 32
 * buckets per power of two (about 3% resolution), enough for percentiles of I/O latency.
 */
public final class LatencyHistogram {
    private static final int SUB_BUCKETS = 32;
    private final long[] counts = new long[64 * SUB_BUCKETS + 2 * SUB_BUCKETS];
    private long total;
    private long max;

    static int index(long nanos) {
        if (nanos < 2 * SUB_BUCKETS) {
            return (int) Math.max(0, nanos);
        }
        int shift = 63 - Long.numberOfLeadingZeros(nanos) - 5;
        return shift * SUB_BUCKETS + (int) (nanos >>> shift);
    }

    /** The middle of the bucket at this index. */
    static long valueAt(int index) {
        if (index < 2 * SUB_BUCKETS) {
            return index;
        }
        int shift = index / SUB_BUCKETS - 1;
        long low = (long) (index - shift * SUB_BUCKETS) << shift;
        return low + ((1L << shift) >>> 1);
    }

    public synchronized void record(long nanos) {
        counts[index(nanos)]++;
        total++;
        if (nanos > max) {
            max = nanos;
        }
    }

    public synchronized long count() {
        return total;
    }

    public synchronized long max() {
        return max;
    }

    /** The latency below which {@code percent} of the samples fall; 0 with no samples. */
    public synchronized long percentile(double percent) {
        if (total == 0) {
            return 0;
        }
        long rank = (long) Math.ceil(total * percent / 100.0);
        long seen = 0;
        for (int i = 0; i < counts.length; i++) {
            seen += counts[i];
            if (seen >= Math.max(1, rank)) {
                return Math.min(valueAt(i), max);
            }
        }
        return max;
    }
}
