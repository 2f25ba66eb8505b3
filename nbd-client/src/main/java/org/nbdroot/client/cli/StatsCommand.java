package org.nbdroot.client.cli;

import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/** {@code nbd-client stats}: a device's meters, as its daemon counts them. */
@Command(name = "stats", mixinStandardHelpOptions = true,
        description = {"Show a device's metrics since its daemon started: requests by command (count, errors, bytes,",
                "latency with percentiles over the last minute or so), requests in flight, reconnects and when",
                "the last one was, and the bytes written but not yet flushed that a reconnect would write again."})
final class StatsCommand implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "DEVICE", description = "/dev/ggateN or ggateN; /dev/nbdN or nbdN")
    String device;

    @Option(names = "--json", description = "One JSON object, by command.")
    boolean json;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        String reply = DaemonRequest.send(ServeCommand.daemonName(device), json ? "stats json" : "stats");
        var out = spec.commandLine().getOut();
        out.println(reply);
        out.flush();
        return 0;
    }
}
