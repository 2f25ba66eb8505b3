package org.nbdroot.client.metrics;

import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.Timer;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;
import java.util.function.LongSupplier;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.session.RequestObserver;
import org.nbdroot.proto.wire.Command;

/**
 * A session's requests and reconnects as Micrometer meters (names in {@link Metrics}). Every
 * meter is registered here, at start: after a reroot the daemon can load no class from its
 * image, so nothing may be looked up or created lazily while requests flow.
 */
public final class DeviceMetrics implements RequestObserver {
    private final MeterRegistry registry;
    /** By {@link Command#ordinal()}; null for a command no device sends (DISC, BLOCK_STATUS). */
    private final Timer[] succeeded = new Timer[Command.values().length];
    private final Timer[] failed = new Timer[Command.values().length];
    private final Counter[] bytes = new Counter[Command.values().length];
    private final LongAdder inFlight = new LongAdder();
    private final Counter reconnects;
    private final AtomicLong lastReconnectMillis = new AtomicLong();
    private volatile LongSupplier journalBytes = () -> 0;

    public DeviceMetrics(MeterRegistry registry) {
        this.registry = registry;
        for (Command c : Metrics.COMMANDS) {
            succeeded[c.ordinal()] = Metrics.requests(registry, c, Metrics.OK);
            failed[c.ordinal()] = Metrics.requests(registry, c, Metrics.ERROR);
            bytes[c.ordinal()] = Metrics.bytes(registry, c);
        }
        Metrics.gauge(registry, Metrics.IN_FLIGHT, "requests submitted and not yet completed", "requests", inFlight,
                LongAdder::sum);
        reconnects = Metrics.reconnects(registry);
        Metrics.gauge(registry, Metrics.LAST_RECONNECT, "when the last reconnect happened (0: never)", "seconds",
                lastReconnectMillis, t -> t.get() / 1000.0);
        Metrics.gauge(registry, Metrics.JOURNAL_BYTES, "bytes written but not flushed, kept for replay", "bytes",
                this, m -> m.journalBytes.getAsLong());
    }

    /** Meters for a device on their own registry, every read path run once (see {@link StatsReport#warmUp}). */
    public static DeviceMetrics start() {
        StatsReport.warmUp();
        return new DeviceMetrics(new SimpleMeterRegistry());
    }

    /** The journal gauge follows this session from now on. */
    public void watch(NbdSession session) {
        journalBytes = session::unflushedBytes;
    }

    public MeterRegistry registry() {
        return registry;
    }

    /** When the last reconnect happened, in milliseconds since the epoch; 0 when none did. */
    long lastReconnectMillis() {
        return lastReconnectMillis.get();
    }

    @Override
    public void started(Command command) {
        inFlight.increment();
    }

    @Override
    public void completed(Command command, int length, long nanos, Throwable failure) {
        inFlight.decrement();
        int i = command.ordinal();
        Timer timer = failure == null ? succeeded[i] : failed[i];
        if (timer == null) {
            return;
        }
        timer.record(nanos, TimeUnit.NANOSECONDS);
        if (failure == null) {
            bytes[i].increment(length);
        }
    }

    @Override
    public void reconnected() {
        reconnects.increment();
        lastReconnectMillis.set(System.currentTimeMillis());
    }
}
