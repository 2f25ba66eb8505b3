package org.nbdroot.client.linuxnbd;

import org.nbdroot.proto.wire.TransmissionFlag;

/**
 * Linux's NBD driver as userland drives it ({@code include/uapi/linux/nbd.h},
 * {@code drivers/block/nbd.c}): the ioctls on {@code /dev/nbdN} and the export flags it
 * understands. The kernel then speaks the NBD transmission phase over the socket it is
 * given, as a client: requests with {@code NBD_REQUEST_MAGIC}, simple replies only.
 */
public final class LinuxNbdAbi {
    private LinuxNbdAbi() {}

    public static final String DEVICE_PREFIX = "nbd";

    /** {@code _IO(0xab, nr)}: no size, no direction. */
    static long io(int nr) {
        return (0xabL << 8) | nr;
    }

    public static final long SET_SOCK = io(0);
    public static final long SET_BLKSIZE = io(1);
    public static final long SET_SIZE = io(2);
    public static final long DO_IT = io(3);
    public static final long CLEAR_SOCK = io(4);
    public static final long CLEAR_QUE = io(5);
    public static final long SET_SIZE_BLOCKS = io(7);
    public static final long DISCONNECT = io(8);
    public static final long SET_TIMEOUT = io(9);
    public static final long SET_FLAGS = io(10);

    /** The block sizes nbd_set_size accepts: a power of two from 512 to the page size. */
    public static final int MIN_BLOCK_SIZE = 512;
    public static final int MAX_BLOCK_SIZE = 4096;

    /** nbd.c sets max_hw_sectors to 65536: no request is longer than this. */
    public static final int MAX_REQUEST_LENGTH = 65536 * 512;

    /**
     * The flags the kernel is told for an export (NBD_SET_FLAGS): only what the daemon can
     * serve. The kernel reads READ_ONLY, SEND_FLUSH, SEND_FUA, SEND_TRIM, and on newer
     * kernels ROTATIONAL and SEND_WRITE_ZEROES; the rest describe the server's connection,
     * not the device, and are left out.
     */
    public static int kernelFlags(int exportFlags, boolean readOnly) {
        int flags = TransmissionFlag.HAS_FLAGS.mask();
        for (TransmissionFlag f : new TransmissionFlag[] {TransmissionFlag.READ_ONLY, TransmissionFlag.SEND_FLUSH,
                TransmissionFlag.SEND_FUA, TransmissionFlag.ROTATIONAL, TransmissionFlag.SEND_TRIM,
                TransmissionFlag.SEND_WRITE_ZEROES}) {
            if (f.isSetIn(exportFlags)) {
                flags |= f.mask();
            }
        }
        if (readOnly) {
            flags |= TransmissionFlag.READ_ONLY.mask();
        }
        if (TransmissionFlag.READ_ONLY.isSetIn(flags)) {
            // Nothing to write, trim or zero: do not invite the kernel to try.
            flags &= ~(TransmissionFlag.SEND_TRIM.mask() | TransmissionFlag.SEND_WRITE_ZEROES.mask());
        }
        return flags;
    }

    /** Parses {@code /dev/nbd3} or {@code nbd3} to 3. */
    public static int indexOf(String device) {
        String name = device.startsWith("/dev/") ? device.substring(5) : device;
        if (!name.startsWith(DEVICE_PREFIX)) {
            throw new IllegalArgumentException("'" + device + "' is not a Linux NBD device (expected /dev/nbdN or nbdN)");
        }
        try {
            int index = Integer.parseInt(name.substring(DEVICE_PREFIX.length()));
            if (index < 0) {
                throw new NumberFormatException();
            }
            return index;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("'" + device + "' has no device number (expected /dev/nbdN)");
        }
    }
}
