package org.nbdroot.client.metrics;

import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import org.nbdroot.proto.session.RequestObserver;
import org.nbdroot.proto.wire.Command;

/**
 * A device's meters while they start on a thread of their own. Their start (loading Micrometer
 * and running every read path once, see {@link DeviceMetrics#start}) costs about as much CPU as
 * opening the connection, and the two need nothing from each other: on two cores, doing them
 * side by side brings the device up sooner. The session is given this observer at once and
 * hears through it the meters once {@link #await} has returned; the daemon awaits them before
 * the device takes requests, so none goes uncounted.
 */
public final class StartingMetrics implements RequestObserver {
    private final CompletableFuture<DeviceMetrics> started = new CompletableFuture<>();
    private volatile RequestObserver target = RequestObserver.NONE;

    private StartingMetrics() {}

    /** Starts the meters on a new thread. */
    public static StartingMetrics begin() {
        StartingMetrics metrics = new StartingMetrics();
        Thread thread = new Thread(() -> {
            try {
                metrics.started.complete(DeviceMetrics.start());
            } catch (Throwable e) {
                metrics.started.completeExceptionally(e);
            }
        }, "nbd-metrics-start");
        thread.setDaemon(true);
        thread.start();
        return metrics;
    }

    /** Waits for the meters; from now on the session's requests reach them. */
    public DeviceMetrics await() throws InterruptedException {
        DeviceMetrics metrics;
        try {
            metrics = started.get();
        } catch (ExecutionException e) {
            throw new IllegalStateException("the meters did not start: " + e.getCause(), e.getCause());
        }
        target = metrics;
        return metrics;
    }

    @Override
    public void started(Command command) {
        target.started(command);
    }

    @Override
    public void completed(Command command, int bytes, long nanos, Throwable failure) {
        target.completed(command, bytes, nanos, failure);
    }

    @Override
    public void reconnected() {
        target.reconnected();
    }
}
