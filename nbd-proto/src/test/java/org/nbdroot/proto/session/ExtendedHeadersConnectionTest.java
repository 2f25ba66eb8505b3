package org.nbdroot.proto.session;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.nbdroot.proto.WireBytes.EXTENDED_REQUEST_MAGIC;
import static org.nbdroot.proto.WireBytes.FLAG_DONE;
import static org.nbdroot.proto.WireBytes.TYPE_BLOCK_STATUS;
import static org.nbdroot.proto.WireBytes.TYPE_BLOCK_STATUS_EXT;
import static org.nbdroot.proto.WireBytes.TYPE_NONE;
import static org.nbdroot.proto.WireBytes.TYPE_OFFSET_DATA;
import static org.nbdroot.proto.WireBytes.blockStatusExtPayload;
import static org.nbdroot.proto.WireBytes.bytes;
import static org.nbdroot.proto.WireBytes.chunk;
import static org.nbdroot.proto.WireBytes.concat;
import static org.nbdroot.proto.WireBytes.drainOutbound;
import static org.nbdroot.proto.WireBytes.extendedChunk;
import static org.nbdroot.proto.WireBytes.pattern;
import static org.nbdroot.proto.WireBytes.toArray;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.nbdroot.proto.BlockSize;
import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.Extent;
import org.nbdroot.proto.NbdProtocolException;
import org.nbdroot.proto.TrackingAllocator;
import org.nbdroot.proto.session.NbdConnectionTest.Pending;
import org.nbdroot.proto.wire.Command;
import org.nbdroot.proto.wire.CommandFlag;
import org.nbdroot.proto.wire.ReplyDecoder;

/**
 * A connection that negotiated extended headers: 32-byte request headers on the wire, and
 * NBD_REPLY_TYPE_BLOCK_STATUS_EXT (64-bit extents) as the only block status it accepts.
 */
class ExtendedHeadersConnectionTest {
    private static final int BASE_ALLOCATION_ID = 1;
    private static final long EXPORT_SIZE = 1L << 40;

    private final TrackingAllocator alloc = new TrackingAllocator();
    private final List<ByteBuf> fed = new ArrayList<>();
    private EmbeddedChannel ch;
    private NbdConnection conn;

    @AfterEach
    void nothingLeaks() {
        drainOutbound(ch);
        ch.finishAndReleaseAll();
        fed.forEach(b -> assertEquals(0, b.refCnt(), "an inbound buffer was not released"));
        assertEquals(List.of(), alloc.unreleased(), "buffers the connection allocated were not released");
    }

    @Test
    void requestsGoOutWith32ByteHeadersAndAWriteCarriesPayloadLen() {
        open(extendedExport());
        byte[] data = pattern(512, 5);
        submit(new NbdRequest(Command.WRITE, CommandFlag.FUA, 4096, 512, Unpooled.wrappedBuffer(data), new Pending()));
        submit(Command.TRIM, 1L << 33, 1 << 30);
        ch.runPendingTasks();
        ByteBuffer wire = ByteBuffer.wrap(drainOutbound(ch));

        assertEquals(32 + 512 + 32, wire.remaining());
        assertEquals(EXTENDED_REQUEST_MAGIC, wire.getInt());
        assertEquals(CommandFlag.FUA | CommandFlag.PAYLOAD_LEN, wire.getShort());
        assertEquals(1, wire.getShort());
        wire.getLong(); // the cookie
        assertEquals(4096, wire.getLong());
        assertEquals(512, wire.getLong());
        byte[] payload = new byte[512];
        wire.get(payload);
        assertArrayEquals(data, payload);

        assertEquals(EXTENDED_REQUEST_MAGIC, wire.getInt());
        assertEquals(0, wire.getShort(), "no PAYLOAD_LEN on a command without payload");
        assertEquals(4, wire.getShort());
        wire.getLong();
        assertEquals(1L << 33, wire.getLong());
        assertEquals(1L << 30, wire.getLong());
    }

    @Test
    void readAndWriteAnsweredWithExtendedChunks() {
        open(extendedExport());
        Pending read = submit(Command.READ, 8192, 1024);
        Pending flush = submit(Command.FLUSH, 0, 0);
        sent();
        reply(extendedChunk(FLAG_DONE, TYPE_NONE, flush.request.handle, 0, new byte[0]),
                extendedChunk(FLAG_DONE, TYPE_OFFSET_DATA, read.request.handle, 8192,
                        concat(bytes().u64(8192).array(), pattern(1024, 9))));
        assertTrue(flush.succeeded());
        assertTrue(read.succeeded());
        ByteBuf data = read.takeData();
        assertArrayEquals(pattern(1024, 9), toArray(data));
        data.release();
    }

