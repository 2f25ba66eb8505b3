package org.nbdroot.client.bench;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Semaphore;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;
import org.nbdroot.proto.NbdServerErrorException;
import org.nbdroot.proto.session.NbdSession;

/**
 * A fio-like load through the engine: {@code iodepth} requests kept outstanding, each
 * completion issuing the next one on the event loop it completed on, for a fixed time.
 *
 * <p>With verify, every block written carries {@link VerifyPattern} data for its generation;
 * a read load first fills the span, a write load reads every block it wrote back at the end.
 * Two writes to one block are never outstanding together, so the expected content is known.
 */
public final class Benchmark {
    /** How long past the runtime outstanding requests may take before the run gives up on them. */
    /** How long requests may go unanswered past the runtime (30 s; the tests shorten it with -Dnbd.bench.grace-seconds). */
    static long graceNanos() {
        return TimeUnit.SECONDS.toNanos(Long.getLong("nbd.bench.grace-seconds", 30));
    }
    private static final int FILL_CHUNK = 1 << 20;

    private final NbdSession session;
    private final BenchConfig config;
    private final long blocks;
    private final VerifyPattern pattern;
    private final LatencyHistogram latency = new LatencyHistogram();
    private final LongAdder ios = new LongAdder();
    private final LongAdder errors = new LongAdder();
    private final LongAdder verifyFailures = new LongAdder();
    private final AtomicLong cursor = new AtomicLong();
    private final int[] generations;
    private final AtomicIntegerArray writing;
    private ByteBuf template;
    private CountDownLatch slotsDone;
    private volatile long deadline;
    private volatile long measureFrom;
    private volatile String stopReason;

    public Benchmark(NbdSession session, BenchConfig config) {
        this.session = session;
        this.config = config;
        this.blocks = config.span() / config.blockSize();
        this.pattern = new VerifyPattern(config.seed());
        if (config.verify()) {
            if (blocks > 64L << 20) {
                throw new IllegalArgumentException("--verify tracks every block: use --size to verify at most 64 Mi blocks");
            }
            generations = new int[(int) blocks];
            writing = new AtomicIntegerArray((int) blocks);
        } else {
            generations = null;
            writing = null;
        }
    }

    public BenchResult run() throws Exception {
        long verified = 0;
        long reconnectsBefore = session.reconnects();
        if (config.verify() && !config.workload().writes) {
            fillSpan();
        }
        if (!config.verify()) {
            template = ByteBufAllocator.DEFAULT.directBuffer(config.blockSize());
            ThreadLocalRandom random = ThreadLocalRandom.current();
            while (template.isWritable(8)) {
                template.writeLong(random.nextLong());
            }
        }
        slotsDone = new CountDownLatch(config.iodepth());
        long start = System.nanoTime() + config.ramp().toNanos();
        measureFrom = start;
        deadline = start + config.runtime().toNanos();
        for (int slot = 0; slot < config.iodepth(); slot++) {
            issue();
        }
        boolean finished = slotsDone.await(config.ramp().toNanos() + config.runtime().toNanos() + graceNanos(),
                TimeUnit.NANOSECONDS);
        long elapsed = System.nanoTime() - start;
        if (!finished) {
            stopReason = slotsDone.getCount() + " requests got no reply within " + TimeUnit.NANOSECONDS.toSeconds(graceNanos())
                    + " s after the runtime";
            errors.add(slotsDone.getCount());
        }
        if (template != null) {
            template.release();
        }
        if (finished && config.verify() && config.workload().writes) {
            verified = readBack();
        } else if (config.verify()) {
            verified = ios.sum();
        }
        return new BenchResult(config, session.connectionCount(), elapsed, ios.sum(), ios.sum() * config.blockSize(),
                errors.sum() + verifyFailures.sum(), verifyFailures.sum(), verified, latency, stopReason,
                session.reconnects() - reconnectsBefore);
    }

