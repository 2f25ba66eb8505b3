package org.nbdroot.client.daemon;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Marks this process as a storage daemon of the root file system, the way systemd asks
 * (its docs/ROOT_STORAGE_DAEMONS.md): a root process whose {@code argv[0]} starts with
 * {@code @} is spared, like a kernel thread, by the killing spree of systemd's shutdown and
 * of its switch_root. Without the mark the daemon serving the root would be killed before
 * the root's last writes, and the shutdown would hang on them.
 *
 * <p>Java has no {@code argv}, so the byte is written where the kernel keeps it: the start of
 * the argument area ({@code arg_start} in {@code /proc/self/stat}) through
 * {@code /proc/self/mem}. {@code /proc/self/comm} stays as it is, as the document asks.
 */
public final class RootStorageMark {
    private RootStorageMark() {}

    /** Writes the mark; an IOException says why it could not (not Linux, no /proc). */
    public static void apply() throws IOException {
        long argStart = argStart(Files.readString(Path.of("/proc/self/stat")));
        try (RandomAccessFile memory = new RandomAccessFile("/proc/self/mem", "rw")) {
            memory.seek(argStart);
            memory.write('@');
        }
        if (!isMarked(Path.of("/proc/self/cmdline"))) {
            throw new IOException("wrote '@' at arg_start " + Long.toHexString(argStart)
                    + " but /proc/self/cmdline does not start with it");
        }
    }

    /** Whether the command line in {@code cmdline} (a {@code /proc/PID/cmdline}) carries the mark. */
    public static boolean isMarked(Path cmdline) throws IOException {
        byte[] bytes = Files.readAllBytes(cmdline);
        return bytes.length > 0 && bytes[0] == '@';
    }

    /**
     * Field 48 of {@code /proc/PID/stat} (proc(5)), counted after the command name, which is
     * in parentheses and may itself hold spaces or parentheses.
     */
    static long argStart(String stat) throws IOException {
        int end = stat.lastIndexOf(')');
        String[] fields = end < 0 ? new String[0] : stat.substring(end + 2).trim().split(" ");
        // fields[0] is field 3 (state)
        int index = 48 - 3;
        if (fields.length <= index) {
            throw new IOException("/proc/self/stat has no arg_start field (a kernel older than 3.5?)");
        }
        return Long.parseLong(fields[index]);
    }
}
