package org.nbdroot.client.linuxnbd;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The nbd family's netlink messages byte for byte as the kernel parses them (nlmsghdr,
 * genlmsghdr, nlattr with 4-byte alignment, nested NBD_ATTR_SOCKETS), and the decoding of
 * what it answers. The expected bytes are written out by hand, little-endian (x86_64, arm64).
 */
class NetlinkMessageTest {
    private static final HexFormat HEX = HexFormat.of();

    @BeforeAll
    static void littleEndianHost() {
        assertEquals(ByteOrder.LITTLE_ENDIAN, ByteOrder.nativeOrder(), "the hand-written bytes below are little-endian");
    }

    private static byte[] hex(String... parts) {
        return HEX.parseHex(String.join("", parts).replace(" ", ""));
    }

    @Test
    void connectIsLaidOutAsNbdGenlConnectReadsIt() {
        byte[] m = NbdNetlink.connectMessage(0x1a, 7, new NbdNetlink.Connect(3, 64L << 20, 4096, 0x012d, 0, 31536000L, 9));
        assertArrayEquals(hex(
                "74000000 1a00 0500 07000000 00000000", // nlmsghdr: 116 bytes, family 0x1a, REQUEST|ACK, seq 7, port 0
                "01 01 0000",                            // genlmsghdr: NBD_CMD_CONNECT, version 1
                "0800 0100 03000000",                    // NBD_ATTR_INDEX u32 3
                "0c00 0200 0000000400000000",            // NBD_ATTR_SIZE_BYTES u64 64 MiB
                "0c00 0300 0010000000000000",            // NBD_ATTR_BLOCK_SIZE_BYTES u64 4096
                "0c00 0500 2d01000000000000",            // NBD_ATTR_SERVER_FLAGS u64 0x12d
                "0c00 0400 0000000000000000",            // NBD_ATTR_TIMEOUT u64 0
                "0c00 0800 8033e10100000000",            // NBD_ATTR_DEAD_CONN_TIMEOUT u64 31536000
                "0c00 0600 0000000000000000",            // NBD_ATTR_CLIENT_FLAGS u64 0
                "1000 0780",                             // NBD_ATTR_SOCKETS, nested, 16 bytes
                "0c00 0180",                             //   NBD_SOCK_ITEM, nested, 12 bytes
                "0800 0100 09000000"),                   //     NBD_SOCK_FD u32 9
                m);
    }

    @Test
    void serverFlagsAreTheSixteenBitsUnsigned() {
        byte[] m = NbdNetlink.connectMessage(0x1a, 1, new NbdNetlink.Connect(0, 512, 512, 0x8001, 0, 0, 3));
        ByteBuffer b = ByteBuffer.wrap(m).order(ByteOrder.LITTLE_ENDIAN);
        assertEquals(0x8001L, b.getLong(16 + 4 + 8 + 12 + 12 + 4)); // not sign-extended into the u64
    }

    @Test
    void disconnectReconnectAndResize() {
        assertArrayEquals(hex("1c000000 1a00 0500 02000000 00000000", "02 01 0000", "0800 0100 05000000"),
                NbdNetlink.disconnectMessage(0x1a, 2, 5));
        assertArrayEquals(hex("2c000000 1a00 0500 03000000 00000000", "03 01 0000", "0800 0100 00000000",
                "1000 0780", "0c00 0180", "0800 0100 0b000000"), NbdNetlink.reconnectMessage(0x1a, 3, 0, 11));
        assertArrayEquals(hex("28000000 1a00 0500 04000000 00000000", "03 01 0000", "0800 0100 00000000",
                "0c00 0200 0000000500000000"), NbdNetlink.resizeMessage(0x1a, 4, 0, 80L << 20));
    }

    @Test
    void getFamilyNamesItWithItsNulAndPadsTheString() {
        assertArrayEquals(hex("1c000000 1000 0500 01000000 00000000", "03 02 0000", "0800 0200 6e626400"),
                NbdNetlink.getFamilyMessage(1, "nbd"));
        // "nbd_x\0" is 6 bytes: the attribute says 10, and 2 bytes of padding follow.
        assertArrayEquals(hex("20000000 1000 0500 01000000 00000000", "03 02 0000", "0a00 0200 6e62645f7800 0000"),
                NbdNetlink.getFamilyMessage(1, "nbd_x"));
    }

    /** An answer as the kernel sends it: nlmsghdr, then the payload, padded. */
    private static byte[] message(int type, int seq, byte[] payload) {
        int len = 16 + payload.length;
        ByteBuffer b = ByteBuffer.allocate(NetlinkMessage.align(len)).order(ByteOrder.LITTLE_ENDIAN);
        b.putInt(len).putShort((short) type).putShort((short) 0).putInt(seq).putInt(1234).put(payload);
        return b.array();
    }

