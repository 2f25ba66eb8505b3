package org.nbdroot.proto.testing;

import static java.nio.charset.StandardCharsets.UTF_8;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.nbdroot.proto.testing.ScriptedNbdProtocol.*;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.nbdroot.proto.testing.ScriptedNbdServer.Fault;

/**
 * Proves the test double on its own, speaking NBD by hand over a raw socket, so that tests of the
 * client engine rest on a server whose behaviour is checked independently of that engine.
 */
class ScriptedNbdServerSelfTest {
    private static final Duration TIMEOUT = Duration.ofSeconds(5);

    @Test
    void fullSessionWithGoWriteStructuredReadBlockStatusAndDisc() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder()
                        .size(64 * 1024)
                        .export("disk1", "first disk")
                        .blockSizes(512, 4096, 1 << 20)
                        .readChunkSize(1024)
                        .shuffleChunks(true)
                        .start();
                RawClient c = new RawClient(server.port())) {
            assertEquals("nbd://127.0.0.1:" + server.port() + "/disk1", server.uri());
            int handshakeFlags = c.greet(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
            assertEquals(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES, handshakeFlags);

            c.option(NBD_OPT_STRUCTURED_REPLY, new byte[0]);
            assertEquals(NBD_REP_ACK, c.optionReply(NBD_OPT_STRUCTURED_REPLY).type());

            c.option(NBD_OPT_SET_META_CONTEXT, metaContextQuery("disk1", BASE_ALLOCATION));
            OptionReply context = c.optionReply(NBD_OPT_SET_META_CONTEXT);
            assertEquals(NBD_REP_META_CONTEXT, context.type());
            ByteBuffer contextData = ByteBuffer.wrap(context.data());
            int contextId = contextData.getInt();
            assertEquals(BASE_ALLOCATION, UTF_8.decode(contextData).toString());
            assertEquals(NBD_REP_ACK, c.optionReply(NBD_OPT_SET_META_CONTEXT).type());

            c.option(NBD_OPT_GO, goRequest("disk1", NBD_INFO_NAME, NBD_INFO_DESCRIPTION, NBD_INFO_BLOCK_SIZE));
            long size = -1;
            int flags = -1;
            String name = null;
            String description = null;
            int[] blockSizes = null;
            for (OptionReply reply = c.optionReply(NBD_OPT_GO); reply.type() != NBD_REP_ACK;
                    reply = c.optionReply(NBD_OPT_GO)) {
                assertEquals(NBD_REP_INFO, reply.type());
                ByteBuffer info = ByteBuffer.wrap(reply.data());
                switch (info.getShort()) {
                    case NBD_INFO_EXPORT -> {
                        size = info.getLong();
                        flags = info.getShort() & 0xffff;
                    }
                    case NBD_INFO_NAME -> name = UTF_8.decode(info).toString();
                    case NBD_INFO_DESCRIPTION -> description = UTF_8.decode(info).toString();
                    case NBD_INFO_BLOCK_SIZE -> blockSizes = new int[] {info.getInt(), info.getInt(), info.getInt()};
                    default -> {}
                }
            }
            assertEquals(64 * 1024, size);
            assertEquals(ScriptedNbdServer.DEFAULT_TRANSMISSION_FLAGS, flags);
            assertEquals("disk1", name);
            assertEquals("first disk", description);
            assertArrayEquals(new int[] {512, 4096, 1 << 20}, blockSizes);

            // Write a pattern at 8 KiB; the reply is simple, as no payload comes back.
            byte[] pattern = new byte[4096];
            for (int i = 0; i < pattern.length; i++) {
                pattern[i] = (byte) (i * 31 + 7);
            }
            c.request(0, NBD_CMD_WRITE, 1, 8192, pattern.length, pattern);
            assertEquals(NBD_SIMPLE_REPLY_MAGIC, c.in.readInt());
            assertEquals(0, c.in.readInt());
            assertEquals(1, c.in.readLong());

            // Read 4..12 KiB back: zeroes as holes, then the pattern, in shuffled 1 KiB chunks.
            c.request(0, NBD_CMD_READ, 2, 4096, 8192, null);
            byte[] read = new byte[8192];
            BitSet covered = new BitSet();
            int holes = 0;
            for (Chunk chunk = null; chunk == null || !chunk.done(); ) {
                chunk = c.chunk();
                assertEquals(2, chunk.handle());
                ByteBuffer p = ByteBuffer.wrap(chunk.payload());
                switch (chunk.type()) {
                    case NBD_REPLY_TYPE_OFFSET_DATA -> {
                        int at = (int) (p.getLong() - 4096);
                        int n = p.remaining();
                        assertTrue(covered.get(at, at + n).isEmpty(), "overlap");
                        p.get(read, at, n);
                        covered.set(at, at + n);
                    }
                    case NBD_REPLY_TYPE_OFFSET_HOLE -> {
                        int at = (int) (p.getLong() - 4096);
                        int n = p.getInt();
                        assertTrue(covered.get(at, at + n).isEmpty(), "overlap");
                        covered.set(at, at + n);
                        holes++;
                    }
                    case NBD_REPLY_TYPE_NONE -> assertEquals(0, chunk.payload().length);
                    default -> throw new AssertionError("unexpected chunk type " + chunk.type());
                }
            }
            assertEquals(8192, covered.cardinality());
            assertEquals(4, holes);
            assertArrayEquals(new byte[4096], Arrays.copyOfRange(read, 0, 4096));
            assertArrayEquals(pattern, Arrays.copyOfRange(read, 4096, 8192));

            // Block status of the untouched start: one extent, a hole that reads as zeroes.
            c.request(0, NBD_CMD_BLOCK_STATUS, 3, 0, 4096, null);
            Chunk status = c.chunk();
            assertEquals(NBD_REPLY_TYPE_BLOCK_STATUS, status.type());
            assertTrue(status.done());
            ByteBuffer extents = ByteBuffer.wrap(status.payload());
            assertEquals(contextId, extents.getInt());
            assertEquals(4096, extents.getInt());
            assertEquals(NBD_STATE_HOLE | NBD_STATE_ZERO, extents.getInt());
            assertEquals(0, extents.remaining());

            c.request(0, NBD_CMD_DISC, 4, 0, 0, null);
            assertEquals(-1, c.in.read(), "the server closes after NBD_CMD_DISC");

            assertTrue(server.awaitDisconnect(TIMEOUT));
            assertEquals(List.of(), server.violations());
            assertEquals(List.of(NBD_OPT_STRUCTURED_REPLY, NBD_OPT_SET_META_CONTEXT, NBD_OPT_GO), server.options());
            assertEquals(List.of(NBD_CMD_WRITE, NBD_CMD_READ, NBD_CMD_BLOCK_STATUS, NBD_CMD_DISC),
                    server.requests().stream().map(ScriptedRequest::type).toList());
            assertArrayEquals(pattern, server.read(8192, 4096));
        }
    }

    @Test
    void badReplyMagicIsSentOnTheArmedRequest() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.start();
                RawClient c = new RawClient(server.port())) {
            c.handshakeWithGo(ScriptedNbdServer.DEFAULT_EXPORT_NAME);
            server.armFault(ScriptedNbdServer.Fault.BAD_REPLY_MAGIC, 2);

            c.request(0, NBD_CMD_READ, 10, 0, 512, null);
            assertEquals(NBD_SIMPLE_REPLY_MAGIC, c.in.readInt(), "the first request is answered correctly");
            c.in.readFully(new byte[12 + 512]);

            c.request(0, NBD_CMD_READ, 11, 512, 512, null);
            int magic = c.in.readInt();
            assertNotEquals(NBD_SIMPLE_REPLY_MAGIC, magic);
            assertNotEquals(NBD_STRUCTURED_REPLY_MAGIC, magic);
            assertEquals(List.of(ScriptedNbdServer.Fault.BAD_REPLY_MAGIC), server.firedFaults());
            assertEquals(List.of(), server.violations());
        }
    }

    @Test
    void reorderWindowAnswersNewestFirst() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().reorderWindow(3).start();
                RawClient c = new RawClient(server.port())) {
            c.handshakeWithGo(ScriptedNbdServer.DEFAULT_EXPORT_NAME);
            // One write, so all three are there before the server's linger runs out.
            c.autoFlush = false;
            for (long handle = 1; handle <= 3; handle++) {
                c.request(0, NBD_CMD_FLUSH, handle, 0, 0, null);
            }
            c.out.flush();
            c.autoFlush = true;
            List<Long> order = new ArrayList<>();
            for (int i = 0; i < 3; i++) {
                assertEquals(NBD_SIMPLE_REPLY_MAGIC, c.in.readInt());
                assertEquals(0, c.in.readInt());
                order.add(c.in.readLong());
            }
            assertEquals(List.of(3L, 2L, 1L), order);

            // A lone request is not held forever: the window drains when the client pauses.
            c.request(0, NBD_CMD_FLUSH, 4, 0, 0, null);
            c.in.readInt();
            c.in.readInt();
            assertEquals(4, c.in.readLong());
        }
    }

    @Test
    void withoutGoTheClientFallsBackToExportName() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().supportsGo(false).size(8192).start();
                RawClient c = new RawClient(server.port())) {
            c.greet(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
            c.option(NBD_OPT_GO, goRequest("", NBD_INFO_BLOCK_SIZE));
            assertEquals(NBD_REP_ERR_UNSUP, c.optionReply(NBD_OPT_GO).type());
            c.option(NBD_OPT_EXPORT_NAME, ScriptedNbdServer.DEFAULT_EXPORT_NAME.getBytes(UTF_8));
            assertEquals(8192, c.in.readLong());
            int flags = c.in.readUnsignedShort();
            assertEquals(0, flags & NBD_FLAG_SEND_DF, "SEND_DF without structured replies");
            // No 124 zeroes: NO_ZEROES was negotiated, so the next bytes are a reply to our request.
            c.request(0, NBD_CMD_FLUSH, 5, 0, 0, null);
            assertEquals(NBD_SIMPLE_REPLY_MAGIC, c.in.readInt());
            assertEquals(List.of(), server.violations());
        }
    }

    @Test
    void unadvertisedCommandIsRecordedAndRefusedWithEinval() throws Exception {
        int flags = ScriptedNbdServer.DEFAULT_TRANSMISSION_FLAGS & ~NBD_FLAG_SEND_FLUSH;
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().transmissionFlags(flags).start();
                RawClient c = new RawClient(server.port())) {
            c.handshakeWithGo(ScriptedNbdServer.DEFAULT_EXPORT_NAME);
            c.request(0, NBD_CMD_FLUSH, 6, 0, 0, null);
            assertEquals(NBD_SIMPLE_REPLY_MAGIC, c.in.readInt());
            assertEquals(NBD_EINVAL, c.in.readInt());
            assertEquals(6, c.in.readLong());
            List<String> violations = server.violations();
            assertEquals(1, violations.size());
            assertTrue(violations.get(0).contains("NBD_FLAG_SEND_FLUSH"), violations.get(0));
        }
    }

    @Test
    void hugeOptionReplyLengthIsSentAsTheFirstOptionReply() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.start()) {
            // Handshake faults are claimed when a connection is accepted: arm before connecting.
            server.armFault(ScriptedNbdServer.Fault.HUGE_OPTION_REPLY_LENGTH);
            RawClient c = new RawClient(server.port());
            c.greet(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
            c.option(NBD_OPT_LIST, new byte[0]);
            assertEquals(NBD_REP_MAGIC, c.in.readLong());
            assertEquals(NBD_OPT_LIST, c.in.readInt());
            assertEquals(NBD_REP_SERVER, c.in.readInt());
            assertEquals(1L << 31, c.in.readInt() & 0xffffffffL);
            assertEquals(List.of(ScriptedNbdServer.Fault.HUGE_OPTION_REPLY_LENGTH), server.firedFaults());
            c.close();
        }
    }

    @ParameterizedTest
    @EnumSource(value = Fault.class, names = {"OLDSTYLE_GREETING", "STALL_HANDSHAKE", "OVERLONG_STRING",
            "SIZE_NOT_MULTIPLE_OF_MIN_BLOCK", "BAD_OPTION_REPLY_MAGIC", "OPTION_REPLY_FOR_OTHER_OPTION",
            "HUGE_OPTION_REPLY_LENGTH", "SLOW_HANDSHAKE", "CLOSE_AFTER_HANDSHAKE"}, mode = EnumSource.Mode.EXCLUDE)
    void everyTransmissionFaultShowsOnTheWire(Fault fault) throws Exception {
        boolean structured = fault != Fault.STRUCTURED_REPLY_NOT_NEGOTIATED && fault != Fault.SIMPLE_ERROR;
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(4096).start();
                RawClient c = new RawClient(server.port())) {
            c.greet(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
            if (structured) {
                c.option(NBD_OPT_STRUCTURED_REPLY, new byte[0]);
                assertEquals(NBD_REP_ACK, c.optionReply(NBD_OPT_STRUCTURED_REPLY).type());
            }
            c.option(NBD_OPT_GO, goRequest(""));
            while (c.optionReply(NBD_OPT_GO).type() != NBD_REP_ACK) {
                // skip NBD_REP_INFO
            }
            byte[] data = new byte[4096];
            for (int i = 0; i < data.length; i++) {
                data[i] = (byte) (i | 1); // no zero bytes, so no holes
            }
            server.write(0, data);
            server.armFault(fault);
            c.request(0, NBD_CMD_READ, 1, 512, 1024, null);

            switch (fault) {
                case BAD_REPLY_MAGIC -> {
                    int magic = c.in.readInt();
                    assertNotEquals(NBD_SIMPLE_REPLY_MAGIC, magic);
                    assertNotEquals(NBD_STRUCTURED_REPLY_MAGIC, magic);
                }
                case UNKNOWN_HANDLE -> assertNotEquals(1, c.chunk().handle());
                case DUPLICATE_REPLY -> {
                    for (int round = 0; round < 2; round++) {
                        Chunk chunk;
                        do {
                            chunk = c.chunk();
                            assertEquals(1, chunk.handle());
                        } while (!chunk.done());
                    }
                }
                case STRUCTURED_CHUNK_LONGER_THAN_REQUEST -> {
                    Chunk chunk = c.chunk();
                    assertEquals(NBD_REPLY_TYPE_OFFSET_DATA, chunk.type());
                    assertEquals(512, ByteBuffer.wrap(chunk.payload()).getLong());
                    assertEquals(1025, chunk.payload().length - 8);
                }
                case CHUNK_OUTSIDE_REQUEST -> {
                    Chunk chunk = c.chunk();
                    assertEquals(NBD_REPLY_TYPE_OFFSET_DATA, chunk.type());
                    assertEquals(511, ByteBuffer.wrap(chunk.payload()).getLong());
                }
                case OVERLAPPING_CHUNKS -> {
                    Chunk first = c.chunk();
                    Chunk second = c.chunk();
                    long firstEnd = ByteBuffer.wrap(first.payload()).getLong() + first.payload().length - 8;
                    long secondStart = ByteBuffer.wrap(second.payload()).getLong();
                    assertTrue(secondStart < firstEnd, "overlap");
                    assertTrue(second.done());
                }
                case MISSING_DATA -> {
                    Chunk data1 = c.chunk();
                    assertEquals(512, data1.payload().length - 8);
                    Chunk none = c.chunk();
                    assertEquals(NBD_REPLY_TYPE_NONE, none.type());
                    assertTrue(none.done());
                }
                case STRUCTURED_REPLY_NOT_NEGOTIATED -> {
                    Chunk chunk = c.chunk();
                    assertEquals(NBD_REPLY_TYPE_OFFSET_DATA, chunk.type());
                    assertTrue(chunk.done());
                }
                case BAD_CHUNK_TYPE -> {
                    Chunk chunk = c.chunk();
                    assertEquals(0x1234, chunk.type());
                    assertTrue(!chunk.done());
                }
                case ERROR_CHUNK -> {
                    Chunk chunk = c.chunk();
                    assertEquals(NBD_REPLY_TYPE_ERROR, chunk.type());
                    assertTrue(chunk.done());
                    ByteBuffer p = ByteBuffer.wrap(chunk.payload());
                    assertEquals(NBD_EIO, p.getInt());
                    int messageLength = p.getShort();
                    assertEquals(messageLength, p.remaining());
                }
                case ERROR_OFFSET_CHUNK -> {
                    Chunk chunk = c.chunk();
                    assertEquals(NBD_REPLY_TYPE_ERROR_OFFSET, chunk.type());
                    ByteBuffer p = ByteBuffer.wrap(chunk.payload());
                    assertEquals(NBD_EIO, p.getInt());
                    int messageLength = p.getShort();
                    p.position(p.position() + messageLength);
                    assertEquals(512, p.getLong());
                }
                case SIMPLE_ERROR -> {
                    assertEquals(NBD_SIMPLE_REPLY_MAGIC, c.in.readInt());
                    assertEquals(NBD_EIO, c.in.readInt());
                    assertEquals(1, c.in.readLong());
                }
                case CLOSE_MID_REPLY -> {
                    c.in.readFully(new byte[8]);
                    assertEquals(-1, c.in.read());
                }
                case SHUTTING_DOWN -> {
                    if (structured) {
                        Chunk chunk = c.chunk();
                        assertEquals(NBD_REPLY_TYPE_ERROR, chunk.type());
                        assertTrue(chunk.done());
                        assertEquals(NBD_ESHUTDOWN, ByteBuffer.wrap(chunk.payload()).getInt());
                    } else {
                        assertEquals(NBD_SIMPLE_REPLY_MAGIC, c.in.readInt());
                        assertEquals(NBD_ESHUTDOWN, c.in.readInt());
                        assertEquals(1, c.in.readLong());
                    }
                    assertEquals(-1, c.in.read());
                }
                case STALL -> {
                    c.socket.setSoTimeout(200);
                    assertThrows(SocketTimeoutException.class, () -> c.in.read());
                    assertTrue(server.awaitRequests(1, TIMEOUT));
                }
                default -> throw new AssertionError(fault);
            }
            assertEquals(List.of(fault), server.firedFaults());
            assertEquals(List.of(), server.violations());
        }
    }

    @ParameterizedTest
    @EnumSource(value = Fault.class, names = {"OLDSTYLE_GREETING", "STALL_HANDSHAKE", "OVERLONG_STRING",
            "SIZE_NOT_MULTIPLE_OF_MIN_BLOCK", "BAD_OPTION_REPLY_MAGIC", "OPTION_REPLY_FOR_OTHER_OPTION"})
    void everyHandshakeFaultShowsOnTheWire(Fault fault) throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().blockSizes(512, 4096, 1 << 20).start()) {
            server.armFault(fault);
            try (RawClient c = new RawClient(server.port())) {
                if (fault == Fault.OLDSTYLE_GREETING) {
                    assertEquals(NBDMAGIC, c.in.readLong());
                    assertEquals(CLISERV_MAGIC, c.in.readLong());
                    assertEquals(server.size(), c.in.readLong());
                    c.in.readInt(); // flags
                    c.in.readFully(new byte[124]);
                } else if (fault == Fault.SIZE_NOT_MULTIPLE_OF_MIN_BLOCK) {
                    c.greet(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
                    c.option(NBD_OPT_INFO, goRequest("", NBD_INFO_BLOCK_SIZE));
                    ByteBuffer export = ByteBuffer.wrap(c.optionReply(NBD_OPT_INFO).data());
                    assertEquals(NBD_INFO_EXPORT, export.getShort());
                    assertEquals(1, export.getLong() % 512);
                } else {
                    c.greet(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
                    c.option(NBD_OPT_LIST, new byte[0]);
                    if (fault == Fault.STALL_HANDSHAKE) {
                        c.socket.setSoTimeout(200);
                        assertThrows(SocketTimeoutException.class, () -> c.in.read());
                    } else {
                        long magic = c.in.readLong();
                        int option = c.in.readInt();
                        assertEquals(NBD_REP_SERVER, c.in.readInt());
                        c.in.readInt(); // length
                        switch (fault) {
                            case BAD_OPTION_REPLY_MAGIC -> assertNotEquals(NBD_REP_MAGIC, magic);
                            case OPTION_REPLY_FOR_OTHER_OPTION -> assertNotEquals(NBD_OPT_LIST, option);
                            case OVERLONG_STRING -> assertTrue(c.in.readInt() > MAX_STRING_LENGTH);
                            default -> throw new AssertionError(fault);
                        }
                    }
                }
            }
            assertEquals(List.of(fault), server.firedFaults());
            assertEquals(List.of(), server.violations());
        }
    }

    @Test
    void aSlowHandshakeGreetsLateAndACloseAfterHandshakeEndsTheConnectionRightAfterGo() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(4096).start()) {
            server.armFault(Fault.SLOW_HANDSHAKE, 1);
            server.armFault(Fault.CLOSE_AFTER_HANDSHAKE, 2);
            long start = System.nanoTime();
            try (RawClient c = new RawClient(server.port())) {
                c.greet(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
                assertTrue(System.nanoTime() - start >= TimeUnit.MILLISECONDS.toNanos(600), "the greeting came late");
            }
            try (RawClient c = new RawClient(server.port())) {
                c.greet(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
                c.option(NBD_OPT_GO, goRequest(""));
                while (c.optionReply(NBD_OPT_GO).type() != NBD_REP_ACK) {
                    // skip NBD_REP_INFO
                }
                assertEquals(-1, c.in.read(), "closed once the handshake was done");
            }
            assertEquals(List.of(Fault.SLOW_HANDSHAKE, Fault.CLOSE_AFTER_HANDSHAKE), server.firedFaults());
            assertEquals(List.of(), server.violations());
        }
    }

    // ---------------------------------------------------------------------------------------

    private static byte[] goRequest(String name, int... infos) {
        byte[] n = name.getBytes(UTF_8);
        ByteBuffer b = ByteBuffer.allocate(4 + n.length + 2 + 2 * infos.length);
        b.putInt(n.length).put(n).putShort((short) infos.length);
        for (int info : infos) {
            b.putShort((short) info);
        }
        return b.array();
    }

    private static byte[] metaContextQuery(String export, String... queries) {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        DataOutputStream out = new DataOutputStream(bytes);
        try {
            byte[] n = export.getBytes(UTF_8);
            out.writeInt(n.length);
            out.write(n);
            out.writeInt(queries.length);
            for (String q : queries) {
                byte[] qb = q.getBytes(UTF_8);
                out.writeInt(qb.length);
                out.write(qb);
            }
        } catch (IOException e) {
            throw new AssertionError(e);
        }
        return bytes.toByteArray();
    }

    private record OptionReply(int type, byte[] data) {}

    private record Chunk(int flags, int type, long handle, byte[] payload) {
        boolean done() {
            return (flags & NBD_REPLY_FLAG_DONE) != 0;
        }
    }

    /** Just enough of a client, written against the spec, to drive the server by hand. */
    private static final class RawClient implements AutoCloseable {
        final Socket socket;
        final DataInputStream in;
        final DataOutputStream out;
        boolean autoFlush = true;

        RawClient(int port) throws IOException {
            socket = new Socket("127.0.0.1", port);
            socket.setSoTimeout((int) TIMEOUT.toMillis());
            in = new DataInputStream(new BufferedInputStream(socket.getInputStream()));
            out = new DataOutputStream(new BufferedOutputStream(socket.getOutputStream()));
        }

        int greet(int clientFlags) throws IOException {
            assertEquals(NBDMAGIC, in.readLong());
            assertEquals(IHAVEOPT, in.readLong());
            int handshakeFlags = in.readUnsignedShort();
            out.writeInt(clientFlags);
            out.flush();
            return handshakeFlags;
        }

        /** Greeting plus a bare {@code NBD_OPT_GO}: simple replies only. */
        void handshakeWithGo(String name) throws IOException {
            greet(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
            option(NBD_OPT_GO, goRequest(name));
            OptionReply reply;
            do {
                reply = optionReply(NBD_OPT_GO);
            } while (reply.type() == NBD_REP_INFO);
            assertEquals(NBD_REP_ACK, reply.type());
        }

        void option(int option, byte[] data) throws IOException {
            out.writeLong(IHAVEOPT);
            out.writeInt(option);
            out.writeInt(data.length);
            out.write(data);
            out.flush();
        }

        OptionReply optionReply(int option) throws IOException {
            assertEquals(NBD_REP_MAGIC, in.readLong());
            assertEquals(option, in.readInt());
            int type = in.readInt();
            byte[] data = new byte[in.readInt()];
            in.readFully(data);
            return new OptionReply(type, data);
        }

        void request(int flags, int type, long handle, long offset, int length, byte[] data) throws IOException {
            out.writeInt(NBD_REQUEST_MAGIC);
            out.writeShort(flags);
            out.writeShort(type);
            out.writeLong(handle);
            out.writeLong(offset);
            out.writeInt(length);
            if (data != null) {
                out.write(data);
            }
            if (autoFlush) {
                out.flush();
            }
        }

        Chunk chunk() throws IOException {
            assertEquals(NBD_STRUCTURED_REPLY_MAGIC, in.readInt());
            int flags = in.readUnsignedShort();
            int type = in.readUnsignedShort();
            long handle = in.readLong();
            byte[] payload = new byte[in.readInt()];
            in.readFully(payload);
            return new Chunk(flags, type, handle, payload);
        }

        @Override
        public void close() throws IOException {
            socket.close();
        }
    }
}
