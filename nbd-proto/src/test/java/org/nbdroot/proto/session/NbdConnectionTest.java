package org.nbdroot.proto.session;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.nbdroot.proto.WireBytes.FLAG_DONE;
import static org.nbdroot.proto.WireBytes.REQUEST_MAGIC;
import static org.nbdroot.proto.WireBytes.blockStatus;
import static org.nbdroot.proto.WireBytes.bytes;
import static org.nbdroot.proto.WireBytes.chunk;
import static org.nbdroot.proto.WireBytes.concat;
import static org.nbdroot.proto.WireBytes.drainOutbound;
import static org.nbdroot.proto.WireBytes.errorChunk;
import static org.nbdroot.proto.WireBytes.errorOffsetChunk;
import static org.nbdroot.proto.WireBytes.none;
import static org.nbdroot.proto.WireBytes.offsetData;
import static org.nbdroot.proto.WireBytes.offsetHole;
import static org.nbdroot.proto.WireBytes.oneByteEach;
import static org.nbdroot.proto.WireBytes.pattern;
import static org.nbdroot.proto.WireBytes.simpleReply;
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
import org.nbdroot.proto.NbdException;
import org.nbdroot.proto.NbdProtocolException;
import org.nbdroot.proto.NbdServerErrorException;
import org.nbdroot.proto.NbdUnsupportedException;
import org.nbdroot.proto.TrackingAllocator;
import org.nbdroot.proto.wire.Command;
import org.nbdroot.proto.wire.NbdError;
import org.nbdroot.proto.wire.ReplyDecoder;

/**
 * One connection in the transmission phase over an EmbeddedChannel. {@link NbdConnection#submit}
 * hands requests to the channel's event loop; EmbeddedChannel runs those tasks on
 * {@link EmbeddedChannel#runPendingTasks()}, which {@link #sent()} does before reading what
 * went out.
 */
class NbdConnectionTest {
    private static final int BASE_ALLOCATION_ID = 1;
    private static final long EXPORT_SIZE = 1 << 20;

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

    // ---- Requests on the wire ----

    @Test
    void requestHeadersAreByteExactAndBatchedIntoOneFlush() {
        open(false);
        Pending read = submit(Command.READ, 4096, 512);
        Pending flush = submit(Command.FLUSH, 0, 0);
        ch.runPendingTasks();

        byte[] wire = drainOutbound(ch);
        assertArrayEquals(concat(
                bytes().u32(REQUEST_MAGIC).u16(0).u16(0).u64(read.request.handle).u64(4096).u32(512).array(),
                bytes().u32(REQUEST_MAGIC).u16(0).u16(3).u64(flush.request.handle).u64(0).u32(0).array()), wire);
        assertNotEquals(read.request.handle, flush.request.handle);
        reply(simpleReply(0, flush.request.handle, null), simpleReply(0, read.request.handle, new byte[512]));
        read.takeData().release();
    }

    @Test
    void writePayloadFollowsItsHeader() {
        open(false);
        byte[] data = pattern(1024, 9);
        Pending write = submit(new NbdRequest(Command.WRITE, 1, 2048, data.length, Unpooled.wrappedBuffer(data), new Pending()));
        List<Sent> sent = sent();
        assertEquals(1, sent.size());
        assertEquals(new Sent(1, 1, write.request.handle, 2048, 1024), sent.get(0));
        reply(simpleReply(0, write.request.handle, null));
        assertTrue(write.succeeded());
    }

    @Test
    void aRequestSubmittedByACompletionGoesOutOnceRepliesBrought256KiB() {
        assertEquals(1, outboundWhenTheSecondReplyIsTaken(NbdConnection.SEND_AFTER_REPLY_BYTES),
                "the next request was sent before the rest of the socket read was taken");
    }

    @Test
    void requestsSubmittedBySmallRepliesShareTheFlushAfterTheReadBatch() {
        assertEquals(0, outboundWhenTheSecondReplyIsTaken(4096), "4.5 KiB of replies do not flush on their own");
    }

