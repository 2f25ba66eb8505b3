package org.nbdroot.proto.interop;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.session.ReconnectPolicy;
import org.nbdroot.proto.session.SessionOptions;

/**
 * A server killed with SIGKILL in the middle of a write load and started again on the same
 * port and file 2 s later: the session reconnects, sends every unanswered request again, and
 * the caller sees no error. Everything acknowledged is then read back and found in the
 * backing file. nbdkit (file plugin), nbd-server (a config file, as it is deployed; each
 * client served by a child process, killed too) and qemu-nbd (a raw file, its default cache
 * mode: writeback).
 */
class ReconnectTest {
    @RegisterExtension
    static final EngineExtension engine = new EngineExtension(2);

    static final int DISK = 64 << 20;

    @TempDir
    Path dir;

    private PeerServer start(String server, Path file) throws Exception {
        return switch (server) {
            case "nbdkit" -> PeerServer.nbdkit("nbdkit file", dir, file, List.of(), "file", "file=" + file);
            case "nbd-server" -> PeerServer.nbdServer(dir, file, "disk");
            case "qemu-nbd" -> PeerServer.qemuNbd(dir, file, "raw", "disk");
            default -> throw new IllegalArgumentException(server);
        };
    }

    @ParameterizedTest(name = "{0} killed and restarted mid-load loses no write")
    @ValueSource(strings = {"nbdkit", "nbd-server", "qemu-nbd"})
    void aServerKilledMidLoadAndRestartedLosesNoWrite(String name) throws Exception {
        Path file = dir.resolve("disk.img");
        Files.write(file, new byte[DISK]);
        PeerServer server = start(name, file);
        SessionOptions options = SessionOptions.DEFAULT.withReconnect(
                new ReconnectPolicy(Duration.ofMillis(50), Duration.ofMillis(500), 0));
        AtomicReference<CompletableFuture<Long>> back = new AtomicReference<>();
        WriteLoad load;
        try (NbdSession session = NbdSession.connect(engine.connector(), server.uri, options).get(10, TimeUnit.SECONDS)) {
            int count = 4000;
            load = new WriteLoad(session, DISK, 11).at(count / 4, () -> {
                server.kill9();
                back.set(server.restartLater(Duration.ofSeconds(2))); // meanwhile the writes wait
            });
            load.run(count, Duration.ofSeconds(60));
            assertEquals(List.of(), load.failures(), "no write failed: they waited for the server");
            assertTrue(session.reconnects() >= 1, "the session reconnected");
            session.flush().get(10, TimeUnit.SECONDS);
            load.verify(session);
        } finally {
            server.close();
        }
        load.verifyFile(file);
        long restarted = back.get().get(10, TimeUnit.SECONDS);
        load.report(name + " SIGKILL, back 2 s later", load.millisToFirstSuccessAfter(restarted), 0);
    }
}
