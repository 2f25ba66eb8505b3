package org.nbdroot.client.ggate;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.nbdroot.client.ggate.emu.GgateEmulator;
import org.nbdroot.client.ggate.emu.GgateEmulator.BioResult;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.session.ReconnectPolicy;
import org.nbdroot.proto.session.SessionOptions;
import org.nbdroot.proto.testing.ScriptedNbdServer;
import org.nbdroot.proto.transport.NbdConnector;
import org.nbdroot.proto.transport.NbdUri;
import org.nbdroot.proto.transport.Transport;

/**
 * A GEOM Gate device over a server that fails in the ways a root disk must survive without the
 * kernel seeing an error: a restart that loses what it acknowledged but was not flushed
 * (BIO_FLUSH), written again after the reconnect; and a server that stops answering, given up
 * on after the request timeout and reconnected.
 */
class GgateServerFaultsTest {
    static final int DISK = 8 << 20;
    static final Duration WAIT = Duration.ofSeconds(30);

    GgateEmulator kernel;
    Transport transport;

    @BeforeEach
    void start() throws Exception {
        kernel = GgateEmulator.start();
        kernel.configureBinding();
        transport = Transport.create(2);
    }

    @AfterEach
    void stop() {
        transport.close();
        kernel.close();
    }

    @Test
    void aServerThatStopsAnsweringIsReconnectedAndNoBioFails() throws Exception {
        Random random = new Random(42);
        byte[] model = new byte[DISK];
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(DISK).start()) {
            // 3 s, not 1: a JVM paused a second under load would give up on a healthy connection too.
            SessionOptions options = SessionOptions.DEFAULT.withRequestTimeout(Duration.ofSeconds(3)).withReconnect(
                    new ReconnectPolicy(Duration.ofMillis(20), Duration.ofMillis(200), 0));
            NbdSession session = NbdSession.connect(new NbdConnector(transport, Duration.ofSeconds(5)),
                    NbdUri.parse(server.uri()), options).get(10, TimeUnit.SECONDS);
            GgateDevice device = GgateDevice.create(session,
                    new GgateOptions(GgateAbi.UNIT_AUTO, 0, GgateOptions.DEFAULT_QUEUE_SIZE, 0, false, 8), server.uri());
            int unit = device.unit();
            server.armFault(ScriptedNbdServer.Fault.STALL, 10);
            java.util.List<Long> ids = new java.util.ArrayList<>();
            int slot = DISK / 64; // disjoint: the bios are all outstanding at once
            for (int i = 0; i < 64; i++) {
                byte[] data = new byte[512 * (1 + random.nextInt(slot / 512))];
                random.nextBytes(data);
                ids.add(kernel.queueWrite(unit, (long) i * slot, data));
                System.arraycopy(data, 0, model, i * slot, data.length);
            }
            for (long id : ids) {
                BioResult r = kernel.awaitBio(id, WAIT);
                assertTrue(r.ok(), "no bio fails: " + r);
            }
            assertEquals(List.of(ScriptedNbdServer.Fault.STALL), server.firedFaults());
            assertEquals(1, session.reconnects(), "the silent connection was given up on");
            BioResult read = kernel.awaitBio(kernel.queueRead(unit, 0, DISK), WAIT);
            assertArrayEquals(model, read.data());
            assertEquals(-1, Arrays.mismatch(model, server.contents()));
            device.destroy(false);
            assertNull(device.awaitTermination());
            session.disconnect().get(10, TimeUnit.SECONDS);
        }
    }

    @Test
    void writesDoneButNotFlushedSurviveAServerCrash() throws Exception {
        Random random = new Random(41);
        byte[] model = new byte[DISK];
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(DISK).volatileWriteCache().start()) {
            SessionOptions options = SessionOptions.DEFAULT.withReconnect(
                    new ReconnectPolicy(Duration.ofMillis(20), Duration.ofMillis(200), 0));
            NbdSession session = NbdSession.connect(new NbdConnector(transport, Duration.ofSeconds(5)),
                    NbdUri.parse(server.uri()), options).get(10, TimeUnit.SECONDS);
            GgateDevice device = GgateDevice.create(session,
                    new GgateOptions(GgateAbi.UNIT_AUTO, 0, GgateOptions.DEFAULT_QUEUE_SIZE, 0, false, 8), server.uri());
            int unit = device.unit();

            for (int round = 0; round < 2; round++) {
                // Round 0 is flushed; round 1 writes over part of it (and more) and is not.
                for (int i = 0; i < 64; i++) {
                    int length = 512 * (1 + random.nextInt(64));
                    long offset = 512L * random.nextInt((DISK - length) / 512);
                    byte[] data = new byte[length];
                    random.nextBytes(data);
                    BioResult r = kernel.awaitBio(kernel.queueWrite(unit, offset, data), WAIT); // one at a time: ordered
                    assertTrue(r.ok(), r.toString());
                    System.arraycopy(data, 0, model, (int) offset, length);
                }
                if (round == 0) {
                    assertTrue(kernel.awaitBio(kernel.queueBio(unit, GgateEmulator.BIO_FLUSH, 0, 0, null), WAIT).ok());
                }
            }
            assertTrue(session.unflushedBytes() > 0);
            byte[] afterCrash = server.crash(); // the session writes again at once: contents() would race it
            assertNotEquals(-1, Arrays.mismatch(model, afterCrash), "the crash lost writes the kernel saw done");

            BioResult read = kernel.awaitBio(kernel.queueRead(unit, 0, DISK), WAIT); // waits out the reconnect
            assertTrue(read.ok(), read.toString());
            assertArrayEquals(model, read.data(), "the device reads every write back");
            assertEquals(1, session.reconnects());
            assertEquals(-1, Arrays.mismatch(model, server.contents()), "the server holds every write again");

            device.destroy(false);
            assertNull(device.awaitTermination());
            session.disconnect().get(10, TimeUnit.SECONDS);
            assertEquals(List.of(), server.violations());
        }
    }

    /**
     * Writes the server may have dropped (it failed the FLUSHes the journal sent of its own),
     * and no BIO_FLUSH since to report it: the first destroy is refused, naming the loss, while
     * the device can still be checked; the second goes on.
     */
    @Test
    void aLossNoFlushReportedRefusesTheFirstDestroy() throws Exception {
        lossNoFlushReported(false);
    }

    /** The loss stays for the file system's FLUSH when the device stays: the next BIO_FLUSH fails, once. */
    @Test
    void aLossARefusedDestroyNamedIsStillReportedByTheNextBioFlush() throws Exception {
        lossNoFlushReported(true);
    }

    private void lossNoFlushReported(boolean flushAfterTheRefusal) throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(DISK).start()) {
            SessionOptions options = SessionOptions.DEFAULT.withReconnect(
                    new ReconnectPolicy(Duration.ofMillis(20), Duration.ofMillis(200), 0).withReplayLimit(64 << 10));
            NbdSession session = NbdSession.connect(new NbdConnector(transport, Duration.ofSeconds(5)),
                    NbdUri.parse(server.uri()), options).get(10, TimeUnit.SECONDS);
            GgateDevice device = GgateDevice.create(session,
                    new GgateOptions(GgateAbi.UNIT_AUTO, 0, GgateOptions.DEFAULT_QUEUE_SIZE, 0, false, 4), server.uri());
            server.failFlushes(true);
            for (int i = 0; i < 16; i++) { // 64 KiB: past half the journal's limit, so it sends a FLUSH of its own
                assertTrue(kernel.awaitBio(kernel.queueWrite(device.unit(), i * 4096L, new byte[4096]), WAIT).ok());
            }
            long deadline = System.nanoTime() + WAIT.toNanos();
            while (session.unreportedLoss() == null && System.nanoTime() < deadline) {
                Thread.sleep(10);
            }
            assertTrue(session.unreportedLoss() != null && session.unreportedLoss().startsWith("the server failed a FLUSH"),
                    "the journal's failed FLUSH is a loss: " + session.unreportedLoss());
            server.failFlushes(false);

            java.io.IOException refused = org.junit.jupiter.api.Assertions.assertThrows(java.io.IOException.class,
                    () -> device.destroy(false));
            assertTrue(refused.getMessage().startsWith(device.name() + ": not destroyed: writes acknowledged earlier may be"
                    + " missing on the server (the server failed a FLUSH") && refused.getMessage().endsWith(
                    "destroy again to go on"), refused.getMessage());
            assertTrue(kernel.unit(device.unit()).isPresent(), "the unit is left to be checked");
            // Still the file system's to hear, were the device to stay (the destroy's own FLUSH did not take it).
            assertTrue(session.unreportedLoss() != null, "not taken by the destroy's FLUSH");

            if (flushAfterTheRefusal) {
                BioResult flush = kernel.awaitBio(kernel.queueBio(device.unit(), GgateEmulator.BIO_FLUSH, 0, 0, null), WAIT);
                assertTrue(!flush.ok(), "the file system's FLUSH reports the loss: " + flush);
                assertNull(session.unreportedLoss(), "reported");
                assertTrue(kernel.awaitBio(kernel.queueBio(device.unit(), GgateEmulator.BIO_FLUSH, 0, 0, null), WAIT).ok(),
                        "once");
            }
            device.destroy(false); // told once (or nothing left to tell): this one goes on
            assertNull(device.awaitTermination());
            session.disconnect().get(10, TimeUnit.SECONDS);
        }
    }

    /** A destroy while the server is down: an answer, not a hang; with force, the device goes. */
    @Test
    void aDestroyWhileTheServerIsDownAnswersInsteadOfHanging() throws Exception {
        System.setProperty("nbd.destroy.flush-wait-seconds", "3");
        try {
            NbdSession session;
            GgateDevice device;
            try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(DISK).start()) {
                SessionOptions options = SessionOptions.DEFAULT.withReconnect(
                        new ReconnectPolicy(Duration.ofMillis(20), Duration.ofMillis(200), 0));
                session = NbdSession.connect(new NbdConnector(transport, Duration.ofSeconds(5)),
                        NbdUri.parse(server.uri()), options).get(10, TimeUnit.SECONDS);
                device = GgateDevice.create(session,
                        new GgateOptions(GgateAbi.UNIT_AUTO, 0, GgateOptions.DEFAULT_QUEUE_SIZE, 0, false, 4), server.uri());
                assertTrue(kernel.awaitBio(kernel.queueWrite(device.unit(), 0, new byte[4096]), WAIT).ok());
            } // the server is gone; the session tries to reconnect for ever
            long t0 = System.nanoTime();
            java.io.IOException refused = org.junit.jupiter.api.Assertions.assertThrows(java.io.IOException.class,
                    () -> device.destroy(false));
            long waited = (System.nanoTime() - t0) / 1_000_000;
            assertTrue(waited >= 2_900 && waited < 20_000, "waited " + waited + " ms");
            assertTrue(refused.getMessage().contains("not destroyed: the server did not answer the FLUSH within 3 s")
                    && refused.getMessage().contains("destroy -f"), refused.getMessage());
            assertTrue(session.unflushedBytes() > 0, "the write is still kept for the server");
            assertTrue(kernel.unit(device.unit()).isPresent(), "the unit is left as it was");

            t0 = System.nanoTime();
            device.destroy(true);
            assertNull(device.awaitTermination());
            waited = (System.nanoTime() - t0) / 1_000_000;
            assertTrue(waited < 15_000, "a forced destroy waits 2 s for the FLUSH at most: " + waited + " ms");
        } finally {
            System.clearProperty("nbd.destroy.flush-wait-seconds");
        }
    }
}
