package org.nbdroot.client.cli;

import java.nio.file.Path;
import java.util.concurrent.Callable;
import org.nbdroot.client.daemon.ControlClient;
import org.nbdroot.client.daemon.RunDirectory;
import org.nbdroot.client.ggate.GgateControl;
import org.nbdroot.client.ggate.GgateOptions;
import org.nbdroot.client.linuxnbd.LinuxNbdAbi;
import org.nbdroot.client.linuxnbd.LinuxNbdDevice;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/** {@code nbd-client destroy}: the daemon flushes, disconnects and destroys its device. */
@Command(name = "destroy", mixinStandardHelpOptions = true,
        description = {"Destroy a device: its daemon flushes the export, destroys the unit and disconnects.",
                "Without a daemon (it died), the unit is destroyed directly."})
final class DestroyCommand implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "DEVICE", description = "/dev/ggateN or ggateN; /dev/nbdN or nbdN")
    String device;

    @Option(names = {"-f", "--force"}, description = "Destroy even while the device is open; queued requests fail with ENXIO.")
    boolean force;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        boolean linux = ServeCommand.Bridge.of(device) == ServeCommand.Bridge.LINUX_NBD;
        int unit = linux ? LinuxNbdAbi.indexOf(device) : GgateOptions.unitOf(device);
        String name = ServeCommand.daemonName(device);
        Path socket = RunDirectory.socketFor(name);
        if (ControlClient.isAlive(socket)) {
            String reply = ControlClient.request(socket, force ? "destroy force" : "destroy");
            if (!reply.startsWith("ok")) {
                String why = reply.replaceFirst("^error ", "");
                throw new IllegalStateException(why.startsWith(name + ": ") ? why : name + ": " + why);
            }
            return 0;
        }
        if (linux) {
            LinuxNbdDevice.disconnectWithoutDaemon(unit);
        } else {
            try (GgateControl control = GgateControl.open()) {
                control.destroy(unit, force);
            }
        }
        spec.commandLine().getErr().println("nbd-client: no daemon served " + name + "; destroyed the unit directly");
        return 0;
    }
}
