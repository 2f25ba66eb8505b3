package org.nbdroot.client.cli;

import java.util.List;
import java.util.concurrent.Callable;
import org.nbdroot.proto.ExportListing;
import org.nbdroot.proto.session.ExportQueries;
import org.nbdroot.proto.session.SessionOptions;
import org.nbdroot.proto.transport.NbdUri;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;
import picocli.CommandLine.Model.CommandSpec;

/** {@code nbd-client list}: the server's export names, one per line, with descriptions. */
@Command(name = "list", mixinStandardHelpOptions = true,
        description = "List the exports of a server, one per line: the name (\"(default)\" for the empty name), then a tab and the description if any.")
final class ListCommand implements Callable<Integer> {
    @Mixin
    ServerTarget target;

    @Mixin
    TlsOptions tls;

    @Option(names = "--json", description = "Print a JSON array of {name, description} objects.")
    boolean json;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        NbdUri uri = target.uri();
        SessionOptions options = SessionOptions.DEFAULT.withTls(tls.config(uri));
        List<ExportListing> exports;
        try (Engine engine = new Engine(1, options)) {
            exports = Engine.await(ExportQueries.list(engine.connector, uri.endpoint(), options));
        }
        var out = spec.commandLine().getOut();
        if (json) {
            out.println(Json.write(exports.stream().map(e -> {
                var o = Json.object();
                o.put("name", e.name());
                o.put("description", e.description());
                return o;
            }).toList()));
        } else {
            for (ExportListing e : exports) {
                String name = e.name().isEmpty() ? "(default)" : e.name();
                out.println(e.description().isEmpty() ? name : name + "\t" + e.description());
            }
        }
        out.flush();
        return 0;
    }
}
