package org.nbdroot.client.ggate;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.netty.buffer.ByteBuf;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import jnr.constants.platform.Errno;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nbdroot.client.ggate.emu.GgateEmulator;
import org.nbdroot.client.ggate.emu.GgateEmulator.BioResult;
import org.nbdroot.proto.interop.PeerServer;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.session.SessionOptions;
import org.nbdroot.proto.testing.ScriptedNbdProtocol;
import org.nbdroot.proto.testing.ScriptedNbdServer;
import org.nbdroot.proto.transport.NbdConnector;
import org.nbdroot.proto.transport.NbdUri;
import org.nbdroot.proto.transport.Transport;

/**
 * The START threads do not wait for replies: requests outstanding beyond the number of START
 * threads, replies answered in any order, READ data handed to the kernel from the reply or
 * from a copy, WRITEs that make the buffer grow while others are outstanding, and a device
 * that ends only once every request it took has been answered.
 */
class GgateAsyncTest {
    static final int DISK = 16 << 20;
    static final Duration WAIT = Duration.ofSeconds(10);
    /** Longer than WAIT: a server holding replies until its window fills never lingers them out in time. */
    static final Duration HOLD = Duration.ofSeconds(20);
    /**
     * Such a server holds a FLUSH's reply too: without SEND_FLUSH, destroy sends none (it would
     * wait HOLD), and nothing hurries a reply the test wants held.
     */
    static final int NO_FLUSH = ScriptedNbdProtocol.NBD_FLAG_HAS_FLAGS;

    GgateEmulator kernel;
    Transport transport;
    NbdConnector connector;
    byte[] model;

    @BeforeEach
    void start() throws Exception {
        kernel = GgateEmulator.start();
        kernel.configureBinding();
        transport = Transport.create(2);
        connector = new NbdConnector(transport, Duration.ofSeconds(5));
        model = new byte[DISK];
        new Random(1).nextBytes(model);
    }

    @AfterEach
    void stop() {
        transport.close();
        kernel.close();
    }

    private NbdSession session(ScriptedNbdServer server) throws Exception {
        server.write(0, model);
        return NbdSession.connect(connector, NbdUri.parse(server.uri()), SessionOptions.DEFAULT).get(10, TimeUnit.SECONDS);
    }

    private static GgateOptions options(int workers) {
        return new GgateOptions(GgateAbi.UNIT_AUTO, 0, GgateOptions.DEFAULT_QUEUE_SIZE, 0, false, workers);
    }

    private void assertRead(BioResult result, long offset) {
        assertTrue(result.ok(), result.toString());
        assertArrayEquals(Arrays.copyOfRange(model, (int) offset, (int) offset + result.data().length), result.data(),
                "read at " + offset);
    }

    private long write(int unit, long offset, int length, Random random) throws Exception {
        byte[] data = new byte[length];
        random.nextBytes(data);
        System.arraycopy(data, 0, model, (int) offset, length);
        return kernel.queueWrite(unit, offset, data);
    }

