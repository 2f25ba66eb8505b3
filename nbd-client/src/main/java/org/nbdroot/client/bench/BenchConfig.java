package org.nbdroot.client.bench;

import java.time.Duration;

/**
 * One benchmark run.
 *
 * @param workload  the access pattern
 * @param blockSize bytes per request
 * @param iodepth   requests kept outstanding
 * @param runtime   how long to measure
 * @param ramp      how long to run before measuring (JIT warm-up, server caches), as fio's ramp_time
 * @param span      bytes of the export used, from offset 0
 * @param verify    write a checkable pattern and check what is read back
 * @param seed      for offsets and the pattern
 */
public record BenchConfig(Workload workload, int blockSize, int iodepth, Duration runtime, Duration ramp, long span,
        boolean verify, long seed) {

    public enum Workload {
        READ(false, false), WRITE(true, false), RANDREAD(false, true), RANDWRITE(true, true);

        final boolean writes;
        final boolean random;

        Workload(boolean writes, boolean random) {
            this.writes = writes;
            this.random = random;
        }

        public String displayName() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }
    }
}
