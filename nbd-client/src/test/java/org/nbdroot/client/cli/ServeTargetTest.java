package org.nbdroot.client.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;

/** The daemon's positional arguments: HOST [PORT] [DEVICE] or URI [DEVICE]. */
class ServeTargetTest {
    private static ServeCommand.Target parse(String... args) {
        return ServeCommand.Target.parse(List.of(args), null);
    }

    @Test
    void hostPortDevice() {
        ServeCommand.Target t = parse("server", "10900", "/dev/ggate1");
        assertEquals("nbd://server:10900/", t.uri().toString());
        assertEquals("/dev/ggate1", t.device());
    }

    @Test
    void hostAndDeviceWithoutPortUseTheDefaultPort() {
        ServeCommand.Target t = parse("server", "ggate0");
        assertEquals("nbd://server:10809/", t.uri().toString());
        assertEquals("ggate0", t.device());
    }

    @Test
    void uriAlone() {
        ServeCommand.Target t = parse("nbd://[::1]:7000/root");
        assertEquals("root", t.uri().exportName());
        assertNull(t.device());
    }

    @Test
    void exportNameGoesWithHost() {
        assertEquals("disk", ServeCommand.Target.parse(List.of("h"), "disk").uri().exportName());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> ServeCommand.Target.parse(List.of("nbd://h/x"), "disk"));
        assertTrue(e.getMessage().contains("-N"), e.getMessage());
    }

    @Test
    void tooManyArguments() {
        assertThrows(IllegalArgumentException.class, () -> parse("nbd://h/x", "ggate0", "extra"));
        assertThrows(IllegalArgumentException.class, () -> parse("h", "1", "ggate0", "extra"));
    }

    @Test
    void bridgeByDeviceName() {
        assertEquals(ServeCommand.Bridge.GGATE, ServeCommand.Bridge.of("/dev/ggate0"));
        assertEquals(ServeCommand.Bridge.LINUX_NBD, ServeCommand.Bridge.of("/dev/nbd3"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ServeCommand.Bridge.of("/dev/sda"));
        assertTrue(e.getMessage().contains("/dev/sda"), e.getMessage());
    }
}
