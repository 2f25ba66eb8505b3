package org.nbdroot.client.metrics;

import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.FunctionCounter;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.Meter;
import io.micrometer.core.instrument.MockClock;
import io.micrometer.core.instrument.Tag;
import io.micrometer.core.instrument.Timer;
import io.micrometer.core.instrument.distribution.HistogramSnapshot;
import io.micrometer.core.instrument.distribution.ValueAtPercentile;
import io.micrometer.core.instrument.simple.SimpleConfig;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import org.nbdroot.client.cli.Json;
import org.nbdroot.proto.NbdException;
import org.nbdroot.proto.wire.Command;

/** What {@code nbd-client stats} prints: one line per meter, or one JSON object by command. */
public final class StatsReport {
    private static final String PERCENTILE_SUFFIX = ".percentile";

    private StatsReport() {}

    /**
     * One line per meter, sorted by name and tags: {@code nbd.bytes command=read 49152}. The
     * gauges Micrometer adds for each of a timer's percentiles are left out: the timer's line has them.
     */
    public static String text(DeviceMetrics metrics) {
        List<Meter> meters = new ArrayList<>(metrics.registry().getMeters());
        meters.removeIf(m -> m.getId().getName().endsWith(PERCENTILE_SUFFIX));
        meters.sort(Comparator.comparing((Meter m) -> m.getId().getName()).thenComparing(m -> tags(m.getId())));
        StringBuilder out = new StringBuilder();
        for (Meter m : meters) {
            out.append(m.getId().getName());
            String tags = tags(m.getId());
            if (!tags.isEmpty()) {
                out.append(' ').append(tags);
            }
            out.append(' ').append(value(m, metrics)).append('\n');
        }
        return out.toString();
    }

    private static String tags(Meter.Id id) {
        return id.getTags().stream().map(t -> t.getKey() + "=" + t.getValue()).collect(Collectors.joining(" "));
    }

    private static String value(Meter m, DeviceMetrics metrics) {
        if (m instanceof Timer t) {
            HistogramSnapshot s = t.takeSnapshot();
            StringBuilder out = new StringBuilder("count=").append(s.count())
                    .append(" total=").append(seconds(s.total(TimeUnit.SECONDS)))
                    .append(" max=").append(seconds(s.max(TimeUnit.SECONDS)));
            for (ValueAtPercentile p : s.percentileValues()) {
                out.append(" p").append(percentile(p.percentile())).append('=').append(seconds(p.value(TimeUnit.SECONDS)));
            }
            return out.toString();
        }
        if (m instanceof Counter c) {
            return Long.toString((long) c.count());
        }
        if (m instanceof FunctionCounter c) {
            return Long.toString((long) c.count());
        }
        if (m instanceof Gauge g) {
            if (m.getId().getName().equals(Metrics.LAST_RECONNECT)) {
                long millis = metrics.lastReconnectMillis();
                return millis == 0 ? "0 (never)" : (millis / 1000) + " (" + Instant.ofEpochMilli(millis) + ")";
            }
            return Long.toString((long) g.value());
        }
        StringBuilder out = new StringBuilder();
        m.measure().forEach(x -> out.append(x.getStatistic().getTagValueRepresentation()).append('=').append(x.getValue()).append(' '));
        return out.toString().strip();
    }

    private static String seconds(double s) {
        return String.format(Locale.ROOT, "%.6fs", s);
    }

    /** 0.5 is p50, 0.999 is p99.9. */
    private static String percentile(double p) {
        String s = String.format(Locale.ROOT, "%.1f", p * 100);
        return s.endsWith(".0") ? s.substring(0, s.length() - 2) : s;
    }

    /**
     * {@code {"device": "ggate0", "requests": {"read": {"count": 12, "errors": 0, "bytes": 49152,
     * "total_ms": ..., "max_ms": ..., "p50_ms": ...}, ...}, "in_flight": 0, "reconnects": 1,
     * "last_reconnect": "2026-...Z" or null, "journal_bytes": 0}}: counts of every request, the
     * rest of those that succeeded.
     */
    public static String json(String device, DeviceMetrics metrics) {
        return Json.write(jsonObject(device, metrics));
    }

    /** What {@link #json} writes, to put in a larger object. */
    public static Map<String, Object> jsonObject(String device, DeviceMetrics metrics) {
        var registry = metrics.registry();
        Map<String, Object> requests = Json.object();
        for (Command c : Metrics.COMMANDS) {
            String command = Metrics.tagOf(c);
            HistogramSnapshot ok = timer(metrics, command, Metrics.OK).takeSnapshot();
            long errors = timer(metrics, command, Metrics.ERROR).count();
            Map<String, Object> one = Json.object();
            one.put("count", ok.count() + errors);
            one.put("errors", errors);
            one.put("bytes", (long) registry.get(Metrics.BYTES).tag(Metrics.TAG_COMMAND, command).counter().count());
            one.put("total_ms", ok.total(TimeUnit.MILLISECONDS));
            one.put("max_ms", ok.max(TimeUnit.MILLISECONDS));
            for (ValueAtPercentile p : ok.percentileValues()) {
                one.put("p" + percentile(p.percentile()) + "_ms", p.value(TimeUnit.MILLISECONDS));
            }
            requests.put(command, one);
        }
        Map<String, Object> out = Json.object();
        out.put("device", device);
        out.put("requests", requests);
        out.put("in_flight", (long) registry.get(Metrics.IN_FLIGHT).gauge().value());
        out.put("reconnects", (long) registry.get(Metrics.RECONNECTS).counter().count());
        long last = metrics.lastReconnectMillis();
        out.put("last_reconnect", last == 0 ? null : Instant.ofEpochMilli(last).toString());
        out.put("journal_bytes", (long) registry.get(Metrics.JOURNAL_BYTES).gauge().value());
        return out;
    }

    private static Timer timer(DeviceMetrics metrics, String command, String outcome) {
        return metrics.registry().get(Metrics.REQUESTS).tags(List.of(Tag.of(Metrics.TAG_COMMAND, command),
                Tag.of(Metrics.TAG_OUTCOME, outcome))).timer();
    }

    /**
     * Runs every path of the meters once, on meters of its own: recording, both reports (with and
     * without a reconnect), and the rotation of the percentiles' time window (a clock moved on).
     * After a reroot no class of the image can be loaded, so each must be loaded before.
     */
    static void warmUp() {
        MockClock clock = new MockClock();
        SimpleMeterRegistry registry = new SimpleMeterRegistry(SimpleConfig.DEFAULT, clock);
        DeviceMetrics metrics = new DeviceMetrics(registry);
        for (int round = 0; round < 2; round++) {
            for (Command c : Metrics.COMMANDS) {
                metrics.started(c);
                metrics.completed(c, 4096, 1_000_000, null);
                metrics.started(c);
                metrics.completed(c, 4096, 2_000_000, new NbdException("warm-up"));
            }
            text(metrics);
            json("warm-up", metrics);
            metrics.reconnected();
            clock.add(Metrics.PERCENTILE_WINDOW.multipliedBy(2));
        }
        text(metrics);
        json("warm-up", metrics);
        registry.close();
    }
}
