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
