package org.nbdroot.client.daemon;

import java.io.IOException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.logging.Logger;
import org.nbdroot.proto.session.NbdSession;

/** A block device a daemon serves, as its control socket and the serve command see it. */
public interface ServedDevice {
    /** The kernel's name for it: ggate0, nbd0. */
    String name();

    long mediaSize();

    int sectorSize();

    /** The session serving it. */
    NbdSession session();

    /** Follows the export to a new size (it grew on a reconnect). */
    void resize(long newExportSize) throws IOException;

    /** Flushes and ends the device; with force, even while it is in use. */
    void destroy(boolean force) throws IOException;

    /**
     * How long a destroy without force waits for the export's FLUSH (30 s; the tests shorten it
     * with {@code -Dnbd.destroy.flush-wait-seconds}). A server that is down
     * holds the FLUSH until it is back (the session reconnects); the admin who asked for the
     * destroy gets an answer instead of a hang, and the device is left as it was.
     */
    static java.time.Duration flushBeforeDestroy() {
        return java.time.Duration.ofSeconds(Long.getLong("nbd.destroy.flush-wait-seconds", 30));
    }

    /** The loss each session's last destroy refused for, so that the next destroy goes on. */
    java.util.Map<NbdSession, String> LOSSES_TOLD = java.util.Collections.synchronizedMap(new java.util.WeakHashMap<>());

    /** With force, the FLUSH is tried this long, then the device goes regardless. */
    java.time.Duration FLUSH_BEFORE_FORCED_DESTROY = java.time.Duration.ofSeconds(2);

    /**
     * The FLUSH a destroy starts with, when the export takes writes and offers FLUSH. Without
     * force, a FLUSH that fails or does not complete in {@link #flushBeforeDestroy()} refuses
     * the destroy (nothing is destroyed, the writes not yet flushed are still kept for the
     * server); with force it is logged and the destroy goes on. A loss no FLUSH of the file
     * system's has reported (see {@link NbdSession#unreportedLoss}) refuses a destroy without
     * force once, so that the admin hears of it while the device can still be checked; the
     * next destroy goes on, and logs it.
     */
    static void flushBeforeDestroy(ServedDevice device, boolean force) throws IOException {
        NbdSession session = device.session();
        if (session.export().readOnly() || !session.export().has(org.nbdroot.proto.wire.TransmissionFlag.SEND_FLUSH)) {
            return;
        }
        java.time.Duration wait = force ? FLUSH_BEFORE_FORCED_DESTROY : flushBeforeDestroy();
        String failure;
        try {
            // Not a FLUSH that takes the report of a loss: should the destroy not happen after all (the
            // unit is still open), the report stays for the file system's own FLUSH. It is looked at instead.
            session.flush(false).get(wait.toMillis(), TimeUnit.MILLISECONDS);
            String lost = session.unreportedLoss();
            if (lost == null) {
                return;
            }
            if (!force && !lost.equals(LOSSES_TOLD.put(session, lost))) {
                throw new IOException(device.name() + ": not destroyed: writes acknowledged earlier may be missing"
                        + " on the server (" + lost + "), and no FLUSH has reported it: check what is on the"
                        + " device; destroy again to go on");
            }
            Logger.getLogger(ServedDevice.class.getName()).severe(device.name() + ": destroying; writes acknowledged"
                    + " earlier may be missing on the server: " + lost);
            return;
        } catch (java.util.concurrent.TimeoutException e) {
            failure = "the server did not answer the FLUSH within " + wait.toSeconds() + " s";
        } catch (ExecutionException e) {
            failure = "the FLUSH failed: " + e.getCause().getMessage();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            failure = "interrupted while waiting for the FLUSH";
        }
        if (!force) {
            throw new IOException(device.name() + ": not destroyed: " + failure
                    + "; writes not yet flushed are kept for the server (destroy -f drops them)");
        }
        Logger.getLogger(ServedDevice.class.getName()).warning(device.name() + ": destroying anyway: " + failure);
    }

    /** Waits until the device has ended; returns what made it fail, or null. */
    Throwable awaitTermination() throws InterruptedException;

    /**
     * What {@link #refreshSize} did.
     *
     * @param before     the device's size before, in bytes
     * @param after      its size now
     * @param exportSize the export's size as the server now describes it
     * @param refused    the export shrank and the device kept its size (no force)
     */
    record SizeChange(long before, long after, long exportSize, boolean refused) {}

    /**
     * Asks the server for the export's size now ({@code nbd-client resize}) and resizes the
     * device to it. A grown export grows the device. A shrunk one is refused unless
     * {@code allowShrink}: the blocks past the new end are gone on the server, and a
     * filesystem that still uses them would meet errors there, so the operator must shrink it
     * first and say so. When refused the session keeps its connections and the old size.
     */
    default SizeChange refreshSize(boolean allowShrink) throws Exception {
        long before = mediaSize();
        int sector = sectorSize();
        NbdSession.ExportRefresh refresh;
        try {
            refresh = session().refreshExport(now -> allowShrink || now.size() - now.size() % sector >= before)
                    .get(2, TimeUnit.MINUTES);
        } catch (ExecutionException e) {
            throw e.getCause() instanceof Exception cause ? cause : e;
        }
        long exportSize = refresh.now().size();
        long wanted = exportSize - exportSize % sector;
        if (wanted < before && !refresh.adopted()) {
            Logger.getLogger(ServedDevice.class.getName()).warning(name() + ": the export shrank to " + exportSize
                    + " bytes; the device keeps its " + before + " bytes until resized with force");
            return new SizeChange(before, before, exportSize, true);
        }
        resize(exportSize);
        return new SizeChange(before, mediaSize(), exportSize, false);
    }
}
