package org.nbdroot.client.cli;

import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import org.nbdroot.proto.BlockSize;
import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.session.ExportQueries;
import org.nbdroot.proto.session.ExportQueries.ExportDetails;
import org.nbdroot.proto.session.SessionOptions;
import org.nbdroot.proto.transport.NbdUri;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/** {@code nbd-client info}: what the handshake says about one export. */
@Command(name = "info", mixinStandardHelpOptions = true,
        description = "Show an export's size, transmission flags, block size constraints and meta contexts.")
final class InfoCommand implements Callable<Integer> {
    @Mixin
    ServerTarget target;

    @Mixin
    ConnectionOptions connection;

    @Option(names = "--json", description = "Print one JSON object.")
    boolean json;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        NbdUri uri = target.uri();
        SessionOptions options = connection.sessionOptions(uri);
        ExportDetails details;
        try (Engine engine = new Engine(1, options)) {
            details = Engine.await(ExportQueries.inspect(engine.connector, uri, options));
        }
        var out = spec.commandLine().getOut();
        out.println(json ? Json.write(toJson(uri, details)) : toText(uri, details));
        out.flush();
        return 0;
    }

    static Map<String, Object> toJson(NbdUri uri, ExportDetails details) {
        ExportInfo e = details.export();
        BlockSize b = e.blockSize();
        var blockSize = Json.object();
        blockSize.put("minimum", b.minimum());
        blockSize.put("preferred", b.preferred());
        blockSize.put("maximum", b.maximum());
        blockSize.put("from_server", e.blockSizeFromServer());
        var o = Json.object();
        o.put("uri", uri.toString());
        o.put("export", e.name());
        o.put("description", e.description());
        o.put("size", e.size());
        o.put("flags", e.flagNames());
        o.put("block_size", blockSize);
        o.put("structured_replies", e.structuredReplies());
        o.put("extended_headers", e.extendedHeaders());
        o.put("meta_contexts", details.availableMetaContexts());
        o.put("negotiated_meta_contexts", List.copyOf(e.metaContexts().values()));
        return o;
    }

    static String toText(NbdUri uri, ExportDetails details) {
        ExportInfo e = details.export();
        BlockSize b = e.blockSize();
        StringBuilder s = new StringBuilder();
        s.append("export:             ").append(e.name().isEmpty() ? "(default)" : e.name()).append('\n');
        if (e.description() != null && !e.description().isEmpty()) {
            s.append("description:        ").append(e.description()).append('\n');
        }
        s.append("size:               ").append(e.size()).append(" bytes (").append(human(e.size())).append(")\n");
        s.append("flags:              ").append(String.join(" ", e.flagNames())).append('\n');
        s.append("block size:         minimum ").append(b.minimum()).append(", preferred ").append(b.preferred())
                .append(", maximum ").append(Integer.toUnsignedString(b.maximum()))
                .append(e.blockSizeFromServer() ? "" : " (server sent none: defaults)").append('\n');
        s.append("structured replies: ").append(e.structuredReplies() ? "yes" : "no").append('\n');
        s.append("extended headers:   ").append(e.extendedHeaders() ? "yes (64-bit lengths)" : "no").append('\n');
        s.append("meta contexts:      ").append(details.availableMetaContexts().isEmpty() ? "(none)"
                : String.join(" ", details.availableMetaContexts()));
        return s.toString();
    }

    static String human(long bytes) {
        String[] units = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
        double v = bytes;
        int u = 0;
        while (v >= 1024 && u < units.length - 1) {
            v /= 1024;
            u++;
        }
        return u == 0 ? bytes + " B" : String.format(java.util.Locale.ROOT, "%.1f %s", v, units[u]);
    }
}
