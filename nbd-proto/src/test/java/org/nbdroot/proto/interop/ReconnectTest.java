package org.nbdroot.proto.interop;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.session.ReconnectPolicy;
import org.nbdroot.proto.session.SessionOptions;

/**
 * A server killed with SIGKILL in the middle of a write load and started again on the same
 * port: the session reconnects, sends every unanswered request again, and the caller sees no
 * error. Everything acknowledged is then read back and found in the backing file.
 */
class ReconnectTest {
    @RegisterExtension
    static final EngineExtension engine = new EngineExtension(2);

    static final int DISK = 64 << 20;
    static final int BLOCK = 4096;

    @TempDir
    Path dir;

    @Test
    void nbdkitKilledAndRestartedMidLoad() throws Exception {
        Path file = dir.resolve("disk.img");
        Files.write(file, new byte[DISK]);
        PeerServer server = PeerServer.nbdkit("nbdkit file", dir, file, List.of(), "file", "file=" + file);
        SessionOptions options = SessionOptions.DEFAULT.withReconnect(
                new ReconnectPolicy(Duration.ofMillis(50), Duration.ofMillis(500), 0));
        byte[] model = new byte[DISK];
        java.util.concurrent.CountDownLatch testDone = new java.util.concurrent.CountDownLatch(1);
        try (NbdSession session = NbdSession.connect(engine.connector(), server.uri, options).get(10, TimeUnit.SECONDS)) {
            Random random = new Random(11);
            Semaphore window = new Semaphore(32);
            AtomicInteger failures = new AtomicInteger();
            List<CompletableFuture<Void>> writes = new ArrayList<>();
            int count = 4000;
            Thread restarter = null;
            for (int i = 0; i < count; i++) {
                if (i == count / 4) {
                    server.kill9();
                    // Back 2 s later, on the same port and file; meanwhile the writes wait.
                    // The thread lives until the test ends: nbdkit's --exit-with-parent fires when the
                    // thread that started it exits, not the process.
                    restarter = new Thread(() -> {
                        try {
                            Thread.sleep(2000);
                            server.restart();
                            testDone.await();
                        } catch (Exception e) {
                            throw new IllegalStateException(e);
                        }
                    });
                    restarter.start();
                }
                byte[] block = new byte[BLOCK];
                random.nextBytes(block);
                long offset = (long) (i % (DISK / BLOCK)) * BLOCK;
                System.arraycopy(block, 0, model, (int) offset, BLOCK);
                window.acquire();
                writes.add(session.write(offset, Unpooled.wrappedBuffer(block), false).whenComplete((v, e) -> {
                    if (e != null) {
                        failures.incrementAndGet();
                    }
                    window.release();
                }));
            }
            CompletableFuture.allOf(writes.toArray(CompletableFuture[]::new)).handle((v, e) -> null).get(60, TimeUnit.SECONDS);
            assertEquals(0, failures.get(), "no write failed: they waited for the server");
            assertTrue(session.reconnects() >= 1, "the session reconnected");
            session.flush().get(10, TimeUnit.SECONDS);
            for (int offset = 0; offset < DISK; offset += 1 << 20) {
                ByteBuf back = session.read(offset, 1 << 20).get(10, TimeUnit.SECONDS);
                byte[] got = new byte[1 << 20];
                back.readBytes(got);
                back.release();
                assertEquals(-1, Arrays.mismatch(Arrays.copyOfRange(model, offset, offset + got.length), got),
                        "read back at " + offset);
            }
        } finally {
            testDone.countDown();
            server.close();
        }
        assertEquals(-1, Arrays.mismatch(model, Files.readAllBytes(file)), "the backing file holds every acknowledged write");
    }
}
