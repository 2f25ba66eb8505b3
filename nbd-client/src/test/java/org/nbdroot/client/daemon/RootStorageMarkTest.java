package org.nbdroot.client.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class RootStorageMarkTest {
    /** A stat line whose command name holds the separators a naive split would trip on. */
    @Test
    void argStartIsField48CountedAfterTheCommandName() throws IOException {
        StringBuilder stat = new StringBuilder("4242 (a ) b) S");
        for (int field = 4; field <= 52; field++) {
            stat.append(' ').append(field == 48 ? 140737488347136L : field);
        }
        assertEquals(140737488347136L, RootStorageMark.argStart(stat.append('\n').toString()));
    }

    @Test
    void aStatWithoutTheFieldIsRefusedSayingSo() {
        IOException e = assertThrows(IOException.class, () -> RootStorageMark.argStart("1 (init) S 0 1 1"));
        assertTrue(e.getMessage().contains("arg_start"), e.getMessage());
    }

    /**
     * The real thing, in a JVM of its own: afterwards the process's command line, as
     * systemd's shutdown reads it from /proc, starts with '@' and keeps the rest.
     */
    @Test
    void aMarkedProcessShowsTheMarkInItsCommandLine(@TempDir Path dir) throws Exception {
        Path java = Path.of(System.getProperty("java.home"), "bin", "java");
        Path done = dir.resolve("marked");
        Process child = new ProcessBuilder(java.toString(), "-cp", System.getProperty("java.class.path"),
                Marker.class.getName(), done.toString()).inheritIO().start();
        try {
            for (int i = 0; i < 300 && !Files.exists(done); i++) {
                Thread.sleep(100);
            }
            assertTrue(Files.exists(done), "the child marked itself");
            Path cmdline = Path.of("/proc", Long.toString(child.pid()), "cmdline");
            assertTrue(RootStorageMark.isMarked(cmdline));
            String line = new String(Files.readAllBytes(cmdline)).replace('\0', ' ');
            assertTrue(line.startsWith("@") && line.contains(Marker.class.getName()), line);
            assertFalse(RootStorageMark.isMarked(Path.of("/proc/self/cmdline")), "this JVM is not marked");
        } finally {
            child.destroy();
            child.waitFor(10, TimeUnit.SECONDS);
        }
    }

    /** The child: marks itself, says so, and waits to be looked at. */
    public static final class Marker {
        public static void main(String[] args) throws Exception {
            RootStorageMark.apply();
            Files.writeString(Path.of(args[0]), "");
            Thread.sleep(60_000);
        }
    }
}
