package org.nbdroot.client.cli;

import java.io.IOException;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import org.nbdroot.client.daemon.ControlClient;
import org.nbdroot.client.daemon.RunDirectory;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Spec;

/** {@code nbd-client list-devices}: the devices served by running daemons. */
@Command(name = "list-devices", mixinStandardHelpOptions = true,
        description = "List the devices served by running daemons: device, server and export, size, state.")
final class ListDevicesCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws IOException {
        var out = spec.commandLine().getOut();
        for (String device : ControlClient.devices()) {
            Path socket = RunDirectory.socketFor(device);
            String reply;
            try {
                reply = ControlClient.request(socket, "status");
            } catch (IOException e) {
                reply = "error daemon not running (stale socket)";
            }
            out.println(reply.startsWith("ok ") ? reply.substring(3) : device + " " + reply.replaceFirst("^error ", "state="));
        }
        out.flush();
        return 0;
    }
}
