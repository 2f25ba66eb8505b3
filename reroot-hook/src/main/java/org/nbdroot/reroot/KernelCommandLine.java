package org.nbdroot.reroot;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Splits a Linux kernel command line into {@code name=value} pairs the way the kernel does:
 * words separated by spaces, double quotes keep spaces inside a value and are dropped.
 * A word without {@code =} becomes a name with an empty value.
 */
public final class KernelCommandLine {
    private KernelCommandLine() {}

    public static Map<String, String> parse(String line) {
        Map<String, String> result = new LinkedHashMap<>();
        StringBuilder word = new StringBuilder();
        boolean quoted = false;
        boolean any = false;
        for (int i = 0; i <= line.length(); i++) {
            char c = i < line.length() ? line.charAt(i) : ' ';
            if (c == '"') {
                quoted = !quoted;
                any = true;
            } else if (Character.isWhitespace(c) && !quoted) {
                if (any) {
                    String w = word.toString();
                    int eq = w.indexOf('=');
                    result.put(eq < 0 ? w : w.substring(0, eq), eq < 0 ? "" : w.substring(eq + 1));
                }
                word.setLength(0);
                any = false;
            } else {
                word.append(c);
                any = true;
            }
        }
        return result;
    }
}
