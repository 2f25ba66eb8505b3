package org.nbdroot.proto.interop;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.session.NbdSession.ExportRefresh;
import org.nbdroot.proto.session.ReconnectPolicy;
import org.nbdroot.proto.session.SessionOptions;

/**
 * An export grown on the server (nbdkit's file plugin over a file made longer) is seen by
 * {@link NbdSession#refreshExport}: fresh connections replace the old ones while a write load
 * runs, no request fails, and the bytes past the old end read and write like any others.
 */
class ExportRefreshTest {
    @RegisterExtension
    static final EngineExtension engine = new EngineExtension(2);

    static final int OLD = 16 << 20;
    static final int NEW = 32 << 20;
    static final int BLOCK = 4096;

    @TempDir
    Path dir;

    private SessionOptions options(int connections) {
        return SessionOptions.DEFAULT.withConnections(connections).withReconnect(ReconnectPolicy.FOREVER);
    }

    @Test
    void aGrownExportIsAdoptedUnderAWriteLoad() throws Exception {
        Path file = dir.resolve("disk.img");
        Files.write(file, new byte[OLD]);
        byte[] model = new byte[NEW];
        WriteLoad load;
        try (PeerServer server = PeerServer.nbdkit("nbdkit file", dir, file, List.of(), "file", "file=" + file);
                NbdSession session = NbdSession.connect(engine.connector(), server.uri, options(2)).get(10, TimeUnit.SECONDS)) {
            assertEquals(2, session.connectionCount(), "nbdkit's file plugin allows several connections");
            // In the middle of the load: requests in flight on the old connections are answered there.
            AtomicReference<ExportRefresh> refreshed = new AtomicReference<>();
            load = new WriteLoad(session, model, 5).blocks(OLD / BLOCK).at(1000, () -> {
                try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
                    f.setLength(NEW);
                }
                refreshed.set(session.refreshExport(e -> true).get(10, TimeUnit.SECONDS));
            }).run(3000, Duration.ofSeconds(30));
            ExportRefresh refresh = refreshed.get();
            assertEquals(List.of(), load.failures(), "no write failed while the connections were replaced");
            assertTrue(refresh.adopted() && refresh.changed());
            assertEquals(OLD, refresh.before().size());
            assertEquals(NEW, refresh.now().size());
            assertEquals(NEW, session.export().size(), "the session works with the new size");
            assertEquals(0, session.reconnects(), "a refresh is not a reconnect");

            // Past the old end: a write across it, and one at the very end.
            Random random = new Random(6);
            byte[] across = new byte[1 << 20];
            random.nextBytes(across);
            System.arraycopy(across, 0, model, OLD - (1 << 19), across.length);
            session.write(OLD - (1 << 19), Unpooled.wrappedBuffer(across), true).get(10, TimeUnit.SECONDS);
            byte[] last = new byte[BLOCK];
            random.nextBytes(last);
            System.arraycopy(last, 0, model, NEW - BLOCK, BLOCK);
            session.write(NEW - BLOCK, Unpooled.wrappedBuffer(last), false).get(10, TimeUnit.SECONDS);
            session.flush().get(10, TimeUnit.SECONDS);
            load.verify(session);
        }
        load.verifyFile(file); // the file holds every write, past the old end too
    }

    @Test
    void anUnchangedOrRefusedExportKeepsTheConnections() throws Exception {
        Path file = dir.resolve("disk.img");
        Files.write(file, new byte[OLD]);
        try (PeerServer server = PeerServer.nbdkit("nbdkit file", dir, file, List.of(), "file", "file=" + file);
                NbdSession session = NbdSession.connect(engine.connector(), server.uri, options(1)).get(10, TimeUnit.SECONDS)) {
            ExportRefresh same = session.refreshExport(e -> true).get(10, TimeUnit.SECONDS);
            assertFalse(same.changed());
            assertFalse(same.adopted(), "nothing to adopt");

            try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
                f.setLength(OLD / 2);
            }
            ExportRefresh shrunk = session.refreshExport(e -> e.size() >= OLD).get(10, TimeUnit.SECONDS);
            assertTrue(shrunk.changed());
            assertEquals(OLD / 2, shrunk.now().size());
            assertFalse(shrunk.adopted(), "a refused description is not adopted");
            assertEquals(OLD, session.export().size(), "the session keeps its size");
            // The kept connection still serves what lies within the file.
            session.write(0, Unpooled.wrappedBuffer(new byte[] {1, 2, 3, 4, 5, 6, 7, 8}), false).get(10, TimeUnit.SECONDS);
            ByteBuf back = session.read(0, 8).get(10, TimeUnit.SECONDS);
            byte[] got = new byte[8];
            back.readBytes(got);
            assertEquals(-1, Arrays.mismatch(new byte[] {1, 2, 3, 4, 5, 6, 7, 8}, got));
            back.release();
        }
    }
}
