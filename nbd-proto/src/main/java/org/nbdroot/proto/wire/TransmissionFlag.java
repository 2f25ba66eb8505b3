package org.nbdroot.proto.wire;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/** The export's transmission flags ({@code NBD_FLAG_*}), as the server sends them in a 16-bit field. */
public enum TransmissionFlag {
    HAS_FLAGS(0),
    READ_ONLY(1),
    SEND_FLUSH(2),
    SEND_FUA(3),
    ROTATIONAL(4),
    SEND_TRIM(5),
    SEND_WRITE_ZEROES(6),
    SEND_DF(7),
    CAN_MULTI_CONN(8),
    SEND_RESIZE(9),
    SEND_CACHE(10),
    SEND_FAST_ZERO(11),
    BLOCK_STAT_PAYLOAD(12);

    private final int mask;

    TransmissionFlag(int bit) {
        this.mask = 1 << bit;
    }

    public int mask() {
        return mask;
    }

    public boolean isSetIn(int flags) {
        return (flags & mask) != 0;
    }

    /** Lower-case name as shown to users, e.g. {@code can_multi_conn}. */
    public String displayName() {
        return name().toLowerCase(Locale.ROOT);
    }

    /** Names of every set flag, in bit order; unknown bits appear as {@code bit_N}. */
    public static List<String> names(int flags) {
        List<String> names = new ArrayList<>();
        int known = 0;
        for (TransmissionFlag flag : values()) {
            known |= flag.mask;
            if (flag.isSetIn(flags)) {
                names.add(flag.displayName());
            }
        }
        for (int bit = 0; bit < 16; bit++) {
            if ((flags & ~known & (1 << bit)) != 0) {
                names.add("bit_" + bit);
            }
        }
        return names;
    }
}
