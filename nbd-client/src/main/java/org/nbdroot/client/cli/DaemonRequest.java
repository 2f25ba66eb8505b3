package org.nbdroot.client.cli;

import java.nio.file.Path;
import org.nbdroot.client.daemon.ControlClient;
import org.nbdroot.client.daemon.RunDirectory;
import org.nbdroot.proto.NbdException;

/** One request to the daemon serving a device, over its control socket, for the commands that need a daemon. */
final class DaemonRequest {
    private DaemonRequest() {}

    /** The daemon's reply after its {@code ok}; a missing daemon or an {@code error} reply is an NbdException saying so. */
    static String send(String name, String request) throws Exception {
        Path socket = RunDirectory.socketFor(name);
        if (!ControlClient.isAlive(socket)) {
            throw new NbdException("no daemon serves " + name + " (nothing answers on " + socket + ")");
        }
        String reply = ControlClient.request(socket, request);
        if (!reply.startsWith("ok")) {
            throw new NbdException(name + ": " + reply.replaceFirst("^error ", ""));
        }
        return reply.substring(2).strip();
    }
}
