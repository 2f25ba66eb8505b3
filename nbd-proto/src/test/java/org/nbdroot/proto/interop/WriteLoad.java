package org.nbdroot.proto.interop;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.netty.buffer.Unpooled;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.wire.Command;

/**
 * A load of block-sized writes over a session, a bounded number in flight, that keeps a byte
 * model of what the session acknowledged: a write changes the model only once it succeeded, so
 * a failed one leaves the old bytes there, which is what the export should still hold. Each
 * pass writes every block once in a shuffled order (two writes to one block in flight together
 * may land in either order), and waits for everything in flight before the next pass.
 * Optionally some writes are WRITE_ZEROES instead, and reads of blocks already written in the
 * pass (so no write to them is in flight) are compared with the model as they come back.
 *
 * <pre>{@code
 * WriteLoad load = new WriteLoad(session, DISK, 7).at(1000, server::kill9);
 * load.run(4000, Duration.ofSeconds(60));
 * assertEquals(0, load.failures().size());
 * load.verify(session);
 * load.verifyFile(file);
 * }</pre>
 */
final class WriteLoad {
    static final int BLOCK = 4096;
    private static final int CHUNK = 1 << 20;

    /** A request the session failed; for a write, the bytes it would have left in its block. */
    record Failure(Command command, long offset, Throwable cause, byte[] attempted) {
        @Override
        public String toString() {
            return command + " at " + offset + ": " + cause;
        }
    }

    /** One action to run before the load sends request number {@code index}. */
    interface Action {
        void run() throws Exception;
    }

    private final NbdSession session;
    private final byte[] model;
    private final Random random;
    private int blocks;
    private int window = 32;
    private int readEvery;
    private int zeroEvery;
    private final Map<Integer, Action> actions = new TreeMap<>();

    private final ConcurrentLinkedQueue<Failure> failures = new ConcurrentLinkedQueue<>();
    private final ConcurrentLinkedQueue<String> mismatches = new ConcurrentLinkedQueue<>();
    private final ConcurrentLinkedQueue<Long> succeededAt = new ConcurrentLinkedQueue<>();
    private final AtomicInteger writesAcknowledged = new AtomicInteger();
    private final AtomicInteger readsVerified = new AtomicInteger();
    private final AtomicLong longestReplyNanos = new AtomicLong();
    private int writesSent;
    private int readsSent;
    private long startedAt;
    private long finishedAt;

    /** A load over the first {@code size} bytes of the export, the model starting as zeroes. */
    WriteLoad(NbdSession session, int size, long seed) {
        this(session, new byte[size], seed);
    }

    /** A load whose model starts as {@code model}: what the export holds now. */
    WriteLoad(NbdSession session, byte[] model, long seed) {
        this.session = session;
        this.model = model;
        this.random = new Random(seed);
        this.blocks = model.length / BLOCK;
    }

    /** Writes only the first {@code n} blocks (the model may be larger, for what the test writes itself). */
    WriteLoad blocks(int n) {
        this.blocks = n;
        return this;
    }

    /** At most {@code n} requests in flight (32 unless told). */
    WriteLoad window(int n) {
        this.window = n;
        return this;
    }

    /** One read after every {@code n} writes. */
    WriteLoad readEvery(int n) {
        this.readEvery = n;
        return this;
    }

    /** Every {@code n}th write is a WRITE_ZEROES of its block instead. */
    WriteLoad zeroEvery(int n) {
        this.zeroEvery = n;
        return this;
    }

    /** Runs {@code action} on the load's thread before write number {@code index} is sent. */
    WriteLoad at(int index, Action action) {
        actions.put(index, action);
        return this;
    }

    /** Sends {@code writes} writes (and the reads asked for) and waits until all are answered. */
    WriteLoad run(int writes, Duration timeout) throws Exception {
        List<Integer> order = new ArrayList<>();
        for (int b = 0; b < blocks; b++) {
            order.add(b);
        }
        Semaphore inFlight = new Semaphore(window);
        List<CompletableFuture<?>> pass = new ArrayList<>();
        List<Integer> written = Collections.synchronizedList(new ArrayList<>()); // blocks settled in this pass
        startedAt = System.nanoTime();
        long deadline = startedAt + timeout.toNanos();
        for (int i = 0; i < writes; i++) {
            if (i % blocks == 0) {
                awaitAll(pass, deadline);
                pass.clear();
                written.clear();
                Collections.shuffle(order, random);
            }
            Action action = actions.get(i);
            if (action != null) {
                action.run();
            }
            int block = order.get(i % blocks);
            acquire(inFlight, deadline);
            pass.add(zeroEvery > 0 && i % zeroEvery == zeroEvery - 1 ? zero(block, inFlight, written)
                    : write(block, inFlight, written));
            if (readEvery > 0 && i % readEvery == readEvery - 1 && !written.isEmpty()) {
                acquire(inFlight, deadline);
                pass.add(read(written.get(random.nextInt(written.size())), inFlight));
            }
        }
        awaitAll(pass, deadline);
        finishedAt = System.nanoTime();
        return this;
    }

