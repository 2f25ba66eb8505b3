package org.nbdroot.client.linuxnbd;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.epoll.EpollDomainSocketChannel;
import io.netty.handler.codec.ByteToMessageDecoder;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nbdroot.proto.interop.PeerServer;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.session.SessionOptions;
import org.nbdroot.proto.transport.NbdConnector;
import org.nbdroot.proto.transport.Transport;
import org.nbdroot.proto.wire.Command;
import org.nbdroot.proto.wire.CommandFlag;
import org.nbdroot.proto.wire.NbdConstants;
import org.nbdroot.proto.wire.NbdError;

/**
 * The bridge without a kernel: this test plays the kernel's side of the socket pair (the
 * requests nbd.c sends, handles with a cookie in the high half) against the bridge serving
 * a real nbdkit, and checks every reply: one per handle, the right error, exactly the data.
 * The real kernel is in {@link LinuxNbdKernelTest}.
 */
class KernelBridgeTest {
    private static final int SIZE = 16 * 1024 * 1024;

    @TempDir
    Path dir;
    private Transport transport;
    private PeerServer server;
    private NbdSession session;
    private Path backing;
    private FakeKernel kernel;
    private KernelBridge bridge;
    private Bridged main;

    /** The kernel's end: sends requests, collects simple replies (reads' data by the length it asked for). */
    static final class FakeKernel extends ByteToMessageDecoder {
        record Reply(int error, byte[] data) {}

        final Map<Long, Integer> readLengths = new ConcurrentHashMap<>();
        final Map<Long, Reply> replies = new ConcurrentHashMap<>();
        volatile int duplicates;
        volatile String broken;
        EpollDomainSocketChannel channel;

        @Override
        protected void decode(ChannelHandlerContext ctx, ByteBuf in, List<Object> out) {
            if (in.readableBytes() < NbdConstants.SIMPLE_REPLY_HEADER_LENGTH) {
                return;
            }
            int magic = in.getInt(in.readerIndex());
            int error = in.getInt(in.readerIndex() + 4);
            long handle = in.getLong(in.readerIndex() + 8);
            if (magic != NbdConstants.SIMPLE_REPLY_MAGIC) {
                broken = "reply magic " + Integer.toHexString(magic);
                in.skipBytes(in.readableBytes());
                return;
            }
            Integer readLength = readLengths.get(handle);
            int data = error == 0 && readLength != null ? readLength : 0;
            if (in.readableBytes() < NbdConstants.SIMPLE_REPLY_HEADER_LENGTH + data) {
                return;
            }
            in.skipBytes(NbdConstants.SIMPLE_REPLY_HEADER_LENGTH);
            byte[] bytes = new byte[data];
            in.readBytes(bytes);
            if (replies.putIfAbsent(handle, new Reply(error, bytes)) != null) {
                duplicates++;
            }
        }

        void send(Command command, int flags, long handle, long offset, int length, byte[] payload) {
            ByteBuf b = Unpooled.buffer(NbdConstants.REQUEST_HEADER_LENGTH + (payload == null ? 0 : payload.length));
            b.writeInt(NbdConstants.REQUEST_MAGIC).writeInt(flags << 16 | command.code()).writeLong(handle)
                    .writeLong(offset).writeInt(length);
            if (payload != null) {
                b.writeBytes(payload);
            }
            if (command == Command.READ) {
                readLengths.put(handle, length);
            }
            channel.writeAndFlush(b);
        }

        Reply await(long handle) throws InterruptedException {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (System.nanoTime() < deadline) {
                Reply r = replies.get(handle);
                if (r != null) {
                    return r;
                }
                Thread.sleep(2);
            }
            throw new AssertionError("no reply for handle " + Long.toHexString(handle) + " within 10 s"
                    + (broken != null ? " (" + broken + ")" : ""));
        }
    }

    /** A handle as nbd.c makes them: a cookie in the high 32 bits, the tag in the low. */
    private static long handle(int cookie, int tag) {
        return ((long) cookie << 32) | tag;
    }

    /** A session to a server of its own, with a bridge and a fake kernel on a socket pair of their own. */
    private final class Bridged implements AutoCloseable {
        final NbdSession session;
        final KernelBridge bridge;
        final FakeKernel kernel = new FakeKernel();

