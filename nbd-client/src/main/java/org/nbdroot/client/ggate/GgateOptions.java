package org.nbdroot.client.ggate;

/**
 * How a GEOM Gate unit is made and served.
 *
 * @param unit       the unit to create ({@link GgateAbi#UNIT_AUTO}: the first free one)
 * @param sectorSize bytes per sector (0: 512, or the export's minimum block size if larger)
 * @param queueSize  requests the kernel queues before failing new ones with ENOMEM (gctl_maxcount; 0: no limit)
 * @param timeout    seconds after which the kernel fails a request on its own; 0: never, right for a root disk
 * @param readOnly   make a read-only device even if the export is writable
 * @param workers    threads waiting in START for the kernel's requests; each goes back to START as soon as it has
 *                   sent one, so the requests outstanding are bounded by the kernel's queue (and their data by
 *                   {@link GgateDevice#MAX_OUTSTANDING_BYTES}), not by this
 */
public record GgateOptions(int unit, int sectorSize, int queueSize, int timeout, boolean readOnly, int workers) {
    /**
     * One, as ggatec has one sender: FreeBSD wakes every START asleep on a unit for each new bio,
     * and in the emulator 1 beat 2 and 4 (4 KiB random reads: 32k IOPS and 21 µs of daemon CPU
     * per I/O, against 11k-20k and 28-48 µs).
     */
    public static final int DEFAULT_WORKERS = 1;
    public static final int DEFAULT_QUEUE_SIZE = 1024;

    public GgateOptions {
        if (workers < 1) {
            throw new IllegalArgumentException("--workers must be at least 1");
        }
        if (queueSize < 0 || queueSize > GgateAbi.MAX_QUEUE_SIZE) {
            throw new IllegalArgumentException("--queue-size must be between 0 and " + GgateAbi.MAX_QUEUE_SIZE);
        }
        if (sectorSize < 0 || (sectorSize != 0 && Integer.bitCount(sectorSize) != 1)) {
            throw new IllegalArgumentException("--sector-size must be a power of two, not " + sectorSize);
        }
        if (timeout < 0) {
            throw new IllegalArgumentException("--timeout must not be negative");
        }
    }

    /** Parses {@code /dev/ggate3} or {@code ggate3} to 3. */
    public static int unitOf(String device) {
        String name = device.startsWith("/dev/") ? device.substring(5) : device;
        if (!name.startsWith(GgateAbi.PROVIDER_NAME)) {
            throw new IllegalArgumentException("'" + device + "' is not a GEOM Gate device (expected /dev/ggateN or ggateN)");
        }
        try {
            int unit = Integer.parseInt(name.substring(GgateAbi.PROVIDER_NAME.length()));
            if (unit < 0) {
                throw new NumberFormatException();
            }
            return unit;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("'" + device + "' has no unit number (expected /dev/ggateN)");
        }
    }
}
