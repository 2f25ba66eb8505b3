package org.nbdroot.proto.interop;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.logging.Handler;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.nbdroot.proto.NbdServerErrorException;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.session.ReconnectPolicy;
import org.nbdroot.proto.session.SessionOptions;
import org.nbdroot.proto.testing.ScriptedNbdServer;
import org.nbdroot.proto.testing.ScriptedNbdServer.Fault;
import org.nbdroot.proto.transport.NbdUri;
import org.nbdroot.proto.wire.NbdError;

/**
 * Each of the scripted server's transmission faults, fired once in the middle of a loaded
 * session (32 reads and writes in flight, reconnect on, as for a root disk): the broken
 * connection is logged with the fault's message, the session reconnects and sends again what
 * was unanswered, no request fails, no read returns bytes other than the server's, and every
 * acknowledged write is in the server's disk at the end. Reads go to blocks no write touches,
 * or to blocks whose one write was already acknowledged, so the expected bytes are known. That
 * something was sent again is the engine's own log line ("sending N requests again"): a server
 * that never read a request off the broken socket has no record of it to compare with.
 */
class MisbehavingMidLoadTest {
    @RegisterExtension
    static final EngineExtension engine = new EngineExtension(2);

    private static final int BLOCK = 4096;
    private static final int READ_BLOCKS = 512; // [0, 512): never written
    private static final int WRITE_BLOCKS = 256; // [512, 768): each written once
    private static final int READ_LENGTH = 2 * BLOCK;
    private static final int OPS = 400;
    private static final int DEPTH = 32;
    private static final int FAULT_AT = 150; // the fault fires on about the 150th request of the load

    private final List<String> log = Collections.synchronizedList(new ArrayList<>());
    private final Handler capture = new Handler() {
        @Override
        public void publish(LogRecord r) {
            log.add(r.getMessage());
        }

        @Override
        public void flush() {}

        @Override
        public void close() {}
    };
    private final Logger reconnector = Logger.getLogger("org.nbdroot.proto.session.Reconnector");

    @BeforeEach
    void captureLog() {
        reconnector.addHandler(capture);
    }

    @AfterEach
    void releaseLog() {
        reconnector.removeHandler(capture);
    }

    private static SessionOptions options(boolean structured) {
        return new SessionOptions(1, structured, SessionOptions.DEFAULT.metaContexts(), Duration.ofSeconds(5),
                Duration.ofSeconds(5), new ReconnectPolicy(Duration.ofMillis(20), Duration.ofMillis(500), 0),
                Duration.ofSeconds(5)); // the request timeout: long enough for a loaded host, short for STALL
    }

    @ParameterizedTest(name = "{0}")
    @CsvSource(delimiter = '|', value = {
        "BAD_REPLY_MAGIC                      | true  | bad reply magic",
        "UNKNOWN_HANDLE                       | true  | which has no outstanding request",
        "DUPLICATE_REPLY                      | true  | which has no outstanding request",
        // A 4 KiB read's chunk may be as long as an error chunk (4110 bytes): the decoder lets the
        // one byte too many through and the connection finds it outside the read.
        "STRUCTURED_CHUNK_LONGER_THAN_REQUEST | true  | bytes long (expected: <=; outside NBD_CMD_READ",
        "CHUNK_OUTSIDE_REQUEST                | true  | outside NBD_CMD_READ",
        "OVERLAPPING_CHUNKS                   | true  | overlaps data already received",
        "MISSING_DATA                         | true  | after sending only",
        "STRUCTURED_REPLY_NOT_NEGOTIATED      | false | structured replies were not negotiated",
        "BAD_CHUNK_TYPE                       | true  | unknown reply chunk type",
        // A server closing with requests unread in its socket resets the connection: the client may
        // see the reset (or a broken pipe on its next write) before, or instead of, the last bytes the
        // server sent. (The scripted server half-closes and drains, so it should not; a real one may.)
        "CLOSE_MID_REPLY                      | true  | server closed the connection; connection reset by peer; broken pipe",
        "CLOSE_MID_REPLY                      | false | server closed the connection; connection reset by peer; broken pipe",
        "BAD_REPLY_MAGIC                      | false | bad reply magic",
        "STALL                                | true  | the server stopped answering",
        "SHUTTING_DOWN                        | true  | NBD_ESHUTDOWN; connection reset by peer; broken pipe",
        "SHUTTING_DOWN                        | false | NBD_ESHUTDOWN; connection reset by peer; broken pipe",
    })
    void theSessionReconnectsAndNothingIsLostOrWrong(Fault fault, boolean structured, String expected) throws Exception {
        reconnectsAndNothingIsLostOrWrong(fault, options(structured), expected);
    }

