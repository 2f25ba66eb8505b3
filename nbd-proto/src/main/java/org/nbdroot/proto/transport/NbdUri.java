package org.nbdroot.proto.transport;

import java.net.URI;
import java.net.URISyntaxException;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import org.nbdroot.proto.wire.NbdConstants;

/**
 * An NBD URI ({@code doc/uri.md}): {@code nbd://host[:port]/export} or
 * {@code nbd+unix:///export?socket=PATH}, with {@code nbds} variants that require TLS.
 *
 * @param endpoint   where to connect
 * @param exportName the path without its leading slash, percent-decoded
 * @param tls        whether the scheme requires TLS
 */
public record NbdUri(NbdEndpoint endpoint, String exportName, boolean tls) {

    /** Parses a URI, naming what is wrong when it cannot. */
    public static NbdUri parse(String text) {
        URI uri;
        try {
            uri = new URI(text);
        } catch (URISyntaxException e) {
            throw new IllegalArgumentException("not a valid NBD URI '" + text + "': " + e.getMessage());
        }
        String scheme = uri.getScheme();
        if (scheme == null) {
            throw new IllegalArgumentException("'" + text + "' has no scheme (expected nbd://, nbds://, nbd+unix:// or nbds+unix://)");
        }
        boolean tls;
        boolean unix;
        switch (scheme.toLowerCase(java.util.Locale.ROOT)) {
            case "nbd" -> { tls = false; unix = false; }
            case "nbds" -> { tls = true; unix = false; }
            case "nbd+unix" -> { tls = false; unix = true; }
            case "nbds+unix" -> { tls = true; unix = true; }
            default -> throw new IllegalArgumentException("unsupported URI scheme '" + scheme
                    + "' in '" + text + "' (expected nbd, nbds, nbd+unix or nbds+unix)");
        }
        Map<String, String> query = parseQuery(uri.getRawQuery(), text);
        String path = uri.getRawPath() == null ? "" : uri.getRawPath();
        String exportName = decode(path.startsWith("/") ? path.substring(1) : path);
        NbdEndpoint endpoint;
        if (unix) {
            String socket = query.remove("socket");
            if (socket == null || socket.isEmpty()) {
                throw new IllegalArgumentException("'" + text + "' lacks the socket=PATH query parameter");
            }
            if (uri.getRawAuthority() != null && !uri.getRawAuthority().isEmpty()) {
                throw new IllegalArgumentException("'" + text + "': a Unix socket URI takes no host (write nbd+unix:///EXPORT?socket=PATH)");
            }
            endpoint = new NbdEndpoint.Unix(Path.of(socket));
        } else {
            String host = uri.getHost();
            if (host == null || host.isEmpty()) {
                throw new IllegalArgumentException("'" + text + "' has no host");
            }
            if (host.startsWith("[") && host.endsWith("]")) {
                host = host.substring(1, host.length() - 1);
            }
            int port = uri.getPort() == -1 ? NbdConstants.DEFAULT_PORT : uri.getPort();
            endpoint = new NbdEndpoint.Tcp(host, port);
        }
        query.keySet().removeIf(key -> key.startsWith("tls-") || key.startsWith("x-"));
        if (!query.isEmpty()) {
            throw new IllegalArgumentException("unknown query parameter(s) " + query.keySet() + " in '" + text + "'");
        }
        return new NbdUri(endpoint, exportName, tls);
    }

    /** Builds a URI from the classic {@code HOST [PORT]} arguments. */
    public static NbdUri ofHost(String host, int port, String exportName) {
        return new NbdUri(new NbdEndpoint.Tcp(host, port), exportName == null ? "" : exportName, false);
    }

    /** Whether an argument looks like a URI rather than a host name. */
    public static boolean looksLikeUri(String argument) {
        return argument.contains("://");
    }

    private static Map<String, String> parseQuery(String rawQuery, String text) {
        Map<String, String> query = new LinkedHashMap<>();
        if (rawQuery == null || rawQuery.isEmpty()) {
            return query;
        }
        for (String pair : rawQuery.split("[&;]")) {
            int eq = pair.indexOf('=');
            String key = decode(eq < 0 ? pair : pair.substring(0, eq));
            String value = eq < 0 ? "" : decode(pair.substring(eq + 1));
            if (query.put(key, value) != null) {
                throw new IllegalArgumentException("query parameter '" + key + "' given twice in '" + text + "'");
            }
        }
        return query;
    }

    private static String decode(String raw) {
        // URLDecoder would turn '+' into a space; in a URI path '+' is a plain character.
        return URLDecoder.decode(raw.replace("+", "%2B"), StandardCharsets.UTF_8);
    }

    @Override
    public String toString() {
        String scheme = (tls ? "nbds" : "nbd") + (endpoint instanceof NbdEndpoint.Unix ? "+unix" : "");
        if (endpoint instanceof NbdEndpoint.Unix u) {
            return scheme + ":///" + exportName + "?socket=" + u.socket();
        }
        return scheme + "://" + endpoint + "/" + exportName;
    }
}
