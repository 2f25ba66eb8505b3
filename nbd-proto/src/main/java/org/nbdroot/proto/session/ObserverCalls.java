package org.nbdroot.proto.session;

import java.util.logging.Level;
import java.util.logging.Logger;
import org.nbdroot.proto.wire.Command;

/**
 * How {@link NbdSession} tells its {@link RequestObserver}: one call as a request is submitted,
 * one as it completes, before the caller's future does. Heard: every READ, WRITE, FLUSH, TRIM,
 * WRITE_ZEROES and CACHE the session sends for a caller, and its own FLUSH that empties the
 * journal; not a journal replay nor a retiring connection's last FLUSH, which are no one's
 * requests. A broken observer is logged, never allowed to leave a caller's future hanging.
 */
final class ObserverCalls {
    private static final Logger LOG = Logger.getLogger(ObserverCalls.class.getName());

    private ObserverCalls() {}

    /** Returns the time it started, for its latency. */
    static long started(RequestObserver observer, Command command) {
        try {
            observer.started(command);
        } catch (RuntimeException e) {
            LOG.log(Level.WARNING, "the request observer failed", e);
        }
        return System.nanoTime();
    }

    static void completed(RequestObserver observer, NbdRequest request, long started, Throwable failure) {
        try {
            observer.completed(request.command, request.length, System.nanoTime() - started, failure);
        } catch (RuntimeException e) {
            LOG.log(Level.WARNING, "the request observer failed", e);
        }
    }
}
