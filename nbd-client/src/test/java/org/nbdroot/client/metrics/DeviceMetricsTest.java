package org.nbdroot.client.metrics;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.Timer;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.nbdroot.proto.NbdException;
import org.nbdroot.proto.wire.Command;

/** Observer calls in, meter values out. */
class DeviceMetricsTest {
    final MeterRegistry registry = new SimpleMeterRegistry();
    final DeviceMetrics metrics = new DeviceMetrics(registry);

    private Timer timer(String command, String outcome) {
        return registry.get(Metrics.REQUESTS).tag(Metrics.TAG_COMMAND, command).tag(Metrics.TAG_OUTCOME, outcome).timer();
    }

    private double bytes(String command) {
        return registry.get(Metrics.BYTES).tag(Metrics.TAG_COMMAND, command).counter().count();
    }

    private long ownMeters() {
        return registry.getMeters().stream().filter(m -> !m.getId().getName().endsWith(".percentile")).count();
    }

    private double gauge(String name) {
        return registry.get(name).gauge().value();
    }

    @Test
    void everyMeterExistsFromTheStart() {
        for (Command c : Metrics.COMMANDS) {
            assertEquals(0, timer(Metrics.tagOf(c), Metrics.OK).count());
            assertEquals(0, timer(Metrics.tagOf(c), Metrics.ERROR).count());
            assertEquals(0, bytes(Metrics.tagOf(c)));
        }
        assertEquals(0, gauge(Metrics.IN_FLIGHT));
        assertEquals(0, registry.get(Metrics.RECONNECTS).counter().count());
        assertEquals(0, gauge(Metrics.LAST_RECONNECT));
        assertEquals(0, gauge(Metrics.JOURNAL_BYTES));
        assertEquals(6 * 3 + 4, ownMeters(), "a timer per command and outcome, bytes per command, 4 more");
        assertEquals(6 * 2 * Metrics.PERCENTILES.length, registry.find(Metrics.REQUESTS + ".percentile").gauges().size(),
                "Micrometer's gauge for each percentile of each timer");
    }

    @Test
    void completionsCountByCommandAndOutcomeWithBytesOfSuccessesOnly() {
        for (int i = 0; i < 3; i++) {
            metrics.started(Command.READ);
            metrics.completed(Command.READ, 4096, 2_000_000, null);
        }
        metrics.started(Command.WRITE);
        metrics.completed(Command.WRITE, 65536, 5_000_000, null);
        metrics.started(Command.WRITE);
        metrics.completed(Command.WRITE, 512, 7_000_000, new NbdException("EIO"));
        metrics.started(Command.TRIM);
        metrics.completed(Command.TRIM, 1 << 20, 1_000_000, null);
        metrics.started(Command.FLUSH);
        metrics.completed(Command.FLUSH, 0, 9_000_000, null);

        assertEquals(3, timer("read", Metrics.OK).count());
        assertEquals(6.0, timer("read", Metrics.OK).totalTime(TimeUnit.MILLISECONDS), 1e-9);
        assertEquals(3 * 4096, bytes("read"));
        assertEquals(1, timer("write", Metrics.OK).count());
        assertEquals(1, timer("write", Metrics.ERROR).count());
        assertEquals(7.0, timer("write", Metrics.ERROR).max(TimeUnit.MILLISECONDS), 1e-9);
        assertEquals(65536, bytes("write"), "a failed WRITE moved no bytes");
        assertEquals(1 << 20, bytes("trim"));
        assertEquals(1, timer("flush", Metrics.OK).count());
        assertEquals(0, timer("write_zeroes", Metrics.OK).count());
        assertEquals(0, gauge(Metrics.IN_FLIGHT), "everything started has completed");
    }

    @Test
    void inFlightIsStartedLessCompleted() {
        metrics.started(Command.READ);
        metrics.started(Command.WRITE);
        metrics.started(Command.WRITE);
        assertEquals(3, gauge(Metrics.IN_FLIGHT));
        metrics.completed(Command.WRITE, 512, 1000, new NbdException("lost"));
        assertEquals(2, gauge(Metrics.IN_FLIGHT));
    }

    @Test
    void percentilesComeFromTheRecordedLatencies() {
        for (int i = 1; i <= 100; i++) {
            metrics.started(Command.READ);
            metrics.completed(Command.READ, 512, i * 1_000_000L, null); // 1 ms .. 100 ms
        }
        var percentiles = timer("read", Metrics.OK).takeSnapshot().percentileValues();
        assertEquals(Metrics.PERCENTILES.length, percentiles.length);
        double p50 = percentiles[0].value(TimeUnit.MILLISECONDS);
        double p99 = percentiles[2].value(TimeUnit.MILLISECONDS);
        assertTrue(p50 > 45 && p50 < 55, "p50 " + p50);
        assertTrue(p99 > 95 && p99 < 105, "p99 " + p99);
    }

    @Test
    void aReconnectIsCountedWithItsTime() {
        long before = System.currentTimeMillis();
        metrics.reconnected();
        metrics.reconnected();
        assertEquals(2, registry.get(Metrics.RECONNECTS).counter().count());
        double last = gauge(Metrics.LAST_RECONNECT);
        assertTrue(last >= before / 1000.0 - 1 && last <= System.currentTimeMillis() / 1000.0 + 1, "last " + last);
    }

    @Test
    void theJsonReportHasTheCountsAndBytesByCommand() {
        metrics.started(Command.READ);
        metrics.completed(Command.READ, 4096, 1_000_000, null);
        metrics.started(Command.READ);
        metrics.completed(Command.READ, 4096, 1_000_000, new NbdException("EIO"));
        String json = StatsReport.json("ggate0", metrics);
        assertTrue(json.startsWith("{\"device\": \"ggate0\", \"requests\": {\"read\": {\"count\": 2, \"errors\": 1, \"bytes\": 4096,"),
                json);
        assertTrue(json.contains("\"write\": {\"count\": 0, \"errors\": 0, \"bytes\": 0,"), json);
        assertTrue(json.endsWith("\"in_flight\": 0, \"reconnects\": 0, \"last_reconnect\": null, \"journal_bytes\": 0}"), json);
        metrics.reconnected();
        assertTrue(StatsReport.json("ggate0", metrics).matches(".*\"reconnects\": 1, \"last_reconnect\": \"20\\d\\d-.*Z\".*"));
    }

    @Test
    void theTextReportHasOneLinePerMeter() {
        metrics.started(Command.WRITE);
        metrics.completed(Command.WRITE, 512, 3_000_000, null);
        String[] lines = StatsReport.text(metrics).split("\n");
        assertEquals(ownMeters(), lines.length);
        assertTrue(java.util.Arrays.asList(lines).contains("nbd.bytes command=write 512"), String.join("\n", lines));
        assertTrue(java.util.Arrays.stream(lines).anyMatch(l -> l.startsWith(
                "nbd.requests command=write outcome=ok count=1 total=0.003000s max=0.003000s p50=")), String.join("\n", lines));
        assertTrue(java.util.Arrays.asList(lines).contains("nbd.reconnect.last 0 (never)"));
    }

    @Test
    void theWarmUpLeavesTheDevicesMetersUntouched() {
        DeviceMetrics fresh = DeviceMetrics.start();
        assertEquals(0, fresh.registry().get(Metrics.REQUESTS).timers().stream().mapToLong(Timer::count).sum());
        assertTrue(StatsReport.json("x", fresh).contains("\"reconnects\": 0"));
    }
}
