package org.nbdroot.client.linuxnbd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;
import org.nbdroot.proto.wire.TransmissionFlag;

class LinuxNbdAbiTest {
    @Test
    void ioctlNumbersAreThoseOfLinuxNbdH() {
        // _IO(0xab, n) from include/uapi/linux/nbd.h
        assertEquals(0xab00L, LinuxNbdAbi.SET_SOCK);
        assertEquals(0xab01L, LinuxNbdAbi.SET_BLKSIZE);
        assertEquals(0xab02L, LinuxNbdAbi.SET_SIZE);
        assertEquals(0xab03L, LinuxNbdAbi.DO_IT);
        assertEquals(0xab04L, LinuxNbdAbi.CLEAR_SOCK);
        assertEquals(0xab08L, LinuxNbdAbi.DISCONNECT);
        assertEquals(0xab09L, LinuxNbdAbi.SET_TIMEOUT);
        assertEquals(0xab0aL, LinuxNbdAbi.SET_FLAGS);
    }

    @Test
    void theKernelIsToldOnlyWhatTheDaemonServes() {
        int all = 0;
        for (TransmissionFlag f : TransmissionFlag.values()) {
            all |= f.mask();
        }
        int flags = LinuxNbdAbi.kernelFlags(all & ~TransmissionFlag.READ_ONLY.mask(), false);
        assertEquals(TransmissionFlag.names(TransmissionFlag.HAS_FLAGS.mask() | TransmissionFlag.SEND_FLUSH.mask()
                | TransmissionFlag.SEND_FUA.mask() | TransmissionFlag.ROTATIONAL.mask() | TransmissionFlag.SEND_TRIM.mask()
                | TransmissionFlag.SEND_WRITE_ZEROES.mask()), TransmissionFlag.names(flags));
    }

    @Test
    void aReadOnlyDeviceIsNotInvitedToTrim() {
        int export = TransmissionFlag.HAS_FLAGS.mask() | TransmissionFlag.SEND_FLUSH.mask() | TransmissionFlag.SEND_TRIM.mask();
        int flags = LinuxNbdAbi.kernelFlags(export, true);
        assertEquals(TransmissionFlag.HAS_FLAGS.mask() | TransmissionFlag.READ_ONLY.mask() | TransmissionFlag.SEND_FLUSH.mask(),
                flags);
    }

    @Test
    void deviceNames() {
        assertEquals(3, LinuxNbdAbi.indexOf("/dev/nbd3"));
        assertEquals(12, LinuxNbdAbi.indexOf("nbd12"));
        assertThrows(IllegalArgumentException.class, () -> LinuxNbdAbi.indexOf("/dev/ggate0"));
        assertThrows(IllegalArgumentException.class, () -> LinuxNbdAbi.indexOf("/dev/nbdx"));
    }

    @Test
    void blockSizesTheKernelTakes() {
        assertThrows(IllegalArgumentException.class, () -> new LinuxNbdOptions(0, 8192, 0, false));
        assertThrows(IllegalArgumentException.class, () -> new LinuxNbdOptions(0, 256, 0, false));
        assertThrows(IllegalArgumentException.class, () -> new LinuxNbdOptions(0, 1000, 0, false));
        assertEquals(4096, new LinuxNbdOptions(0, 4096, 0, false).blockSize());
    }
}
