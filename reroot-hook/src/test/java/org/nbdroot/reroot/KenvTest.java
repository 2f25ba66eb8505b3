package org.nbdroot.reroot;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.LinkedHashMap;
import java.util.Map;
import jnr.ffi.LibraryLoader;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** The kenv(2) binding against the emulator of FreeBSD's sys_kenv() (src/test/c/kenv-emu.c). */
class KenvTest {
    public interface Emulator {
        void kenv_emu_reset();
    }

    private static final String LIBRARY = System.getProperty("nbd.kenv.library");

    private Kenv kenv;

    @BeforeEach
    void reset() {
        assertTrue(LIBRARY != null && !LIBRARY.equals("c"), "the build sets -Dnbd.kenv.library to the emulator");
        LibraryLoader.create(Emulator.class).load(LIBRARY).kenv_emu_reset();
        kenv = Kenv.load();
    }

    @Test
    void whatIsSetIsDumpedInOrder() {
        kenv.set("vfs.root.mountfrom", "ufs:/dev/ggate0");
        kenv.set("nbdroot.0.server", "nbd://10.0.0.1/root");
        kenv.set("vfs.root.mountfrom", "zfs:system/ROOT/default");
        Map<String, String> expected = new LinkedHashMap<>();
        expected.put("vfs.root.mountfrom", "zfs:system/ROOT/default");
        expected.put("nbdroot.0.server", "nbd://10.0.0.1/root");
        assertEquals(expected, kenv.all());
    }

    @Test
    void aLargeEnvironmentIsReadWhole() {
        Map<String, String> expected = new LinkedHashMap<>();
        for (int i = 0; i < 300; i++) {
            String value = "v".repeat(i % 120);
            kenv.set("var." + i, value);
            expected.put("var." + i, value);
        }
        assertEquals(expected, kenv.all());
    }

    @Test
    void anEmptyEnvironmentIsEmpty() {
        assertEquals(Map.of(), kenv.all());
    }

    @Test
    void aValueTooLongForTheKernelIsRefusedBeforeItIsCut() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> kenv.set("vfs.root.mountfrom", "x".repeat(128)));
        assertTrue(e.getMessage().contains("limited to 127 bytes"), e.getMessage());
        assertEquals(Map.of(), kenv.all());
    }
}
