package org.nbdroot.client.cli;

import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/** {@code nbd-client resize}: the daemon asks the server for the export's size again and resizes its device. */
@Command(name = "resize", mixinStandardHelpOptions = true,
        description = {"After the export was grown on the server: the device's daemon asks the server for its size",
                "again (on a fresh connection: NBD has no notice of a size change) and resizes the device to it.",
                "A smaller export is refused unless --force: shrink the filesystem on the device first."})
final class ResizeCommand implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "DEVICE", description = "/dev/ggateN or ggateN; /dev/nbdN or nbdN")
    String device;

    @Option(names = {"-f", "--force"}, description = "Shrink the device too, when the export shrank.")
    boolean force;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        String name = ServeCommand.daemonName(device);
        String reply = DaemonRequest.send(name, force ? "resize force" : "resize");
        // ggateN size=NEW was=OLD export=BYTES
        java.util.Map<String, Long> fields = new java.util.HashMap<>();
        for (String field : reply.split(" ")) {
            int eq = field.indexOf('=');
            if (eq > 0) {
                fields.put(field.substring(0, eq), Long.parseLong(field.substring(eq + 1)));
            }
        }
        long size = fields.getOrDefault("size", -1L);
        long was = fields.getOrDefault("was", -1L);
        var out = spec.commandLine().getOut();
        out.println(size == was ? name + ": " + size + " bytes, unchanged" : name + ": " + size + " bytes (was " + was + ")");
        out.flush();
        return 0;
    }
}