    @Test
    void oneStartThreadKeepsManyRequestsOutstanding() throws Exception {
        // The server answers only once it holds 32 requests: one START thread waiting for each
        // reply would never get there (within WAIT).
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(DISK).reorderWindow(32).reorderLinger(HOLD)
                .transmissionFlags(NO_FLUSH).start()) {
            NbdSession session = session(server);
            GgateDevice device = GgateDevice.create(session, options(1), server.uri());
            List<Long> ids = new ArrayList<>();
            for (int i = 0; i < 32; i++) {
                ids.add(kernel.queueRead(device.unit(), i * 65536L, 4096));
            }
            for (int i = 0; i < ids.size(); i++) {
                assertRead(kernel.awaitBio(ids.get(i), WAIT), i * 65536L); // answered newest first
            }
            device.destroy(true);
            assertNull(device.awaitTermination());
            session.close();
        }
    }

    /** The kernel's queue may hold far more than memory should: the START thread waits at the bound. */
    @Test
    void theBytesOutstandingStayWithinTheirBound() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(DISK).reorderWindow(64)
                .reorderLinger(Duration.ofSeconds(1)).transmissionFlags(NO_FLUSH).start()) {
            NbdSession session = session(server);
            GgateDevice device = GgateDevice.create(session, options(1), server.uri());
            int mib = 1 << 20;
            List<Long> ids = new ArrayList<>();
            for (int i = 0; i < 48; i++) {
                ids.add(kernel.queueRead(device.unit(), (long) (i % 16) * mib, mib));
            }
            long most = 0;
            long deadline = System.nanoTime() + WAIT.toNanos();
            for (long id : ids) { // 48 MiB asked for, 32 MiB at most outstanding
                while (kernel.isPending(id) && System.nanoTime() < deadline) {
                    most = Math.max(most, device.outstandingBytes());
                }
            }
            for (int i = 0; i < ids.size(); i++) {
                assertRead(kernel.awaitBio(ids.get(i), WAIT), (long) (i % 16) * mib);
            }
            assertTrue(most <= GgateDevice.MAX_OUTSTANDING_BYTES, "outstanding at most " + most);
            assertTrue(most >= GgateDevice.MAX_OUTSTANDING_BYTES - mib, "the load reached the bound: " + most);
            assertEquals(0, device.outstandingBytes());
            device.destroy(true);
            assertNull(device.awaitTermination());
            session.close();
        }
    }

    @Test
    void readsAreAnsweredFromTheReplyItselfOrFromACopy() throws Exception {
        // 64 KiB the most per NBD request: a 256 KiB bio is four, answered in pieces.
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(DISK).blockSizes(512, 4096, 65536).start()) {
            NbdSession session = session(server);
            ByteBuf small = session.read(0, 512).get(10, TimeUnit.SECONDS);
            ByteBuf split = session.read(0, 262144).get(10, TimeUnit.SECONDS);
            try {
                assertTrue(small.hasMemoryAddress() && small.nioBufferCount() == 1, "a small reply is one direct buffer");
                assertTrue(split.nioBufferCount() > 1, "a split read is in pieces, which are copied");
            } finally {
                small.release();
                split.release();
            }
            GgateDevice device = GgateDevice.create(session, options(2), server.uri());
            List<long[]> reads = new ArrayList<>();
            for (int i = 0; i < 40; i++) {
                reads.add(new long[] {kernel.queueRead(device.unit(), i * 262144L, i % 2 == 0 ? 512 : 262144), i * 262144L});
            }
            for (long[] r : reads) {
                assertRead(kernel.awaitBio(r[0], WAIT), r[1]);
            }
            device.destroy(true);
            assertNull(device.awaitTermination());
            session.close();
        }
    }

    @Test
    void writesLongerThanTheBufferWhileOthersAreOutstanding() throws Exception {
        // Eight bios all outstanding at once (the server answers when it holds eight): the 1 MiB
        // WRITE makes the one START thread's 128 KiB buffer grow (START answers ENOMEM), the small
        // writes after it are copied out of the grown buffer, the large ones take it along.
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(DISK).reorderWindow(8).reorderLinger(HOLD)
                .transmissionFlags(NO_FLUSH).start()) {
            NbdSession session = session(server);
            GgateDevice device = GgateDevice.create(session, options(1), server.uri());
            int unit = device.unit();
            Random random = new Random(2);
            List<Long> writes = new ArrayList<>();
            writes.add(write(unit, 0, 4096, random));
            writes.add(write(unit, 1 << 20, 1 << 20, random));
            writes.add(write(unit, 3 << 20, 4096, random));
            writes.add(write(unit, 4 << 20, 262144, random));
            writes.add(write(unit, 5 << 20, 786432, random));
            writes.add(write(unit, 7 << 20, 1 << 20, random));
            long read = kernel.queueRead(unit, 9 << 20, 65536);
            writes.add(write(unit, 10 << 20, 512, random));
            for (long id : writes) {
                BioResult r = kernel.awaitBio(id, WAIT);
                assertTrue(r.ok(), "write: " + r);
            }
            assertRead(kernel.awaitBio(read, WAIT), 9 << 20);
            assertEquals(0, kernel.unit(unit).orElseThrow().taken(), "nothing left outstanding");
            device.destroy(true);
            assertNull(device.awaitTermination());
            session.close();
            assertEquals(-1, Arrays.mismatch(model, server.contents()), "the export holds every write");
        }
    }

    @Test
    void theDeviceEndsOnlyOnceEveryRequestItTookIsAnswered() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(DISK).reorderWindow(8)
                .reorderLinger(Duration.ofSeconds(5)).transmissionFlags(NO_FLUSH).start()) {
            NbdSession session = session(server);
            GgateDevice device = GgateDevice.create(session, options(2), server.uri());
            long id = write(device.unit(), 0, 4096, new Random(3));
            assertTrue(server.awaitRequests(1, WAIT), "the write reached the server");
            device.destroy(false); // the kernel fails the bio; the NBD request is still out
            assertTrue(kernel.awaitBio(id, WAIT).failedWith(Errno.ENXIO));
            CompletableFuture<Throwable> ended = CompletableFuture.supplyAsync(() -> {
                try {
                    return device.awaitTermination();
                } catch (InterruptedException e) {
                    throw new IllegalStateException(e);
                }
            });
            Thread.sleep(500);
            assertFalse(ended.isDone(), "not ended while a request is outstanding");
            assertNull(ended.get(WAIT.toSeconds(), TimeUnit.SECONDS), "ended once the reply came (its DONE finds no unit)");
            session.close();
            assertEquals(List.of(), server.violations());
        }
    }

    /**
     * No direct memory for a WRITE's data once START handed the bio over: the worker gives it
     * back to the kernel (DONE with EAGAIN puts it at the head of the queue) and takes it again
     * later. It used to die, leaving the bio unanswered and the unit without a START thread.
     */
    @Test
    void aWriteTakenWithoutMemoryForItsDataGoesBackToTheKernelAndIsServedLater() throws Exception {
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(DISK).start()) {
            NbdSession session = session(server);
            GgateDevice device = GgateDevice.create(session, options(1), server.uri());
            java.util.concurrent.atomic.AtomicInteger refusals = new java.util.concurrent.atomic.AtomicInteger(2);
            java.util.function.IntFunction<ByteBuf> real = GgateWorker.allocator;
            GgateWorker.allocator = size -> {
                if (size == 4096 && refusals.getAndDecrement() > 0) {
                    throw new OutOfMemoryError("Cannot reserve 4096 bytes of direct buffer memory (a test)");
                }
                return real.apply(size);
            };
            try {
                long id = write(device.unit(), 8192, 4096, new Random(21));
                assertTrue(kernel.awaitBio(id, WAIT).ok(), "the write was served once memory was there");
                assertTrue(refusals.get() < 0, "taken three times: refused twice, then served");
            } finally {
                GgateWorker.allocator = real;
            }
            assertRead(kernel.awaitBio(kernel.queueRead(device.unit(), 8192, 4096), WAIT), 8192);
            assertArrayEquals(Arrays.copyOfRange(model, 8192, 8192 + 4096), Arrays.copyOfRange(server.contents(), 8192, 8192 + 4096));
            device.destroy(true);
            assertNull(device.awaitTermination(), "the worker served on");
            session.close();
        }
    }

    /**
     * A BIO_DELETE of 2 GiB or more (GEOM sends them with delete_max_sectors 0, or large
     * sectors): the session splits it, so only READ and WRITE are bounded by an int. It used to
     * fail with EINVAL.
     */
    @Test
    void aDeleteOfMoreThan2GiBIsServed(@TempDir java.nio.file.Path dir) throws Exception {
        long tail = 3L << 30;
        // The memory plugin: sparse, and a trimmed range reads back as zeroes.
        try (PeerServer server = PeerServer.nbdkit("nbdkit memory", dir, null, List.of(), "memory", "size=5G")) {
            NbdSession session = NbdSession.connect(connector, server.uri, SessionOptions.DEFAULT).get(10, TimeUnit.SECONDS);
            GgateDevice device = GgateDevice.create(session, options(1), server.uri.toString());
            byte[] below = new byte[4096];
            byte[] above = new byte[4096];
            new Random(5).nextBytes(below);
            new Random(6).nextBytes(above);
            assertTrue(kernel.awaitBio(kernel.queueWrite(device.unit(), tail - 8192, below), WAIT).ok());
            assertTrue(kernel.awaitBio(kernel.queueWrite(device.unit(), tail, above), WAIT).ok());
            BioResult delete = kernel.awaitBio(kernel.queueBio(device.unit(), GgateEmulator.BIO_DELETE, 0, tail, null), WAIT);
            assertTrue(delete.ok(), "a 3 GiB BIO_DELETE: " + delete);
            assertArrayEquals(new byte[4096], kernel.awaitBio(kernel.queueRead(device.unit(), tail - 8192, 4096), WAIT).data(),
                    "deleted just below 3 GiB");
            assertArrayEquals(above, kernel.awaitBio(kernel.queueRead(device.unit(), tail, 4096), WAIT).data(),
                    "untouched from 3 GiB on");
            device.destroy(true);
            assertNull(device.awaitTermination());
            session.close();
        }
    }
}
