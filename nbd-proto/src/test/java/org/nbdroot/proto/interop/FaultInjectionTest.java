package org.nbdroot.proto.interop;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.RandomAccessFile;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.nbdroot.proto.NbdServerErrorException;
import org.nbdroot.proto.NbdUnsupportedException;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.session.ReconnectPolicy;
import org.nbdroot.proto.session.SessionOptions;
import org.nbdroot.proto.wire.Command;
import org.nbdroot.proto.wire.NbdError;

/**
 * Faults injected under a write load ("Never lose a write"). Each case ends by comparing what
 * the session acknowledged ({@link WriteLoad}'s model) with what reads back through the session
 * and with the server's backing file, and prints one {@code FAULT ...} line with its figures.
 * Server crashes (SIGKILL and restart) are {@link ReconnectTest}.
 */
class FaultInjectionTest {
    @RegisterExtension
    static final EngineExtension engine = new EngineExtension(2);

    static final int DISK = 16 << 20;
    static final int BLOCK = WriteLoad.BLOCK;

    @TempDir
    Path dir;

    private Path disk() throws Exception {
        Path file = dir.resolve("disk.img");
        Files.write(file, new byte[DISK]);
        return file;
    }

    private PeerServer nbdkitFile(Path file, List<String> options, String... parameters) throws Exception {
        String[] args = new String[parameters.length + 1];
        args[0] = "file=" + file;
        System.arraycopy(parameters, 0, args, 1, parameters.length);
        return PeerServer.nbdkit("nbdkit file " + options, dir, file, options, "file", args);
    }

    // ---- 2. A network that drops everything ----

    /**
     * Longer than the request timeout, so that the connection is declared dead while the network
     * is still a black hole and the first reconnect meets it too (its handshake times out). At
     * exactly the timeout (30 s) the two race: whether any reconnect attempt meets the black hole
     * would depend on the watchdog's phase.
     */
    static final Duration BLACKHOLE = Duration.ofSeconds(35);

    @Test
    void aNetworkThatDropsEverythingForLongerThanTheRequestTimeoutLosesNoWrite() throws Exception {
        Path file = disk();
        // The daemon's defaults: 30 s request timeout, 10 s handshake timeout, reconnect for ever.
        SessionOptions options = SessionOptions.DEFAULT.withHandshakeTimeout(Duration.ofSeconds(10))
                .withReconnect(ReconnectPolicy.FOREVER);
        assertEquals(Duration.ofSeconds(30), options.requestTimeout());
        WriteLoad load;
        AtomicLong blackholedAt = new AtomicLong();
        AtomicReference<CompletableFuture<Long>> healed = new AtomicReference<>();
        try (PeerServer server = nbdkitFile(file, List.of());
                BlackholeProxy proxy = new BlackholeProxy((InetSocketAddress) server.uri.endpoint().socketAddress())) {
            try (NbdSession session = NbdSession.connect(engine.connector(), proxy.uri(""), options).get(10, TimeUnit.SECONDS)) {
                int count = 3000;
                load = new WriteLoad(session, DISK, 21).readEvery(4).at(count / 4, () -> {
                    proxy.blackhole();
                    blackholedAt.set(System.nanoTime());
                    healed.set(CompletableFuture.supplyAsync(proxy::heal,
                            CompletableFuture.delayedExecutor(BLACKHOLE.toMillis(), TimeUnit.MILLISECONDS)));
                });
                load.run(count, Duration.ofSeconds(70));
                assertEquals(List.of(), load.failures(), "no request failed: they waited and were sent again");
                assertEquals(List.of(), load.mismatches());
                assertEquals(1, session.reconnects(), "the dead connection was replaced once");
                assertTrue(proxy.acceptedWhileBlackholed() >= 1,
                        "a reconnect attempt met the black hole and was given up by the handshake timeout");
                long healedAt = healed.get().get(1, TimeUnit.SECONDS);
                long outage = TimeUnit.NANOSECONDS.toMillis(healedAt - blackholedAt.get());
                assertTrue(outage >= BLACKHOLE.toMillis(), "the black hole lasted " + outage + " ms");
                session.flush().get(10, TimeUnit.SECONDS);
                load.verify(session);
                long recovered = load.millisToFirstSuccessAfter(healedAt);
                long completed = TimeUnit.NANOSECONDS.toMillis(load.finishedAt() - healedAt);
                assertTrue(recovered >= 0, "requests succeeded after the heal");
                System.out.printf("FAULT black hole %d s: load completed %d ms after the heal; %d reconnect attempts met "
                        + "the black hole%n", BLACKHOLE.toSeconds(), completed, proxy.acceptedWhileBlackholed());
                load.report("black hole " + BLACKHOLE.toSeconds() + " s", recovered, 0);
            }
        }
        load.verifyFile(file);
    }