    /**
     * Two READs answered in one socket read; the first one's completion submits another READ,
     * as the bench and the bridges do. Returns how many writes had reached the wire when the
     * second reply was taken, and checks the new READ went out by the end of the read.
     */
    private int outboundWhenTheSecondReplyIsTaken(int firstLength) {
        open(false);
        Pending next = new Pending();
        Pending first = submit(Command.READ, 0, firstLength);
        first.then = () -> submit(new NbdRequest(Command.READ, 0, 0, 512, null, next));
        Pending second = submit(Command.READ, firstLength, 512);
        int[] outbound = {-1};
        second.then = () -> outbound[0] = ch.outboundMessages().size();
        sent();
        feed(concat(simpleReply(0, first.request.handle, new byte[firstLength]),
                simpleReply(0, second.request.handle, new byte[512])));

        assertEquals(1, sent().size(), "the new READ was sent");
        reply(simpleReply(0, next.request.handle, new byte[512]));
        List.of(first, second, next).forEach(p -> p.takeData().release());
        return outbound[0];
    }

    /**
     * A request the session checked against an older description of the export (just before a
     * reconnect or a refresh brought this connection) is refused here, not sent unchecked.
     */
    @Test
    void aRequestTheConnectionsExportCannotTakeFailsUnsent() {
        open(false);
        Pending past = submit(Command.READ, EXPORT_SIZE - 512, 1024);
        Pending trim = submit(Command.TRIM, 0, 4096);
        Pending fits = submit(Command.READ, 0, 512);
        List<Sent> sent = sent();

        assertEquals(List.of(new Sent(0, 0, fits.request.handle, 0, 512)), sent, "only the READ that fits went out");
        assertInstanceOf(NbdUnsupportedException.class, past.failure);
        assertEquals("NBD_CMD_READ of 1024 bytes at offset " + (EXPORT_SIZE - 512) + " fails: the export changed before "
                + "it was sent: the export is now " + EXPORT_SIZE + " bytes", past.failure.getMessage());
        assertContains(trim.failure.getMessage(), "the export changed before it was sent: the export no longer offers send_trim");
        reply(simpleReply(0, fits.request.handle, new byte[512]));
        fits.takeData().release();
        assertTrue(conn.isUsable(), "refusing them did not end the connection");
    }

    @Test
    void aSocketErrorIsDescribedInTheSystemsWords() {
        open(false);
        // The message of Netty's NativeIoException (which needs the native library loaded to be made).
        assertEquals("connection reset by peer", NbdConnection.describe(new java.io.IOException(
                "recvAddress(..) failed with error(-104): Connection reset by peer")));
        assertEquals("broken pipe", NbdConnection.describe(
                new java.io.IOException("sendAddress(..) failed: Broken pipe")));
        assertEquals("java.io.IOException: disk on fire", NbdConnection.describe(new java.io.IOException("disk on fire")));
    }

    // ---- Matching replies to requests ----

    @Test
    void repliesOutOfOrderAreMatchedByHandle() {
        open(false);
        Pending a = submit(Command.READ, 0, 512);
        Pending b = submit(Command.READ, 512, 512);
        Pending c = submit(Command.FLUSH, 0, 0);
        List<Sent> sent = sent();
        assertEquals(3, sent.size());

        reply(simpleReply(0, c.request.handle, null));
        assertTrue(c.succeeded());
        assertFalse(a.done() || b.done());
        reply(simpleReply(0, b.request.handle, pattern(512, 2)), simpleReply(0, a.request.handle, pattern(512, 1)));

        assertArrayEquals(pattern(512, 1), toArray(a.data));
        assertArrayEquals(pattern(512, 2), toArray(b.data));
        a.takeData().release();
        b.takeData().release();
        assertTrue(conn.isUsable());
    }

    @Test
    void readAssembledFromChunksOutOfOrder() {
        open(true);
        Pending read = submit(Command.READ, 8192, 4096);
        long h = handleOf(read);
        byte[] p1 = pattern(1024, 1);
        byte[] p2 = pattern(1024, 2);
        reply(offsetData(0, h, 8192 + 2048, p2),
                offsetHole(0, h, 8192, 1024),
                offsetData(0, h, 8192 + 1024, p1),
                offsetHole(FLAG_DONE, h, 8192 + 3072, 1024));

        assertArrayEquals(concat(new byte[1024], p1, p2, new byte[1024]), toArray(read.data));
        read.takeData().release();
    }

