package org.nbdroot.proto.testing;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * The scripted server's extended headers, checked by hand against {@code doc/proto.md} with the
 * numbers written out (not the engine, not {@link ScriptedNbdProtocol}): the option, the 32-byte
 * reply header with the request's offset, NBD_REPLY_TYPE_BLOCK_STATUS_EXT, and the client's
 * breaches it records.
 */
class ScriptedNbdServerExtendedHeadersSelfTest {
    private static final Duration TIMEOUT = Duration.ofSeconds(5);

    @Test
    void extendedHeadersFromTheOptionToTheReplies() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().supportsExtendedHeaders(true).start();
                Raw c = new Raw(server.port())) {
            c.greet();
            assertEquals(1, c.option(11, new byte[0]), "NBD_OPT_EXTENDED_HEADERS: NBD_REP_ACK");
            assertEquals(0x80000000 + 10, c.option(8, new byte[0]),
                    "NBD_OPT_STRUCTURED_REPLY afterwards: NBD_REP_ERR_EXT_HEADER_REQD");
            byte[] name = ScriptedNbdServer.DEFAULT_EXPORT_NAME.getBytes(StandardCharsets.UTF_8);
            byte[] context = "base:allocation".getBytes(StandardCharsets.UTF_8);
            assertEquals(1, c.option(10, ByteBuffer.allocate(12 + name.length + context.length).putInt(name.length)
                    .put(name).putInt(1).putInt(context.length).put(context).array()));
            assertEquals(1, c.option(7, ByteBuffer.allocate(6 + name.length).putInt(name.length).put(name)
                    .putShort((short) 0).array()));

            byte[] data = new byte[4096];
            Arrays.fill(data, (byte) 0x5a);
            c.request(0x21, 1, 0xabc, 8192, data.length, data); // WRITE, FUA | PAYLOAD_LEN
            assertReply(c.reply(), 1, 0, 0xabc, 8192, 0); // DONE, NBD_REPLY_TYPE_NONE

            c.request(0, 0, 0xdef, 8192, 4096, null); // READ
            byte[] read = c.reply();
            assertReply(read, 1, 1, 0xdef, 8192, 8 + 4096); // DONE, OFFSET_DATA
            ByteBuffer payload = ByteBuffer.wrap(read, 32, read.length - 32);
            assertEquals(8192, payload.getLong());
            assertArrayEquals(data, Arrays.copyOfRange(read, 40, read.length));

            c.request(0, 7, 0x123, 0, 4096, null); // BLOCK_STATUS
            byte[] status = c.reply();
            assertReply(status, 1, 6, 0x123, 0, 8 + 16); // DONE, BLOCK_STATUS_EXT, one descriptor
            ByteBuffer s = ByteBuffer.wrap(status, 32, 24);
            assertEquals(ScriptedNbdServer.BASE_ALLOCATION_CONTEXT_ID, s.getInt());
            assertEquals(1, s.getInt(), "descriptor count");
            assertEquals(4096, s.getLong());
            assertEquals(3, s.getLong(), "hole | zero");

            c.request(0, 2, 0x9, 0, 0, null); // DISC
            assertEquals(-1, c.in.read());
            assertTrue(server.awaitDisconnect(TIMEOUT));
            assertEquals(List.of(), server.violations());
            assertEquals(List.of(11, 8, 10, 7), server.options());
        }
    }

    @Test
    void aWriteWithoutPayloadLenIsABreach() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().supportsExtendedHeaders(true).start();
                Raw c = new Raw(server.port())) {
            c.greet();
            assertEquals(1, c.option(11, new byte[0]));
            byte[] name = ScriptedNbdServer.DEFAULT_EXPORT_NAME.getBytes(StandardCharsets.UTF_8);
            assertEquals(1, c.option(7, ByteBuffer.allocate(6 + name.length).putInt(name.length).put(name)
                    .putShort((short) 0).array()));
            c.request(0, 1, 1, 0, 512, new byte[512]);
            assertEquals(-1, c.in.read(), "the server drops the connection");
            assertTrue(server.violations().toString().contains("without NBD_CMD_FLAG_PAYLOAD_LEN"),
                    server.violations().toString());
        }
    }

    @Test
    void offByDefault() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.start(); Raw c = new Raw(server.port())) {
            c.greet();
            assertEquals(0x80000000 + 1, c.option(11, new byte[0]), "NBD_REP_ERR_UNSUP");
        }
    }

    private static void assertReply(byte[] reply, int flags, int type, long cookie, long offset, long length) {
        ByteBuffer b = ByteBuffer.wrap(reply);
        assertEquals(0x6e8a278c, b.getInt(), "NBD_EXTENDED_REPLY_MAGIC");
        assertEquals(flags, b.getShort());
        assertEquals(type, b.getShort());
        assertEquals(cookie, b.getLong());
        assertEquals(offset, b.getLong(), "the request's offset");
        assertEquals(length, b.getLong());
    }

    /** A client of a few lines, speaking extended requests after the handshake. */
    private static final class Raw implements AutoCloseable {
        final Socket socket;
        final DataInputStream in;
        final DataOutputStream out;

        Raw(int port) throws IOException {
            socket = new Socket("127.0.0.1", port);
            socket.setSoTimeout((int) TIMEOUT.toMillis());
            in = new DataInputStream(new BufferedInputStream(socket.getInputStream()));
            out = new DataOutputStream(new BufferedOutputStream(socket.getOutputStream()));
        }

        void greet() throws IOException {
            in.readLong();
            in.readLong();
            in.readUnsignedShort();
            out.writeInt(3); // FIXED_NEWSTYLE | NO_ZEROES
        }

        /** Sends one option; returns the type of the final reply (skipping NBD_REP_INFO and _META_CONTEXT). */
        int option(int option, byte[] data) throws IOException {
            out.writeLong(0x49484156454F5054L);
            out.writeInt(option);
            out.writeInt(data.length);
            out.write(data);
            out.flush();
            while (true) {
                assertEquals(0x3e889045565a9L, in.readLong());
                assertEquals(option, in.readInt());
                int type = in.readInt();
                in.readFully(new byte[in.readInt()]);
                if (type != 3 && type != 4) {
                    return type;
                }
            }
        }

        void request(int flags, int type, long cookie, long offset, long length, byte[] data) throws IOException {
            out.writeInt(0x21e41c71);
            out.writeShort(flags);
            out.writeShort(type);
            out.writeLong(cookie);
            out.writeLong(offset);
            out.writeLong(length);
            if (data != null) {
                out.write(data);
            }
            out.flush();
        }

        /** One whole extended reply: the 32-byte header and its payload. */
        byte[] reply() throws IOException {
            byte[] header = new byte[32];
            in.readFully(header);
            long length = ByteBuffer.wrap(header).getLong(24);
            byte[] all = Arrays.copyOf(header, 32 + (int) length);
            in.readFully(all, 32, (int) length);
            return all;
        }

        @Override
        public void close() throws IOException {
            socket.close();
        }
    }
}
