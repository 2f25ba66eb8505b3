package org.nbdroot.client.ggate;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

/** The ABI numbers against the facts read from FreeBSD's g_gate.h (shared/freebsd/ggate-abi.md). */
class GgateAbiTest {
    @Test
    void ioctlNumbersAreFreeBsdsIowrEncoding() {
        assertEquals(0xCA306D00L, GgateAbi.CMD_CREATE);
        assertEquals(0xC9206D01L, GgateAbi.CMD_MODIFY);
        assertEquals(0xC10C6D02L, GgateAbi.CMD_DESTROY);
        assertEquals(0xC1106D03L, GgateAbi.CMD_CANCEL);
        assertEquals(0xC0386D04L, GgateAbi.CMD_START);
        assertEquals(0xC0386D05L, GgateAbi.CMD_DONE);
    }

    @Test
    void structOffsetsMatchTheLp64Layout() {
        assertEquals(2608, GgateAbi.CREATE_SIZE);
        assertEquals(287, GgateAbi.Create.INFO);
        assertEquals(GgateAbi.Create.NAME + GgateAbi.NAME_MAX, GgateAbi.Create.INFO);
        assertEquals(GgateAbi.Create.INFO + GgateAbi.INFOSIZE, GgateAbi.Create.READPROV);
        assertEquals(2592, GgateAbi.Create.READOFFSET); // 2335 + 255 = 2590, aligned up to 8 for off_t
        assertEquals(2600, GgateAbi.Create.UNIT);
        assertEquals(2336, GgateAbi.MODIFY_SIZE);
        assertEquals(GgateAbi.Modify.INFO + GgateAbi.INFOSIZE, GgateAbi.Modify.READPROV);
        assertEquals(2328, GgateAbi.Modify.READOFFSET);
        assertEquals(268, GgateAbi.DESTROY_SIZE);
        assertEquals(GgateAbi.Destroy.NAME + GgateAbi.NAME_MAX + 1, GgateAbi.DESTROY_SIZE); // padded to 4
        assertEquals(272, GgateAbi.CANCEL_SIZE);
        assertEquals(56, GgateAbi.IO_SIZE);
        assertEquals(48, GgateAbi.Io.ERROR);
    }

    @Test
    void deviceNamesGiveUnits() {
        assertEquals(0, GgateOptions.unitOf("/dev/ggate0"));
        assertEquals(12, GgateOptions.unitOf("ggate12"));
        assertThrows(IllegalArgumentException.class, () -> GgateOptions.unitOf("/dev/nbd0"));
        assertThrows(IllegalArgumentException.class, () -> GgateOptions.unitOf("ggate"));
        assertThrows(IllegalArgumentException.class, () -> GgateOptions.unitOf("ggate-1"));
    }
}