    @Test
    void readAssembledFromChunksFedOneByteAtATime() {
        open(true);
        Pending read = submit(Command.READ, 0, 2048);
        long h = handleOf(read);
        byte[] data = pattern(2048, 3);
        byte[] wire = concat(offsetData(0, h, 1024, java.util.Arrays.copyOfRange(data, 1024, 2048)),
                offsetData(0, h, 0, java.util.Arrays.copyOfRange(data, 0, 1024)), none(h));
        for (ByteBuf b : oneByteEach(wire)) {
            fed.add(b);
            ch.writeInbound(b);
        }
        assertArrayEquals(data, toArray(read.data));
        read.takeData().release();
    }

    @Test
    void readInOneChunkFollowedByNone() {
        open(true);
        Pending read = submit(Command.READ, 512, 1024);
        long h = handleOf(read);
        reply(offsetData(0, h, 512, pattern(1024, 4)));
        assertFalse(read.done(), "not before NBD_REPLY_FLAG_DONE");
        reply(none(h));
        assertArrayEquals(pattern(1024, 4), toArray(read.data));
        read.takeData().release();
    }

    @Test
    void blockStatusExtentsAreClippedToTheRequest() {
        open(true);
        NbdRequest r = new NbdRequest(Command.BLOCK_STATUS, 0, 4096, 8192, null, new Pending());
        r.metaContextId = BASE_ALLOCATION_ID;
        Pending status = submit(r);
        long h = handleOf(status);
        // The last extent may run past the request (proto.md); the client clips it.
        reply(blockStatus(FLAG_DONE, h, BASE_ALLOCATION_ID, 4096, 3, 1 << 20, 0));
        assertTrue(status.succeeded());
        assertEquals(List.of(new Extent(4096, 4096, 3), new Extent(8192, 4096, 0)), r.extents);
    }

    /**
     * Each connection numbers its meta contexts: a BLOCK_STATUS that another connection's id was
     * put on (the session's first, or the one it was sent on before a reconnect) is answered under
     * this connection's id for base:allocation, and taken.
     */
    @Test
    void blockStatusIsMatchedByThisConnectionsIdForBaseAllocation() {
        open(true);
        NbdRequest r = new NbdRequest(Command.BLOCK_STATUS, 0, 0, 4096, null, new Pending());
        r.metaContextId = BASE_ALLOCATION_ID + 8; // another connection's number for it
        Pending status = submit(r);
        reply(blockStatus(FLAG_DONE, handleOf(status), BASE_ALLOCATION_ID, 4096, 0));
        assertTrue(status.succeeded());
        assertEquals(List.of(new Extent(0, 4096, 0)), r.extents);
        assertTrue(conn.isUsable());
    }

    // ---- Server errors: only the request they answer fails ----

    @Test
    void errorChunkFailsOnlyItsOwnRequestAndTheConnectionStaysUsable() {
        open(true);
        Pending a = submit(Command.READ, 0, 4096);
        Pending b = submit(Command.READ, 4096, 4096);
        sent();
        reply(offsetData(0, a.request.handle, 0, pattern(512, 1)), // partial data, then the error
                errorChunk(FLAG_DONE, a.request.handle, 5, "bad sector"));

        NbdServerErrorException e = assertInstanceOf(NbdServerErrorException.class, a.failure);
        assertEquals(NbdError.EIO, e.error());
        assertContains(e.getMessage(), "NBD_CMD_READ of 4096 bytes at offset 0");
        assertContains(e.getMessage(), "bad sector");
        assertFalse(b.done());
        assertTrue(conn.isUsable());
        assertTrue(ch.isOpen());

        reply(offsetData(FLAG_DONE, b.request.handle, 4096, pattern(4096, 2)));
        assertArrayEquals(pattern(4096, 2), toArray(b.data));
        b.takeData().release();

        Pending c = submit(Command.FLUSH, 0, 0);
        reply(none(handleOf(c)));
        assertTrue(c.succeeded());
    }

    @Test
    void errorOffsetChunkThenNone() {
        open(true);
        Pending a = submit(Command.READ, 0, 4096);
        long h = handleOf(a);
        reply(errorOffsetChunk(0, h, 5, "", 1024), none(h));
        NbdServerErrorException e = assertInstanceOf(NbdServerErrorException.class, a.failure);
        assertContains(e.getMessage(), "at offset 1024");
        assertTrue(conn.isUsable());
    }

