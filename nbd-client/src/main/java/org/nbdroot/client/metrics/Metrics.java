package org.nbdroot.client.metrics;

import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.Timer;
import java.time.Duration;
import java.util.List;
import java.util.Locale;
import java.util.function.ToDoubleFunction;
import org.nbdroot.proto.wire.Command;

/**
 * The daemon's meter names and tags, in one place: what {@code nbd-client stats} shows and a
 * scraper would see. A daemon serves one device, so no meter carries the device's name.
 */
public final class Metrics {
    private Metrics() {}

    /** Timer: each NBD request a caller (the kernel's I/O) sent, from submission to completion. */
    public static final String REQUESTS = "nbd.requests";
    /** Counter: bytes of the requests that succeeded (a TRIM's or WRITE_ZEROES' range), by command. */
    public static final String BYTES = "nbd.bytes";
    /** Gauge: requests submitted and not completed yet, those waiting out a reconnect included. */
    public static final String IN_FLIGHT = "nbd.requests.inflight";
    /** Counter: lost connections opened again. */
    public static final String RECONNECTS = "nbd.reconnects";
    /** Gauge: when the last reconnect happened, in seconds since the epoch; 0 when none did. */
    public static final String LAST_RECONNECT = "nbd.reconnect.last";
    /** Gauge: bytes acknowledged but not flushed, kept to write again after a reconnect. */
    public static final String JOURNAL_BYTES = "nbd.journal.bytes";

    public static final String TAG_COMMAND = "command";
    public static final String TAG_OUTCOME = "outcome";
    public static final String OK = "ok";
    public static final String ERROR = "error";

    /** The commands a device sends, each with its meters from the start. */
    public static final List<Command> COMMANDS = List.of(Command.READ, Command.WRITE, Command.FLUSH, Command.TRIM,
            Command.WRITE_ZEROES, Command.CACHE);

    /** Client-side percentiles over a sliding window of about {@link #PERCENTILE_WINDOW}. */
    public static final double[] PERCENTILES = {0.5, 0.9, 0.99, 0.999};
    public static final Duration PERCENTILE_WINDOW = Duration.ofMinutes(1);

    /** read, write, flush, trim, write_zeroes, cache: a command's tag value. */
    public static String tagOf(Command command) {
        return command.name().toLowerCase(Locale.ROOT);
    }

    static Timer requests(MeterRegistry registry, Command command, String outcome) {
        return Timer.builder(REQUESTS)
                .description("NBD requests from submission to completion")
                .tag(TAG_COMMAND, tagOf(command))
                .tag(TAG_OUTCOME, outcome)
                .publishPercentiles(PERCENTILES)
                .percentilePrecision(2)
                .distributionStatisticExpiry(PERCENTILE_WINDOW)
                .register(registry);
    }

    static Counter bytes(MeterRegistry registry, Command command) {
        return Counter.builder(BYTES)
                .description("bytes of the NBD requests that succeeded")
                .baseUnit("bytes")
                .tag(TAG_COMMAND, tagOf(command))
                .register(registry);
    }

    static Counter reconnects(MeterRegistry registry) {
        return Counter.builder(RECONNECTS).description("lost connections opened again").register(registry);
    }

    static <T> Gauge gauge(MeterRegistry registry, String name, String description, String unit, T state,
            ToDoubleFunction<T> value) {
        return Gauge.builder(name, state, value).description(description).baseUnit(unit).strongReference(true)
                .register(registry);
    }
}
