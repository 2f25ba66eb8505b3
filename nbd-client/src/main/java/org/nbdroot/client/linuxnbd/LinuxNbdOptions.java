package org.nbdroot.client.linuxnbd;

/**
 * How a Linux NBD device is set up.
 *
 * @param index     N of /dev/nbdN
 * @param blockSize the device's logical block size (0: 512, or the export's minimum block size if larger)
 * @param timeout   seconds after which the kernel fails a request and drops the device; 0: never, right for a root disk
 * @param deadTimeout seconds a device attached through netlink waits, once its daemon's socket died,
 *                  for another daemon to take over ({@code nbd-client rescue}) before it fails what waits
 * @param readOnly  make a read-only device even if the export is writable
 */
public record LinuxNbdOptions(int index, int blockSize, int timeout, long deadTimeout, boolean readOnly) {
    /**
     * A year: for a root disk, waiting for a rescue is effectively forever (I/O errors would
     * lose writes), yet the kernel's arithmetic (seconds times HZ, in jiffies) stays far from
     * overflowing, and a device abandoned for good does fail in the end.
     */
    public static final long DEFAULT_DEAD_TIMEOUT = 365L * 24 * 3600;
    /** Far below where seconds * HZ (at most 1000) in jiffies would overflow the kernel's long. */
    public static final long MAX_DEAD_TIMEOUT = 100L * 365 * 24 * 3600;

    public LinuxNbdOptions(int index, int blockSize, int timeout, boolean readOnly) {
        this(index, blockSize, timeout, DEFAULT_DEAD_TIMEOUT, readOnly);
    }

    public LinuxNbdOptions {
        if (deadTimeout < 0 || deadTimeout > MAX_DEAD_TIMEOUT) {
            throw new IllegalArgumentException("--dead-timeout must be from 0 to " + MAX_DEAD_TIMEOUT + " seconds, not "
                    + deadTimeout);
        }
        if (index < 0) {
            throw new IllegalArgumentException("the device number must not be negative");
        }
        if (blockSize != 0 && (Integer.bitCount(blockSize) != 1 || blockSize < LinuxNbdAbi.MIN_BLOCK_SIZE
                || blockSize > LinuxNbdAbi.MAX_BLOCK_SIZE)) {
            throw new IllegalArgumentException("--sector-size must be a power of two from " + LinuxNbdAbi.MIN_BLOCK_SIZE
                    + " to " + LinuxNbdAbi.MAX_BLOCK_SIZE + " for a Linux NBD device, not " + blockSize);
        }
        if (timeout < 0) {
            throw new IllegalArgumentException("--timeout must not be negative");
        }
    }

    public String name() {
        return LinuxNbdAbi.DEVICE_PREFIX + index;
    }
}