    @Test
    void unknownErrorChunkTypeIsStillAnError() {
        // proto.md: clients must treat unknown chunk types with bit 15 set as errors, not disconnect.
        open(true);
        Pending a = submit(Command.FLUSH, 0, 0);
        long h = handleOf(a);
        reply(chunk(FLAG_DONE, (1 << 15) + 50, h, bytes().u32(22).u16(0).array()));
        assertEquals(NbdError.EINVAL, assertInstanceOf(NbdServerErrorException.class, a.failure).error());
        assertTrue(conn.isUsable());
    }

    @Test
    void simpleErrorReply() {
        open(false);
        Pending w = submit(Command.FLUSH, 0, 0);
        reply(simpleReply(28, handleOf(w), null));
        assertEquals(NbdError.ENOSPC, assertInstanceOf(NbdServerErrorException.class, w.failure).error());
        assertTrue(conn.isUsable());
    }

    // ---- Protocol errors: every outstanding request fails and the channel closes ----

    @Test
    void overlappingChunks() {
        open(true);
        Pending read = submit(Command.READ, 0, 4096);
        Pending other = submit(Command.FLUSH, 0, 0);
        long h = handleOf(read);
        reply(offsetData(0, h, 0, pattern(2048, 1)), offsetHole(0, h, 1024, 1024));

        assertBrokenWith("overlaps", read, other);
    }

    @Test
    void chunkOutsideTheRequest() {
        open(true);
        Pending read = submit(Command.READ, 4096, 4096);
        Pending other = submit(Command.FLUSH, 0, 0);
        reply(offsetData(0, handleOf(read), 8192 - 512, pattern(1024, 1)));
        assertBrokenWith("outside NBD_CMD_READ of 4096 bytes at offset 4096", read, other);
    }

    @Test
    void chunkBeforeTheRequestStart() {
        open(true);
        Pending read = submit(Command.READ, 4096, 4096);
        reply(offsetHole(0, handleOf(read), 0, 512));
        assertBrokenWith("outside", read);
    }

    @Test
    void doneWithMissingBytes() {
        open(true);
        Pending read = submit(Command.READ, 0, 4096);
        Pending other = submit(Command.FLUSH, 0, 0);
        long h = handleOf(read);
        reply(offsetData(0, h, 0, pattern(1024, 1)), none(h));

        // The truncated READ itself fails too (it must not be dropped from the table before the
        // check throws), and its half-filled assembly buffer is released.
        assertBrokenWith("after sending only 1024 of its bytes", read, other);
        assertNull(read.request.data);
    }

    @Test
    void doneWithoutAnyDataForARead() {
        open(true);
        Pending read = submit(Command.READ, 0, 4096);
        reply(none(handleOf(read)));
        assertBrokenWith("after sending only 0 of its bytes", read);
    }

    @Test
    void aWholeReadChunkFollowedByAnotherChunkOverlaps() {
        // The whole-read fast path hands the slice up without coverage bookkeeping; a second chunk
        // must still be caught as an overlap.
        open(true);
        Pending read = submit(Command.READ, 0, 1024);
        long h = handleOf(read);
        reply(offsetData(0, h, 0, pattern(1024, 1)), offsetHole(FLAG_DONE, h, 512, 512));
        assertBrokenWith("overlaps", read);
    }

    @Test
    void simpleReplyAfterChunksFailsThatRequestToo() {
        open(true);
        NbdRequest r = new NbdRequest(Command.BLOCK_STATUS, 0, 0, 4096, null, new Pending());
        r.metaContextId = BASE_ALLOCATION_ID;
        Pending status = submit(r);
        Pending other = submit(Command.FLUSH, 0, 0);
        long h = handleOf(status);
        reply(blockStatus(0, h, BASE_ALLOCATION_ID, 4096, 0), simpleReply(0, h, null));

        assertBrokenWith("simple reply to NBD_CMD_BLOCK_STATUS", status, other);
    }

    @Test
    void successfulSimpleReplyToBlockStatusIsAProtocolError() {
        // Found by NbdConnectionFuzzTest: it completed the request with no extents at all, and
        // NbdSession.blockStatus then threw on the event loop, leaving its caller waiting for ever.
        open(true);
        NbdRequest r = new NbdRequest(Command.BLOCK_STATUS, 0, 0, 4096, null, new Pending());
        r.metaContextId = BASE_ALLOCATION_ID;
        Pending status = submit(r);
        Pending other = submit(Command.FLUSH, 0, 0);
        reply(simpleReply(0, handleOf(status), null));

        assertBrokenWith("successful simple reply to NBD_CMD_BLOCK_STATUS", status, other);
    }

