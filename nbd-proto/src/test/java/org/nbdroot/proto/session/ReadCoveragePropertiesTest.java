package org.nbdroot.proto.session;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.ArrayList;
import java.util.BitSet;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import java.util.TreeSet;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.constraints.Size;
import org.nbdroot.proto.NbdProtocolException;

/** ReadCoverage against a bit set as the model. */
class ReadCoveragePropertiesTest {

    @Property
    void aPartitionAddedInAnyOrderCoversTheWhole(
            @ForAll @IntRange(min = 1, max = 1 << 25) int total,
            @ForAll @Size(max = 60) List<@IntRange(min = 1, max = Integer.MAX_VALUE) Integer> cutSeeds,
            @ForAll long shuffleSeed) throws NbdProtocolException {
        TreeSet<Long> cuts = new TreeSet<>();
        cutSeeds.forEach(s -> cuts.add((long) (s % total)));
        cuts.add(0L);
        cuts.add((long) total);
        List<long[]> pieces = new ArrayList<>();
        Long previous = null;
        for (long cut : cuts) {
            if (previous != null) {
                pieces.add(new long[] {previous, cut});
            }
            previous = cut;
        }
        Collections.shuffle(pieces, new Random(shuffleSeed));

        ReadCoverage coverage = new ReadCoverage();
        long sum = 0;
        for (long[] p : pieces) {
            coverage.add(p[0], p[1], "piece");
            sum += p[1] - p[0];
            assertEquals(sum, coverage.covered());
        }
        assertEquals(total, coverage.covered());
    }

    @Property
    void agreesWithABitSetOnEveryAdd(@ForAll("intervals") List<long[]> intervals) {
        ReadCoverage coverage = new ReadCoverage();
        BitSet model = new BitSet();
        for (long[] iv : intervals) {
            int start = (int) iv[0];
            int end = (int) iv[1];
            boolean overlaps = model.get(start, end).cardinality() > 0;
            if (overlaps) {
                NbdProtocolException e = assertThrows(NbdProtocolException.class, () -> coverage.add(start, end, "chunk"));
                assertEquals("chunk overlaps data already received for this request", e.getMessage());
            } else {
                try {
                    coverage.add(start, end, "chunk");
                } catch (NbdProtocolException e) {
                    throw new AssertionError("[" + start + ", " + end + ") does not overlap " + model, e);
                }
                model.set(start, end);
            }
            assertEquals(model.cardinality(), coverage.covered(), "covered after " + start + ".." + end);
        }
    }

    @Property
    void anyOverlappingPairIsRejected(@ForAll("overlappingPair") long[][] pair,
            @ForAll("intervals") List<long[]> others) throws NbdProtocolException {
        long[] a = pair[0];
        long[] b = pair[1];
        ReadCoverage coverage = new ReadCoverage();
        BitSet taken = new BitSet();
        taken.set((int) a[0], (int) a[1]);
        for (long[] o : others) { // unrelated chunks around them, so the search has something to walk
            if (taken.get((int) o[0], (int) o[1]).isEmpty() && (o[1] <= b[0] || o[0] >= b[1])) {
                coverage.add(o[0], o[1], "other");
                taken.set((int) o[0], (int) o[1]);
            }
        }
        coverage.add(a[0], a[1], "a");
        long before = coverage.covered();
        assertThrows(NbdProtocolException.class, () -> coverage.add(b[0], b[1], "b"));
        assertEquals(before, coverage.covered(), "a rejected chunk covers nothing");
    }

    @Provide
    Arbitrary<long[]> interval() {
        return Combinators.combine(Arbitraries.integers().between(0, 255), Arbitraries.integers().between(1, 64))
                .as((start, length) -> new long[] {start, start + length});
    }

    /** Two half-open intervals sharing at least one byte (touching ends, as [0,4) and [4,8), do not). */
    @Provide
    Arbitrary<long[][]> overlappingPair() {
        return Combinators.combine(interval(), Arbitraries.integers().between(0, 63),
                Arbitraries.integers().between(0, 64), Arbitraries.integers().between(1, 64))
                .as((a, at, before, after) -> {
                    long shared = a[0] + at % (a[1] - a[0]);
                    long[] b = {Math.max(0, shared - before), shared + after};
                    return at % 2 == 0 ? new long[][] {a, b} : new long[][] {b, a};
                });
    }

    @Provide
    Arbitrary<List<long[]>> intervals() {
        return interval().list().ofMaxSize(60);
    }
}
