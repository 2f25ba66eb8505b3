package org.nbdroot.reroot;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import org.junit.jupiter.api.Test;

class RerootConfigTest {
    @Test
    void aLinuxKernelCommandLineConfiguresTwoDevicesInUnitOrder() {
        Map<String, String> vars = KernelCommandLine.parse("BOOT_IMAGE=/vmlinuz console=ttyS0 quiet"
                + " nbdroot.1.server=nbd://10.0.2.2:10810/data nbdroot.0.server=\"10.0.2.2 10809\""
                + " nbdroot.0.options=\"--connections 2 --reconnect-attempts 0\" nbdroot.root=ext4:/dev/nbd0"
                + " nbdroot.rootflags=noatime nbdroot.timeout=5 nbdroot.java.options=\"-Xint -Xmx96m\" nbdroot.net.addr=10.0.2.15/24 nbdroot.net.gw=10.0.2.2");
        RerootConfig c = RerootConfig.from(vars);
        assertEquals(2, c.devices().size());
        RerootConfig.Device d0 = c.devices().get(0);
        assertEquals(0, d0.unit());
        assertEquals(List.of("10.0.2.2", "10809"), d0.server());
        assertEquals(List.of("--connections", "2", "--reconnect-attempts", "0"), d0.options());
        assertEquals("/dev/nbd0", d0.devicePath(false));
        assertEquals("/dev/ggate0", d0.devicePath(true));
        assertEquals(List.of("nbd://10.0.2.2:10810/data"), c.devices().get(1).server());
        assertEquals("ext4:/dev/nbd0", c.root());
        assertEquals(Optional.of("noatime"), c.rootFlags());
        assertEquals(Duration.ofSeconds(5), c.timeout());
        assertEquals(List.of("-Xint", "-Xmx96m"), c.javaOptions());
        assertEquals("ROOT=/dev/nbd0\nFSTYPE=ext4\nFLAGS=noatime\nINIT=/sbin/init\nROOTWAIT=10\n", NewRoot.linuxRootConf(c));
    }

    @Test
    void aZfsRootSetsTheBootEnvironmentVariablesTheSeedSet() {
        RerootConfig c = RerootConfig.from(Map.of("nbdroot.0.server", "nbd://h/root", "nbdroot.root", "zfs:system/ROOT/default"));
        assertEquals(Map.of("vfs.root.mountfrom", "zfs:system/ROOT/default", "zfs_be_active", "zfs:system/ROOT/default",
                "zfs_be_currpage", "1", "zfs_be_pages", "1", "zfs_be_root", "system/ROOT"), NewRoot.freebsdVariables(c));
        RerootConfig ufs = RerootConfig.from(Map.of("nbdroot.0.server", "nbd://h/root", "nbdroot.root", "ufs:/dev/ggate0",
                "nbdroot.init", "/sbin/init"));
        assertEquals(Map.of("vfs.root.mountfrom", "ufs:/dev/ggate0", "init_path", "/sbin/init"), NewRoot.freebsdVariables(ufs));
    }

    @Test
    void everyMistakeIsNamed() {
        assertMessage("no device configured", Map.of("nbdroot.root", "ext4:/dev/nbd0"));
        assertMessage("nbdroot.root is not set", Map.of("nbdroot.0.server", "nbd://h/"));
        assertMessage("nbdroot.root must be FSTYPE:DEVICE", Map.of("nbdroot.0.server", "nbd://h/", "nbdroot.root", "/dev/nbd0"));
        assertMessage("unknown variable nbdroot.0.sever", Map.of("nbdroot.0.sever", "nbd://h/", "nbdroot.root", "ext4:/dev/nbd0"));
        assertMessage("nbdroot.3.options is set but nbdroot.3.server is not",
                Map.of("nbdroot.0.server", "nbd://h/", "nbdroot.3.options", "-c 2", "nbdroot.root", "ext4:/dev/nbd0"));
        assertMessage("nbdroot.0.server must be a URI or HOST PORT",
                Map.of("nbdroot.0.server", "a b c", "nbdroot.root", "ext4:/dev/nbd0"));
        assertMessage("nbdroot.timeout must be a number of seconds",
                Map.of("nbdroot.0.server", "nbd://h/", "nbdroot.root", "ext4:/dev/nbd0", "nbdroot.timeout", "soon"));
        // Found with the configuration, before a daemon starts and leaves a device attached behind the emergency shell.
        assertMessage("a ZFS root names a dataset", Map.of("nbdroot.0.server", "nbd://h/", "nbdroot.root", "zfs:pool"));
        assertMessage("nbdroot.timeout must be 1 to 100 seconds, not 300 (the companion init gives /etc/rc.reroot 120 s",
                Map.of("nbdroot.0.server", "nbd://h/", "nbdroot.root", "ext4:/dev/nbd0", "nbdroot.timeout", "300"));
        assertMessage("nbdroot.timeout must be 1 to 100 seconds, not 0",
                Map.of("nbdroot.0.server", "nbd://h/", "nbdroot.root", "ext4:/dev/nbd0", "nbdroot.timeout", "0"));
    }

    @Test
    void otherKernelParametersAreIgnored() {
        Map<String, String> vars = KernelCommandLine.parse("ro root=/dev/sda1 init=/bin/sh nbdroot.0.server=nbd://h/x"
                + " nbdroot.root=ext4:/dev/nbd0");
        assertEquals("", vars.get("ro"));
        assertEquals("/bin/sh", vars.get("init"));
        assertEquals(1, RerootConfig.from(vars).devices().size());
    }

    @Test
    void loaderConfSyntaxIsRead() {
        Map<String, String> vars = ConfigFile.parse("loader.conf", List.of("# the NBD root", "nbdroot.0.server=\"nbd://10.0.0.1/root\"",
                "  nbdroot.root=ufs:/dev/ggate0   # comment", "", "geom_gate_load=\"YES\""));
        assertEquals(Map.of("nbdroot.0.server", "nbd://10.0.0.1/root", "nbdroot.root", "ufs:/dev/ggate0", "geom_gate_load", "YES"),
                vars);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> ConfigFile.parse("x.conf", List.of("ok=1", "what")));
        assertEquals("x.conf line 2: expected name=\"value\", got 'what'", e.getMessage());
    }

    private static void assertMessage(String part, Map<String, String> vars) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> RerootConfig.from(vars));
        assertTrue(e.getMessage().contains(part), e.getMessage());
    }
}
