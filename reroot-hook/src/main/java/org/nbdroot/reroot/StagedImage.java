package org.nbdroot.reroot;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * The layout under the reroot directory (normally the tmpfs at {@code /dev/reroot}):
 * <pre>
 *   nbd-client/   the runtime image, copied whole
 *   lib/          every shared library it maps from outside, and the runtime linker
 *   run/          the daemons' control sockets and logs
 * </pre>
 */
public record StagedImage(Path root) {
    public Path image() {
        return root.resolve("nbd-client");
    }

    public Path libraries() {
        return root.resolve("lib");
    }

    public Path runDirectory() {
        return root.resolve("run");
    }

    /** Names the runtime linker among {@link #libraries()}: written by the stage step, read by the start step. */
    public Path runtimeLinkerNote() {
        return root.resolve("runtime-linker");
    }

    /** The runtime linker, copied under its own name (ld-linux-x86-64.so.2, ld-elf.so.1). */
    public Path runtimeLinker() throws IOException {
        if (!Files.isRegularFile(runtimeLinkerNote())) {
            throw new IOException("nothing staged in " + root + " (no " + runtimeLinkerNote().getFileName()
                    + "): run 'nbd-client reroot stage --to " + root + "' first");
        }
        Path linker = libraries().resolve(Files.readString(runtimeLinkerNote()).strip());
        if (!Files.isRegularFile(linker)) {
            throw new IOException("the staged runtime linker " + linker + " is missing");
        }
        return linker;
    }

    public Path java() {
        return image().resolve("bin/java");
    }
}
