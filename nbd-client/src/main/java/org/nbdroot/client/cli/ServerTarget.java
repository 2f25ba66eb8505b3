package org.nbdroot.client.cli;

import java.util.List;
import org.nbdroot.proto.transport.NbdUri;
import org.nbdroot.proto.wire.NbdConstants;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/** The server argument shared by the commands: {@code URI}, or {@code HOST [PORT]} with {@code -N NAME}. */
public final class ServerTarget {
    @Parameters(index = "0", paramLabel = "URI|HOST",
            description = "nbd://host[:port]/export, nbd+unix:///export?socket=PATH, or a host name")
    String server;

    @Parameters(index = "1", arity = "0..1", paramLabel = "PORT", description = "Port, with HOST (default 10809).")
    Integer port;

    @Option(names = {"-N", "--name"}, paramLabel = "NAME", description = "Export name, with HOST (default: the server's default export).")
    String exportName;

    public NbdUri uri() {
        if (NbdUri.looksLikeUri(server)) {
            if (port != null || exportName != null) {
                throw new IllegalArgumentException("give either a URI or HOST [PORT] [-N NAME], not both");
            }
            return NbdUri.parse(server);
        }
        return NbdUri.ofHost(stripBrackets(server), port == null ? NbdConstants.DEFAULT_PORT : port, exportName);
    }

    private static String stripBrackets(String host) {
        return host.startsWith("[") && host.endsWith("]") ? host.substring(1, host.length() - 1) : host;
    }

    /** For messages. */
    static String join(List<String> words) {
        return String.join(" ", words);
    }
}
