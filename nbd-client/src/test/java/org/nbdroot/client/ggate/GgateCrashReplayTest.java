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
 * A GEOM Gate device over a server with a volatile write cache that restarts and loses what
 * it acknowledged but was not flushed (BIO_FLUSH): the daemon writes those again after the
 * reconnect, so the disk holds every write the kernel was told was done.
 */
class GgateCrashReplayTest {
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
            server.crash();
            assertNotEquals(-1, Arrays.mismatch(model, server.contents()), "the crash lost writes the kernel saw done");

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
}
