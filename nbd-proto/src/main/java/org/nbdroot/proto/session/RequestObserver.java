package org.nbdroot.proto.session;

import org.nbdroot.proto.wire.Command;

/**
 * Hears what a session's callers see: each request they submit and how it ended, and each
 * reconnect. For metrics; the protocol engine knows no metrics library. Called on whatever
 * thread submits or completes (often a connection's event loop): an observer must be quick,
 * never block and never throw.
 */
public interface RequestObserver {
    /** Hears nothing: the default. */
    RequestObserver NONE = new RequestObserver() { };

    /** A caller's request (one NBD request: a long READ or WRITE is several) is about to be sent. */
    default void started(Command command) { }

    /**
     * That request ended.
     *
     * @param bytes   its length (a READ's or WRITE's data; the range a TRIM or WRITE_ZEROES covers; 0 for FLUSH)
     * @param nanos   from its submission to its completion, reconnects waited out included
     * @param failure what it failed with, or null when it succeeded
     */
    default void completed(Command command, int bytes, long nanos, Throwable failure) { }

    /** A lost connection was opened again. */
    default void reconnected() { }
}
