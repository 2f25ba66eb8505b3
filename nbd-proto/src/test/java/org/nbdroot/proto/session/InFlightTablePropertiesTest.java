package org.nbdroot.proto.session;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.constraints.Size;
import org.nbdroot.proto.wire.Command;
import org.nbdroot.proto.wire.ReplyExpectations;

/**
 * The in-flight table against a plain map as the model, over random sequences of adds and
 * removes: a reply can only ever be matched to the request that is outstanding under its handle.
 */
class InFlightTablePropertiesTest {
    private static final int ADD = 0;
    private static final int REMOVE = 1;
    private static final int REMOVE_STALE = 2;
    private static final int REMOVE_ALL = 3;

    @Property(tries = 300)
    void handlesAreUniqueAndRemovedHandlesBecomeUnknown(
            @ForAll @Size(max = 400) List<@IntRange(min = 0, max = 1_000_000) Integer> ops,
            @ForAll boolean structured) {
        InFlightTable table = new InFlightTable(structured, 512);
        Map<Long, NbdRequest> outstanding = new LinkedHashMap<>();
        Set<Long> everIssued = new HashSet<>();
        List<Long> gone = new ArrayList<>();

        for (int op : ops) {
            int kind = op % 100 == 0 ? REMOVE_ALL : op % 3; // emptying the whole table only now and then
            switch (kind) {
                case ADD -> {
                    NbdRequest r = request(op);
                    long handle = table.add(r);
                    assertEquals(handle, r.handle);
                    // A new handle, never seen before, even when the slot is a reused one.
                    assertTrue(everIssued.add(handle), () -> "handle issued twice: " + Long.toHexString(handle));
                    outstanding.put(handle, r);
                }
                case REMOVE -> {
                    if (!outstanding.isEmpty()) {
                        long handle = new ArrayList<>(outstanding.keySet()).get((op / 4) % outstanding.size());
                        assertSame(outstanding.remove(handle), table.remove(handle));
                        gone.add(handle);
                    }
                }
                case REMOVE_STALE -> {
                    if (!gone.isEmpty()) {
                        long handle = gone.get((op / 4) % gone.size());
                        assertNull(table.remove(handle), "a removed handle removes nothing");
                    }
                }
                case REMOVE_ALL -> {
                    Set<NbdRequest> removed = identitySet(table.removeAll());
                    assertEquals(identitySet(outstanding.values()), removed);
                    gone.addAll(outstanding.keySet());
                    outstanding.clear();
                }
                default -> throw new AssertionError();
            }
            assertEquals(outstanding.size(), table.size());
            assertEquals(outstanding.isEmpty(), table.isEmpty());
        }
        for (Map.Entry<Long, NbdRequest> e : outstanding.entrySet()) {
            assertSame(e.getValue(), table.get(e.getKey()));
        }
        for (long handle : gone) {
            assertNull(table.get(handle));
            assertEquals(ReplyExpectations.UNKNOWN_HANDLE, table.simpleReplyDataLength(handle));
            assertEquals(ReplyExpectations.UNKNOWN_HANDLE, table.maxChunkPayload(handle));
        }
    }

    @Property
    void handlesNeverIssuedAreUnknown(@ForAll("handles") long handle) {
        InFlightTable table = new InFlightTable(true, 1);
        for (int i = 0; i < 100; i++) {
            table.add(request(i));
        }
        // Issued handles have use count 1 in the high half and slot 0..99 in the low half.
        boolean issued = handle >= (1L << 32) && handle < (1L << 32) + 100;
        assertEquals(issued, table.get(handle) != null);
        if (!issued) {
            assertEquals(ReplyExpectations.UNKNOWN_HANDLE, table.maxChunkPayload(handle));
        }
    }

    @Property
    void expectationsFollowTheRequest(@ForAll @IntRange(min = 1, max = 1 << 25) int length,
            @ForAll @IntRange(min = 0, max = 16) int minimumBlockShift, @ForAll boolean structured) {
        int minimum = 1 << minimumBlockShift;
        InFlightTable table = new InFlightTable(structured, minimum);
        long read = table.add(new NbdRequest(Command.READ, 0, 0, length, null, (r, f) -> {}));
        long write = table.add(new NbdRequest(Command.WRITE, 0, 0, length, null, (r, f) -> {}));
        long status = table.add(new NbdRequest(Command.BLOCK_STATUS, 0, 0, length, null, (r, f) -> {}));

        // A simple reply carries READ data only without structured replies (proto.md, "Simple reply message").
        assertEquals(structured ? ReplyExpectations.SIMPLE_REPLY_FORBIDDEN : length, table.simpleReplyDataLength(read));
        assertEquals(0, table.simpleReplyDataLength(write));
        // Any request may be answered with an error chunk carrying a 4096-byte message and an offset.
        int errorChunk = 4 + 2 + 4096 + 8;
        for (long h : new long[] {read, write, status}) {
            assertTrue(table.maxChunkPayload(h) >= errorChunk);
        }
        // A READ's data chunk: the 8-byte offset and all the data.
        assertTrue(table.maxChunkPayload(read) >= length + 8);
        // BLOCK_STATUS: at least one extent per minimum block (within the 16 MiB sanity cap).
        long oneExtentPerBlock = 4 + 8L * ((length + minimum - 1) / minimum);
        assertTrue(table.maxChunkPayload(status) >= Math.min(oneExtentPerBlock, 16 << 20));
    }

    /** Any long, or one close to the handles issued (use count 0..3, slot around 0..99). */
    @Provide
    Arbitrary<Long> handles() {
        Arbitrary<Long> near = Combinators.combine(Arbitraries.longs().between(0, 3), Arbitraries.longs().between(-2, 102))
                .as((use, slot) -> (use << 32) + slot);
        return Arbitraries.oneOf(Arbitraries.longs(), near);
    }

    private static NbdRequest request(int n) {
        return new NbdRequest(n % 2 == 0 ? Command.READ : Command.FLUSH, 0, 0, n % 2 == 0 ? 512 : 0, null, (r, f) -> {});
    }

    private static Set<NbdRequest> identitySet(java.util.Collection<NbdRequest> requests) {
        Set<NbdRequest> set = java.util.Collections.newSetFromMap(new IdentityHashMap<>());
        set.addAll(requests);
        return set;
    }
}