    @ParameterizedTest(name = "{0}")
    @CsvSource(delimiter = '|', value = {
        "BAD_REPLY_MAGIC   | bad reply magic",
        "MISSING_DATA      | after sending only",
        "CLOSE_MID_REPLY   | server closed the connection; connection reset by peer; broken pipe",
        "STALL             | the server stopped answering",
        "SHUTTING_DOWN     | NBD_ESHUTDOWN; connection reset by peer; broken pipe",
    })
    void withTwoConnectionsTheOtherGoesOnAndTheBrokenOneComesBack(Fault fault, String expected) throws Exception {
        reconnectsAndNothingIsLostOrWrong(fault, options(true).withConnections(2), expected);
    }

    private void reconnectsAndNothingIsLostOrWrong(Fault fault, SessionOptions options, String expected)
            throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size((READ_BLOCKS + WRITE_BLOCKS) * BLOCK)
                .readChunkSize(1024).seed(fault.ordinal()).start()) {
            Load load = new Load(server, options, fault.ordinal());
            try {
                server.armFault(fault, FAULT_AT);
                load.run();

                assertEquals(List.of(fault), server.firedFaults(), "the fault fired, once");
                assertEquals(List.of(), load.wrongData, "reads that returned bytes other than the server's");
                assertEquals(List.of(), load.failures, "requests that failed: with reconnect on, none should");
                assertTrue(load.session.reconnects() >= 1, "the session reconnected");
                String anyOf = java.util.Arrays.stream(expected.split("; "))
                        .map(java.util.regex.Pattern::quote).collect(java.util.stream.Collectors.joining("|"));
                java.util.regex.Pattern lost = java.util.regex.Pattern.compile("connection [0-9] .* lost \\(.*(" + anyOf
                        + ").*\\): ([0-9]+) requests wait while it reconnects");
                String lostLine = log.stream().filter(m -> lost.matcher(m).matches()).findFirst().orElse(null);
                assertTrue(lostLine != null, "the lost connection was logged with the fault's message (" + expected + "): " + log);
                java.util.regex.Matcher waiting = lost.matcher(lostLine);
                assertTrue(waiting.matches());
                // A fault that needs no request of its own (a duplicate reply) may come in a lull with nothing
                // outstanding; otherwise what the broken connection had not answered must be sent again.
                if (Integer.parseInt(waiting.group(2)) > 0) {
                    assertTrue(log.stream().anyMatch(m -> m.matches("reconnected to .* sending [1-9][0-9]* requests again")),
                            "what the broken connection had not answered was sent again: " + log);
                } else {
                    assertEquals(Fault.DUPLICATE_REPLY, fault, "only a duplicate reply can break a connection with "
                            + "nothing outstanding: " + lostLine);
                }
                load.assertAcknowledgedWritesAreOnTheServer();
                assertEquals(List.of(), server.violations());
            } finally {
                load.session.close();
            }
        }
    }

    @ParameterizedTest(name = "{0}")
    @CsvSource(delimiter = '|', value = {
        "OVERLONG_STRING                 | bytes long (expected: <= 4096",
        "SIZE_NOT_MULTIPLE_OF_MIN_BLOCK  | is not a multiple of the minimum block size",
        "BAD_OPTION_REPLY_MAGIC          | bad option reply magic",
        "OPTION_REPLY_FOR_OTHER_OPTION   | was asked",
        "HUGE_OPTION_REPLY_LENGTH        | bytes long (expected: <=",
        "OLDSTYLE_GREETING               | oldstyle",
        "STALL_HANDSHAKE                 | handshake timed out after 1 s",
    })
    void aBrokenHandshakeOnTheReconnectIsTriedAgain(Fault fault, String expected) throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size((READ_BLOCKS + WRITE_BLOCKS) * BLOCK)
                .readChunkSize(1024).start()) {
            // 1 s only where the handshake stalls: elsewhere a slow host must not fail a second attempt.
            Duration handshake = Duration.ofSeconds(fault == Fault.STALL_HANDSHAKE ? 1 : 10);
            Load load = new Load(server, options(true).withHandshakeTimeout(handshake), 11);
            try {
                server.armFault(Fault.CLOSE_MID_REPLY, FAULT_AT); // breaks the connection mid-load
                server.armFault(fault, 1); // and the first reconnect's handshake
                load.run();

                assertEquals(List.of(Fault.CLOSE_MID_REPLY, fault), server.firedFaults());
                assertEquals(List.of(), load.wrongData);
                assertEquals(List.of(), load.failures, "requests that failed: with reconnect on, none should");
                assertTrue(log.stream().anyMatch(m -> m.startsWith("reconnect attempt 1 ") && m.contains(expected)),
                        "the failed reconnect was logged with the fault's message (" + expected + "): " + log);
                assertTrue(log.stream().anyMatch(m -> m.matches("reconnected to .* after 2 attempts; sending [1-9][0-9]* requests again")),
                        "the second attempt got the connection back and sent the requests again: " + log);
                load.assertAcknowledgedWritesAreOnTheServer();
            } finally {
                load.session.close();
            }
        }
    }

    @ParameterizedTest(name = "{0}")
    @CsvSource({"ERROR_CHUNK, true", "ERROR_OFFSET_CHUNK, true", "SIMPLE_ERROR, false", "SIMPLE_ERROR, true"})
    void anErrorReplyMidLoadFailsOnlyItsRequest(Fault fault, boolean structured) throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size((READ_BLOCKS + WRITE_BLOCKS) * BLOCK)
                .readChunkSize(1024).start()) {
            Load load = new Load(server, structured, 7);
            try {
                server.armFault(fault, FAULT_AT);
                load.run();

                assertEquals(List.of(fault), server.firedFaults());
                assertEquals(List.of(), load.wrongData);
                assertEquals(1, load.failures.size(), "exactly the request answered with the error fails: " + load.failures);
                NbdServerErrorException e = assertInstanceOf(NbdServerErrorException.class, load.failures.get(0));
                assertEquals(NbdError.EIO, e.error());
                assertEquals(0, load.session.reconnects(), "an error reply is no reason to reconnect");
                load.assertAcknowledgedWritesAreOnTheServer();
            } finally {
                load.session.close();
            }
        }
    }

    @org.junit.jupiter.api.Test
    void aServerThatMisbehavesOnEveryRequestIsRetriedWithBackoffNotInALoop() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(1 << 20).start()) {
            NbdSession session = NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()),
                    options(true).withReconnect(new ReconnectPolicy(Duration.ofMillis(50), Duration.ofMillis(400), 0)))
                    .get(10, TimeUnit.SECONDS);
            CompletableFuture<ByteBuf> read;
            try {
                for (int n = 1; n <= 10_000; n++) {
                    server.armFault(Fault.BAD_REPLY_MAGIC, n); // every request from now on
                }
                read = session.read(0, 4096);
                Thread.sleep(3000);
                long reconnects = session.reconnects();
                // Backoff 50, 100, 200, 400, 400... ms: about 10 in 3 s. Without it: over a thousand.
                assertTrue(reconnects >= 2 && reconnects <= 25, reconnects + " reconnects in 3 s");
                assertTrue(!read.isDone(), "the read waits, as a disk's would, for a server that answers properly");
                assertTrue(log.stream().anyMatch(m -> m.contains("backing off")), "the log says why it waits: " + log);
            } finally {
                session.close();
            }
            assertInstanceOf(org.nbdroot.proto.NbdException.class, EngineExtension.failureOf(read));
        }
    }

    @org.junit.jupiter.api.Test
    void withBoundedAttemptsAServerThatAlwaysMisbehavesFailsTheRequestNamingWhy() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(1 << 20).start()) {
            NbdSession session = NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()),
                    options(true).withReconnect(new ReconnectPolicy(Duration.ofMillis(20), Duration.ofMillis(100), 3)))
                    .get(10, TimeUnit.SECONDS);
            try {
                for (int n = 1; n <= 10_000; n++) {
                    server.armFault(Fault.BAD_REPLY_MAGIC, n);
                }
                Throwable failure = EngineExtension.failureOf(session.read(0, 4096));
                assertTrue(failure.getMessage().contains("gave up reconnecting after 3 attempts")
                        && failure.getMessage().contains("bad reply magic"), failure.getMessage());
                // Nothing reconnects any more: a later request fails at once with the same reason, never waits for ever.
                Throwable later = EngineExtension.failureOf(session.read(4096, 4096));
                assertEquals(failure.getMessage(), later.getMessage());
            } finally {
                session.close();
            }
        }
    }

    /**
     * A server that drops now and then, with bounded attempts: an outage that took three attempts,
     * then a drop soon after, must not count those three again. The quick drop continues the
     * backoff but counts as one attempt of three.
     */
    @org.junit.jupiter.api.Test
    void withBoundedAttemptsAQuickDropDoesNotCountTheAttemptsOfTheOutageBefore() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(1 << 20).start()) {
            NbdSession session = NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()),
                    options(true).withReconnect(new ReconnectPolicy(Duration.ofMillis(20), Duration.ofSeconds(5), 3)))
                    .get(10, TimeUnit.SECONDS);
            try {
                server.armFault(Fault.CLOSE_MID_REPLY, 1); // the first READ drops the connection
                server.armFault(Fault.BAD_OPTION_REPLY_MAGIC, 1); // the next two connections fail their handshake
                server.armFault(Fault.BAD_OPTION_REPLY_MAGIC, 2);
                session.read(0, 4096).get(10, TimeUnit.SECONDS).release(); // sent again on the 4th connection
                assertEquals(1, session.reconnects());
                assertEquals(4, server.connectionCount(), "the first reconnect took three attempts");

                server.armFault(Fault.CLOSE_MID_REPLY, 1); // the next READ: a drop well within 5 s of coming back
                session.read(4096, 4096).get(10, TimeUnit.SECONDS).release();
                assertEquals(2, session.reconnects());
                assertTrue(log.stream().anyMatch(m -> m.contains("backing off")), "the backoff went on: " + log);
            } finally {
                session.close();
            }
        }
    }

    /**
     * A server that accepts every connection and then answers nothing: each connection breaks
     * only when the request timeout (1 s) catches the stall, later than the backoff's
     * longest delay (100 ms), so no break counts as quick. With bounded attempts the session
     * must still give up: a connection that answered nothing does not end the outage, else
     * every break would start a new one at attempt 0 and the read would wait for ever.
     */
    @org.junit.jupiter.api.Test
    void withBoundedAttemptsAServerThatStallsAfterEveryReconnectFailsTheRequest() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(1 << 20).start()) {
            NbdSession session = NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()),
                    options(true).withReconnect(new ReconnectPolicy(Duration.ofMillis(20), Duration.ofMillis(100), 3))
                            .withRequestTimeout(Duration.ofSeconds(1)))
                    .get(10, TimeUnit.SECONDS);
            try {
                for (int n = 1; n <= 100; n++) {
                    server.armFault(Fault.STALL, n);
                }
                Throwable failure = EngineExtension.failureOf(session.read(0, 4096));
                assertTrue(failure.getMessage().contains("gave up reconnecting after 3 attempts")
                        && failure.getMessage().contains("stopped answering"), failure.getMessage());
                assertTrue(log.stream().anyMatch(m -> m.contains("without answering anything since reconnecting")),
                        "the log says why the backoff goes on: " + log);
            } finally {
                session.close();
            }
        }
    }

    /** 400 requests, 32 in flight: 40% writes (each to a fresh block), the rest reads, a FLUSH every 50. */
    private static final class Load {
        final ScriptedNbdServer server;
        final NbdSession session;
        final Random random;
        final byte[] readOnlyRegion = new byte[READ_BLOCKS * BLOCK];
        final Map<Integer, byte[]> acknowledged = new ConcurrentHashMap<>();
        final List<String> wrongData = Collections.synchronizedList(new ArrayList<>());
        final List<Throwable> failures = Collections.synchronizedList(new ArrayList<>());
        final Semaphore inFlight = new Semaphore(DEPTH);

        Load(ScriptedNbdServer server, boolean structured, long seed) throws Exception {
            this(server, options(structured), seed);
        }

        Load(ScriptedNbdServer server, SessionOptions options, long seed) throws Exception {
            this.server = server;
            random = new Random(seed);
            random.nextBytes(readOnlyRegion);
            server.write(0, readOnlyRegion);
            session = NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()), options)
                    .get(10, TimeUnit.SECONDS);
        }

        void run() throws Exception {
            int reads = 0;
            int writes = 0;
            for (int op = 0; op < OPS; op++) {
                assertTrue(inFlight.tryAcquire(30, TimeUnit.SECONDS), "a request slot within 30 s: the load hangs");
                CompletableFuture<?> request;
                if (op % 50 == 49) {
                    request = session.flush();
                } else if (op % 5 < 2 && writes < WRITE_BLOCKS) {
                    int block = READ_BLOCKS + writes++;
                    byte[] data = new byte[BLOCK];
                    random.nextBytes(data);
                    request = session.write((long) block * BLOCK, Unpooled.wrappedBuffer(data), false)
                            .thenRun(() -> acknowledged.put(block, data));
                } else {
                    // Distinct read-only blocks, or a block whose only write is acknowledged.
                    List<Integer> written = new ArrayList<>(acknowledged.keySet());
                    int block;
                    byte[] expected;
                    int length = BLOCK;
                    if (reads % 4 == 3 && !written.isEmpty()) {
                        block = written.get(random.nextInt(written.size()));
                        expected = acknowledged.get(block);
                    } else {
                        block = (2 * reads) % READ_BLOCKS;
                        length = READ_LENGTH;
                        expected = java.util.Arrays.copyOfRange(readOnlyRegion, block * BLOCK, block * BLOCK + length);
                    }
                    reads++;
                    int at = block;
                    request = session.read((long) block * BLOCK, length).thenAccept(buf -> check(at, expected, buf));
                }
                request.whenComplete((v, e) -> {
                    if (e != null) {
                        failures.add(e instanceof java.util.concurrent.CompletionException && e.getCause() != null
                                ? e.getCause() : e);
                    }
                    inFlight.release();
                });
            }
            assertTrue(inFlight.tryAcquire(DEPTH, 60, TimeUnit.SECONDS), "every request completed within 60 s");
        }

        private void check(int block, byte[] expected, ByteBuf buf) {
            byte[] got = new byte[buf.readableBytes()];
            buf.readBytes(got);
            buf.release();
            if (!java.util.Arrays.equals(expected, got)) {
                wrongData.add("block " + block);
            }
        }

        void assertAcknowledgedWritesAreOnTheServer() {
            byte[] disk = server.contents();
            for (Map.Entry<Integer, byte[]> e : acknowledged.entrySet()) {
                int block = e.getKey();
                assertArrayEquals(e.getValue(), java.util.Arrays.copyOfRange(disk, block * BLOCK, (block + 1) * BLOCK),
                        "acknowledged write to block " + block);
            }
            assertArrayEquals(readOnlyRegion, java.util.Arrays.copyOf(disk, readOnlyRegion.length),
                    "the blocks nobody wrote");
            assertTrue(acknowledged.size() > 100, "the load wrote: " + acknowledged.size());
        }
    }
}
