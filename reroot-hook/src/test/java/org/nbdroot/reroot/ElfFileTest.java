package org.nbdroot.reroot;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Reads real ELF files of this machine: the JDK's launcher and a system program. */
class ElfFileTest {
    private static final Path JAVA_HOME = Path.of(System.getProperty("java.home"));

    @Test
    void theJavaLauncherNamesItsRuntimeLinkerAndItsLibraryDirectory() throws IOException {
        ElfFile java = ElfFile.read(JAVA_HOME.resolve("bin/java"));
        assertTrue(java.interpreter().isPresent());
        assertTrue(Files.isRegularFile(Path.of(java.interpreter().get())), java.interpreter().get());
        assertTrue(java.needed().contains("libjli.so"), java.needed().toString());
        // $ORIGIN/../lib: where libjli.so lives in every JDK layout we stage
        assertTrue(java.searchPath().contains(JAVA_HOME.resolve("lib").toRealPath().normalize())
                || java.searchPath().contains(JAVA_HOME.resolve("lib").normalize()), java.searchPath().toString());
    }

    @Test
    void aLibraryHasNoInterpreterButNeedsLibc() throws IOException {
        ElfFile jvm = ElfFile.read(JAVA_HOME.resolve("lib/server/libjvm.so"));
        assertTrue(jvm.interpreter().isEmpty());
        assertTrue(jvm.needed().stream().anyMatch(n -> n.startsWith("libc.so")), jvm.needed().toString());
    }

    @Test
    void aFileThatIsNotElfIsRefusedByName(@TempDir Path dir) throws IOException {
        Path script = dir.resolve("script");
        Files.writeString(script, "#!/bin/sh\necho hi\n".repeat(10));
        assertFalse(ElfFile.isElf(script));
        IOException e = assertThrows(IOException.class, () -> ElfFile.read(script));
        assertTrue(e.getMessage().contains(script.toString()) && e.getMessage().contains("not an ELF file"), e.getMessage());
    }

    @Test
    void aTruncatedElfFileIsRefusedNotMisread(@TempDir Path dir) throws IOException {
        byte[] java = Files.readAllBytes(JAVA_HOME.resolve("bin/java"));
        Path cut = dir.resolve("cut");
        Files.write(cut, java0(java, 100));
        assertTrue(ElfFile.isElf64(cut));
        IOException e = assertThrows(IOException.class, () -> ElfFile.read(cut));
        assertTrue(e.getMessage().contains("not a well-formed ELF file"), e.getMessage());
    }

    private static byte[] java0(byte[] b, int n) {
        return java.util.Arrays.copyOf(b, n);
    }

    @Test
    void thirtyTwoBitFilesAreNotOurs(@TempDir Path dir) throws IOException {
        byte[] header = java.util.Arrays.copyOf(Files.readAllBytes(JAVA_HOME.resolve("bin/java")), 64);
        header[4] = 1; // ELFCLASS32
        Path elf32 = dir.resolve("elf32");
        Files.write(elf32, header);
        assertTrue(ElfFile.isElf(elf32));
        assertFalse(ElfFile.isElf64(elf32));
        IOException e = assertThrows(IOException.class, () -> ElfFile.read(elf32));
        assertEquals(elf32 + ": a 32-bit ELF file; only 64-bit runtimes can be staged", e.getMessage());
    }
}
