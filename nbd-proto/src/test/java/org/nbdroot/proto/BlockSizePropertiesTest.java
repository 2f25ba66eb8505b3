package org.nbdroot.proto;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Example;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;

/**
 * BlockSize.violation against the rules of proto.md ("Block size constraints") written out
 * independently, and maximumPayload's promises for every constraint the handshake accepts.
 */
class BlockSizePropertiesTest {
    private static final long NO_LIMIT = 0xffffffffL;
    private static final int CLIENT_CAP = 1 << 25;

    /** proto.md: minimum a power of 2 up to 2^16; preferred a power of 2 >= max(minimum, 512); maximum a multiple of minimum (and at least it) or 0xffffffff. */
    static boolean followsTheRules(long min, long preferred, long max) {
        boolean minOk = min >= 1 && min <= 65536 && (min & (min - 1)) == 0;
        boolean preferredOk = preferred >= Math.max(512, min) && (preferred & (preferred - 1)) == 0;
        boolean maxOk = max == NO_LIMIT || (minOk && max >= min && max % min == 0);
        return minOk && preferredOk && maxOk;
    }

    @Property(tries = 3000)
    void violationIsNullExactlyWhenTheRulesHold(@ForAll("sizes") long min, @ForAll("sizes") long preferred,
            @ForAll("maximums") long max) {
        String violation = BlockSize.violation(min, preferred, max);
        if (followsTheRules(min, preferred, max)) {
            assertNull(violation);
        } else {
            assertNotNull(violation, () -> min + "/" + preferred + "/" + max + " breaks the rules");
        }
    }

    @Property(tries = 3000)
    void maximumPayloadIsUsableForEveryAcceptedConstraint(@ForAll("valid") long[] constraint) {
        long min = constraint[0];
        long preferred = constraint[1];
        long max = constraint[2];
        assertNull(BlockSize.violation(min, preferred, max));
        // As the handshaker stores it.
        BlockSize blocks = BlockSize.fromWire(min, preferred, max);
        int payload = blocks.maximumPayload();
        assertTrue(payload >= min, "at least one block");
        assertEquals(0, payload % min, "aligned to the minimum");
        assertTrue(payload <= CLIENT_CAP, "within the client's 32 MiB cap");
        if (max != NO_LIMIT) {
            assertTrue(payload <= max, "within the server's maximum");
        }
        // And no smaller than it needs to be.
        assertEquals(max == NO_LIMIT ? CLIENT_CAP : Math.min(max, CLIENT_CAP), payload);
    }

    @Example
    void defaultsAreWhatProtoMdSays() {
        assertEquals(new BlockSize(1, 4096, CLIENT_CAP), BlockSize.DEFAULT);
        assertEquals(CLIENT_CAP, BlockSize.DEFAULT.maximumPayload());
    }

    /** Powers of two around the limits, their neighbours, and anything. */
    @Provide
    Arbitrary<Long> sizes() {
        Arbitrary<Long> powers = Arbitraries.integers().between(0, 20).map(n -> 1L << n);
        return Arbitraries.oneOf(powers, powers.map(p -> p + 1), powers.map(p -> p - 1),
                Arbitraries.longs().between(0, 1 << 20), Arbitraries.of(0L, 512L, 4096L, 65536L, 131072L, NO_LIMIT));
    }

    /** Constraints that follow the rules: {minimum, preferred, maximum}. */
    @Provide
    Arbitrary<long[]> valid() {
        return Arbitraries.integers().between(0, 16).flatMap(minShift -> {
            long min = 1L << minShift;
            Arbitrary<Long> preferred = Arbitraries.integers().between(Math.max(9, minShift), 26).map(n -> 1L << n);
            Arbitrary<Long> max = Arbitraries.oneOf(Arbitraries.of(NO_LIMIT),
                    Arbitraries.longs().between(1, (1L << 32) / min - 1).map(k -> k * min),
                    Arbitraries.longs().between(1, 4096).map(k -> k * min));
            return net.jqwik.api.Combinators.combine(preferred, max).as((p, m) -> new long[] {min, p, m});
        });
    }

    @Provide
    Arbitrary<Long> maximums() {
        return Arbitraries.oneOf(sizes(), Arbitraries.of(NO_LIMIT),
                Arbitraries.integers().between(1, 1 << 12).flatMap(k -> Arbitraries.of(512L * k, 4096L * k, 65536L * k)));
    }
}