    private void issue() {
        if (stopReason != null || System.nanoTime() >= deadline) {
            slotsDone.countDown();
            return;
        }
        long block = nextBlock();
        if (block < 0) {
            slotsDone.countDown(); // every block is being written: fewer slots than iodepth remain busy
            return;
        }
        long offset = block * config.blockSize();
        long t0 = System.nanoTime();
        if (config.workload().writes) {
            int generation = 0;
            ByteBuf data;
            if (config.verify()) {
                // Never a generation used before, even after a failed write: a lost write must not read back as a match.
                generation = Math.abs(generations[(int) block]) + 1;
                data = ByteBufAllocator.DEFAULT.directBuffer(config.blockSize());
                pattern.fill(data, offset, config.blockSize(), generation);
            } else {
                data = template.retainedDuplicate();
            }
            int written = generation;
            session.write(offset, data, false).whenComplete((v, failure) -> {
                if (config.verify()) {
                    // Negative: what the block holds is unknown (the write may or may not have landed).
                    generations[(int) block] = failure == null ? written : -written;
                    writing.set((int) block, 0);
                }
                done(t0, failure);
            });
        } else {
            session.read(offset, config.blockSize()).whenComplete((data, failure) -> {
                if (data != null) {
                    if (config.verify() && !pattern.matches(data, offset, generations[(int) block])) {
                        verifyFailures.increment();
                    }
                    data.release();
                }
                done(t0, failure);
            });
        }
    }

    private void done(long t0, Throwable failure) {
        boolean measured = t0 >= measureFrom;
        if (measured) {
            latency.record(System.nanoTime() - t0);
        }
        if (failure == null) {
            if (measured) {
                ios.increment();
            }
        } else {
            errors.increment();
            Throwable cause = failure instanceof java.util.concurrent.CompletionException && failure.getCause() != null
                    ? failure.getCause() : failure;
            if (!(cause instanceof NbdServerErrorException)) {
                // The connection is gone or the request is impossible: issuing more would only fail faster.
                stopReason = cause.getMessage();
            }
        }
        issue();
    }

    /** The next block to use; with verify, claimed so no other write to it is outstanding. */
    private long nextBlock() {
        for (int attempt = 0; attempt < 64; attempt++) {
            long block = config.workload().random
                    ? ThreadLocalRandom.current().nextLong(blocks)
                    : Math.floorMod(cursor.getAndIncrement(), blocks);
            if (writing == null || !config.workload().writes || writing.compareAndSet((int) block, 0, 1)) {
                return block;
            }
        }
        return -1;
    }

    /** Writes generation 1 over the whole span, so a read load has something to check. */
    private void fillSpan() throws Exception {
        Semaphore window = new Semaphore(8);
        long span = blocks * config.blockSize();
        LongAdder failures = new LongAdder();
        for (long offset = 0; offset < span; offset += FILL_CHUNK) {
            int length = (int) Math.min(FILL_CHUNK, span - offset);
            acquireOrGiveUp(window, 1, "filling the span with the verify pattern");
            ByteBuf data = ByteBufAllocator.DEFAULT.directBuffer(length);
            // Words depend on their offset only, so a chunk is the concatenation of its blocks' patterns.
            pattern.fill(data, offset, length, 1);
            session.write(offset, data, false).whenComplete((v, e) -> {
                if (e != null) {
                    failures.increment();
                }
                window.release();
            });
        }
        acquireOrGiveUp(window, 8, "filling the span with the verify pattern");
        if (failures.sum() > 0) {
            throw new IllegalStateException("filling the span with the verify pattern failed for "
                    + failures.sum() + " requests");
        }
        java.util.Arrays.fill(generations, 1);
    }

    /**
     * Takes {@code permits} of the window, waiting {@link #graceNanos()} at most for each: a server
     * that stopped answering (and a session that reconnects for ever) would otherwise hold the
     * unmeasured phases of a verified run for good, where the measured one gives up.
     */
    private static void acquireOrGiveUp(Semaphore window, int permits, String phase) throws InterruptedException {
        if (!window.tryAcquire(permits, graceNanos(), TimeUnit.NANOSECONDS)) {
            throw new IllegalStateException(phase + ": no reply for " + TimeUnit.NANOSECONDS.toSeconds(graceNanos())
                    + " s; giving up");
        }
    }

    /** Reads back every block the run wrote and compares it with its last generation. */
    private long readBack() throws InterruptedException {
        Semaphore window = new Semaphore(config.iodepth());
        long checked = 0;
        for (int block = 0; block < blocks; block++) {
            int generation = generations[block];
            if (generation <= 0) {
                continue;
            }
            long offset = (long) block * config.blockSize();
            acquireOrGiveUp(window, 1, "reading back what the run wrote");
            checked++;
            session.read(offset, config.blockSize()).whenComplete((data, failure) -> {
                if (failure != null) {
                    errors.increment();
                } else {
                    if (!pattern.matches(data, offset, generation)) {
                        verifyFailures.increment();
                    }
                    data.release();
                }
                window.release();
            });
        }
        acquireOrGiveUp(window, config.iodepth(), "reading back what the run wrote");
        return checked;
    }
}
