package org.nbdroot.reroot;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * What to serve and what to mount after the reroot, read from variables named
 * {@code nbdroot.*}: kenv variables set by loader.conf on FreeBSD, the kernel command line
 * on Linux, or a file. The same names everywhere:
 * <pre>
 *   nbdroot.0.server=nbd://10.0.0.1/root     the export for unit 0 (or "HOST PORT")
 *   nbdroot.0.options=--connections 2        more daemon options for unit 0
 *   nbdroot.root=ext4:/dev/nbd0              the new root (FreeBSD: as vfs.root.mountfrom)
 *   nbdroot.rootflags=noatime                Linux: mount options for the new root
 *   nbdroot.init=/sbin/init                  the new root's init
 *   nbdroot.timeout=60                       seconds to wait for all devices (1 to 100)
 *   nbdroot.java.options=-Xmx128m            more JVM options for the daemons (and, through
 *                                            rc.reroot's JAVA_OPTS, for these steps)
 *   nbdroot.net.addr=10.0.2.15/24            (and .if, .gw, .dns) the network /etc/rc brings up
 * </pre>
 */
public record RerootConfig(List<Device> devices, String root, Optional<String> rootFlags, Optional<String> init,
        Duration timeout, List<String> javaOptions) {
    static final String PREFIX = "nbdroot.";
    /** nbdroot.net.if, .addr, .gw, .dns: read by /etc/rc, which brings the network up; ignored here. */
    static final String NETWORK_PREFIX = "nbdroot.net.";
    private static final Pattern UNIT_KEY = Pattern.compile("nbdroot\\.(\\d+)\\.(server|options)");

    /** One device to serve: unit N is {@code /dev/ggateN} on FreeBSD and {@code /dev/nbdN} on Linux. */
    public record Device(int unit, List<String> server, List<String> options) {
        public String devicePath(boolean freebsd) {
            return (freebsd ? "/dev/ggate" : "/dev/nbd") + unit;
        }
    }

    /** The companion init kills /etc/rc.reroot after 120 s: what it waits for devices must end before. */
    static final int MAX_TIMEOUT_SECONDS = 100;

    /** Reads the configuration, or says exactly which variable is missing or wrong. */
    public static RerootConfig from(Map<String, String> variables) {
        TreeMap<Integer, String> servers = new TreeMap<>();
        TreeMap<Integer, String> options = new TreeMap<>();
        for (Map.Entry<String, String> e : variables.entrySet()) {
            if (!e.getKey().startsWith(PREFIX)) {
                continue;
            }
            Matcher m = UNIT_KEY.matcher(e.getKey());
            if (m.matches()) {
                int unit = Integer.parseInt(m.group(1));
                (m.group(2).equals("server") ? servers : options).put(unit, e.getValue().trim());
            } else if (!e.getKey().startsWith(NETWORK_PREFIX) && !List.of("nbdroot.root", "nbdroot.rootflags", "nbdroot.init", "nbdroot.timeout",
                    "nbdroot.java.options").contains(e.getKey())) {
                throw new IllegalArgumentException("unknown variable " + e.getKey()
                        + " (known: nbdroot.N.server, nbdroot.N.options, nbdroot.root, nbdroot.rootflags, nbdroot.init,"
                        + " nbdroot.timeout, nbdroot.java.options, and nbdroot.net.* for /etc/rc)");
            }
        }
        for (int unit : options.keySet()) {
            if (!servers.containsKey(unit)) {
                throw new IllegalArgumentException("nbdroot." + unit + ".options is set but nbdroot." + unit + ".server is not");
            }
        }
        if (servers.isEmpty()) {
            throw new IllegalArgumentException("no device configured: set nbdroot.0.server=nbd://HOST[:PORT]/EXPORT");
        }
        List<Device> devices = new ArrayList<>();
        for (Map.Entry<Integer, String> e : servers.entrySet()) {
            List<String> server = words(e.getValue());
            if (server.isEmpty() || server.size() > 2) {
                throw new IllegalArgumentException("nbdroot." + e.getKey() + ".server must be a URI or HOST PORT, not '"
                        + e.getValue() + "'");
            }
            devices.add(new Device(e.getKey(), server, words(options.getOrDefault(e.getKey(), ""))));
        }
        String root = variables.get("nbdroot.root");
        if (root == null || root.isBlank()) {
            throw new IllegalArgumentException("nbdroot.root is not set: name the new root, e.g. ufs:/dev/ggate0,"
                    + " zfs:pool/ROOT/default or ext4:/dev/nbd0");
        }
        if (!root.contains(":")) {
            throw new IllegalArgumentException("nbdroot.root must be FSTYPE:DEVICE (e.g. ext4:/dev/nbd0), not '" + root + "'");
        }
        if (root.startsWith("zfs:") && root.lastIndexOf('/') <= "zfs:".length()) {
            throw new IllegalArgumentException("nbdroot.root " + root
                    + ": a ZFS root names a dataset inside a pool, e.g. zfs:pool/ROOT/default");
        }
        Duration timeout = Duration.ofSeconds(60);
        String t = variables.get("nbdroot.timeout");
        if (t != null) {
            long seconds;
            try {
                seconds = Long.parseLong(t.trim());
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("nbdroot.timeout must be a number of seconds, not '" + t + "'");
            }
            if (seconds < 1 || seconds > MAX_TIMEOUT_SECONDS) {
                throw new IllegalArgumentException("nbdroot.timeout must be 1 to " + MAX_TIMEOUT_SECONDS + " seconds, not "
                        + seconds + " (the companion init gives /etc/rc.reroot 120 s in all, staging included)");
            }
            timeout = Duration.ofSeconds(seconds);
        }
        return new RerootConfig(List.copyOf(devices), root.trim(), Optional.ofNullable(variables.get("nbdroot.rootflags")),
                Optional.ofNullable(variables.get("nbdroot.init")), timeout,
                words(variables.getOrDefault("nbdroot.java.options", "")));
    }

    private static List<String> words(String s) {
        List<String> words = new ArrayList<>();
        for (String w : s.trim().split("\\s+")) {
            if (!w.isEmpty()) {
                words.add(w);
            }
        }
        return words;
    }
}
