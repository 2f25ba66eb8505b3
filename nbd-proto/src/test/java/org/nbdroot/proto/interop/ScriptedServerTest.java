package org.nbdroot.proto.interop;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import static org.nbdroot.proto.interop.EngineExtension.failureOf;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.nbdroot.proto.NbdUnsupportedException;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.session.SessionOptions;
import org.nbdroot.proto.testing.ScriptedNbdProtocol;
import org.nbdroot.proto.testing.ScriptedNbdServer;
import org.nbdroot.proto.testing.ScriptedRequest;
import org.nbdroot.proto.transport.NbdUri;

/** The engine against the scripted server's correct but demanding behaviour. */
class ScriptedServerTest {
    @RegisterExtension
    static final EngineExtension engine = new EngineExtension(1);

    @Test
    void repliesOutOfOrderAndReadsInShuffledChunksWithHoles() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(4 << 20).reorderWindow(16)
                .readChunkSize(1000).shuffleChunks(true).seed(3).start()) {
            Random random = new Random(5);
            byte[] data = new byte[4 << 20];
            for (int i = 0; i < data.length; i += 8192) {
                if (random.nextBoolean()) { // leave some blocks zero, so the server sends holes
                    for (int j = 0; j < 8192; j++) {
                        data[i + j] = (byte) random.nextInt();
                    }
                }
            }
            server.write(0, data);
            try (NbdSession session = NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()), SessionOptions.DEFAULT)
                    .get(5, TimeUnit.SECONDS)) {
                List<CompletableFuture<ByteBuf>> reads = new ArrayList<>();
                List<long[]> ranges = new ArrayList<>();
                for (int i = 0; i < 64; i++) {
                    int length = 512 * (1 + random.nextInt(64));
                    long offset = 512L * random.nextInt((data.length - length) / 512);
                    ranges.add(new long[] {offset, length});
                    reads.add(session.read(offset, length));
                }
                for (int i = 0; i < reads.size(); i++) {
                    ByteBuf got = reads.get(i).get(10, TimeUnit.SECONDS);
                    byte[] bytes = new byte[got.readableBytes()];
                    got.readBytes(bytes);
                    got.release();
                    int offset = (int) ranges.get(i)[0];
                    assertArrayEquals(java.util.Arrays.copyOfRange(data, offset, offset + bytes.length), bytes,
                            "read " + i + " at " + offset);
                }
            }
            assertEquals(List.of(), server.violations());
        }
    }

    @Test
    void nothingIsSentThatTheExportDidNotAdvertise() throws Exception {
        int flags = ScriptedNbdProtocol.NBD_FLAG_HAS_FLAGS; // no flush, FUA, trim, zeroes, cache
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(1 << 20).transmissionFlags(flags)
                .blockSizes(4096, 4096, 64 << 10).start()) {
            try (NbdSession session = NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()), SessionOptions.DEFAULT)
                    .get(5, TimeUnit.SECONDS)) {
                assertUnsupported(session.flush());
                assertUnsupported(session.trim(0, 4096, false));
                assertUnsupported(session.writeZeroes(0, 4096, 0));
                assertUnsupported(session.cache(0, 4096));
                assertUnsupported(session.write(0, Unpooled.wrappedBuffer(new byte[4096]), true));
                assertInstanceOf(IllegalArgumentException.class, failureOf(session.read(100, 4096)), "misaligned");
                assertInstanceOf(IllegalArgumentException.class, failureOf(session.read(1 << 20, 4096)), "past the end");
                // A write longer than the 64 KiB maximum goes out in pieces of at most 64 KiB.
                byte[] big = new byte[256 << 10];
                new Random(1).nextBytes(big);
                session.write(0, Unpooled.wrappedBuffer(big), false).get(5, TimeUnit.SECONDS);
                assertArrayEquals(big, server.read(0, big.length));
            }
            assertTrue(server.awaitDisconnect(Duration.ofSeconds(5)));
            List<ScriptedRequest> requests = server.requests();
            assertEquals(List.of(), server.violations());
            long writes = requests.stream().filter(r -> r.type() == ScriptedNbdProtocol.NBD_CMD_WRITE).count();
            assertEquals(4, writes, "256 KiB in 64 KiB pieces: " + requests);
            assertTrue(requests.stream().allMatch(r -> r.type() == ScriptedNbdProtocol.NBD_CMD_WRITE
                    || r.type() == ScriptedNbdProtocol.NBD_CMD_DISC), "only writes and the disconnect: " + requests);
        }
    }

    @Test
    void fallsBackToExportNameWithoutGo() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(1 << 20).supportsGo(false).start()) {
            try (NbdSession session = NbdSession.connect(engine.connector(), NbdUri.parse(server.uri()), SessionOptions.DEFAULT)
                    .get(5, TimeUnit.SECONDS)) {
                assertEquals(1 << 20, session.export().size());
                session.read(0, 4096).get(5, TimeUnit.SECONDS).release();
            }
            assertTrue(server.options().contains(ScriptedNbdProtocol.NBD_OPT_EXPORT_NAME), "options " + server.options());
        }
    }

    private static void assertUnsupported(CompletableFuture<?> future) throws InterruptedException {
        assertInstanceOf(NbdUnsupportedException.class, failureOf(future));
    }

}