    private CompletableFuture<?> write(int block, Semaphore inFlight, List<Integer> written) {
        byte[] data = new byte[BLOCK];
        random.nextBytes(data);
        long offset = (long) block * BLOCK;
        return track(Command.WRITE, offset, data, session.write(offset, Unpooled.wrappedBuffer(data), false),
                inFlight, block, written);
    }

    private CompletableFuture<?> zero(int block, Semaphore inFlight, List<Integer> written) {
        long offset = (long) block * BLOCK;
        return track(Command.WRITE_ZEROES, offset, new byte[BLOCK], session.writeZeroes(offset, BLOCK, 0),
                inFlight, block, written);
    }

    private CompletableFuture<?> read(int block, Semaphore inFlight) {
        long offset = (long) block * BLOCK;
        readsSent++;
        long sent = System.nanoTime();
        return session.read(offset, BLOCK).whenComplete((buf, e) -> {
            replied(sent);
            if (e != null) {
                failures.add(new Failure(Command.READ, offset, unwrap(e), null));
            } else {
                byte[] got = new byte[BLOCK];
                buf.readBytes(got);
                buf.release();
                if (Arrays.mismatch(got, 0, BLOCK, model, (int) offset, (int) offset + BLOCK) != -1) {
                    mismatches.add("read of block at " + offset + " differs from what was acknowledged there");
                } else {
                    readsVerified.incrementAndGet();
                }
                succeededAt.add(System.nanoTime());
            }
            inFlight.release();
        }).handle((v, e) -> null);
    }

    /** Once answered: an acknowledged write's bytes go into the model; either way its block may be read. */
    private CompletableFuture<?> track(Command command, long offset, byte[] data, CompletableFuture<Void> request,
            Semaphore inFlight, int block, List<Integer> written) {
        writesSent++;
        long sent = System.nanoTime();
        // handle(): the future the load waits for completes only after the model is updated.
        return request.handle((v, e) -> {
            replied(sent);
            if (e == null) {
                System.arraycopy(data, 0, model, (int) offset, BLOCK);
                writesAcknowledged.incrementAndGet();
                succeededAt.add(System.nanoTime());
            } else {
                failures.add(new Failure(command, offset, unwrap(e), data));
            }
            written.add(block);
            inFlight.release();
            return null;
        });
    }

    private void replied(long sent) {
        long took = System.nanoTime() - sent;
        longestReplyNanos.accumulateAndGet(took, Math::max);
    }

    private static void acquire(Semaphore inFlight, long deadline) throws InterruptedException {
        if (!inFlight.tryAcquire(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS)) {
            throw new AssertionError("the load made no progress: requests still unanswered at its deadline");
        }
    }

