package org.nbdroot.client.linuxnbd;

import java.nio.ByteBuffer;
import java.util.List;
import java.util.Map;
import jnr.constants.platform.Errno;

/**
 * The kernel's generic netlink family "nbd" ({@code include/uapi/linux/nbd-netlink.h},
 * {@code nbd_genl_connect}, {@code nbd_genl_disconnect}, {@code nbd_genl_reconfigure} in
 * {@code drivers/block/nbd.c}). Unlike NBD_DO_IT no thread of the daemon sleeps in the
 * kernel while the device runs, so no signal to the daemon can end the device; and with a
 * dead-connection timeout a device whose socket died waits for a new one
 * (RECONFIGURE with NBD_ATTR_SOCKETS), which is how another daemon takes over.
 */
final class NbdNetlink implements AutoCloseable {
    static final String FAMILY_NAME = "nbd";
    static final int VERSION = 1;

    static final int GENL_ID_CTRL = 0x10;
    static final int CTRL_CMD_GETFAMILY = 3;
    static final int CTRL_VERSION = 2;
    static final int CTRL_ATTR_FAMILY_ID = 1;
    static final int CTRL_ATTR_FAMILY_NAME = 2;

    static final int CMD_CONNECT = 1;
    static final int CMD_DISCONNECT = 2;
    static final int CMD_RECONFIGURE = 3;

    static final int ATTR_INDEX = 1;
    static final int ATTR_SIZE_BYTES = 2;
    static final int ATTR_BLOCK_SIZE_BYTES = 3;
    static final int ATTR_TIMEOUT = 4;
    static final int ATTR_SERVER_FLAGS = 5;
    static final int ATTR_CLIENT_FLAGS = 6;
    static final int ATTR_SOCKETS = 7;
    static final int ATTR_DEAD_CONN_TIMEOUT = 8;
    static final int SOCK_ITEM = 1;
    static final int SOCK_FD = 1;

    private final NetlinkSocket socket;
    private final int family;

    private NbdNetlink(NetlinkSocket socket, int family) {
        this.socket = socket;
        this.family = family;
    }

    /** What CONNECT tells the kernel about a device. */
    record Connect(int index, long sizeBytes, int blockSize, int serverFlags, long timeoutSeconds,
            long deadConnectionTimeoutSeconds, int socketFd) {}

    /**
     * The nbd family, or null when this kernel has none (CTRL_CMD_GETFAMILY answers ENOENT:
     * a kernel before 4.10, or an nbd module built without it).
     */
    static NbdNetlink openIfAvailable() throws LinuxNbdException {
        NetlinkSocket socket = NetlinkSocket.open();
        try {
            int family;
            try {
                family = resolveFamily(socket, FAMILY_NAME);
            } catch (LinuxNbdException e) {
                if (e.errno() == Errno.ENOENT.intValue()) {
                    socket.close();
                    return null;
                }
                throw e;
            }
            return new NbdNetlink(socket, family);
        } catch (LinuxNbdException | RuntimeException e) {
            socket.close();
            throw e;
        }
    }

    static int familyIdOf(List<NetlinkReply> replies, String name) throws LinuxNbdException {
        try {
            for (NetlinkReply reply : replies) {
                ByteBuffer id = reply.genericAttributes().get(CTRL_ATTR_FAMILY_ID);
                if (id != null) {
                    return NetlinkReply.u16(id, "CTRL_ATTR_FAMILY_ID");
                }
            }
        } catch (IllegalArgumentException e) {
            throw new LinuxNbdException("CTRL_CMD_GETFAMILY \"" + name + "\": malformed answer: " + e.getMessage());
        }
        throw new LinuxNbdException("CTRL_CMD_GETFAMILY \"" + name + "\": the kernel's answer ("
                + replies.size() + " messages) has no CTRL_ATTR_FAMILY_ID");
    }

    int family() {
        return family;
    }

    static byte[] getFamilyMessage(int seq, String name) {
        return new NetlinkMessage(GENL_ID_CTRL, seq, CTRL_CMD_GETFAMILY, CTRL_VERSION)
                .string(CTRL_ATTR_FAMILY_NAME, name).bytes();
    }

    /** A generic netlink family's id by name (CTRL_CMD_GETFAMILY); ENOENT when the kernel has none of that name. */
    static int resolveFamily(NetlinkSocket socket, String name) throws LinuxNbdException {
        int seq = socket.nextSequence();
        return familyIdOf(socket.exchange(getFamilyMessage(seq, name), seq, "CTRL_CMD_GETFAMILY \"" + name + "\""), name);
    }

