package org.nbdroot.reroot;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.LinkedHashMap;
import java.util.Map;

/** Tells the next stage which root to mount: kenv variables on FreeBSD, a file for the companion init on Linux. */
public final class NewRoot {
    private NewRoot() {}

    /** How long the companion init keeps trying to mount the new root (it tries every 0.25 s). */
    static final int ROOT_WAIT_SECONDS = 10;

    /**
     * The kenv variables FreeBSD's kern_reroot() reads: {@code vfs.root.mountfrom}, and for a
     * ZFS root the boot environment variables the seed's rc.reroot set, so that
     * {@code zfs:pool/ROOT/default} boots that dataset as the active boot environment.
     */
    public static Map<String, String> freebsdVariables(RerootConfig config) {
        Map<String, String> vars = new LinkedHashMap<>();
        vars.put("vfs.root.mountfrom", config.root());
        if (config.root().startsWith("zfs:")) {
            String dataset = config.root().substring("zfs:".length());
            int slash = dataset.lastIndexOf('/');
            if (slash <= 0) {
                throw new IllegalArgumentException("nbdroot.root " + config.root()
                        + ": a ZFS root names a dataset inside a pool, e.g. zfs:pool/ROOT/default");
            }
            vars.put("zfs_be_active", config.root());
            vars.put("zfs_be_currpage", "1");
            vars.put("zfs_be_pages", "1");
            vars.put("zfs_be_root", dataset.substring(0, slash));
        }
        config.init().ifPresent(init -> vars.put("init_path", init));
        return vars;
    }

    /**
     * The file the companion init reads in its second phase on Linux (see init/README.md):
     * {@code KEY=value} lines, no quoting.
     */
    public static String linuxRootConf(RerootConfig config) {
        String root = config.root();
        int colon = root.indexOf(':');
        String fstype = root.substring(0, colon);
        String device = root.substring(colon + 1);
        StringBuilder conf = new StringBuilder();
        conf.append("ROOT=").append(device).append('\n');
        conf.append("FSTYPE=").append(fstype).append('\n');
        config.rootFlags().ifPresent(flags -> conf.append("FLAGS=").append(flags).append('\n'));
        conf.append("INIT=").append(config.init().orElse("/sbin/init")).append('\n');
        // The device serves already, but a partition on it (nbd0p1) appears once the kernel's
        // scan of the new disk has run, asynchronously: more than init's default 3 s to be safe.
        conf.append("ROOTWAIT=").append(ROOT_WAIT_SECONDS).append('\n');
        return conf.toString();
    }

    public static void writeLinuxRootConf(RerootConfig config, Path file) throws IOException {
        Path tmp = file.resolveSibling(file.getFileName() + ".new");
        Files.writeString(tmp, linuxRootConf(config), StandardCharsets.UTF_8,
                StandardOpenOption.CREATE, StandardOpenOption.TRUNCATE_EXISTING, StandardOpenOption.WRITE);
        Files.move(tmp, file, java.nio.file.StandardCopyOption.ATOMIC_MOVE, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
    }
}