    private static void awaitAll(List<CompletableFuture<?>> futures, long deadline) throws Exception {
        try {
            CompletableFuture.allOf(futures.toArray(CompletableFuture[]::new))
                    .get(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
        } catch (java.util.concurrent.TimeoutException e) {
            long open = futures.stream().filter(f -> !f.isDone()).count();
            throw new AssertionError(open + " requests still unanswered at the load's deadline", e);
        }
    }

    private static Throwable unwrap(Throwable t) {
        while ((t instanceof java.util.concurrent.CompletionException || t instanceof ExecutionException)
                && t.getCause() != null) {
            t = t.getCause();
        }
        return t;
    }

    // ---- What happened ----

    /** What the session acknowledged: the bytes the export must hold. Tests that write more themselves update it. */
    byte[] model() {
        return model;
    }

    List<Failure> failures() {
        return List.copyOf(failures);
    }

    List<Failure> failures(Command command) {
        return failures.stream().filter(f -> f.command() == command).toList();
    }

    /** Reads that came back with bytes other than the model's. */
    List<String> mismatches() {
        return List.copyOf(mismatches);
    }

    int writesSent() {
        return writesSent;
    }

    int readsSent() {
        return readsSent;
    }

    int writesAcknowledged() {
        return writesAcknowledged.get();
    }

    int readsVerified() {
        return readsVerified.get();
    }

    long longestReplyMillis() {
        return TimeUnit.NANOSECONDS.toMillis(longestReplyNanos.get());
    }

    /** When the last request was answered ({@link System#nanoTime}). */
    long finishedAt() {
        return finishedAt;
    }

    /** Milliseconds from {@code nanos} to the first request (write or read) that succeeded after it; -1 if none did. */
    long millisToFirstSuccessAfter(long nanos) {
        return succeededAt.stream().filter(t -> t >= nanos).min(Long::compare)
                .map(t -> TimeUnit.NANOSECONDS.toMillis(t - nanos)).orElse(-1L);
    }

    /** The longest time the load went without a request succeeding (from its start to its end). */
    long longestStallMillis() {
        List<Long> times = new ArrayList<>(succeededAt);
        times.add(startedAt);
        times.add(finishedAt);
        Collections.sort(times);
        long longest = 0;
        for (int i = 1; i < times.size(); i++) {
            longest = Math.max(longest, times.get(i) - times.get(i - 1));
        }
        return TimeUnit.NANOSECONDS.toMillis(longest);
    }

    /**
     * The line the README quotes: {@code FAULT <case>: recovered in <ms> ms, longest stall <ms> ms,
     * <n> writes verified, <f> failed as expected}.
     */
    void report(String fault, long recoveredMillis, int failedAsExpected) {
        System.out.printf("FAULT %s: recovered in %d ms, longest stall %d ms, %d writes verified, %d failed as expected%n",
                fault, recoveredMillis, longestStallMillis(), writesAcknowledged(), failedAsExpected);
    }

    // ---- Checking the export against the model ----

    /**
     * A write that failed may still have landed (NBD leaves its range undefined: a server that
     * died after writing, before replying): where {@code actual} (the export as it is now) holds
     * a failed write's bytes, the model takes them; elsewhere the model keeps the old bytes,
     * which the checks then expect. Not for servers that fail writes before doing them, whose
     * failed writes must have changed nothing. Returns how many failed writes had landed (and
     * changed their block).
     */
    int acceptFailedWritesThatLanded(byte[] actual) {
        int landed = 0;
        for (Failure f : failures) {
            int at = (int) f.offset();
            if (f.attempted() != null && at + BLOCK <= actual.length
                    && Arrays.mismatch(actual, at, at + BLOCK, f.attempted(), 0, BLOCK) == -1
                    && Arrays.mismatch(model, at, at + BLOCK, f.attempted(), 0, BLOCK) != -1) {
                System.arraycopy(f.attempted(), 0, model, at, BLOCK);
                landed++;
            }
        }
        return landed;
    }

    /** Reads the whole model's range back through the session and compares. */
    void verify(NbdSession through) throws Exception {
        verify(through, model.length, 1);
    }

    /**
     * Reads {@code [0, length)} back, {@link #window} chunks of 1 MiB at a time, and compares
     * with the model; a chunk whose read fails is read again up to {@code attempts} times in all
     * (for a server that fails reads on purpose).
     */
    void verify(NbdSession through, int length, int attempts) throws Exception {
        List<CompletableFuture<Void>> reads = new ArrayList<>();
        Semaphore inFlight = new Semaphore(Math.min(window, 16));
        for (int offset = 0; offset < length; offset += CHUNK) {
            int at = offset;
            int len = Math.min(CHUNK, length - offset);
            inFlight.acquire();
            reads.add(readChunk(through, at, len, attempts).whenComplete((v, e) -> inFlight.release()));
        }
        for (CompletableFuture<Void> r : reads) {
            try {
                r.get(120, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
                throw new AssertionError(unwrap(e).getMessage(), unwrap(e));
            }
        }
    }

    private CompletableFuture<Void> readChunk(NbdSession through, int offset, int length, int attempts) {
        return through.read(offset, length).handle((buf, e) -> {
            if (e != null) {
                if (attempts > 1) {
                    return readChunk(through, offset, length, attempts - 1);
                }
                return CompletableFuture.<Void>failedFuture(new AssertionError("reading back at " + offset + " failed: "
                        + unwrap(e), unwrap(e)));
            }
            byte[] got = new byte[length];
            buf.readBytes(got);
            buf.release();
            int at = Arrays.mismatch(got, 0, length, model, offset, offset + length);
            if (at != -1) {
                return CompletableFuture.<Void>failedFuture(new AssertionError("read back through the session: byte "
                        + (offset + at) + " is not what was acknowledged there"));
            }
            return CompletableFuture.<Void>completedFuture(null);
        }).thenCompose(f -> f);
    }

    /** The backing file holds the model, byte for byte (and nothing more). */
    void verifyFile(Path file) throws IOException {
        verifyFile(file, model.length);
    }

    /** The backing file is {@code length} bytes long and holds the model's first {@code length}. */
    void verifyFile(Path file, int length) throws IOException {
        byte[] onDisk = Files.readAllBytes(file);
        assertEquals(length, onDisk.length, "the backing file's length");
        assertEquals(-1, Arrays.mismatch(onDisk, 0, length, model, 0, length),
                "the backing file holds every acknowledged write (first difference at that byte)");
    }

    /** The scripted server's export holds the model. */
    void verifyContents(byte[] contents, String what) {
        assertEquals(-1, Arrays.mismatch(model, contents), what);
    }
}