    private static NetlinkMessage withSocket(NetlinkMessage m, int fd) {
        int sockets = m.beginNested(ATTR_SOCKETS);
        int item = m.beginNested(SOCK_ITEM);
        m.u32(SOCK_FD, fd);
        m.endNested(item);
        return m.endNested(sockets);
    }

    static byte[] connectMessage(int family, int seq, Connect c) {
        NetlinkMessage m = new NetlinkMessage(family, seq, CMD_CONNECT, VERSION)
                .u32(ATTR_INDEX, c.index())
                .u64(ATTR_SIZE_BYTES, c.sizeBytes())
                .u64(ATTR_BLOCK_SIZE_BYTES, c.blockSize())
                .u64(ATTR_SERVER_FLAGS, c.serverFlags() & 0xffffL)
                .u64(ATTR_TIMEOUT, c.timeoutSeconds())
                .u64(ATTR_DEAD_CONN_TIMEOUT, c.deadConnectionTimeoutSeconds())
                // No client flags: not DESTROY_ON_DISCONNECT (the device stays), not
                // DISCONNECT_ON_CLOSE (a last close of /dev/nbdN must not end it).
                .u64(ATTR_CLIENT_FLAGS, 0);
        return withSocket(m, c.socketFd()).bytes();
    }

    static byte[] disconnectMessage(int family, int seq, int index) {
        return new NetlinkMessage(family, seq, CMD_DISCONNECT, VERSION).u32(ATTR_INDEX, index).bytes();
    }

    static byte[] reconnectMessage(int family, int seq, int index, int fd) {
        return withSocket(new NetlinkMessage(family, seq, CMD_RECONFIGURE, VERSION).u32(ATTR_INDEX, index), fd).bytes();
    }

    static byte[] resizeMessage(int family, int seq, int index, long sizeBytes) {
        return new NetlinkMessage(family, seq, CMD_RECONFIGURE, VERSION).u32(ATTR_INDEX, index)
                .u64(ATTR_SIZE_BYTES, sizeBytes).bytes();
    }

    private List<NetlinkReply> call(String what, java.util.function.IntFunction<byte[]> message)
            throws LinuxNbdException {
        int seq = socket.nextSequence();
        return socket.exchange(message.apply(seq), seq, what);
    }

    /** Sets up and starts /dev/nbdN on one socket; returns the index the kernel answered with. */
    int connect(Connect c) throws LinuxNbdException {
        List<NetlinkReply> replies = call("NBD_CMD_CONNECT of nbd" + c.index(), seq -> connectMessage(family, seq, c));
        try {
            for (NetlinkReply reply : replies) {
                Map<Integer, ByteBuffer> attributes = reply.genericAttributes();
                if (attributes.containsKey(ATTR_INDEX)) {
                    return NetlinkReply.u32(attributes.get(ATTR_INDEX), "NBD_ATTR_INDEX");
                }
            }
        } catch (IllegalArgumentException e) {
            throw new LinuxNbdException("NBD_CMD_CONNECT of nbd" + c.index() + ": malformed answer: " + e.getMessage());
        }
        return c.index();
    }

    /** Sends NBD_CMD_DISC on the device's sockets, shuts them, fails what is queued, and releases the device. */
    void disconnect(int index) throws LinuxNbdException {
        call("NBD_CMD_DISCONNECT of nbd" + index, seq -> disconnectMessage(family, seq, index));
    }

    /**
     * Gives a device a socket in place of its dead one. The kernel answers 0 as well when it
     * has no dead socket and drops the one given: the caller must see whether it was kept.
     */
    void reconnect(int index, int fd) throws LinuxNbdException {
        call("NBD_CMD_RECONFIGURE (NBD_ATTR_SOCKETS) of nbd" + index, seq -> reconnectMessage(family, seq, index, fd));
    }

    /** A running device's new size (nbd_genl_size_set on reconfigure). */
    void resize(int index, long sizeBytes) throws LinuxNbdException {
        call("NBD_CMD_RECONFIGURE (NBD_ATTR_SIZE_BYTES) of nbd" + index,
                seq -> resizeMessage(family, seq, index, sizeBytes));
    }

    @Override
    public void close() {
        socket.close();
    }
}
