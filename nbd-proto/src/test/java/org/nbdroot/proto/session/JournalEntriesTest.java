package org.nbdroot.proto.session;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.util.ArrayDeque;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.nbdroot.proto.wire.Command;

/** The ring of entries against a plain deque: oldest first through wrap-arounds and growth. */
class JournalEntriesTest {
    @Test
    void keepsOrderThroughWrapAroundAndGrowth() {
        JournalEntries ring = new JournalEntries();
        ArrayDeque<Long> model = new ArrayDeque<>();
        ByteBuf buf = Unpooled.buffer(1);
        Random random = new Random(7);
        long seq = 0;
        for (int step = 0; step < 5000; step++) {
            if (random.nextInt(3) == 0 && !model.isEmpty()) {
                int n = 1 + random.nextInt(model.size());
                for (int i = 0; i < n; i++) {
                    assertEquals(model.removeFirst(), ring.seq(0));
                    ring.removeFirst();
                }
            } else {
                int n = 1 + random.nextInt(100); // sometimes past the capacity: it grows with the head anywhere
                for (int i = 0; i < n; i++) {
                    seq++;
                    ring.addLast(seq, Command.WRITE, 0, seq * 512, (int) seq, seq % 2 == 0 ? buf : null, null, seq);
                    model.addLast(seq);
                }
            }
            assertEquals(model.size(), ring.size());
            int i = 0;
            for (long s : model) {
                assertEquals(s, ring.seq(i));
                assertEquals(s * 512, ring.entry(i).offset());
                assertEquals((int) s, ring.length(i));
                assertEquals(s, ring.heldExtra(i));
                if (s % 2 == 0) {
                    assertSame(buf, ring.data(i));
                } else {
                    assertNull(ring.data(i));
                }
                i++;
            }
        }
        ring.clear();
        assertEquals(0, ring.size());
        buf.release();
    }
}
