package org.nbdroot.reroot;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;

/** The links staging adds so that jnr loads the staged C library, never a second one from the old root. */
class ImageStagerTest {
    @Test
    void freeBsdsLibcGetsTheNameJnrAsksFor() {
        assertEquals(Map.of("libc.so", "libc.so.7"), ImageStager.jnrAliases(Set.of("libc.so.7", "libthr.so.3", "libz.so.6")));
    }

    /** jnr finds glibc's libc.so.6 by its version on Linux; nothing to add, nothing replaced. */
    @Test
    void noLinkForGlibcNorOverAStagedLibcSo() {
        assertEquals(Map.of(), ImageStager.jnrAliases(Set.of("libc.so.6", "libz.so.1")));
        assertEquals(Map.of(), ImageStager.jnrAliases(Set.of("libc.so.7", "libc.so")));
    }
}
