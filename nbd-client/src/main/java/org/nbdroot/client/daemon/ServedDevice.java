package org.nbdroot.client.daemon;

import java.io.IOException;

/** A block device a daemon serves, as its control socket and the serve command see it. */
public interface ServedDevice {
    /** The kernel's name for it: ggate0, nbd0. */
    String name();

    long mediaSize();

    int sectorSize();

    /** Follows the export to a new size (it grew on a reconnect). */
    void resize(long newExportSize) throws IOException;

    /** Flushes and ends the device; with force, even while it is in use. */
    void destroy(boolean force) throws IOException;

    /** Waits until the device has ended; returns what made it fail, or null. */
    Throwable awaitTermination() throws InterruptedException;
}
