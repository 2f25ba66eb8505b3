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
 * @param tlsParameters the URI's TLS query parameters ({@code tls-hostname}, ...; see
 *                   {@code org.nbdroot.proto.tls.TlsSettings#fromUri}), the user info as {@code tls-username}
 */
public record NbdUri(NbdEndpoint endpoint, String exportName, boolean tls, Map<String, String> tlsParameters) {

    /** The TLS query parameters understood; any other {@code tls-} one is an error. */
    private static final java.util.Set<String> TLS_PARAMETERS = java.util.Set.of("tls-type", "tls-hostname",
            "tls-verify-peer", "tls-certificates", "tls-psk-file", "tls-username");

    public NbdUri {
        tlsParameters = Map.copyOf(tlsParameters);
    }

    public NbdUri(NbdEndpoint endpoint, String exportName, boolean tls) {
        this(endpoint, exportName, tls, Map.of());
    }

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
        Map<String, String> tlsParameters = new LinkedHashMap<>();
        if (unix) {
            String socket = query.remove("socket");
            if (socket == null || socket.isEmpty()) {
                throw new IllegalArgumentException("'" + text + "' lacks the socket=PATH query parameter");
            }
            if (uri.getRawAuthority() != null && !uri.getRawAuthority().isEmpty()) {
                throw new IllegalArgumentException("'" + text + "': a Unix socket URI takes no host (write nbd+unix:///EXPORT?socket=PATH)");
            }
            if (socket.indexOf('\0') >= 0) {
                throw new IllegalArgumentException("'" + text + "': abstract Unix sockets (socket=%00...) are not supported");
            }
            endpoint = new NbdEndpoint.Unix(Path.of(socket));
        } else {
            String authority = uri.getRawAuthority();
            if (authority == null || authority.isEmpty()) {
                throw new IllegalArgumentException("'" + text + "' has no host");
            }
            int at = authority.lastIndexOf('@');
            if (at > 0) {
                tlsParameters.put("tls-username", decode(authority.substring(0, at))); // doc/uri.md: the TLS user name
            }
            authority = authority.substring(at + 1);
            // Parsed here rather than by URI.getHost(), which rejects RFC 3986 names such as nbd_server.
            String host;
            String portText = null;
            if (authority.startsWith("[")) {
                int close = authority.indexOf(']');
                if (close < 0) {
                    throw new IllegalArgumentException("'" + text + "': unclosed '[' in the IPv6 address");
                }
                host = authority.substring(1, close);
                if (authority.length() > close + 1) {
                    if (authority.charAt(close + 1) != ':') {
                        throw new IllegalArgumentException("'" + text + "': unexpected text after the IPv6 address");
                    }
                    portText = authority.substring(close + 2);
                }
            } else {
                int colon = authority.lastIndexOf(':');
                host = colon < 0 ? authority : authority.substring(0, colon);
                portText = colon < 0 ? null : authority.substring(colon + 1);
            }
            host = decode(host);
            if (host.isEmpty()) {
                throw new IllegalArgumentException("'" + text + "' has no host");
            }
            int port = NbdConstants.DEFAULT_PORT;
            if (portText != null && !portText.isEmpty()) {
                try {
                    port = Integer.parseInt(portText);
                } catch (NumberFormatException e) {
                    port = -1;
                }
                if (port < 1 || port > 65535 || !portText.chars().allMatch(Character::isDigit)) {
                    throw new IllegalArgumentException("'" + text + "': port " + portText + " is not between 1 and 65535");
                }
            }
            endpoint = new NbdEndpoint.Tcp(host, port);
        }
        for (var i = query.entrySet().iterator(); i.hasNext(); ) {
            var e = i.next();
            if (TLS_PARAMETERS.contains(e.getKey())) {
                if (tlsParameters.put(e.getKey(), e.getValue()) != null) {
                    throw new IllegalArgumentException("both user info and tls-username in '" + text + "'");
                }
                i.remove();
            }
        }
        query.keySet().removeIf(key -> key.startsWith("x-"));
        if (!query.isEmpty()) {
            throw new IllegalArgumentException("unknown query parameter(s) " + query.keySet() + " in '" + text + "'");
        }
        return new NbdUri(endpoint, exportName, tls, tlsParameters);
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
            return scheme + ":///" + encode(exportName) + "?socket=" + encode(u.socket().toString());
        }
        return scheme + "://" + endpoint + "/" + encode(exportName);
    }

    /** Percent-encodes everything but RFC 3986's unreserved characters and '/'. */
    private static String encode(String s) {
        StringBuilder out = new StringBuilder();
        for (byte b : s.getBytes(StandardCharsets.UTF_8)) {
            char c = (char) (b & 0xff);
            if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || "-._~/".indexOf(c) >= 0) {
                out.append(c);
            } else {
                out.append(String.format("%%%02X", (int) c));
            }
        }
        return out.toString();
    }
}
