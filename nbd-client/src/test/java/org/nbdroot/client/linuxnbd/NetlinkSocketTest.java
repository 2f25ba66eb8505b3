package org.nbdroot.client.linuxnbd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import jnr.constants.platform.Errno;
import org.junit.jupiter.api.Test;

/**
 * The netlink socket against this machine's own kernel, which needs no privilege for
 * CTRL_CMD_GETFAMILY: the controller's family "nlctrl" always exists, with id GENL_ID_CTRL.
 */
class NetlinkSocketTest {
    @Test
    void theControllerResolvesItself() throws Exception {
        try (NetlinkSocket socket = NetlinkSocket.open()) {
            assertEquals(NbdNetlink.GENL_ID_CTRL, NbdNetlink.resolveFamily(socket, "nlctrl"));
            assertEquals(NbdNetlink.GENL_ID_CTRL, NbdNetlink.resolveFamily(socket, "nlctrl")); // the next sequence too
        }
    }

    @Test
    void anUnknownFamilyIsEnoentNamingTheCommand() throws Exception {
        try (NetlinkSocket socket = NetlinkSocket.open()) {
            LinuxNbdException e = assertThrows(LinuxNbdException.class,
                    () -> NbdNetlink.resolveFamily(socket, "nbdroot-none"));
            assertEquals(Errno.ENOENT.intValue(), e.errno());
            assertTrue(e.getMessage().startsWith("CTRL_CMD_GETFAMILY \"nbdroot-none\""), e.getMessage());
        }
    }

    @Test
    void aRefusedCommandBecomesItsErrno() throws Exception {
        // NBD_CMD_DISCONNECT sent to the controller's family id: the controller has no command 2 to run.
        try (NetlinkSocket socket = NetlinkSocket.open()) {
            int seq = socket.nextSequence();
            LinuxNbdException e = assertThrows(LinuxNbdException.class,
                    () -> socket.exchange(NbdNetlink.disconnectMessage(NbdNetlink.GENL_ID_CTRL, seq, 0), seq, "TEST_CMD"));
            assertTrue(e.errno() > 0, e.getMessage());
            assertTrue(e.getMessage().startsWith("TEST_CMD"), e.getMessage());
        }
    }

    @Test
    void aClosedSocketRefusesRequestsAndClosesOnce() throws Exception {
        NetlinkSocket socket = NetlinkSocket.open();
        socket.close();
        socket.close(); // a second close must not close a descriptor number reused since
        LinuxNbdException e = assertThrows(LinuxNbdException.class, () -> NbdNetlink.resolveFamily(socket, "nlctrl"));
        assertEquals("CTRL_CMD_GETFAMILY \"nlctrl\": the netlink socket is closed (the device has ended)", e.getMessage());
    }
}
