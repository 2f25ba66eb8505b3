package org.nbdroot.proto.interop;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.nbdroot.proto.ExportListing;
import org.nbdroot.proto.Extent;
import org.nbdroot.proto.session.ExportQueries;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.session.SessionOptions;
import org.nbdroot.proto.wire.CommandFlag;
import org.nbdroot.proto.wire.TransmissionFlag;

/**
 * One scenario against every real server: list, info, read, write (also past the 32 MiB
 * payload limit, so split), FUA, flush, write-zeroes, trim, cache and block status, each
 * where the export offers it, with every byte read back and, once the server has stopped,
 * the backing file compared with what the test wrote.
 */
class InteropTest {
    static final int DISK = 64 << 20;

    enum Server {
        NBDKIT_FILE, NBDKIT_FILE_NO_STRUCTURED_REPLIES, NBDKIT_MEMORY, NBD_SERVER, QEMU_NBD_RAW, QEMU_NBD_QCOW2;

        PeerServer start(Path dir, Path raw) throws Exception {
            return switch (this) {
                case NBDKIT_FILE -> PeerServer.nbdkit("nbdkit file", dir, raw, List.of(), "file", "file=" + raw);
                case NBDKIT_FILE_NO_STRUCTURED_REPLIES -> PeerServer.nbdkit("nbdkit file --no-sr", dir, raw,
                        List.of("--no-sr"), "file", "file=" + raw);
                case NBDKIT_MEMORY -> PeerServer.nbdkit("nbdkit memory", dir, null, List.of(), "memory", "size=" + DISK);
                case NBD_SERVER -> PeerServer.nbdServer(dir, raw, "disk");
                case QEMU_NBD_RAW -> PeerServer.qemuNbd(dir, raw, "raw", "disk");
                case QEMU_NBD_QCOW2 -> {
                    Path qcow2 = dir.resolve("disk.qcow2");
                    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw.toString(), qcow2.toString());
                    yield PeerServer.qemuNbd(dir, qcow2, "qcow2", "disk");
                }
            };
        }

        /** The export's content after the server stopped, as raw bytes. */
        byte[] content(Path dir, PeerServer server) throws Exception {
            if (this == QEMU_NBD_QCOW2) {
                Path raw = dir.resolve("after.raw");
                run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", server.backing.toString(), raw.toString());
                return Files.readAllBytes(raw);
            }
            return server.backing == null ? null : Files.readAllBytes(server.backing);
        }