    // ---- 3. A server that fails some requests ----

    /** {@code ...Write id=7 return=-1 error=EIO}, and the line that opened id 7. */
    private static final Pattern ENTER = Pattern.compile("connection=(\\d+) (Read|Write) id=(\\d+) offset=0x([0-9a-f]+) ");
    private static final Pattern LEAVE = Pattern.compile("connection=(\\d+) \\.\\.\\.(Read|Write) id=(\\d+) return=(-?\\d+)(?: error=(\\w+))?");

    @Test
    void aServerFailingOnePercentOfRequestsFailsExactlyThoseAndChangesNothingElse() throws Exception {
        Path file = disk();
        Path log = dir.resolve("requests.log");
        WriteLoad load;
        // The log filter above the error filter sees the error each request was given.
        try (PeerServer server = nbdkitFile(file, List.of("--filter=log", "--filter=error"),
                "logfile=" + log, "error=EIO", "error-rate=1%");
                NbdSession session = NbdSession.connect(engine.connector(), server.uri, SessionOptions.DEFAULT)
                        .get(10, TimeUnit.SECONDS)) {
            load = new WriteLoad(session, DISK, 31).readEvery(2).run(2 * DISK / BLOCK, Duration.ofSeconds(120));
            assertEquals(0, session.reconnects());
            int requests = load.writesSent() + load.readsSent();
            List<String> failedAtServer = failedInLog(log, requests);
            List<String> failedAtClient = new ArrayList<>();
            for (WriteLoad.Failure f : load.failures()) {
                NbdServerErrorException e = assertInstanceOf(NbdServerErrorException.class, f.cause(), f.toString());
                assertEquals(NbdError.EIO, e.error(), f.toString());
                failedAtClient.add(f.command() + "@" + f.offset());
            }
            failedAtClient.sort(null);
            assertEquals(failedAtServer, failedAtClient, "the requests that failed are those the server failed");
            assertTrue(load.failures(Command.WRITE).size() > 0 && load.failures(Command.READ).size() > 0,
                    "some writes and some reads failed: " + load.failures().size());
            assertEquals(List.of(), load.mismatches(), "every read that succeeded returned what was acknowledged");
            // A failed write left the old bytes, a successful one the new: the model is exactly that.
            load.verify(session, DISK, 10); // reading back may fail too: read again
        }
        load.verifyFile(file);
        System.out.printf("FAULT error filter 1%% EIO: %d writes and %d reads failed, as the server's log says; "
                + "%d reads verified%n", load.failures(Command.WRITE).size(), load.failures(Command.READ).size(),
                load.readsVerified());
        load.report("error filter 1% EIO", 0, load.failures().size());
    }

