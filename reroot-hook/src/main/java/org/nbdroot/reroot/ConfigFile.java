package org.nbdroot.reroot;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** Variables in loader.conf syntax: {@code name="value"} lines, {@code #} comments. */
public final class ConfigFile {
    private ConfigFile() {}

    public static Map<String, String> read(Path file) throws IOException {
        return parse(file.toString(), Files.readAllLines(file));
    }

    static Map<String, String> parse(String source, List<String> lines) {
        Map<String, String> result = new LinkedHashMap<>();
        int n = 0;
        for (String raw : lines) {
            n++;
            String line = raw.strip();
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            int eq = line.indexOf('=');
            if (eq <= 0) {
                throw new IllegalArgumentException(source + " line " + n + ": expected name=\"value\", got '" + raw + "'");
            }
            String value = line.substring(eq + 1).strip();
            if (value.startsWith("\"")) {
                int close = value.indexOf('"', 1);
                if (close < 0) {
                    throw new IllegalArgumentException(source + " line " + n + ": unterminated quote in '" + raw + "'");
                }
                value = value.substring(1, close);
            } else {
                value = value.replaceAll("\\s+#.*$", "");
            }
            result.put(line.substring(0, eq).strip(), value);
        }
        return result;
    }
}
