package org.nbdroot.client.daemon;

import org.nbdroot.proto.transport.NbdUri;

/**
 * What a serving daemon answers on its control socket: status and destroy. (Resize waits for
 * the session to reconnect: a server fixes an export's size per connection.)
 */
public final class DaemonControl implements ControlServer.Handler {
    private final ServedDevice device;
    private final NbdUri uri;

    public DaemonControl(ServedDevice device, NbdUri uri) {
        this.device = device;
        this.uri = uri;
    }

    @Override
    public String handle(String request) throws Exception {
        return switch (request) {
            case "status" -> "ok " + device.name() + " " + uri + " size=" + device.mediaSize() + " sector="
                    + device.sectorSize() + " state=serving";
            case "destroy" -> destroy(false);
            case "destroy force" -> destroy(true);
            default -> "error unknown request '" + request + "'";
        };
    }

    private String destroy(boolean force) throws Exception {
        device.destroy(force);
        return "ok";
    }
}