    private static byte[] concat(byte[]... parts) {
        ByteBuffer b = ByteBuffer.allocate(java.util.Arrays.stream(parts).mapToInt(p -> p.length).sum());
        for (byte[] p : parts) {
            b.put(p);
        }
        return b.array();
    }

    @Test
    void anAckAndAnErrorCarryTheirCodeAndTheRequestsHeader() {
        byte[] request = NbdNetlink.disconnectMessage(0x1a, 9, 0);
        byte[] error = ByteBuffer.allocate(4 + 16).order(ByteOrder.LITTLE_ENDIAN).putInt(-22).put(request, 0, 16).array();
        byte[] ack = ByteBuffer.allocate(4 + 16).order(ByteOrder.LITTLE_ENDIAN).putInt(0).put(request, 0, 16).array();
        byte[] data = concat(message(NetlinkMessage.NLMSG_ERROR, 9, error), message(NetlinkMessage.NLMSG_ERROR, 10, ack));
        List<NetlinkReply> replies = NetlinkReply.decode(data, data.length);
        assertEquals(2, replies.size());
        assertTrue(replies.get(0).isError());
        assertEquals(9, replies.get(0).sequence());
        assertEquals(-22, replies.get(0).errorCode());
        assertEquals(0, replies.get(1).errorCode());
        assertEquals(10, replies.get(1).sequence());
    }

    @Test
    void theFamilyIdIsFoundAmongTheControllersAttributes() throws Exception {
        byte[] payload = hex("01 02 0000",
                "0800 0200 6e626400",           // CTRL_ATTR_FAMILY_NAME "nbd"
                "0600 0100 1a00 0000",          // CTRL_ATTR_FAMILY_ID u16 0x1a, padded
                "0800 0300 01000000",           // CTRL_ATTR_VERSION
                "0c00 0680 0800 0100 01000000"); // CTRL_ATTR_OPS, nested
        byte[] data = message(NbdNetlink.GENL_ID_CTRL, 1, payload);
        List<NetlinkReply> replies = NetlinkReply.decode(data, data.length);
        assertEquals(0x1a, NbdNetlink.familyIdOf(replies, "nbd"));
        Map<Integer, ByteBuffer> attributes = replies.get(0).genericAttributes();
        assertEquals(4, attributes.size());
        Map<Integer, ByteBuffer> ops = NetlinkReply.attributes(attributes.get(6)); // the nested flag is masked off
        assertEquals(1, NetlinkReply.u32(ops.get(1), "op"));
    }

    @Test
    void anAnswerWithoutTheFamilyIdIsAnErrorNamingTheCommand() {
        byte[] data = message(NbdNetlink.GENL_ID_CTRL, 1, hex("01 02 0000", "0800 0200 6e626400"));
        LinuxNbdException e = assertThrows(LinuxNbdException.class,
                () -> NbdNetlink.familyIdOf(NetlinkReply.decode(data, data.length), "nbd"));
        assertEquals("CTRL_CMD_GETFAMILY \"nbd\": the kernel's answer (1 messages) has no CTRL_ATTR_FAMILY_ID",
                e.getMessage());
    }

    @Test
    void aMessageLongerThanWhatWasReceivedIsRefused() {
        byte[] data = message(NetlinkMessage.NLMSG_ERROR, 1, new byte[4]);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> NetlinkReply.decode(data, 18));
        assertEquals("netlink message at byte 0 says it is 20 bytes long; 18 were received from there (at least 16 needed)",
                e.getMessage());
        ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN).putInt(0, 8);
        assertThrows(IllegalArgumentException.class, () -> NetlinkReply.decode(data, data.length));
    }

    @Test
    void anAttributeLongerThanItsMessageIsRefused() {
        byte[] data = message(NbdNetlink.GENL_ID_CTRL, 1, hex("01 02 0000", "1000 0100 1a000000"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> NetlinkReply.decode(data, data.length).get(0).genericAttributes());
        assertEquals("netlink attribute at byte 0 says it is 16 bytes long; 8 remain (at least 4 needed)", e.getMessage());
        byte[] tooShort = message(NbdNetlink.GENL_ID_CTRL, 1, hex("01 02 0000", "0200 0100"));
        assertThrows(IllegalArgumentException.class, () -> NetlinkReply.decode(tooShort, tooShort.length).get(0)
                .genericAttributes());
    }

    @Test
    void trailingBytesShorterThanAHeaderAreRefused() {
        byte[] one = message(NetlinkMessage.NLMSG_DONE, 1, new byte[4]);
        byte[] data = concat(one, new byte[8]);
        assertThrows(IllegalArgumentException.class, () -> NetlinkReply.decode(data, data.length));
    }
}