        Bridged(PeerServer server, String name) throws Exception {
            session = NbdSession.connect(new NbdConnector(transport, Duration.ofSeconds(5)), server.uri, SessionOptions.DEFAULT)
                    .get(10, TimeUnit.SECONDS);
            int[] pair = NbdDeviceControl.socketPair();
            NbdDeviceControl.setNonBlocking(pair[0]);
            NbdDeviceControl.setNonBlocking(pair[1]);
            bridge = KernelBridge.attach(transport, pair[1], name, session);
            kernel.channel = new EpollDomainSocketChannel(pair[0]);
            kernel.channel.pipeline().addLast(kernel);
            transport.group().register(kernel.channel).syncUninterruptibly();
        }

        @Override
        public void close() throws Exception {
            kernel.channel.close().syncUninterruptibly();
            bridge.closed().handle((v, e) -> null).get(10, TimeUnit.SECONDS); // a test may have broken it on purpose
            session.disconnect().get(10, TimeUnit.SECONDS);
        }
    }

    @BeforeEach
    void setUp() throws Exception {
        backing = dir.resolve("disk.img");
        try (RandomAccessFile f = new RandomAccessFile(backing.toFile(), "rw")) {
            f.setLength(SIZE);
        }
        server = PeerServer.nbdkit("nbdkit", dir, backing, List.of(), "file", "file=" + backing);
        transport = Transport.create(2);
        main = new Bridged(server, "nbd-test");
        session = main.session;
        bridge = main.bridge;
        kernel = main.kernel;
    }

    @AfterEach
    void tearDown() throws Exception {
        main.close();
        transport.close();
        server.close();
    }

    @Test
    void manyRequestsInFlightEachAnsweredOnceWithItsData() throws Exception {
        Random random = new Random(7);
        int n = 128; // the kernel's queue depth
        byte[][] blocks = new byte[n][];
        for (int i = 0; i < n; i++) {
            blocks[i] = new byte[(1 + random.nextInt(32)) * 4096];
            random.nextBytes(blocks[i]);
            kernel.send(Command.WRITE, i % 3 == 0 ? CommandFlag.FUA : 0, handle(1, i), (long) i * 131072, blocks[i].length,
                    blocks[i]);
        }
        for (int i = 0; i < n; i++) {
            assertEquals(0, kernel.await(handle(1, i)).error(), "write " + i);
        }
        kernel.send(Command.FLUSH, 0, handle(2, 0), 0, 0, null);
        assertEquals(0, kernel.await(handle(2, 0)).error(), "flush");
        for (int i = 0; i < n; i++) {
            kernel.send(Command.READ, 0, handle(3, i), (long) i * 131072, blocks[i].length, null);
        }
        for (int i = 0; i < n; i++) {
            FakeKernel.Reply r = kernel.await(handle(3, i));
            assertEquals(0, r.error(), "read " + i);
            assertArrayEquals(blocks[i], r.data(), "read " + i);
        }
        byte[] file = Files.readAllBytes(backing);
        for (int i = 0; i < n; i++) {
            byte[] got = java.util.Arrays.copyOfRange(file, i * 131072, i * 131072 + blocks[i].length);
            assertArrayEquals(blocks[i], got, "backing file at block " + i);
        }
        assertEquals(0, kernel.duplicates);
        assertNull(kernel.broken);
        assertEquals(2L * n + 1, bridge.served()); // the writes, the flush, the reads
    }

    @Test
    void aFailedRequestIsAnErrorReplyWithoutDataAndTheStreamGoesOn() throws Exception {
        kernel.send(Command.READ, 0, handle(1, 1), SIZE - 4096, 8192, null); // past the end
        FakeKernel.Reply r = kernel.await(handle(1, 1));
        assertEquals(NbdError.EINVAL.code(), r.error());
        assertEquals(0, r.data().length);
        kernel.send(Command.CACHE, 0, handle(1, 2), 0, 4096, null); // a command the bridge does not serve
        assertTrue(kernel.await(handle(1, 2)).error() != 0);
        kernel.send(Command.READ, 0, handle(1, 3), 0, 4096, null);
        FakeKernel.Reply ok = kernel.await(handle(1, 3));
        assertEquals(0, ok.error());
        assertArrayEquals(new byte[4096], ok.data());
        assertEquals(2, bridge.failed());
        assertNull(kernel.broken);
    }

