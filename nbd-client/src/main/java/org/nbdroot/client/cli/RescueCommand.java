package org.nbdroot.client.cli;

import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;

/** {@code nbd-client rescue}: a new daemon takes over a unit whose daemon died. */
@Command(name = "rescue", mixinStandardHelpOptions = true,
        description = {"Take over a device whose daemon died: the requests it had taken go back to the queue",
                "(GEOM Gate: G_GATE_CMD_CANCEL of all; Linux: a new socket through netlink, on which the kernel",
                "sends again what the dead daemon left unanswered), then this daemon serves them and everything after.",
                "",
                "  nbd-client rescue [options] HOST [PORT] DEVICE",
                "  nbd-client rescue [options] URI DEVICE"})
final class RescueCommand implements Callable<Integer> {
    @Mixin
    DeviceOptions device;

    @picocli.CommandLine.ParentCommand
    NbdClientCommand parent;

    @Override
    public Integer call() throws Exception {
        device.check();
        return ServeCommand.serve(device, true, parent.args());
    }
}