    /**
     * The sorted (command@offset) of the reads and writes the server failed, once the log holds
     * the outcome of all {@code requests} (the filter writes it before the reply goes out).
     */
    private static List<String> failedInLog(Path log, int requests) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (true) {
            Map<String, String> opened = new HashMap<>();
            List<String> failed = new ArrayList<>();
            int outcomes = 0;
            for (String line : Files.readAllLines(log)) {
                Matcher enter = ENTER.matcher(line);
                if (enter.find()) {
                    opened.put(enter.group(1) + "/" + enter.group(3),
                            enter.group(2).toUpperCase() + "@" + Long.parseLong(enter.group(4), 16));
                    continue;
                }
                Matcher leave = LEAVE.matcher(line);
                if (leave.find()) {
                    outcomes++;
                    if (!leave.group(4).equals("0")) {
                        assertEquals("EIO", leave.group(5), line);
                        String request = opened.get(leave.group(1) + "/" + leave.group(3));
                        assertTrue(request != null, "the log names the request that failed: " + line);
                        failed.add(request);
                    }
                }
            }
            if (outcomes >= requests || System.nanoTime() > deadline) {
                assertEquals(requests, outcomes, "the log holds the outcome of every request sent");
                failed.sort(null);
                return failed;
            }
            Thread.sleep(50);
        }
    }

    // ---- 4. A slow server ----

    static final Duration DELAY = Duration.ofSeconds(2);

    @Test
    void repliesSlowerThanUsualButWithinTheTimeoutAreWaitedFor() throws Exception {
        Path file = disk();
        // Threads for every request in flight: queued behind the delay, a request would wait twice as long.
        // 4 s over the delay: on a loaded host a reply may come a few seconds later still.
        SessionOptions options = SessionOptions.DEFAULT.withRequestTimeout(DELAY.multipliedBy(3))
                .withReconnect(ReconnectPolicy.FOREVER);
        WriteLoad load;
        try (PeerServer server = nbdkitFile(file, List.of("--threads=64", "--filter=delay"),
                "delay-read=" + DELAY.toSeconds(), "delay-write=" + DELAY.toSeconds());
                NbdSession session = NbdSession.connect(engine.connector(), server.uri, options).get(10, TimeUnit.SECONDS)) {
            load = new WriteLoad(session, DISK, 41).window(32).readEvery(2).run(128, Duration.ofSeconds(90));
            assertEquals(List.of(), load.failures(), "no request failed");
            assertEquals(List.of(), load.mismatches());
            assertEquals(0, session.reconnects(), "no spurious timeout: every reply came, late");
            assertTrue(load.longestReplyMillis() >= DELAY.toMillis(), "the delay was there: " + load.longestReplyMillis());
            assertTrue(load.readsVerified() > 0, "reads came back too");
            load.verify(session);
        }
        load.verifyFile(file);
        System.out.printf("FAULT delay filter %d s: longest reply %d ms under a 5 s request timeout, 0 reconnects%n",
                DELAY.toSeconds(), load.longestReplyMillis());
        load.report("delay filter " + DELAY.toSeconds() + " s", 0, 0);
    }

    // ---- 5. The export changed across a reconnect ----

    static final int SMALLER = DISK / 2;

    /**
     * nbdkit killed mid-load (writes and WRITE_ZEROES, reads) and started again 1 s later with
     * its export changed: its file cut to half, read-only (-r), or without WRITE_ZEROES (the
     * nozero filter). What the export can no longer take fails, naming why, whether it waited
     * across the reconnect or came after it; the rest succeeds and nothing is corrupted.
     */
    @ParameterizedTest(name = "restarted {0}")
    @ValueSource(strings = {"smaller", "read-only", "without write-zeroes"})
    void anExportChangedAcrossAReconnectFailsOnlyWhatItCanNoLongerTake(String change) throws Exception {
        Path file = disk();
        SessionOptions options = SessionOptions.DEFAULT.withReconnect(
                new ReconnectPolicy(Duration.ofMillis(50), Duration.ofMillis(500), 0));
        PeerServer server = nbdkitFile(file, List.of());
        AtomicReference<CompletableFuture<Long>> back = new AtomicReference<>();
        WriteLoad load;
        int landed = 0;
        int waited = 0;
        try (NbdSession session = NbdSession.connect(engine.connector(), server.uri, options).get(10, TimeUnit.SECONDS)) {
            int count = 3000;
            load = new WriteLoad(session, DISK, 51).zeroEvery(4).readEvery(4).at(count / 4, () -> {
                server.kill9();
                back.set(server.restartLater(Duration.ofSeconds(1), switch (change) {
                    case "smaller" -> {
                        truncate(file, SMALLER);
                        yield c -> c;
                    }
                    case "read-only" -> PeerServer.withNbdkitOptions("--readonly");
                    default -> withoutWriteZeroes();
                }));
            });
            load.run(count, Duration.ofSeconds(60));
            back.get().get(10, TimeUnit.SECONDS);
            assertEquals(1, session.reconnects());
            assertEquals(List.of(), load.mismatches(), "every read that succeeded returned what was acknowledged");
            List<String> unexpected = new ArrayList<>();
            for (WriteLoad.Failure f : load.failures()) {
                String message = f.cause().getMessage();
                boolean afterReconnect = message.contains("fails after reconnecting");
                waited += afterReconnect ? 1 : 0;
                // Checked against the old export just as the reconnect adopted the new one: its connection refuses it.
                boolean raced = message.contains("the export changed before it was sent: ");
                afterReconnect |= raced;
                boolean expected = switch (change) {
                    case "smaller" -> f.offset() + BLOCK > SMALLER && (afterReconnect
                            ? f.cause() instanceof NbdUnsupportedException
                                    && message.endsWith(raced ? "the export is now " + SMALLER + " bytes"
                                            : "the export shrank from " + DISK + " to " + SMALLER + " bytes")
                            : f.cause() instanceof IllegalArgumentException
                                    && message.endsWith("is outside the export (size " + SMALLER + ")"));
                    // A read-only nbdkit offers no WRITE_ZEROES either: refused for that first.
                    case "read-only" -> f.command() != Command.READ && f.cause() instanceof NbdUnsupportedException
                            && (afterReconnect ? message.endsWith("the export became read-only")
                                    : message.endsWith("refused: the export is read-only")
                                            || message.endsWith("is not offered by this export (no send_write_zeroes flag)"));
                    default -> f.command() == Command.WRITE_ZEROES && f.cause() instanceof NbdUnsupportedException
                            && message.endsWith(afterReconnect ? "the export no longer offers send_write_zeroes"
                                    : "is not offered by this export (no send_write_zeroes flag)");
                };
                if (!expected) {
                    unexpected.add(f.toString());
                }
            }
            assertEquals(List.of(), unexpected.subList(0, Math.min(5, unexpected.size())),
                    unexpected.size() + " unexpected failures; only what the changed export cannot take fails, saying why");
            assertTrue(waited > 0 && waited < load.failures().size(),
                    "both requests that waited across the reconnect and later ones failed: " + waited + " of "
                            + load.failures().size());
            int length = change.equals("smaller") ? SMALLER : DISK;
            assertEquals(length, session.export().size());
            switch (change) {
                case "smaller" -> assertEquals(List.of(), load.failures().stream()
                        .filter(f -> f.offset() + BLOCK <= SMALLER).toList(), "everything within the new size succeeded");
                case "read-only" -> assertTrue(load.writesAcknowledged() <= count / 4,
                        "no write succeeded after the restart: " + load.writesAcknowledged());
                default -> assertEquals(List.of(), load.failures(Command.WRITE), "plain writes still succeed");
            }
            // A write the server had done before it was killed, unanswered, then failed: its bytes may be there.
            if (!change.equals("smaller")) {
                landed = load.acceptFailedWritesThatLanded(Files.readAllBytes(file));
            }
            load.verify(session, length, 1);
        } finally {
            server.close();
        }
        load.verifyFile(file, change.equals("smaller") ? SMALLER : DISK);
        System.out.printf("FAULT restarted %s: %d requests failed (%d had waited across the reconnect, %d writes among "
                + "them had landed before the kill), %d reads verified%n", change, load.failures().size(), waited, landed,
                load.readsVerified());
        load.report("restarted " + change, load.millisToFirstSuccessAfter(back.get().join()), load.failures().size());
    }

    /**
     * A block written, then zeroed, neither flushed; the server restarts without WRITE_ZEROES.
     * Writing the journal again must not put the older data back over the zeroes the server
     * still holds.
     */
    @Test
    void unflushedZeroesAreNotUndoneWhenTheRestartedExportNoLongerOffersThem() throws Exception {
        Path file = disk();
        SessionOptions options = SessionOptions.DEFAULT.withReconnect(
                new ReconnectPolicy(Duration.ofMillis(50), Duration.ofMillis(500), 0));
        PeerServer server = nbdkitFile(file, List.of());
        byte[] data = new byte[64 << 10];
        new java.util.Random(61).nextBytes(data);
        int at = 1 << 20;
        try (NbdSession session = NbdSession.connect(engine.connector(), server.uri, options).get(10, TimeUnit.SECONDS)) {
            session.write(at, io.netty.buffer.Unpooled.wrappedBuffer(data), false).get(10, TimeUnit.SECONDS);
            session.writeZeroes(at, data.length, 0).get(10, TimeUnit.SECONDS);
            assertEquals(data.length, session.unflushedBytes(), "the write kept for replay, and the zeroes after it");
            server.kill9();
            server.restart(withoutWriteZeroes());
            // Waits while the session reconnects and writes the journal again, then is sent.
            io.netty.buffer.ByteBuf back = session.read(at, data.length).get(20, TimeUnit.SECONDS);
            byte[] got = new byte[data.length];
            back.readBytes(got);
            back.release();
            assertEquals(1, session.reconnects());
            assertEquals(-1, java.util.Arrays.mismatch(new byte[data.length], got), "the zeroes read back");
        } finally {
            server.close();
        }
        assertEquals(-1, java.util.Arrays.mismatch(new byte[data.length], 0, data.length,
                Files.readAllBytes(file), at, at + data.length), "the file holds the zeroes");
    }

    /** nbdkit's command with the nozero filter, which withdraws WRITE_ZEROES. */
    static java.util.function.UnaryOperator<List<String>> withoutWriteZeroes() {
        return command -> {
            List<String> changed = new ArrayList<>(PeerServer.withNbdkitOptions("--filter=nozero").apply(command));
            changed.add("zeromode=none"); // a filter's parameters go after the plugin's
            return changed;
        };
    }

    static void truncate(Path file, long length) throws Exception {
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            f.setLength(length);
        }
    }
}