    /**
     * The kernel sends discards and zeroing of up to 4 GiB in one request (a length the 32-bit
     * field holds unsigned): more than 2 GiB used to be refused with EINVAL, which the kernel
     * turns into an I/O error for blkdiscard, mkfs and fstrim.
     */
    @Test
    void trimAndWriteZeroesOfMoreThan2GiBAreServed() throws Exception {
        Path big = dir.resolve("big.img");
        long size = 5L << 30; // sparse: nothing but the blocks written below takes space
        long tail = 3L << 30; // what the requests cover
        byte[] inside = new byte[4096];
        byte[] after = new byte[4096];
        new Random(11).nextBytes(inside);
        new Random(12).nextBytes(after);
        try (RandomAccessFile f = new RandomAccessFile(big.toFile(), "rw")) {
            f.setLength(size);
            f.seek(tail - 8192);
            f.write(inside);
            f.seek(tail);
            f.write(after);
        }
        try (PeerServer bigServer = PeerServer.nbdkit("nbdkit", dir, big, List.of(), "file", "file=" + big)) {
            try (Bridged bridged = new Bridged(bigServer, "nbd-big")) {
                FakeKernel bigKernel = bridged.kernel;
                bigKernel.send(Command.TRIM, 0, handle(1, 1), 0, (int) tail, null); // 3 GiB: negative as an int
                assertEquals(0, bigKernel.await(handle(1, 1)).error(), "a 3 GiB TRIM");
                bigKernel.send(Command.WRITE_ZEROES, 0, handle(1, 2), 0, (int) tail, null);
                assertEquals(0, bigKernel.await(handle(1, 2)).error(), "a 3 GiB WRITE_ZEROES");
                bigKernel.send(Command.FLUSH, 0, handle(1, 3), 0, 0, null);
                assertEquals(0, bigKernel.await(handle(1, 3)).error());
                assertNull(bigKernel.broken);
            }
            try (RandomAccessFile f = new RandomAccessFile(big.toFile(), "r")) {
                byte[] got = new byte[4096];
                f.seek(tail - 8192);
                f.readFully(got);
                assertArrayEquals(new byte[4096], got, "zeroed just below 3 GiB");
                f.seek(tail);
                f.readFully(got);
                assertArrayEquals(after, got, "untouched from 3 GiB on");
            }
        }
    }

    /**
     * A slow server and a kernel that sends 96 MiB of writes at once: the bridge stops reading
     * the socket once 32 MiB are outstanding, rather than hold everything the kernel sends in
     * direct memory, and every write still lands.
     */
    @Test
    void theRequestDataOutstandingStaysWithinItsBound() throws Exception {
        Path slow = dir.resolve("slow.img");
        int mib = 1 << 20;
        int writes = 96;
        try (RandomAccessFile f = new RandomAccessFile(slow.toFile(), "rw")) {
            f.setLength((long) writes * mib);
        }
        try (PeerServer slowServer = PeerServer.nbdkit("nbdkit delay", dir, slow, List.of("--filter=delay"), "file",
                "file=" + slow, "delay-write=300ms")) {
            byte[][] data = new byte[writes][];
            Random random = new Random(13);
            KernelBridge slowBridge;
            try (Bridged bridged = new Bridged(slowServer, "nbd-slow")) {
                FakeKernel slowKernel = bridged.kernel;
                slowBridge = bridged.bridge;
                for (int i = 0; i < writes; i++) {
                    data[i] = new byte[mib];
                    random.nextBytes(data[i]);
                    slowKernel.send(Command.WRITE, 0, handle(1, i), (long) i * mib, mib, data[i]);
                }
                for (int i = 0; i < writes; i++) {
                    assertEquals(0, slowKernel.await(handle(1, i)).error(), "write " + i);
                }
                slowKernel.send(Command.FLUSH, 0, handle(2, 0), 0, 0, null);
                assertEquals(0, slowKernel.await(handle(2, 0)).error());
            }
            long most = slowBridge.mostOutstandingBytes();
            assertTrue(most >= KernelBridge.MAX_OUTSTANDING_BYTES, "the load reached the bound: " + most);
            // Past the bound only what the decoder had already read in is taken: one read's worth.
            assertTrue(most <= KernelBridge.MAX_OUTSTANDING_BYTES + 4L * mib, "outstanding at most " + most);
            byte[] file = Files.readAllBytes(slow);
            for (int i = 0; i < writes; i++) {
                assertArrayEquals(data[i], java.util.Arrays.copyOfRange(file, i * mib, (i + 1) * mib), "block " + i);
            }
        }
    }

