package org.nbdroot.reroot;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class SharedLibrariesTest {
    private static final Path JAVA_HOME = Path.of(System.getProperty("java.home"));

    /** An "image" holding just the JDK's launcher and libjli: everything else comes from the system. */
    private static Path smallImage(Path dir) throws IOException {
        Files.createDirectories(dir.resolve("bin"));
        Files.createDirectories(dir.resolve("lib"));
        Files.copy(JAVA_HOME.resolve("bin/java"), dir.resolve("bin/java"));
        Files.copy(JAVA_HOME.resolve("lib/libjli.so"), dir.resolve("lib/libjli.so"));
        return dir;
    }

    @Test
    void theClosureHoldsLibcAndTheRuntimeLinkerButNothingTheImageHas(@TempDir Path dir) throws IOException {
        Path image = smallImage(dir);
        SharedLibraries.Closure c = new SharedLibraries(SharedLibraries.defaultSystemDirectories(false)).closure(image, List.of());
        assertTrue(c.libraries().containsKey("libc.so.6"), c.libraries().toString());
        assertTrue(c.libraries().keySet().stream().noneMatch(n -> n.equals("libjli.so")), c.libraries().toString());
        assertTrue(c.libraries().values().stream().noneMatch(p -> p.startsWith(image)));
        assertEquals(ElfFile.read(JAVA_HOME.resolve("bin/java")).interpreter().map(Path::of), c.interpreter());
    }

    @Test
    void aLibraryNamedWithWithLibComesAlongWithItsNeeds(@TempDir Path dir) throws IOException {
        Path image = smallImage(dir);
        SharedLibraries.Closure c = new SharedLibraries(SharedLibraries.defaultSystemDirectories(false))
                .closure(image, List.of("libz.so.1"));
        assertTrue(c.libraries().containsKey("libz.so.1"), c.libraries().toString());
    }

    @Test
    void aMissingLibraryIsNamedWithWhoNeedsItAndWhereWeLooked(@TempDir Path dir) throws IOException {
        Path image = smallImage(dir);
        IOException e = assertThrows(IOException.class,
                () -> new SharedLibraries(List.of(dir.resolve("nowhere"))).closure(image, List.of()));
        assertTrue(e.getMessage().matches(".* needs lib[a-z]+\\.so\\.[0-9]+, found neither in .*nowhere.*"), e.getMessage());
    }

    @Test
    void ldSoConfIncludesAreFollowed(@TempDir Path dir) throws IOException {
        Files.createDirectories(dir.resolve("ld.so.conf.d"));
        Files.writeString(dir.resolve("ld.so.conf"), "# comment\ninclude ld.so.conf.d/*.conf\n/opt/first\n");
        Files.writeString(dir.resolve("ld.so.conf.d/b.conf"), "/opt/b\n");
        Files.writeString(dir.resolve("ld.so.conf.d/a.conf"), "/opt/a # trailing\n");
        Files.writeString(dir.resolve("ld.so.conf.d/skip.txt"), "/opt/skip\n");
        assertEquals(List.of(Path.of("/opt/a"), Path.of("/opt/b"), Path.of("/opt/first")),
                SharedLibraries.linuxLdSoConf(dir.resolve("ld.so.conf"), new java.util.HashSet<>()));
    }
}
