package org.nbdroot.proto.session;

/**
 * Writes acknowledged earlier that may be missing on the server: a replay the server refused or
 * could not make, a journal that was incomplete when a connection was lost, a FLUSH the server
 * failed. A FLUSH that succeeded afterwards would tell a file system that data it may have lost
 * is durable, so the callers' FLUSHes report it, as Linux reports a lost page at the next fsync:
 * the first one to complete after the loss fails, and so does every FLUSH already sent by then
 * (each may stand for a caller that relied on those writes); FLUSHes sent later succeed again.
 */
final class LossReport {
    /** Why, until a FLUSH reports it; null: nothing pending. */
    private String pending;
    /** The callers' FLUSHes sent so far, numbered from 1. */
    private long sent;
    /** FLUSHes numbered up to here, sent before the last loss was reported, fail with {@link #reported}. */
    private long failUpTo;
    private String reported;

    synchronized void lost(String why) {
        if (pending == null) {
            pending = why;
        }
    }

    /** Why, when a loss waits for a FLUSH to report it; else null. */
    synchronized String pending() {
        return pending;
    }

    /** A caller's FLUSH is being sent: its number. */
    synchronized long flushSent() {
        return ++sent;
    }

    /** The server completed FLUSH number {@code n}: null, or why it must fail all the same. */
    synchronized String flushed(long n) {
        if (pending != null) {
            reported = pending;
            pending = null;
            failUpTo = sent;
            return reported;
        }
        return n <= failUpTo ? reported : null;
    }
}
