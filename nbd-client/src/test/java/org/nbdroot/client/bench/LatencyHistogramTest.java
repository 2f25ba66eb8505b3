package org.nbdroot.client.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class LatencyHistogramTest {
    @Test
    void bucketsKeepAboutThreePercent() {
        for (long v = 1; v < 1L << 40; v = v * 3 + 1) {
            long back = LatencyHistogram.valueAt(LatencyHistogram.index(v));
            assertTrue(Math.abs(back - v) <= Math.max(1, v / 32), v + " came back as " + back);
        }
    }

    @Test
    void percentilesOfAUniformSpread() {
        LatencyHistogram h = new LatencyHistogram();
        for (int i = 1; i <= 10_000; i++) {
            h.record(i * 1000L);
        }
        assertEquals(10_000, h.count());
        assertEquals(10_000_000, h.max());
        assertTrue(Math.abs(h.percentile(50) - 5_000_000) < 5_000_000 / 25, "p50 " + h.percentile(50));
        assertTrue(Math.abs(h.percentile(99) - 9_900_000) < 9_900_000 / 25, "p99 " + h.percentile(99));
        assertEquals(0, new LatencyHistogram().percentile(50));
    }
}
