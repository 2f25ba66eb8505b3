package org.nbdroot.proto.session;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.nbdroot.proto.WireBytes.simpleReply;
import static org.nbdroot.proto.session.SessionFixture.dataAt;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.constraints.LongRange;
import org.nbdroot.proto.BlockSize;
import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.WireBytes;
import org.nbdroot.proto.session.SessionFixture.Request;

/**
 * How the session cuts long operations into requests, over random block size constraints:
 * pieces are contiguous, aligned to the minimum block, never longer than the export's maximum
 * (nor 32 MiB, the client's own cap for READ and WRITE, proto.md "Block size constraints"), as
 * few as possible; and the data comes back whole, whatever order the replies arrive in.
 */
class NbdSessionSplittingPropertiesTest {
    private static final long SIZE = 1 << 24;
    private static final int TRIM = 1 << 5;

    @Property(tries = 300)
    void readsAreSplitAlignedAndReassembled(
            @ForAll @IntRange(min = 0, max = 12) int minimumShift,
            @ForAll @IntRange(min = 0, max = 64) int maximumBlocks, // 0: no limit (0xffffffff)
            @ForAll @IntRange(min = 1, max = Integer.MAX_VALUE) int lengthSeed,
            @ForAll @IntRange(min = 0, max = Integer.MAX_VALUE) int offsetSeed,
            @ForAll long shuffleSeed,
            @ForAll boolean structured) {
        Geometry g = new Geometry(minimumShift, maximumBlocks, lengthSeed, offsetSeed);
        SessionFixture f = new SessionFixture(g.export(0, structured));

        CompletableFuture<ByteBuf> read = f.session.read(g.offset, g.length);
        List<Request> sent = f.sent();
        g.checkPieces(sent, 0);

        List<Request> replyOrder = new ArrayList<>(sent);
        Collections.shuffle(replyOrder, new Random(shuffleSeed));
        Random random = new Random(shuffleSeed);
        for (Request r : replyOrder) {
            int length = (int) r.length();
            if (!structured) {
                f.reply(simpleReply(0, r.handle(), dataAt(r.offset(), length)));
            } else if (length == 1 || random.nextBoolean()) {
                // One chunk for the whole piece: the engine hands up the slice after the 8-byte offset.
                f.reply(WireBytes.offsetData(WireBytes.FLAG_DONE, r.handle(), r.offset(), dataAt(r.offset(), length)));
            } else {
                int cut = 1 + random.nextInt(length - 1); // second half first: out of order
                f.reply(WireBytes.offsetData(0, r.handle(), r.offset() + cut, dataAt(r.offset() + cut, length - cut)),
                        WireBytes.offsetData(WireBytes.FLAG_DONE, r.handle(), r.offset(), dataAt(r.offset(), cut)));
            }
        }
        ByteBuf data = read.join();
        assertArrayEquals(dataAt(g.offset, g.length), WireBytes.toArray(data));
        data.release();
        f.finishWithoutLeaks();
    }

    @Property(tries = 300)
    void writesAreSplitWithTheirPayload(
            @ForAll @IntRange(min = 0, max = 12) int minimumShift,
            @ForAll @IntRange(min = 0, max = 64) int maximumBlocks,
            @ForAll @IntRange(min = 1, max = Integer.MAX_VALUE) int lengthSeed,
            @ForAll @IntRange(min = 0, max = Integer.MAX_VALUE) int offsetSeed) {
        Geometry g = new Geometry(minimumShift, maximumBlocks, lengthSeed, offsetSeed);
        SessionFixture f = new SessionFixture(g.export(0, false));
        ByteBuf data = Unpooled.wrappedBuffer(dataAt(g.offset, g.length));

        CompletableFuture<Void> write = f.session.write(g.offset, data, false);
        List<Request> sent = f.sent();
        g.checkPieces(sent, 1);
        for (Request r : sent) {
            assertArrayEquals(dataAt(r.offset(), (int) r.length()), r.payload());
            f.reply(simpleReply(0, r.handle(), null));
        }
        write.join();
        assertEquals(0, data.refCnt());
        f.finishWithoutLeaks();
    }

    @Property(tries = 200)
    void trimsAreSplitAtOneGibibyte(
            @ForAll @IntRange(min = 0, max = 16) int minimumShift,
            @ForAll @LongRange(min = 1, max = 1L << 36) long lengthSeed,
            @ForAll @LongRange(min = 0, max = 1L << 40) long offsetSeed) {
        long minimum = 1L << minimumShift;
        long size = 1L << 40;
        long length = Math.max(minimum, lengthSeed / minimum * minimum);
        long offset = offsetSeed % (size - length + 1) / minimum * minimum;
        ExportInfo export = new ExportInfo("disk", null, size, 1 | TRIM,
                new BlockSize((int) minimum, (int) Math.max(512, minimum), Integer.MAX_VALUE), true, false, Map.of());
        SessionFixture f = new SessionFixture(export);

        CompletableFuture<Void> trim = f.session.trim(offset, length, false);
        List<Request> sent = f.sent();
        long at = offset;
        for (Request r : sent) {
            assertEquals(4, r.type());
            assertEquals(at, r.offset());
            assertTrue(r.length() > 0 && r.length() <= 1L << 30 && r.length() % minimum == 0);
            at += r.length();
            f.reply(simpleReply(0, r.handle(), null));
        }
        assertEquals(offset + length, at);
        assertEquals((length + (1L << 30) - 1) >> 30, sent.size());
        trim.join();
        f.finishWithoutLeaks();
    }

    /** A random export geometry and an aligned range in it, small enough to move real bytes. */
    private static final class Geometry {
        final int minimum;
        final int maximum; // as ExportInfo carries it; Integer.MAX_VALUE for 0xffffffff
        final int limit;   // what a request may carry at most, worked out independently
        final int length;
        final long offset;

        Geometry(int minimumShift, int maximumBlocks, int lengthSeed, int offsetSeed) {
            minimum = 1 << minimumShift;
            maximum = maximumBlocks == 0 ? Integer.MAX_VALUE : minimum * maximumBlocks;
            limit = Math.min(maximum, 1 << 25);
            // Up to 20 pieces, and at most 256 KiB of data per try.
            int maxBlocks = (int) Math.min(20L * limit, 256 * 1024) / minimum;
            length = minimum * (1 + lengthSeed % maxBlocks);
            offset = (long) minimum * (offsetSeed % ((SIZE - length) / minimum + 1));
        }

        ExportInfo export(int flags, boolean structured) {
            return new ExportInfo("disk", null, SIZE, 1 | flags,
                    new BlockSize(minimum, Math.max(512, minimum), maximum), true, structured, Map.of());
        }

        void checkPieces(List<Request> sent, int command) {
            long at = offset;
            for (Request r : sent) {
                assertEquals(command, r.type());
                assertEquals(at, r.offset(), "pieces are contiguous and in order");
                assertTrue(r.length() > 0 && r.length() <= limit, () -> r + " is longer than " + limit);
                assertEquals(0, r.length() % minimum, "aligned to the minimum block");
                at += r.length();
            }
            assertEquals(offset + length, at, "the pieces cover the range");
            assertEquals((length + limit - 1) / limit, sent.size(), "as few pieces as the limit allows");
        }
    }
}
