package org.nbdroot.reroot;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.stream.Stream;

/**
 * The shared libraries from outside an image that the image's programs and libraries map,
 * found the way the runtime linker finds them, and the runtime linker itself. A staged image
 * must carry them: after a reroot the filesystem they came from is gone.
 */
public final class SharedLibraries {
    /** Where the linkers look when an object's own search path does not have it. */
    static List<Path> defaultSystemDirectories(boolean freebsd) {
        List<Path> dirs = new ArrayList<>();
        if (freebsd) {
            for (String d : List.of("/lib", "/usr/lib", "/usr/local/lib", "/usr/lib/compat")) {
                dirs.add(Path.of(d));
            }
            return dirs;
        }
        dirs.addAll(linuxLdSoConf(Path.of("/etc/ld.so.conf"), new LinkedHashSet<>()));
        // Debian's glibc searches its multiarch directories even with no ld.so.conf (an initramfs).
        String triplet = switch (System.getProperty("os.arch", "")) {
            case "amd64", "x86_64" -> "x86_64-linux-gnu";
            case "aarch64", "arm64" -> "aarch64-linux-gnu";
            default -> null;
        };
        if (triplet != null) {
            dirs.add(Path.of("/lib", triplet));
            dirs.add(Path.of("/usr/lib", triplet));
        }
        for (String d : List.of("/lib64", "/usr/lib64", "/lib", "/usr/lib")) {
            dirs.add(Path.of(d));
        }
        return dirs;
    }

    /** The directories of {@code /etc/ld.so.conf} with its {@code include} lines followed. */
    static List<Path> linuxLdSoConf(Path conf, Set<Path> seen) {
        List<Path> dirs = new ArrayList<>();
        if (!seen.add(conf) || !Files.isRegularFile(conf)) {
            return dirs;
        }
        List<String> lines;
        try {
            lines = Files.readAllLines(conf);
        } catch (IOException e) {
            return dirs;
        }
        for (String raw : lines) {
            String line = raw.replaceAll("#.*", "").trim();
            if (line.isEmpty()) {
                continue;
            }
            if (line.startsWith("include ")) {
                String pattern = line.substring("include ".length()).trim();
                Path glob = conf.getParent().resolve(pattern);
                Path dir = glob.getParent();
                String name = glob.getFileName().toString();
                if (Files.isDirectory(dir)) {
                    try (Stream<Path> s = Files.list(dir)) {
                        s.filter(p -> dir.getFileSystem().getPathMatcher("glob:" + name).matches(p.getFileName()))
                                .sorted()
                                .forEach(p -> dirs.addAll(linuxLdSoConf(p, seen)));
                    } catch (IOException e) {
                        // an unreadable include adds nothing, as for ldconfig
                    }
                }
            } else {
                dirs.add(Path.of(line));
            }
        }
        return dirs;
    }

    private final List<Path> systemDirectories;

    public SharedLibraries(List<Path> systemDirectories) {
        this.systemDirectories = List.copyOf(systemDirectories);
    }

    /** What {@link #closure} found: library name to the file it resolves to, and the runtime linker. */
    public record Closure(Map<String, Path> libraries, Optional<Path> interpreter) {}

    /**
     * Every library the ELF files under {@code image} need that the image does not hold itself,
     * followed through the needs of those libraries in turn, plus {@code extra} names (libraries
     * loaded with dlopen, which no ELF header names).
     *
     * @throws IOException naming the library and the object that needs it, when one is not found
     */
    public Closure closure(Path image, List<String> extra) throws IOException {
        Map<String, Path> inImage = new LinkedHashMap<>();
        List<ElfFile> work = new ArrayList<>();
        try (Stream<Path> files = Files.walk(image)) {
            for (Path f : (Iterable<Path>) files.filter(ElfFile::isElf)::iterator) {
                inImage.putIfAbsent(f.getFileName().toString(), f);
                work.add(ElfFile.read(f));
            }
        }
        Map<String, Path> outside = new LinkedHashMap<>();
        Optional<Path> interpreter = Optional.empty();
        Deque<ElfFile> queue = new ArrayDeque<>(work);
        for (String name : extra) {
            Path found = search(name, List.of())
                    .orElseThrow(() -> new IOException("library " + name + " (asked for with --with-lib) not found in "
                            + systemDirectories));
            if (outside.putIfAbsent(name, found) == null) {
                queue.add(ElfFile.read(found));
            }
        }
        while (!queue.isEmpty()) {
            ElfFile elf = queue.poll();
            if (elf.interpreter().isPresent() && interpreter.isEmpty()) {
                Path interp = Path.of(elf.interpreter().get());
                if (!Files.isRegularFile(interp)) {
                    throw new IOException(elf.path() + " names the runtime linker " + interp + ", which does not exist");
                }
                interpreter = Optional.of(interp);
            }
            for (String name : elf.needed()) {
                if (inImage.containsKey(name) || outside.containsKey(name)) {
                    continue;
                }
                Optional<Path> found = search(name, elf.searchPath());
                if (found.isEmpty()) {
                    throw new IOException(elf.path() + " needs " + name + ", found neither in "
                            + elf.searchPath() + " nor in " + systemDirectories);
                }
                if (found.get().startsWith(image)) {
                    inImage.put(name, found.get());
                } else {
                    outside.put(name, found.get());
                    queue.add(ElfFile.read(found.get()));
                }
            }
        }
        return new Closure(outside, interpreter);
    }

    private Optional<Path> search(String name, List<Path> objectPath) {
        if (name.contains("/")) {
            Path p = Path.of(name);
            return Files.isRegularFile(p) ? Optional.of(p) : Optional.empty();
        }
        for (List<Path> dirs : List.of(objectPath, systemDirectories)) {
            for (Path dir : dirs) {
                Path candidate = dir.resolve(name);
                if (ElfFile.isElf64(candidate)) {
                    return Optional.of(candidate);
                }
            }
        }
        return Optional.empty();
    }
}
