package org.nbdroot.client.linuxnbd;

import java.util.ArrayList;
import java.util.List;
import jnr.ffi.LastError;
import jnr.ffi.Runtime;

/**
 * A generic netlink socket to the kernel (AF_NETLINK, NETLINK_GENERIC) through JNR: one
 * request at a time, answered by the replies it asked for and an NLMSG_ERROR, the ack (0)
 * or the errno the kernel refused it with. A receive timeout keeps a kernel that never
 * answers from hanging the daemon.
 */
final class NetlinkSocket implements AutoCloseable {
    private static final int RECEIVE_BUFFER = 65536;
    private static final int RECEIVE_TIMEOUT_SECONDS = 30;

    private final LinuxLibC lib;
    private final Runtime runtime;
    private final int fd;
    private boolean closed;
    private int sequence = (int) (System.nanoTime() & 0x3fffffff);

    private NetlinkSocket(LinuxLibC lib, int fd) {
        this.lib = lib;
        this.runtime = Runtime.getRuntime(lib);
        this.fd = fd;
    }

    static NetlinkSocket open() throws LinuxNbdException {
        LinuxLibC lib = NbdDeviceControl.library();
        Runtime runtime = Runtime.getRuntime(lib);
        int fd = lib.socket(LinuxLibC.AF_NETLINK, LinuxLibC.SOCK_RAW | LinuxLibC.SOCK_CLOEXEC, LinuxLibC.NETLINK_GENERIC);
        if (fd < 0) {
            throw new LinuxNbdException("socket(AF_NETLINK, NETLINK_GENERIC)", LastError.getLastError(runtime));
        }
        // struct sockaddr_nl: family, pad, port id 0 (the kernel picks ours), no groups.
        byte[] address = java.nio.ByteBuffer.allocate(12).order(java.nio.ByteOrder.nativeOrder())
                .putShort((short) LinuxLibC.AF_NETLINK).array();
        // struct timeval: seconds, microseconds (two longs on LP64).
        byte[] timeout = java.nio.ByteBuffer.allocate(16).order(java.nio.ByteOrder.nativeOrder())
                .putLong(RECEIVE_TIMEOUT_SECONDS).putLong(0).array();
        if (lib.bind(fd, address, address.length) != 0
                || lib.setsockopt(fd, LinuxLibC.SOL_SOCKET, LinuxLibC.SO_RCVTIMEO, timeout, timeout.length) != 0) {
            int errno = LastError.getLastError(runtime);
            lib.close(fd);
            throw new LinuxNbdException("bind/setsockopt of a netlink socket", errno);
        }
        return new NetlinkSocket(lib, fd);
    }

    synchronized int nextSequence() {
        return ++sequence;
    }

    /**
     * Sends a request (built with {@code sequence}) and returns the replies to it that came
     * before its ack. {@code what} names the command in errors.
     */
    synchronized List<NetlinkReply> exchange(byte[] request, int sequence, String what) throws LinuxNbdException {
        if (closed) {
            throw new LinuxNbdException(what + ": the netlink socket is closed (the device has ended)");
        }
        long sent = lib.send(fd, request, request.length, 0);
        if (sent != request.length) {
            throw new LinuxNbdException(what + ": send on the netlink socket",
                    sent < 0 ? LastError.getLastError(runtime) : 0);
        }
        List<NetlinkReply> replies = new ArrayList<>();
        byte[] buffer = new byte[RECEIVE_BUFFER];
        while (true) {
            long received = lib.recv(fd, buffer, buffer.length, 0);
            if (received < 0) {
                int errno = LastError.getLastError(runtime);
                if (errno == LinuxLibC.EINTR) {
                    continue;
                }
                throw new LinuxNbdException(what + ": no answer from the kernel"
                        + (errno == jnr.constants.platform.Errno.EAGAIN.intValue()
                                ? " within " + RECEIVE_TIMEOUT_SECONDS + " s" : ""), errno);
            }
            List<NetlinkReply> decoded;
            try {
                // A copy: the replies are views of it, and the next recv reuses the buffer.
                decoded = NetlinkReply.decode(java.util.Arrays.copyOf(buffer, (int) received), (int) received);
            } catch (IllegalArgumentException e) {
                throw new LinuxNbdException(what + ": malformed netlink answer: " + e.getMessage());
            }
            for (NetlinkReply reply : decoded) {
                if (reply.sequence() != sequence) {
                    continue; // an answer to an earlier request that gave up waiting
                }
                if (reply.isError()) {
                    int code = reply.errorCode();
                    if (code != 0) {
                        throw new LinuxNbdException(what, -code);
                    }
                    return replies;
                }
                if (reply.type() != NetlinkMessage.NLMSG_NOOP && reply.type() != NetlinkMessage.NLMSG_DONE) {
                    replies.add(reply);
                }
            }
        }
    }

    /**
     * Closes the socket once, after any exchange under way: the kernel runs a command inside
     * our send, so a device can end (and its watcher close this) before we read the ack.
     */
    @Override
    public synchronized void close() {
        if (!closed) {
            closed = true;
            lib.close(fd);
        }
    }
}
