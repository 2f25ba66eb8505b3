package org.nbdroot.reroot;

import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;
import jnr.ffi.LibraryLoader;
import jnr.ffi.Runtime;
import jnr.ffi.annotations.In;
import jnr.ffi.annotations.Out;
import jnr.ffi.annotations.SaveError;

/**
 * FreeBSD's kernel environment, through kenv(2): loader.conf's variables come in here, and
 * the kernel reads {@code vfs.root.mountfrom} from here when it mounts the new root.
 * The library is {@code c}; {@code -Dnbd.kenv.library} names another for the emulator in tests.
 */
public final class Kenv {
    static final int KENV_GET = 0;
    static final int KENV_SET = 1;
    static final int KENV_DUMP = 3;
    /** KENV_MNAMELEN and KENV_MVALLEN of sys/kenv.h: longer names and values are refused or cut. */
    static final int MAX_LENGTH = 128;

    /** The C prototype: {@code int kenv(int action, const char *name, char *value, int len)}. */
    public interface LibC {
        @SaveError
        int kenv(int action, @In byte[] name, @In @Out byte[] value, int len);
    }

    private final LibC libc;
    private final Runtime runtime;

    private Kenv(LibC libc) {
        this.libc = libc;
        this.runtime = Runtime.getRuntime(libc);
    }

    public static Kenv load() {
        return new Kenv(LibraryLoader.create(LibC.class).load(System.getProperty("nbd.kenv.library", "c")));
    }

    /**
     * Every variable. KENV_DUMP with no buffer returns the size needed; with a buffer it copies
     * {@code name=value} strings, each ended by a NUL, and returns 0 when all fitted or the size
     * needed when the environment grew meanwhile (kern_environment.c, sys_kenv).
     */
    public Map<String, String> all() {
        int size = libc.kenv(KENV_DUMP, null, null, 0);
        while (true) {
            if (size < 0) {
                throw failure("read the kernel environment (kenv KENV_DUMP)");
            }
            byte[] buffer = new byte[size + 1];
            int again = libc.kenv(KENV_DUMP, null, buffer, buffer.length);
            if (again == 0) {
                return entries(buffer);
            }
            size = again < 0 ? again : again + 256;
        }
    }

    private static Map<String, String> entries(byte[] buffer) {
        Map<String, String> result = new LinkedHashMap<>();
        int start = 0;
        for (int i = 0; i < buffer.length; i++) {
            if (buffer[i] == 0) {
                if (i == start) {
                    break; // the zeroed rest of the buffer
                }
                String entry = new String(buffer, start, i - start, StandardCharsets.UTF_8);
                int eq = entry.indexOf('=');
                if (eq > 0) {
                    result.put(entry.substring(0, eq), entry.substring(eq + 1));
                }
                start = i + 1;
            }
        }
        return result;
    }

    /** Sets {@code name} (needs root); the value must fit the kernel's 128 bytes. */
    public void set(String name, String value) {
        byte[] v = cString(value);
        if (name.length() >= MAX_LENGTH || v.length > MAX_LENGTH) {
            throw new IllegalArgumentException("kenv " + name + "=" + value + ": names and values are limited to "
                    + (MAX_LENGTH - 1) + " bytes");
        }
        if (libc.kenv(KENV_SET, cString(name), v, v.length) != 0) {
            throw failure("set kenv " + name + "=\"" + value + "\"");
        }
    }

    private IllegalStateException failure(String what) {
        int errno = runtime.getLastError();
        return new IllegalStateException("cannot " + what + ": " + jnr.constants.platform.Errno.valueOf(errno).description()
                + " (errno " + errno + ")");
    }

    private static byte[] cString(String s) {
        byte[] b = s.getBytes(StandardCharsets.UTF_8);
        byte[] z = new byte[b.length + 1];
        System.arraycopy(b, 0, z, 0, b.length);
        return z;
    }
}
