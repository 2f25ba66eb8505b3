package org.nbdroot.client.daemon;

import org.nbdroot.client.metrics.DeviceMetrics;
import org.nbdroot.client.metrics.StatsReport;
import org.nbdroot.proto.transport.NbdUri;

/**
 * What a serving daemon answers on its control socket: status, destroy, resize (the
 * export's size asked for again on a fresh connection, the device following it), and stats
 * (its meters: one line each after {@code ok}, or with {@code stats json} one JSON object).
 */
public final class DaemonControl implements ControlServer.Handler {
    private final ServedDevice device;
    private final NbdUri uri;
    private final DeviceMetrics metrics;

    public DaemonControl(ServedDevice device, NbdUri uri) {
        this(device, uri, null);
    }

    /** With the device's meters for {@code stats}; null when it keeps none. */
    public DaemonControl(ServedDevice device, NbdUri uri, DeviceMetrics metrics) {
        this.device = device;
        this.uri = uri;
        this.metrics = metrics;
    }

    @Override
    public String handle(String request) throws Exception {
        return switch (request) {
            case "status" -> "ok " + device.name() + " " + uri + " size=" + device.mediaSize() + " sector="
                    + device.sectorSize() + " state=serving";
            case "destroy" -> destroy(false);
            case "destroy force" -> destroy(true);
            case "resize" -> resize(false);
            case "resize force" -> resize(true);
            case "stats" -> metrics == null ? noMetrics() : "ok\n" + StatsReport.text(metrics).strip();
            case "stats json" -> metrics == null ? noMetrics() : "ok " + StatsReport.json(device.name(), metrics);
            default -> "error unknown request '" + request + "'";
        };
    }

    /** Replies {@code ok DEVICE size=N was=M export=E}, or an error saying why the size was kept. */
    private String resize(boolean force) throws Exception {
        ServedDevice.SizeChange change = device.refreshSize(force);
        if (change.refused()) {
            return "error the export shrank from " + change.before() + " to " + change.exportSize() + " bytes; "
                    + device.name() + " keeps its " + change.before() + " bytes (shrink what is on it first, then resize --force)";
        }
        return "ok " + device.name() + " size=" + change.after() + " was=" + change.before() + " export=" + change.exportSize();
    }

    private String noMetrics() {
        return "error " + device.name() + "'s daemon keeps no metrics";
    }

    private String destroy(boolean force) throws Exception {
        device.destroy(force);
        return "ok";
    }
}
