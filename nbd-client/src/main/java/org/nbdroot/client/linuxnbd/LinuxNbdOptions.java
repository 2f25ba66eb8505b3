package org.nbdroot.client.linuxnbd;

/**
 * How a Linux NBD device is set up.
 *
 * @param index     N of /dev/nbdN
 * @param blockSize the device's logical block size (0: 512, or the export's minimum block size if larger)
 * @param timeout   seconds after which the kernel fails a request and drops the device; 0: never, right for a root disk
 * @param readOnly  make a read-only device even if the export is writable
 */
public record LinuxNbdOptions(int index, int blockSize, int timeout, boolean readOnly) {
    public LinuxNbdOptions {
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
