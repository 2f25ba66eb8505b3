package org.nbdroot.client.linuxnbd;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;
import org.nbdroot.client.cli.CommandLineRunner;
import org.nbdroot.client.cli.CommandLineRunner.Run;

/** What the command line refuses for a Linux NBD device before it connects anywhere. */
class LinuxNbdCommandLineTest {
    @Test
    void aDeadTimeoutTheKernelCannotHoldIsRefusedFirst() {
        Run r = CommandLineRunner.run("rescue", "-f", "--dead-timeout", "-1", "127.0.0.1", "1", "/dev/nbd0");
        assertEquals(2, r.status(), r.err()); // a command line that cannot work
        assertEquals("nbd-client: --dead-timeout must be from 0 to 3153600000 seconds, not -1\n", r.err());
    }

    @Test
    void aBlockSizeTheKernelRefusesIsRefusedFirst() {
        Run r = CommandLineRunner.run("-f", "-s", "8192", "127.0.0.1", "1", "/dev/nbd0");
        assertEquals(2, r.status(), r.err()); // a command line that cannot work
        assertEquals("nbd-client: --sector-size must be a power of two from 512 to 4096 for a Linux NBD device, not 8192\n",
                r.err());
    }

    @Test
    void aDeviceWithoutANumberIsRefused() {
        Run r = CommandLineRunner.run("-f", "127.0.0.1", "1", "/dev/nbdx");
        assertEquals(2, r.status(), r.err()); // a command line that cannot work
        assertEquals("nbd-client: '/dev/nbdx' has no device number (expected /dev/nbdN)\n", r.err());
    }
}