    @Test
    void simpleErrorReplyToBlockStatusFailsOnlyThatRequest() {
        open(true);
        NbdRequest r = new NbdRequest(Command.BLOCK_STATUS, 0, 0, 4096, null, new Pending());
        r.metaContextId = BASE_ALLOCATION_ID;
        Pending status = submit(r);
        reply(simpleReply(22, handleOf(status), null));

        NbdServerErrorException e = assertInstanceOf(NbdServerErrorException.class, status.failure);
        assertEquals(NbdError.EINVAL, e.error());
        assertTrue(conn.isUsable());
    }

    @Test
    void simpleReplyAfterAWholeReadChunk() {
        // With structured replies a simple reply to a READ is refused by the decoder: the READ, already
        // holding its data, fails with everything else and releases that data.
        open(true);
        Pending read = submit(Command.READ, 0, 512);
        long h = handleOf(read);
        reply(offsetData(0, h, 0, pattern(512, 1)), simpleReply(0, h, null));
        assertBrokenWith("although structured replies were negotiated", read);
        assertNull(read.request.data);
    }

    @Test
    void duplicateReplyForACompletedHandle() {
        open(false);
        Pending a = submit(Command.FLUSH, 0, 0);
        Pending b = submit(Command.FLUSH, 0, 0);
        sent();
        reply(simpleReply(0, a.request.handle, null));
        assertTrue(a.succeeded());
        reply(simpleReply(0, a.request.handle, null));

        assertEquals(1, a.calls, "a completed request is not completed again");
        assertBrokenWith("no outstanding request", b);
    }

    @Test
    void lateReplyForAReusedSlotIsNotTakenForTheNewRequest() {
        open(false);
        Pending a = submit(Command.FLUSH, 0, 0);
        long old = handleOf(a);
        reply(simpleReply(0, old, null));
        Pending b = submit(Command.FLUSH, 0, 0);
        long fresh = handleOf(b);
        assertEquals((int) old, (int) fresh, "the slot is reused");
        assertNotEquals(old, fresh, "with a new handle");

        reply(simpleReply(0, old, null));
        assertBrokenWith("no outstanding request", b);
    }

    @Test
    void blockStatusForAContextThatWasNotNegotiated() {
        open(true);
        NbdRequest r = new NbdRequest(Command.BLOCK_STATUS, 0, 0, 4096, null, new Pending());
        r.metaContextId = BASE_ALLOCATION_ID;
        Pending status = submit(r);
        reply(blockStatus(FLAG_DONE, handleOf(status), 9, 4096, 0));
        assertBrokenWith("meta context id 9", status);
    }

    @Test
    void unknownNonErrorChunkType() {
        open(true);
        Pending a = submit(Command.FLUSH, 0, 0);
        reply(chunk(FLAG_DONE, 77, handleOf(a), new byte[0]));
        assertBrokenWith("unknown reply chunk type 77", a);
    }

    @Test
    void dataChunkAnsweringAFlush() {
        open(true);
        Pending a = submit(Command.FLUSH, 0, 0);
        reply(offsetData(FLAG_DONE, handleOf(a), 0, new byte[1]));
        assertBrokenWith("NBD_REPLY_TYPE_OFFSET_DATA answers NBD_CMD_FLUSH", a);
    }

    @Test
    void badMagicFromTheDecoderFailsEverything() {
        open(true);
        Pending a = submit(Command.READ, 0, 512);
        reply(bytes().u32(0xcafebabeL).zeroes(16).array());
        assertBrokenWith("0xcafebabe", a);
    }

    @Test
    void requestsSubmittedAfterAFailureFailAtOnceWithTheSameCause() {
        open(true);
        Pending a = submit(Command.FLUSH, 0, 0);
        reply(chunk(FLAG_DONE, 77, handleOf(a), new byte[0]));
        Pending late = submit(Command.FLUSH, 0, 0);
        assertSame(a.failure, late.failure);
        assertEquals(List.of(), sent(), "nothing sent on a broken connection");
    }

    // ---- Ending ----

    @Test
    void serverClosingFailsOutstandingRequests() {
        open(true);
        Pending a = submit(Command.READ, 0, 512);
        sent();
        ch.close();
        assertInstanceOf(NbdException.class, a.failure);
        assertContains(a.failure.getMessage(), "server closed the connection");
        assertTrue(conn.closeFuture().isCompletedExceptionally());
    }

