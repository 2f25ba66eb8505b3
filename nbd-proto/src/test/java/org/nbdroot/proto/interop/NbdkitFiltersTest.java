package org.nbdroot.proto.interop;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import static org.nbdroot.proto.interop.EngineExtension.failureOf;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;
import org.nbdroot.proto.Extent;
import org.nbdroot.proto.NbdServerErrorException;
import org.nbdroot.proto.NbdUnsupportedException;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.session.SessionOptions;
import org.nbdroot.proto.wire.NbdError;
import org.nbdroot.proto.wire.TransmissionFlag;

/** nbdkit's filters change what the server offers or does; the engine must follow. */
class NbdkitFiltersTest {
    @RegisterExtension
    static final EngineExtension engine = new EngineExtension(2);

    @TempDir
    Path dir;

    /** Filters by name, and their key=value parameters, which nbdkit takes after the plugin's. */
    private PeerServer nbdkit(List<String> filters, String plugin, String... args) throws Exception {
        List<String> options = new ArrayList<>();
        List<String> parameters = new ArrayList<>(List.of(args));
        for (String f : filters) {
            if (f.contains("=")) {
                parameters.add(f);
            } else {
                options.add("--filter=" + f);
            }
        }
        return PeerServer.nbdkit("nbdkit " + filters, dir, null, options, plugin, parameters.toArray(String[]::new));
    }

    private static NbdSession open(PeerServer server, SessionOptions options) throws Exception {
        return NbdSession.connect(engine.connector(), server.uri, options).get(10, TimeUnit.SECONDS);
    }

    @Test
    void blocksizePolicyIsHonoured() throws Exception {
        try (PeerServer server = nbdkit(List.of("blocksize-policy", "blocksize-minimum=4096",
                "blocksize-preferred=65536", "blocksize-maximum=262144", "blocksize-error-policy=error"),
                "memory", "size=16M");
                NbdSession session = open(server, SessionOptions.DEFAULT)) {
            var block = session.export().blockSize();
            assertTrue(session.export().blockSizeFromServer());
            assertEquals(4096, block.minimum());
            assertEquals(65536, block.preferred());
            assertEquals(262144, block.maximum());
            byte[] data = new byte[1 << 20]; // four times the maximum: split, or the filter would fail it
            new Random(3).nextBytes(data);
            session.write(1 << 20, Unpooled.wrappedBuffer(data), false).get(10, TimeUnit.SECONDS);
            ByteBuf back = session.read(1 << 20, data.length).get(10, TimeUnit.SECONDS);
            byte[] got = new byte[data.length];
            back.readBytes(got);
            back.release();
            assertArrayEquals(data, got);
            assertInstanceOf(IllegalArgumentException.class, failureOf(session.read(512, 4096)), "misaligned: not sent");
        }
    }

    @Test
    void errorFilterFailsThoseRequestsOnly() throws Exception {
        try (PeerServer server = nbdkit(List.of("error", "error=EIO", "error-pread-rate=100%"), "memory", "size=16M");
                NbdSession session = open(server, SessionOptions.DEFAULT)) {
            session.write(0, Unpooled.wrappedBuffer(new byte[4096]), false).get(10, TimeUnit.SECONDS);
            for (int i = 0; i < 4; i++) {
                NbdServerErrorException e = assertInstanceOf(NbdServerErrorException.class, failureOf(session.read(0, 4096)));
                assertEquals(NbdError.EIO, e.error());
            }
            session.write(4096, Unpooled.wrappedBuffer(new byte[4096]), false).get(10, TimeUnit.SECONDS);
        }
    }

    @Test
    void delayedRepliesAllArrive() throws Exception {
        try (PeerServer server = nbdkit(List.of("delay", "rdelay=300ms"), "memory", "size=16M");
                NbdSession session = open(server, SessionOptions.DEFAULT)) {
            long start = System.nanoTime();
            List<CompletableFuture<ByteBuf>> reads = new ArrayList<>();
            for (int i = 0; i < 32; i++) {
                reads.add(session.read(i * 4096L, 4096));
            }
            for (CompletableFuture<ByteBuf> r : reads) {
                r.get(30, TimeUnit.SECONDS).release();
            }
            long millis = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
            assertTrue(millis >= 300, "each read waited for the delay: " + millis + " ms");
        }
    }

    @Test
    void noextentsReportsOneDataExtent() throws Exception {
        try (PeerServer server = nbdkit(List.of("noextents"), "memory", "size=16M");
                NbdSession session = open(server, SessionOptions.DEFAULT)) {
            List<Extent> extents = session.blockStatus(0, 16 << 20, false).get(10, TimeUnit.SECONDS);
            assertEquals(0, extents.get(0).offset());
            assertFalse(extents.get(0).hole() || extents.get(0).zero(), "all data: " + extents);
        }
    }

    @Test
    void nozeroWithdrawsWriteZeroes() throws Exception {
        try (PeerServer server = nbdkit(List.of("nozero", "zeromode=none"), "memory", "size=16M");
                NbdSession session = open(server, SessionOptions.DEFAULT)) {
            assertFalse(session.export().has(TransmissionFlag.SEND_WRITE_ZEROES));
            assertInstanceOf(NbdUnsupportedException.class, failureOf(session.writeZeroes(0, 4096, 0)));
        }
    }

    @Test
    void multiConnDecidesHowManyConnections() throws Exception {
        Path file = dir.resolve("disk.img");
        Files.write(file, new byte[16 << 20]);
        try (PeerServer server = nbdkit(List.of("multi-conn", "multi-conn-mode=unsafe"), "file", "file=" + file);
                NbdSession session = open(server, SessionOptions.DEFAULT.withConnections(4))) {
            assertTrue(session.export().has(TransmissionFlag.CAN_MULTI_CONN));
            assertEquals(4, session.connectionCount());
            // Writes spread over the connections; a flush on one covers them all (that is what the flag promises).
            List<CompletableFuture<Void>> writes = new ArrayList<>();
            byte[] data = new byte[1 << 20];
            new Random(9).nextBytes(data);
            for (int i = 0; i < 16; i++) {
                writes.add(session.write(i * 65536L, Unpooled.wrappedBuffer(data, i * 65536, 65536), false));
            }
            CompletableFuture.allOf(writes.toArray(CompletableFuture[]::new)).get(10, TimeUnit.SECONDS);
            session.flush().get(10, TimeUnit.SECONDS);
            byte[] onDisk = java.util.Arrays.copyOf(Files.readAllBytes(file), data.length);
            assertArrayEquals(data, onDisk);
        }
        try (PeerServer server = nbdkit(List.of("multi-conn", "multi-conn-mode=disable"), "memory", "size=16M");
                NbdSession session = open(server, SessionOptions.DEFAULT.withConnections(4))) {
            assertFalse(session.export().has(TransmissionFlag.CAN_MULTI_CONN));
            assertEquals(1, session.connectionCount(), "one connection when the server does not allow more");
        }
    }

}
