package org.nbdroot.proto;

import org.nbdroot.proto.wire.NbdConstants;

/**
 * Block size constraints of an export ({@code NBD_INFO_BLOCK_SIZE}): requests must be aligned
 * to {@code minimum}; READ and WRITE payloads must not exceed {@code maximum}.
 */
public record BlockSize(int minimum, int preferred, int maximum) {
    /** What a client assumes when the server states none (proto.md, "Block size constraints"). */
    public static final BlockSize DEFAULT = new BlockSize(
            NbdConstants.DEFAULT_MINIMUM_BLOCK, NbdConstants.DEFAULT_PREFERRED_BLOCK, NbdConstants.DEFAULT_MAXIMUM_PAYLOAD);

    /** Checks the rules of the spec; returns a description of the first one broken, or null. */
    public static String violation(long minimum, long preferred, long maximum) {
        if (minimum < 1 || minimum > 64 * 1024 || Long.bitCount(minimum) != 1) {
            return "minimum block size " + minimum + " is not a power of two between 1 and 65536";
        }
        if (preferred < Math.max(512, minimum) || Long.bitCount(preferred) != 1) {
            return "preferred block size " + preferred + " is not a power of two of at least max(512, minimum)";
        }
        if (maximum != 0xffffffffL && (maximum < minimum || maximum % minimum != 0)) {
            return "maximum block size " + maximum + " is not a multiple of the minimum " + minimum;
        }
        return null;
    }

    /**
     * The constraints as the server sent them (unsigned 32-bit values that passed
     * {@link #violation}), kept in ints: a preferred size of 2 GiB becomes 1 GiB, a maximum past
     * what an int holds (0xffffffff: no limit) the largest multiple of the minimum that fits.
     * Both are advice and limits far above any request the engine sends.
     */
    public static BlockSize fromWire(long minimum, long preferred, long maximum) {
        return new BlockSize((int) minimum, (int) Math.min(preferred, 1 << 30),
                (int) Math.min(maximum, Integer.MAX_VALUE / minimum * minimum));
    }

    /** The largest READ or WRITE payload this client sends: the server's maximum, capped to 32 MiB. */
    public int maximumPayload() {
        int cap = NbdConstants.DEFAULT_MAXIMUM_PAYLOAD;
        return maximum <= 0 || maximum > cap ? cap - cap % minimum : maximum;
    }
}
