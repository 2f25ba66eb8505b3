package org.nbdroot.reroot;

import java.io.IOException;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;
import java.util.Map;

/** Copies the runtime image, the libraries it maps from outside, and the runtime linker into a staging directory. */
public final class ImageStager {
    /** What was staged, for the summary line. */
    public record Result(long files, long bytes, int libraries, Path runtimeLinker) {}

    private final SharedLibraries libraries;

    public ImageStager(SharedLibraries libraries) {
        this.libraries = libraries;
    }

    public Result stage(Path image, StagedImage target, List<String> extraLibraries) throws IOException {
        if (!Files.isRegularFile(image.resolve("lib/modules")) || !Files.isRegularFile(image.resolve("bin/java"))) {
            throw new IOException(image + " is not a runtime image (no bin/java and lib/modules):"
                    + " run the nbd-client of the image built by 'mvn package' (nbd-client/target/image)");
        }
        SharedLibraries.Closure closure = libraries.closure(image, extraLibraries);
        if (closure.interpreter().isEmpty()) {
            throw new IOException(image.resolve("bin/java") + " names no runtime linker (PT_INTERP)");
        }
        Files.createDirectories(target.root());
        long[] counts = new long[2];
        copyTree(image, target.image(), counts);
        Files.createDirectories(target.libraries());
        Files.createDirectories(target.runDirectory());
        Files.setPosixFilePermissions(target.runDirectory(), PosixFilePermissions.fromString("rwx------"));
        for (Map.Entry<String, Path> lib : closure.libraries().entrySet()) {
            copyFile(lib.getValue(), target.libraries().resolve(lib.getKey()), counts);
        }
        for (Map.Entry<String, String> alias : jnrAliases(closure.libraries().keySet()).entrySet()) {
            Path link = target.libraries().resolve(alias.getKey());
            Files.deleteIfExists(link);
            Files.createSymbolicLink(link, Path.of(alias.getValue()));
        }
        Path interpreter = closure.interpreter().get();
        Path linker = target.libraries().resolve(interpreter.getFileName());
        if (!closure.libraries().containsKey(interpreter.getFileName().toString())) {
            copyFile(interpreter, linker, counts);
        }
        Files.writeString(target.runtimeLinkerNote(), linker.getFileName() + "\n");
        return new Result(counts[0], counts[1], closure.libraries().size(), linker);
    }

    /**
     * Links to add among the staged libraries, name to target. jnr (jnr-posix, and the bindings
     * here) asks for the C library as "c", a file named libc.so, except on Linux. On FreeBSD
     * /usr/lib/libc.so is a linker script, which jnr follows to /lib/libc.so.7 of the old root: a
     * second libc, mapped from the disk the reroot takes away. A libc.so beside the staged
     * libc.so.7, found first ({@link DaemonLauncher} puts the staged libraries on jnr's path), is
     * the very file the runtime linker already mapped, so no other copy is loaded.
     */
    static Map<String, String> jnrAliases(java.util.Set<String> staged) {
        return staged.contains("libc.so.7") && !staged.contains("libc.so") ? Map.of("libc.so", "libc.so.7") : Map.of();
    }

    private static void copyTree(Path from, Path to, long[] counts) throws IOException {
        Files.walkFileTree(from, new SimpleFileVisitor<>() {
            @Override
            public FileVisitResult preVisitDirectory(Path dir, BasicFileAttributes attrs) throws IOException {
                Files.createDirectories(to.resolve(from.relativize(dir).toString()));
                return FileVisitResult.CONTINUE;
            }

            @Override
            public FileVisitResult visitFile(Path file, BasicFileAttributes attrs) throws IOException {
                Path dest = to.resolve(from.relativize(file).toString());
                if (attrs.isSymbolicLink()) {
                    Files.deleteIfExists(dest);
                    Files.createSymbolicLink(dest, Files.readSymbolicLink(file));
                } else {
                    copyFile(file, dest, counts);
                }
                return FileVisitResult.CONTINUE;
            }
        });
    }

    /** Follows links (a library is often a link to its versioned file) and keeps the permissions. */
    private static void copyFile(Path from, Path to, long[] counts) throws IOException {
        Files.copy(from, to, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.COPY_ATTRIBUTES);
        counts[0]++;
        counts[1] += Files.size(to);
    }
}