    @Test
    void blockStatusExtExtentsWith64BitLengthsAreClippedToTheRequest() {
        open(extendedExport());
        NbdRequest r = blockStatus(1L << 32, 1 << 30);
        Pending status = submit(r);
        sent();
        // An extent of 2^33 bytes (more than 32 bits can say) runs past the request: clipped.
        reply(extendedChunk(FLAG_DONE, TYPE_BLOCK_STATUS_EXT, r.handle, 1L << 32,
                blockStatusExtPayload(BASE_ALLOCATION_ID, 2, 4096, 3, 1L << 33, 0)));
        assertTrue(status.succeeded());
        assertEquals(List.of(new Extent(1L << 32, 4096, 3), new Extent((1L << 32) + 4096, (1 << 30) - 4096, 0)),
                r.extents);
    }

    @Test
    void anExtentLengthWithTheTopBitSetIsUnsignedAndClipped() {
        open(extendedExport());
        NbdRequest r = blockStatus(0, 8192);
        Pending status = submit(r);
        sent();
        reply(extendedChunk(FLAG_DONE, TYPE_BLOCK_STATUS_EXT, r.handle, 0,
                blockStatusExtPayload(BASE_ALLOCATION_ID, 1, -1L, 2)));
        assertTrue(status.succeeded());
        assertEquals(List.of(new Extent(0, 8192, 2)), r.extents);
    }

    /** "The client MUST be prepared for the server to use either the compact or extended chunk type" (proto.md). */
    @Test
    void compactBlockStatusOnceExtendedHeadersAreAgreedIsRead() {
        open(extendedExport());
        NbdRequest r = blockStatus(0, 8192);
        Pending status = submit(r);
        sent();
        reply(extendedChunk(FLAG_DONE, TYPE_BLOCK_STATUS, r.handle, 0, bytes().u32(BASE_ALLOCATION_ID).u32(4096).u32(0)
                .u32(4096).u32(3).array()));
        assertTrue(status.succeeded());
        assertEquals(List.of(new Extent(0, 4096, 0), new Extent(4096, 4096, 3)), r.extents);
    }

    @Test
    void blockStatusExtWithoutExtendedHeaders() {
        open(new ExportInfo("disk", null, EXPORT_SIZE, 0b1101, new BlockSize(512, 4096, 1 << 20), true, true,
                Map.of(BASE_ALLOCATION_ID, "base:allocation")));
        NbdRequest r = blockStatus(0, 4096);
        Pending status = submit(r);
        ch.runPendingTasks();
        drainOutbound(ch);
        reply(chunk(FLAG_DONE, TYPE_BLOCK_STATUS_EXT, r.handle, blockStatusExtPayload(BASE_ALLOCATION_ID, 1, 4096, 0)));
        assertBrokenWith("although extended headers were not negotiated (expected: NBD_REPLY_TYPE_BLOCK_STATUS)",
                status);
    }

    @Test
    void blockStatusExtWithADescriptorCountThatDoesNotMatch() {
        open(extendedExport());
        NbdRequest r = blockStatus(0, 8192);
        Pending status = submit(r);
        sent();
        reply(extendedChunk(FLAG_DONE, TYPE_BLOCK_STATUS_EXT, r.handle, 0,
                blockStatusExtPayload(BASE_ALLOCATION_ID, 3, 4096, 0, 4096, 3)));
        assertBrokenWith("announces 3 extents but carries 2", status);
    }

    /** The spec lets a server leave the count 0: the length says how many descriptors follow. */
    @Test
    void blockStatusExtWithADescriptorCountOf0TakesTheCountFromTheLength() {
        open(extendedExport());
        NbdRequest r = blockStatus(0, 8192);
        Pending status = submit(r);
        sent();
        reply(extendedChunk(FLAG_DONE, TYPE_BLOCK_STATUS_EXT, r.handle, 0,
                blockStatusExtPayload(BASE_ALLOCATION_ID, 0, 4096, 0, 4096, 3)));
        assertTrue(status.succeeded());
        assertEquals(List.of(new Extent(0, 4096, 0), new Extent(4096, 4096, 3)), r.extents);
    }

    @Test
    void blockStatusExtNotMadeOfWhole16ByteExtents() {
        open(extendedExport());
        NbdRequest r = blockStatus(0, 8192);
        Pending status = submit(r);
        sent();
        byte[] payload = concat(blockStatusExtPayload(BASE_ALLOCATION_ID, 1, 4096, 0), new byte[8]);
        reply(extendedChunk(FLAG_DONE, TYPE_BLOCK_STATUS_EXT, r.handle, 0, payload));
        assertBrokenWith("is 32 bytes long, not a context id and a descriptor count followed by whole 16-byte extents",
                status);
    }

