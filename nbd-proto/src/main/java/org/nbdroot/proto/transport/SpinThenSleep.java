package org.nbdroot.proto.transport;

import io.netty.channel.SelectStrategy;
import io.netty.util.IntSupplier;

/**
 * An event loop's select strategy that polls without sleeping for a short while after it last
 * had work, then sleeps in {@code epoll_wait} as usual. While I/O flows, a reply finds the loop
 * awake: neither the server's send nor ours pays for waking a sleeping thread (on two cores that
 * wake-up was a tenth of the server's CPU per request). When the disk is idle the loop sleeps
 * after {@code spinNanos}: an idle daemon pays one window per wake-up (a timer every 50 ms or
 * more: about 0.1% of a CPU). One instance per event loop: it is only ever called from its
 * loop's thread.
 */
final class SpinThenSleep implements SelectStrategy {
    private final long spinNanos;
    private long lastWorkNanos;
    /** True after SELECT, and at first: the next call starts a window (nanoTime has no zero to start from). */
    private boolean slept = true;

    SpinThenSleep(long spinNanos) {
        this.spinNanos = spinNanos;
    }

    @Override
    public int calculateStrategy(IntSupplier selectNow, boolean hasTasks) throws Exception {
        int ready = selectNow.get();
        long now = System.nanoTime();
        if (ready > 0 || hasTasks || slept) {
            // Work now, or we were just woken (by I/O, a task or a timer): spin from here.
            slept = false;
            lastWorkNanos = now;
            return ready;
        }
        if (now - lastWorkNanos < spinNanos) {
            return SelectStrategy.CONTINUE;
        }
        slept = true;
        return SelectStrategy.SELECT;
    }
}