        boolean startsWithRandomContent() {
            return this != NBDKIT_MEMORY;
        }
    }

    @RegisterExtension
    static final EngineExtension engine = new EngineExtension(2);

    @TempDir
    Path dir;

    @ParameterizedTest
    @EnumSource(Server.class)
    void fullCycle(Server kind) throws Exception {
        Path raw = dir.resolve("disk.raw");
        byte[] shadow = new byte[DISK];
        if (kind.startsWithRandomContent()) {
            new Random(42).nextBytes(shadow);
        }
        Files.write(raw, shadow);
        PeerServer server = kind.start(dir, raw);
        try {
            exercise(kind, server, shadow);
        } catch (AssertionError | Exception e) {
            throw new AssertionError(kind + " failed; server log:\n" + server.logTail(), e);
        } finally {
            server.close();
        }
        byte[] after = kind.content(dir, server);
        if (after != null) {
            assertEquals(shadow.length, after.length, "backing file size");
            assertTrue(Arrays.equals(shadow, after), "the backing file differs from what was written, first at byte "
                    + Arrays.mismatch(shadow, after));
        }
    }

    private void exercise(Server kind, PeerServer server, byte[] shadow) throws Exception {
        String export = server.uri.exportName();
        List<ExportListing> exports = await(ExportQueries.list(engine.connector(), server.uri.endpoint(), SessionOptions.DEFAULT));
        assertTrue(exports.stream().anyMatch(e -> e.name().equals(export)), "listing " + exports + " lacks '" + export + "'");

        var details = await(ExportQueries.inspect(engine.connector(), server.uri, SessionOptions.DEFAULT));
        assertEquals(DISK, details.export().size());
        var described = await(ExportQueries.describe(engine.connector(), server.uri, SessionOptions.DEFAULT)); // NBD_OPT_INFO
        if (kind != Server.NBD_SERVER) { // nbd-server 3.24 answers NBD_OPT_INFO with size 0
            assertEquals(details.export(), described.export(), "INFO and GO describe the export alike");
        }
        boolean structured = kind != Server.NBDKIT_FILE_NO_STRUCTURED_REPLIES && kind != Server.NBD_SERVER;
        assertEquals(structured, details.export().structuredReplies(), "structured replies");

        try (NbdSession session = await(NbdSession.connect(engine.connector(), server.uri, SessionOptions.DEFAULT))) {
            var info = session.export();
            Random random = new Random(7);
            int align = Math.max(info.blockSize().minimum(), 512);

            // Reads of the initial content, many in flight at once.
            assertReads(session, shadow, random, align, 64);

            // Writes of assorted sizes, then one longer than the 32 MiB payload limit (split in two).
            for (int i = 0; i < 32; i++) {
                int length = align * (1 + random.nextInt(64));
                long offset = (long) align * random.nextInt((DISK - length) / align);
                write(session, shadow, offset, randomBytes(random, length), false);
            }
            write(session, shadow, 8 << 20, randomBytes(random, 36 << 20), false);
            assertRange(session, shadow, 8 << 20, 36 << 20);

            if (info.has(TransmissionFlag.SEND_FUA)) {
                write(session, shadow, 4096, randomBytes(random, 8192), true);
            }
            if (info.has(TransmissionFlag.SEND_FLUSH)) {
                await(session.flush());
            }
            if (info.has(TransmissionFlag.SEND_WRITE_ZEROES)) {
                await(session.writeZeroes(1 << 20, 256 << 10, 0));
                Arrays.fill(shadow, 1 << 20, (1 << 20) + (256 << 10), (byte) 0);
                await(session.writeZeroes(2 << 20, 64 << 10, CommandFlag.NO_HOLE));
                Arrays.fill(shadow, 2 << 20, (2 << 20) + (64 << 10), (byte) 0);
                assertRange(session, shadow, 1 << 20, 2 << 20);
            }
            if (info.has(TransmissionFlag.SEND_TRIM)) {
                await(session.trim(48 << 20, 1 << 20, false));
                // Trimmed bytes read back as anything: write them again so the final comparison stays exact.
                write(session, shadow, 48 << 20, randomBytes(random, 1 << 20), false);
            }
            if (info.has(TransmissionFlag.SEND_CACHE)) {
                await(session.cache(0, 1 << 20));
            }
            if (info.metaContextId("base:allocation") >= 0) {
                assertBlockStatus(session, 8 << 20, 4 << 20, false);
                assertBlockStatus(session, 0, DISK, true);
            }
            assertReads(session, shadow, random, align, 64);
            assertRange(session, shadow, 0, DISK);
            if (info.has(TransmissionFlag.SEND_FLUSH)) {
                await(session.flush());
            }
        }
    }

    /** Extents start at the offset, follow each other, and a range just written with data is never reported as zeroes. */
    private static void assertBlockStatus(NbdSession session, long offset, long length, boolean onlyOne) throws Exception {
        List<Extent> extents = await(session.blockStatus(offset, length, onlyOne));
        assertFalse(extents.isEmpty());
        if (onlyOne) {
            assertEquals(1, extents.size(), "REQ_ONE gives one extent");
        }
        long position = offset;
        for (Extent e : extents) {
            assertEquals(position, e.offset(), "extents must be contiguous");
            assertTrue(e.length() > 0);
            position += e.length();
        }
        assertTrue(position <= offset + length, "extents stay within the request once clipped");
        if (offset == 8 << 20) {
            assertTrue(extents.stream().noneMatch(Extent::zero), "freshly written data reported as zeroes: " + extents);
        }
    }

    private static void assertReads(NbdSession session, byte[] shadow, Random random, int align, int count)
            throws Exception {
        long[] offsets = new long[count];
        int[] lengths = new int[count];
        @SuppressWarnings("unchecked")
        CompletableFuture<ByteBuf>[] reads = new CompletableFuture[count];
        for (int i = 0; i < count; i++) {
            lengths[i] = align * (1 + random.nextInt(256));
            offsets[i] = (long) align * random.nextInt((DISK - lengths[i]) / align);
            reads[i] = session.read(offsets[i], lengths[i]);
        }
        for (int i = 0; i < count; i++) {
            assertBytes(shadow, offsets[i], await(reads[i]));
        }
    }

    private static void assertRange(NbdSession session, byte[] shadow, long offset, int length) throws Exception {
        assertBytes(shadow, offset, await(session.read(offset, length)));
    }

    private static void assertBytes(byte[] shadow, long offset, ByteBuf data) {
        try {
            byte[] got = new byte[data.readableBytes()];
            data.getBytes(data.readerIndex(), got);
            byte[] expected = Arrays.copyOfRange(shadow, (int) offset, (int) offset + got.length);
            if (!Arrays.equals(expected, got)) {
                throw new AssertionError("read of " + got.length + " bytes at " + offset + " differs first at byte "
                        + Arrays.mismatch(expected, got));
            }
        } finally {
            data.release();
        }
    }

    private static void write(NbdSession session, byte[] shadow, long offset, byte[] data, boolean fua) throws Exception {
        await(session.write(offset, Unpooled.wrappedBuffer(data), fua));
        System.arraycopy(data, 0, shadow, (int) offset, data.length);
    }

    private static byte[] randomBytes(Random random, int length) {
        byte[] b = new byte[length];
        random.nextBytes(b);
        return b;
    }

    static <T> T await(CompletableFuture<T> future) throws Exception {
        return future.get(60, TimeUnit.SECONDS);
    }

    static void run(String... command) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        if (p.waitFor() != 0) {
            throw new AssertionError(String.join(" ", command) + " failed: " + out);
        }
    }
}