    @Test
    void blockStatusExtWithoutAnyExtent() {
        open(extendedExport());
        NbdRequest r = blockStatus(0, 8192);
        Pending status = submit(r);
        sent();
        reply(extendedChunk(FLAG_DONE, TYPE_BLOCK_STATUS_EXT, r.handle, 0, blockStatusExtPayload(BASE_ALLOCATION_ID, 0)));
        assertBrokenWith("is 8 bytes long", status);
    }

    @Test
    void blockStatusExtExtentOfLengthZero() {
        open(extendedExport());
        NbdRequest r = blockStatus(0, 8192);
        Pending status = submit(r);
        sent();
        reply(extendedChunk(FLAG_DONE, TYPE_BLOCK_STATUS_EXT, r.handle, 0,
                blockStatusExtPayload(BASE_ALLOCATION_ID, 1, 0, 0)));
        assertBrokenWith("extent of length 0", status);
    }

    @Test
    void blockStatusExtStatusBeyond32BitsIsNotSilentlyCut() {
        open(extendedExport());
        NbdRequest r = blockStatus(0, 8192);
        Pending status = submit(r);
        sent();
        reply(extendedChunk(FLAG_DONE, TYPE_BLOCK_STATUS_EXT, r.handle, 0,
                blockStatusExtPayload(BASE_ALLOCATION_ID, 1, 8192, (1L << 32) | 1)));
        assertBrokenWith("status 0x100000001", status);
    }

    @Test
    void blockStatusExtForAContextThatWasNotNegotiated() {
        open(extendedExport());
        NbdRequest r = blockStatus(0, 8192);
        Pending status = submit(r);
        sent();
        reply(extendedChunk(FLAG_DONE, TYPE_BLOCK_STATUS_EXT, r.handle, 0, blockStatusExtPayload(9, 1, 8192, 0)));
        assertBrokenWith("NBD_REPLY_TYPE_BLOCK_STATUS_EXT names meta context id 9", status);
    }

    // ---- Helpers ----

    private static ExportInfo extendedExport() {
        return new ExportInfo("disk", null, EXPORT_SIZE, 0b101101, new BlockSize(512, 4096, 1 << 20), true, true, true,
                Map.of(BASE_ALLOCATION_ID, "base:allocation"));
    }

    private void open(ExportInfo export) {
        ch = new EmbeddedChannel();
        ch.config().setAllocator(alloc);
        conn = new NbdConnection(ch, export);
        ch.pipeline().addLast(new ReplyDecoder(conn.expectations(), export.headerStyle()), conn);
    }

    private NbdRequest blockStatus(long offset, int length) {
        NbdRequest r = new NbdRequest(Command.BLOCK_STATUS, 0, offset, length, null, new Pending());
        r.metaContextId = BASE_ALLOCATION_ID;
        return r;
    }

    private Pending submit(Command command, long offset, int length) {
        return submit(new NbdRequest(command, 0, offset, length, null, new Pending()));
    }

    private Pending submit(NbdRequest request) {
        Pending p = (Pending) request.completion;
        p.request = request;
        conn.submit(request);
        return p;
    }

    /** Sends what was submitted, checking every header is an extended one. */
    private void sent() {
        ch.runPendingTasks();
        ByteBuffer wire = ByteBuffer.wrap(drainOutbound(ch));
        while (wire.hasRemaining()) {
            assertEquals(EXTENDED_REQUEST_MAGIC, wire.getInt());
            int flags = wire.getShort() & 0xffff;
            wire.position(wire.position() + 2 + 8 + 8);
            long length = wire.getLong();
            if ((flags & CommandFlag.PAYLOAD_LEN) != 0) {
                wire.position(wire.position() + (int) length);
            }
        }
    }

    private void reply(byte[]... messages) {
        for (byte[] m : messages) {
            ByteBuf buf = Unpooled.wrappedBuffer(m);
            fed.add(buf);
            ch.writeInbound(buf);
        }
    }

    private void assertBrokenWith(String messagePart, Pending... outstanding) {
        for (Pending p : outstanding) {
            assertEquals(1, p.calls, "every outstanding request completes once");
            NbdProtocolException e = assertInstanceOf(NbdProtocolException.class, p.failure);
            assertTrue(e.getMessage().contains(messagePart), () -> "expected \"" + messagePart + "\" in: "
                    + e.getMessage());
        }
        assertFalse(ch.isOpen(), "the channel is closed");
        assertFalse(conn.isUsable());
    }
}
