package org.nbdroot.client.cli;

import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import java.time.Duration;
import java.util.Locale;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;
import org.nbdroot.client.bench.BenchConfig;
import org.nbdroot.client.bench.BenchConfig.Workload;
import org.nbdroot.client.bench.BenchResult;
import org.nbdroot.client.bench.Benchmark;
import org.nbdroot.client.metrics.DeviceMetrics;
import org.nbdroot.client.metrics.StatsReport;
import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.session.SessionOptions;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/** {@code nbd-client bench}: a fio-like load through the engine. */
@Command(name = "bench", mixinStandardHelpOptions = true,
        description = "Load an export like fio does and report IOPS, throughput and latency percentiles.")
final class BenchCommand implements Callable<Integer> {
    @Mixin
    ServerTarget target;

    @Mixin
    ConnectionOptions connection;

    @Option(names = "--rw", required = true, paramLabel = "read|write|randread|randwrite", description = "Access pattern.")
    String rw;

    @Option(names = "--bs", defaultValue = "4k", converter = SizeConverter.class, paramLabel = "SIZE",
            description = "Bytes per request (4096, 4k, 1M); default ${DEFAULT-VALUE}.")
    long blockSize;

    @Option(names = "--iodepth", defaultValue = "32", paramLabel = "N", description = "Requests outstanding; default ${DEFAULT-VALUE}.")
    int iodepth;

    @Option(names = "--runtime", defaultValue = "10", paramLabel = "SECONDS", description = "Duration; default ${DEFAULT-VALUE} s.")
    double runtimeSeconds;

    @Option(names = "--ramp", defaultValue = "0", paramLabel = "SECONDS",
            description = "Run this long before measuring, as fio's ramp_time; default ${DEFAULT-VALUE}.")
    double rampSeconds;

    @Option(names = "--size", converter = SizeConverter.class, paramLabel = "SIZE",
            description = "Use only this many bytes from the start of the export (default: all of it).")
    Long span;

    @Option(names = "--verify", description = "Write a checkable pattern and check every block read back; mismatches count as errors.")
    boolean verify;

    @Option(names = "--seed", defaultValue = "1", description = "Seed of the verify pattern; default ${DEFAULT-VALUE}.")
    long seed;

    @Option(names = "--threads", defaultValue = "0", paramLabel = "N",
            description = "Event loop threads (default: one per connection, at most the number of CPUs).")
    int threads;

    @Option(names = "--json", description = "Print one JSON object.")
    boolean json;