    @Test
    void disconnectWaitsForOutstandingRepliesThenSendsDisc() {
        open(false);
        Pending a = submit(Command.FLUSH, 0, 0);
        sent();
        conn.disconnect();
        ch.runPendingTasks();
        assertEquals(List.of(), sent(), "NBD_CMD_DISC waits for the outstanding reply");
        Pending refused = submit(Command.FLUSH, 0, 0);
        ch.runPendingTasks();
        assertContains(refused.failure.getMessage(), "being closed");

        reply(simpleReply(0, a.request.handle, null));
        assertTrue(a.succeeded());
        List<Sent> disc = sent();
        assertEquals(List.of(new Sent(0, 2, 0, 0, 0)), disc);
        assertFalse(ch.isOpen());
        assertTrue(conn.closeFuture().isDone());
        assertFalse(conn.closeFuture().isCompletedExceptionally());
    }

    // ---- Helpers ----

    private void open(boolean structured) {
        ch = new EmbeddedChannel();
        ch.config().setAllocator(alloc);
        ExportInfo export = new ExportInfo("disk", null, EXPORT_SIZE, 0b1101, new BlockSize(512, 4096, 1 << 20), true,
                structured, structured ? Map.of(BASE_ALLOCATION_ID, "base:allocation") : Map.of());
        conn = new NbdConnection(ch, export);
        ch.pipeline().addLast(new ReplyDecoder(conn.expectations(), structured), conn);
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

    /** Sends what was submitted and returns the handle the wire carried for this request. */
    private long handleOf(Pending p) {
        sent();
        return p.request.handle;
    }

    /** Runs the event loop's pending tasks, then parses the request headers written so far. */
    private List<Sent> sent() {
        ch.runPendingTasks();
        ByteBuffer wire = ByteBuffer.wrap(drainOutbound(ch));
        List<Sent> out = new ArrayList<>();
        while (wire.hasRemaining()) {
            assertEquals(REQUEST_MAGIC, wire.getInt());
            Sent s = new Sent(wire.getShort() & 0xffff, wire.getShort() & 0xffff, wire.getLong(), wire.getLong(),
                    wire.getInt() & 0xffffffffL);
            out.add(s);
            if (s.type == 1) {
                wire.position(wire.position() + (int) s.length); // a WRITE's payload
            }
        }
        return out;
    }

    private void reply(byte[]... messages) {
        sent();
        for (byte[] m : messages) {
            feed(m);
        }
    }

    /** Bytes as one socket read, without sending first what was submitted. */
    private void feed(byte[] bytes) {
        ByteBuf buf = Unpooled.wrappedBuffer(bytes);
        fed.add(buf);
        ch.writeInbound(buf);
    }

    private void assertBrokenWith(String messagePart, Pending... outstanding) {
        for (Pending p : outstanding) {
            assertEquals(1, p.calls, "every outstanding request completes once");
            NbdProtocolException e = assertInstanceOf(NbdProtocolException.class, p.failure);
            assertContains(e.getMessage(), messagePart);
        }
        assertFalse(ch.isOpen(), "the channel is closed");
        assertFalse(conn.isUsable());
        assertTrue(conn.closeFuture().isCompletedExceptionally());
    }

    private static void assertContains(String text, String part) {
        assertTrue(text != null && text.contains(part), () -> "expected \"" + part + "\" in: " + text);
    }

    record Sent(int flags, int type, long handle, long offset, long length) {}

    /** Records the outcome the way NbdSession does: a successful READ's data is taken over. */
    static final class Pending implements NbdRequest.Completion {
        NbdRequest request;
        Throwable failure;
        ByteBuf data;
        int calls;
        /** What the caller does next, on the event loop, as the request completes. */
        Runnable then = () -> { };

        @Override
        public void complete(NbdRequest r, Throwable f) {
            calls++;
            failure = f;
            if (f == null) {
                data = r.data;
                r.data = null;
            }
            then.run();
        }

        boolean done() {
            return calls > 0;
        }

        boolean succeeded() {
            if (failure != null) {
                throw new AssertionError("request failed", failure);
            }
            return calls == 1;
        }

        ByteBuf takeData() {
            ByteBuf d = data;
            data = null;
            return d;
        }
    }
}
