package org.nbdroot.proto.session;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.nbdroot.proto.WireBytes.drainOutbound;
import static org.nbdroot.proto.WireBytes.simpleReply;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.nbdroot.proto.BlockSize;
import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.wire.ReplyDecoder;

/**
 * Which connection of several a request goes to. After a reconnect brought one connection a
 * grown export (the session adopts it), the others still have the old size: a request beyond
 * it must go to the one that can take it, not be refused by another.
 */
class ConnectionChoiceTest {
    private static final long OLD_SIZE = 1 << 20;
    private static final long GROWN_SIZE = 2 << 20;

    private static ExportInfo export(long size) {
        return new ExportInfo("disk", null, size, 0b1101, new BlockSize(512, 4096, 1 << 20), true, false, Map.of());
    }

    private static EmbeddedChannel channelFor(NbdConnection[] holder, ExportInfo export) {
        EmbeddedChannel ch = new EmbeddedChannel();
        holder[0] = new NbdConnection(ch, export);
        ch.pipeline().addLast(new ReplyDecoder(holder[0].expectations(), false), holder[0]);
        return ch;
    }

    @Test
    void aRequestBeyondTheOldSizeGoesToTheConnectionWithTheGrownExport() throws Exception {
        NbdConnection[] old = new NbdConnection[1];
        NbdConnection[] grown = new NbdConnection[1];
        EmbeddedChannel oldChannel = channelFor(old, export(OLD_SIZE));
        EmbeddedChannel grownChannel = channelFor(grown, export(GROWN_SIZE));
        NbdSession session = SessionFixture.newSession(export(GROWN_SIZE), List.of(old[0], grown[0]));

        List<CompletableFuture<ByteBuf>> reads = new ArrayList<>();
        for (int i = 0; i < 6; i++) {
            reads.add(session.read(OLD_SIZE + i * 4096L, 4096)); // each choice starts from another connection
        }
        List<Long> toOld = handles(oldChannel);
        List<Long> toGrown = handles(grownChannel);

        assertEquals(List.of(), toOld, "nothing beyond its export went to the connection with the old size");
        assertEquals(6, toGrown.size());
        for (long handle : toGrown) {
            grownChannel.writeInbound(Unpooled.wrappedBuffer(simpleReply(0, handle, new byte[4096])));
        }
        for (CompletableFuture<ByteBuf> read : reads) {
            read.get(5, TimeUnit.SECONDS).release();
        }
        oldChannel.finishAndReleaseAll();
        grownChannel.finishAndReleaseAll();
    }

    /** The handles of the requests a channel sent. */
    private static List<Long> handles(EmbeddedChannel ch) {
        ch.runPendingTasks();
        ByteBuffer wire = ByteBuffer.wrap(drainOutbound(ch));
        List<Long> out = new ArrayList<>();
        while (wire.hasRemaining()) {
            wire.getInt(); // magic
            wire.getInt(); // flags, type
            out.add(wire.getLong());
            wire.getLong(); // offset
            wire.getInt(); // length
        }
        return out;
    }
}