    @Option(names = "--metrics", description = {"Count with the daemon's meters too (what nbd-client stats shows), ramp",
            "included, and print them after the result (with --json: as its \"metrics\" member)."})
    boolean metrics;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        Workload workload;
        try {
            workload = Workload.valueOf(rw.toUpperCase(Locale.ROOT));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("--rw must be read, write, randread or randwrite, not '" + rw + "'");
        }
        if (blockSize <= 0 || blockSize > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("--bs must be between 1 byte and 2 GiB");
        }
        // Written so that NaN fails too; a million seconds (11 days) is more than any run.
        if (iodepth < 1 || !(runtimeSeconds > 0 && runtimeSeconds <= 1e6) || !(rampSeconds >= 0 && rampSeconds <= 1e6)) {
            throw new IllegalArgumentException("--iodepth and --runtime must be positive, --ramp not negative, and each"
                    + " duration at most 1000000 s");
        }
        if (verify && blockSize % 8 != 0) {
            throw new IllegalArgumentException("--verify needs --bs to be a multiple of 8");
        }
        SessionOptions options = connection.sessionOptions(target.uri());
        DeviceMetrics meters = metrics ? new DeviceMetrics(new SimpleMeterRegistry()) : null;
        if (meters != null) {
            options = options.withObserver(meters);
        }
        int loops = threads > 0 ? threads : Math.min(options.connections(), Runtime.getRuntime().availableProcessors());
        BenchResult result;
        String transport;
        try (Engine engine = new Engine(loops, options)) {
            transport = engine.transport.name();
            NbdSession session = engine.open(target.uri(), options);
            if (meters != null) {
                meters.watch(session);
            }
            try {
                ExportInfo export = session.export();
                long usable = span == null ? export.size() : Math.min(span, export.size());
                if (usable < blockSize) {
                    throw new IllegalArgumentException("the span of " + usable + " bytes is smaller than --bs " + blockSize);
                }
                if (blockSize % export.blockSize().minimum() != 0) {
                    throw new IllegalArgumentException("--bs " + blockSize + " is not a multiple of the export's minimum block size "
                            + export.blockSize().minimum());
                }
                if (options.connections() > 1 && session.connectionCount() == 1) {
                    spec.commandLine().getErr().println("nbd-client: the server does not allow several connections "
                            + "(no can_multi_conn flag): using one");
                }
                BenchConfig config = new BenchConfig(workload, (int) blockSize, iodepth,
                        Duration.ofNanos((long) (runtimeSeconds * 1e9)), Duration.ofNanos((long) (rampSeconds * 1e9)), usable - usable % blockSize, verify, seed);
                result = new Benchmark(session, config).run();
            } finally {
                try {
                    session.disconnect().get(5, TimeUnit.SECONDS);
                } catch (java.util.concurrent.TimeoutException e) {
                    // A polite disconnect waits for what is in flight: a stalled server does not answer. The
                    // engine's threads end with the command; what the run found is what is reported.
                }
            }
        }
        var out = spec.commandLine().getOut();
        if (json) {
            var o = toJson(result, transport);
            if (meters != null) {
                o.put("metrics", StatsReport.jsonObject(target.uri().toString(), meters));
            }
            out.println(Json.write(o));
        } else {
            out.println(toText(result, transport));
            if (meters != null) {
                out.print(StatsReport.text(meters));
            }
        }
        out.flush();
        if (result.stopReason() != null) {
            spec.commandLine().getErr().println("nbd-client: bench stopped early: " + result.stopReason());
        }
        return result.errors() == 0 ? 0 : NbdClientCommand.EXIT_FAILURE;
    }

    static java.util.Map<String, Object> toJson(BenchResult r, String transport) {
        var o = Json.object();
        o.put("rw", r.config().workload().displayName());
        o.put("transport", transport);
        o.put("bs", r.config().blockSize());
        o.put("iodepth", r.config().iodepth());
        o.put("connections", r.connections());
        o.put("runtime_s", r.seconds());
        o.put("ios", r.ios());
        o.put("iops", r.iops());
        o.put("bytes_per_second", r.bytesPerSecond());
        o.put("errors", r.errors());
        o.put("verify", r.config().verify());
        o.put("verify_failures", r.verifyFailures());
        o.put("verified_blocks", r.verifiedBlocks());
        o.put("reconnects", r.reconnects());
        o.put("p50_us", r.percentileMicros(50));
        o.put("p90_us", r.percentileMicros(90));
        o.put("p99_us", r.percentileMicros(99));
        o.put("p999_us", r.percentileMicros(99.9));
        o.put("max_us", r.latency().max() / 1000);
        o.put("stop_reason", r.stopReason());
        return o;
    }

    static String toText(BenchResult r, String transport) {
        BenchConfig c = r.config();
        StringBuilder s = new StringBuilder();
        s.append(String.format(Locale.ROOT, "%s: bs=%d iodepth=%d connections=%d transport=%s runtime=%.1fs%n",
                c.workload().displayName(), c.blockSize(), c.iodepth(), r.connections(), transport, r.seconds()));
        s.append(String.format(Locale.ROOT, "  iops: %.0f   throughput: %.1f MiB/s (%.1f MB/s)%n",
                r.iops(), r.bytesPerSecond() / (1 << 20), r.bytesPerSecond() / 1e6));
        s.append(String.format(Locale.ROOT, "  latency (us): p50 %d   p90 %d   p99 %d   p99.9 %d   max %d%n",
                r.percentileMicros(50), r.percentileMicros(90), r.percentileMicros(99), r.percentileMicros(99.9),
                r.latency().max() / 1000));
        s.append("  errors: ").append(r.errors()).append("   reconnects: ").append(r.reconnects());
        if (c.verify()) {
            s.append("   verified blocks: ").append(r.verifiedBlocks()).append("   verify failures: ").append(r.verifyFailures());
        }
        return s.toString();
    }
}
