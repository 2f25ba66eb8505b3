package org.nbdroot.reroot;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * What the runtime linker reads from an ELF file before it maps it: the interpreter
 * ({@code PT_INTERP}), the libraries it needs ({@code DT_NEEDED}) and where to look for
 * them ({@code DT_RPATH}, {@code DT_RUNPATH}). ELF64 only, either byte order: the platforms
 * we stage for (amd64, arm64 on Linux and FreeBSD) are all 64-bit.
 */
public final class ElfFile {
    private static final int PT_LOAD = 1;
    private static final int PT_DYNAMIC = 2;
    private static final int PT_INTERP = 3;
    private static final long DT_NULL = 0;
    private static final long DT_NEEDED = 1;
    private static final long DT_STRTAB = 5;
    private static final long DT_RPATH = 15;
    private static final long DT_RUNPATH = 29;

    private final Path path;
    private final Optional<String> interpreter;
    private final List<String> needed;
    private final List<String> rpath;
    private final List<String> runpath;

    private ElfFile(Path path, Optional<String> interpreter, List<String> needed, List<String> rpath, List<String> runpath) {
        this.path = path;
        this.interpreter = interpreter;
        this.needed = needed;
        this.rpath = rpath;
        this.runpath = runpath;
    }

    /** True if the file starts with the ELF magic; says nothing of whether it parses. */
    public static boolean isElf(Path file) {
        return identity(file, false);
    }

    /** True for a 64-bit ELF file: a 32-bit library of the same name (multilib) cannot be ours. */
    public static boolean isElf64(Path file) {
        return identity(file, true);
    }

    private static boolean identity(Path file, boolean want64) {
        if (!Files.isRegularFile(file)) {
            return false;
        }
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            ByteBuffer ident = ByteBuffer.allocate(5);
            ch.read(ident, 0);
            return ident.position() == 5 && ident.getInt(0) == 0x7f454c46 && (!want64 || ident.get(4) == 2);
        } catch (IOException e) {
            return false;
        }
    }

    public static ElfFile read(Path file) throws IOException {
        ByteBuffer b;
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            b = ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size());
        }
        try {
            return parse(file, b);
        } catch (IndexOutOfBoundsException | IllegalArgumentException e) {
            throw new IOException(file + ": not a well-formed ELF file (" + e.getMessage() + ")", e);
        }
    }

    private static ElfFile parse(Path file, ByteBuffer b) throws IOException {
        if (b.limit() < 64 || b.getInt(0) != 0x7f454c46) {
            throw new IOException(file + ": not an ELF file");
        }
        if (b.get(4) != 2) {
            throw new IOException(file + ": a 32-bit ELF file; only 64-bit runtimes can be staged");
        }
        b.order(b.get(5) == 1 ? ByteOrder.LITTLE_ENDIAN : ByteOrder.BIG_ENDIAN);
        long phoff = b.getLong(0x20);
        int phentsize = Short.toUnsignedInt(b.getShort(0x36));
        int phnum = Short.toUnsignedInt(b.getShort(0x38));
        List<long[]> loads = new ArrayList<>(); // {vaddr, offset, filesz}
        Optional<String> interpreter = Optional.empty();
        long dynOffset = -1;
        long dynSize = 0;
        for (int i = 0; i < phnum; i++) {
            int ph = Math.toIntExact(phoff + (long) i * phentsize);
            int type = b.getInt(ph);
            long offset = b.getLong(ph + 8);
            long vaddr = b.getLong(ph + 16);
            long filesz = b.getLong(ph + 32);
            if (type == PT_LOAD) {
                loads.add(new long[] {vaddr, offset, filesz});
            } else if (type == PT_INTERP) {
                interpreter = Optional.of(string(b, offset));
            } else if (type == PT_DYNAMIC) {
                dynOffset = offset;
                dynSize = filesz;
            }
        }
        List<Long> neededOffsets = new ArrayList<>();
        long strtab = -1;
        long rpathOffset = -1;
        long runpathOffset = -1;
        for (long at = dynOffset; dynOffset >= 0 && at + 16 <= dynOffset + dynSize; at += 16) {
            long tag = b.getLong(Math.toIntExact(at));
            long val = b.getLong(Math.toIntExact(at + 8));
            if (tag == DT_NULL) {
                break;
            } else if (tag == DT_NEEDED) {
                neededOffsets.add(val);
            } else if (tag == DT_STRTAB) {
                strtab = val;
            } else if (tag == DT_RPATH) {
                rpathOffset = val;
            } else if (tag == DT_RUNPATH) {
                runpathOffset = val;
            }
        }
        List<String> needed = new ArrayList<>();
        List<String> rpath = List.of();
        List<String> runpath = List.of();
        if (strtab >= 0) {
            long strings = fileOffset(loads, strtab, file);
            for (long n : neededOffsets) {
                needed.add(string(b, strings + n));
            }
            if (rpathOffset >= 0) {
                rpath = List.of(string(b, strings + rpathOffset).split(":"));
            }
            if (runpathOffset >= 0) {
                runpath = List.of(string(b, strings + runpathOffset).split(":"));
            }
        }
        return new ElfFile(file, interpreter, List.copyOf(needed), rpath, runpath);
    }

    /** The dynamic section names addresses; the file holds them where a loadable segment maps them. */
    private static long fileOffset(List<long[]> loads, long vaddr, Path file) throws IOException {
        for (long[] load : loads) {
            if (vaddr >= load[0] && vaddr < load[0] + load[2]) {
                return vaddr - load[0] + load[1];
            }
        }
        throw new IOException(file + ": the string table at address 0x" + Long.toHexString(vaddr) + " is in no loadable segment");
    }

    private static String string(ByteBuffer b, long offset) {
        int start = Math.toIntExact(offset);
        int end = start;
        while (b.get(end) != 0) {
            end++;
        }
        byte[] bytes = new byte[end - start];
        b.get(start, bytes);
        return new String(bytes, StandardCharsets.UTF_8);
    }

    public Path path() {
        return path;
    }

    /** The runtime linker named in {@code PT_INTERP}: executables have one, libraries do not. */
    public Optional<String> interpreter() {
        return interpreter;
    }

    public List<String> needed() {
        return needed;
    }

    /**
     * Directories to search for this object's needs, {@code $ORIGIN} expanded. As the linkers
     * do, {@code DT_RPATH} counts only when there is no {@code DT_RUNPATH}.
     */
    public List<Path> searchPath() {
        List<String> dirs = runpath.isEmpty() ? rpath : runpath;
        Path origin = path.toAbsolutePath().getParent();
        List<Path> result = new ArrayList<>();
        for (String dir : dirs) {
            if (dir.isEmpty()) {
                continue;
            }
            String expanded = dir.replace("${ORIGIN}", origin.toString()).replace("$ORIGIN", origin.toString());
            result.add(Path.of(expanded).normalize());
        }
        return result;
    }
}