    @Test
    void disconnectAnswersWhatCameBeforeThenCloses() throws Exception {
        byte[] data = new byte[1024 * 1024];
        new Random(9).nextBytes(data);
        kernel.send(Command.WRITE, 0, handle(1, 1), 0, data.length, data);
        kernel.send(Command.DISC, 0, 0, 0, 0, null);
        kernel.send(Command.READ, 0, handle(1, 2), 0, 4096, null); // after DISC: never served
        assertEquals(0, kernel.await(handle(1, 1)).error());
        bridge.closed().get(10, TimeUnit.SECONDS);
        assertTrue(kernel.channel.closeFuture().await(10, TimeUnit.SECONDS), "the kernel's end saw no close");
        assertNull(kernel.replies.get(handle(1, 2)));
        assertArrayEquals(data, java.util.Arrays.copyOf(Files.readAllBytes(backing), data.length));
        assertTrue(bridge.disconnectRequested(), "an end the kernel asked for");
    }

    /** The kernel shuts a socket it marked dead (a request outlived --timeout) without NBD_CMD_DISC. */
    @Test
    void aSocketShutWithoutDisconnectIsNotAnEndAskedFor() throws Exception {
        kernel.send(Command.READ, 0, handle(1, 1), 0, 4096, null);
        assertEquals(0, kernel.await(handle(1, 1)).error());
        kernel.channel.close().syncUninterruptibly();
        bridge.closed().get(10, TimeUnit.SECONDS);
        assertTrue(!bridge.disconnectRequested(), "no NBD_CMD_DISC came");
    }

    @Test
    void aBrokenRequestStreamClosesTheSocket() throws Exception {
        ByteBuf garbage = Unpooled.buffer(28).writeInt(0x12345678).writeZero(24);
        kernel.channel.writeAndFlush(garbage);
        Throwable failure = null;
        try {
            bridge.closed().get(10, TimeUnit.SECONDS);
        } catch (java.util.concurrent.ExecutionException e) {
            failure = e.getCause();
        }
        assertNotNull(failure, "a bad magic must end the stream with a failure");
        assertTrue(failure.getMessage().contains("request magic: 0x12345678"), failure.getMessage());
    }

    /**
     * The bridge's loop is busy with the NBD socket's whole read batch before it runs its
     * tasks; a large read's reply must not wait for that. Checked inside one task on the
     * bridge's loop, where the turn's flush cannot have run yet: a 4 KiB reply stays queued,
     * a 1 MiB one is already in the socket.
     */
    @Test
    void aLargeReadsReplyGoesOutAtOnceWhileSmallOnesWaitForTheTurnsFlush() throws Exception {
        int[] pair = NbdDeviceControl.socketPair();
        NbdDeviceControl.setNonBlocking(pair[0]);
        NbdDeviceControl.setNonBlocking(pair[1]);
        KernelBridge second = KernelBridge.attach(transport, pair[1], "nbd-flush-test", session);
        try {
            long[] waiting = new long[2];
            second.loop().submit(() -> {
                second.complete(new KernelRequest(Command.READ.code(), 0, handle(1, 1), 0, 4096, null),
                        Unpooled.directBuffer(4096).writeZero(4096), null);
                waiting[0] = bytesWaiting(pair[0]);
                second.complete(new KernelRequest(Command.READ.code(), 0, handle(1, 2), 0, 1 << 20, null),
                        Unpooled.directBuffer(1 << 20).writeZero(1 << 20), null);
                waiting[1] = bytesWaiting(pair[0]);
            }).get(10, TimeUnit.SECONDS);
            assertEquals(0, waiting[0], "a small reply went out before the turn's flush");
            assertTrue(waiting[1] >= NbdConstants.SIMPLE_REPLY_HEADER_LENGTH + 4096,
                    "the 1 MiB reply waited for the turn's flush: " + waiting[1] + " bytes in the socket");
        } finally {
            second.abort();
            NbdDeviceControl.closeDescriptor(pair[0]);
        }
    }

    /** What the daemon has written to the kernel's end and nobody read yet (a peek, without waiting). */
    private static long bytesWaiting(int fd) {
        final int msgPeek = 0x2;
        final int msgDontWait = 0x40;
        long n = NbdDeviceControl.library().recv(fd, new byte[2 << 20], 2 << 20, msgPeek | msgDontWait);
        return Math.max(0, n);
    }
}
