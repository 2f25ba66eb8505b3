package org.nbdroot.client.ggate.emu;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.time.Duration;
import java.util.Arrays;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import jnr.constants.platform.Errno;
import jnr.ffi.Memory;
import jnr.ffi.Pointer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.nbdroot.client.ggate.GgateAbi;
import org.nbdroot.client.ggate.GgateControl;
import org.nbdroot.client.ggate.GgateException;
import org.nbdroot.client.ggate.emu.GgateEmulator.BioResult;
import org.nbdroot.client.ggate.emu.GgateEmulator.GgateEmulatorException;
import org.nbdroot.client.ggate.emu.GgateEmulator.LoadResult;
import org.nbdroot.client.ggate.emu.GgateEmulator.LoadSpec;
import org.nbdroot.client.ggate.emu.GgateEmulator.Unit;

/**
 * The Java client against a real {@code ggate-kernel}, with units made through the binding
 * itself ({@link GgateControl} over {@code libggate-emu.so}, loaded through JNR as the daemon
 * loads it): this also proves the binding's struct offsets and ioctl numbers against the
 * emulator's C layout.
 */
class GgateEmulatorSelfTest {
    private static final int MIB = 1 << 20;
    private static final Duration SHORT = Duration.ofMillis(200);
    private static final Duration LONG = Duration.ofSeconds(10);

    private GgateEmulator emu;
    private String savedLibc;
    private String savedCtl;

    @BeforeAll
    static void built() {
        org.junit.jupiter.api.Assertions.assertTrue(GgateEmulator.isBuilt(), "the ggate emulator is not built in " + GgateEmulator.binaryDirectory()
                + " (make -C src/test/c/ggate-emu O=$PWD/target/ggate-emu)");
    }

    @BeforeEach
    void start() throws Exception {
        savedLibc = System.getProperty("nbd.ggate.libc");
        savedCtl = System.getProperty("nbd.ggate.ctl");
        emu = GgateEmulator.start();
        emu.configureBinding();
    }

    @AfterEach
    void stop() {
        restore("nbd.ggate.libc", savedLibc);
        restore("nbd.ggate.ctl", savedCtl);
        emu.close();
    }

    private static void restore(String property, String value) {
        if (value == null) {
            System.clearProperty(property);
        } else {
            System.setProperty(property, value);
        }
    }

    @Test
    void startsEmpty() throws Exception {
        assertTrue(Files.exists(emu.socketPath()));
        assertTrue(emu.units().isEmpty());
        assertEquals(0, emu.signExtensionWarnings());
    }

    @Test
    void unitsShowWhatTheBindingCreated() throws Exception {
        try (GgateControl control = GgateControl.open()) {
            int unit = control.create(GgateAbi.UNIT_AUTO, MIB, 512, 0, 16, 0, "emulator self-test");
            assertEquals(0, unit);
            Unit u = emu.unit(unit).orElseThrow();
            assertEquals("ggate0", u.name());
            assertEquals("emulator self-test", u.info());
            assertEquals(MIB, u.mediaSize());
            assertEquals(512, u.sectorSize());
            assertEquals(16, u.queueSize());
            assertEquals(1, u.nextSeq());
            assertFalse(u.readOnly() || u.writeOnly() || u.destroying() || u.providerOpen());

            assertEquals(1, control.create(GgateAbi.UNIT_AUTO, MIB, 4096, GgateAbi.FLAG_READONLY, 0, 5, "ro"));
            Unit ro = emu.unit(1).orElseThrow();
            assertTrue(ro.readOnly());
            assertEquals(5, ro.timeout());
            GgateException taken = assertThrows(GgateException.class,
                    () -> control.create(1, MIB, 512, 0, 0, 0, "taken"));
            assertTrue(taken.is(Errno.EEXIST), taken::getMessage);

            control.resize(unit, 2 * MIB);
            assertEquals(2 * MIB, emu.unit(unit).orElseThrow().mediaSize());
            control.destroy(unit, false);
            control.destroy(1, false);
        }
        assertTrue(emu.units().isEmpty());
        assertEquals(0, emu.signExtensionWarnings());
    }

    @Test
    void aBioWithoutDaemonStaysPendingUntilAStartTakesIt() throws Exception {
        try (GgateControl control = GgateControl.open()) {
            int unit = control.create(GgateAbi.UNIT_AUTO, MIB, 512, 0, 0, 0, "");
            long id = emu.queueRead(unit, 4096, 8192);
            Unit u = emu.unit(unit).orElseThrow();
            assertEquals(1, u.queued());
            assertEquals(0, u.taken());
            assertEquals(1, u.queueCount());
            assertTrue(emu.isPending(id));
            assertThrows(TimeoutException.class, () -> emu.awaitBio(id, SHORT));

            Pointer buffer = Memory.allocateDirect(control.runtime(), 8192, true);
            Pointer io = start(control, unit, buffer, 8192);
            assertEquals(0, io.getInt(GgateAbi.Io.ERROR));
            assertEquals(1, io.getLong(GgateAbi.Io.SEQ));
            assertEquals(GgateAbi.BIO_READ, io.getInt(GgateAbi.Io.CMD));
            assertEquals(4096, io.getLong(GgateAbi.Io.OFFSET));
            assertEquals(8192, io.getLong(GgateAbi.Io.LENGTH));
            assertEquals(1, emu.unit(unit).orElseThrow().taken());
            assertTrue(emu.isPending(id));

            byte[] data = new byte[8192];
            Arrays.fill(data, (byte) 0x3c);
            buffer.put(0, data, 0, data.length);
            assertEquals(0, done(control, io, 0));
            assertTrue(emu.peekBio(id).orElseThrow().ok()); // peeking keeps the result
            BioResult result = emu.awaitBio(id, LONG);
            assertTrue(result.ok(), result::toString);
            assertEquals(GgateEmulator.BIO_READ, result.cmd());
            assertArrayEquals(data, result.data());
            assertEquals(0, emu.unit(unit).orElseThrow().queueCount());
            control.destroy(unit, false);
        }
    }

    @Test
    void aWriteLongerThanTheBufferAsksForMore() throws Exception {
        try (GgateControl control = GgateControl.open()) {
            int unit = control.create(GgateAbi.UNIT_AUTO, MIB, 512, 0, 0, 0, "");
            byte[] data = new byte[65536];
            for (int i = 0; i < data.length; i++) {
                data[i] = (byte) (i * 31);
            }
            long id = emu.queueWrite(unit, 0, data);

            Pointer small = Memory.allocateDirect(control.runtime(), 4096, true);
            Pointer io = start(control, unit, small, 4096);
            assertEquals(Errno.ENOMEM.intValue(), io.getInt(GgateAbi.Io.ERROR));
            assertEquals(65536, io.getLong(GgateAbi.Io.LENGTH));
            assertEquals(1, emu.unit(unit).orElseThrow().queued()); // left queued

            Pointer big = Memory.allocateDirect(control.runtime(), 65536, true);
            io = start(control, unit, big, 65536);
            assertEquals(0, io.getInt(GgateAbi.Io.ERROR));
            assertEquals(GgateAbi.BIO_WRITE, io.getInt(GgateAbi.Io.CMD));
            byte[] got = new byte[65536];
            big.get(0, got, 0, got.length);
            assertArrayEquals(data, got);
            assertEquals(0, done(control, io, Errno.EIO.intValue()));
            assertTrue(emu.awaitBio(id, LONG).failedWith(Errno.EIO));
            control.destroy(unit, false);
        }
    }

    @Test
    void destroyIsBusyWhileTheProviderIsOpen() throws Exception {
        try (GgateControl control = GgateControl.open()) {
            int unit = control.create(GgateAbi.UNIT_AUTO, MIB, 512, 0, 0, 0, "");
            long id = emu.queueRead(unit, 0, 512);
            emu.setProviderOpen(unit, true);
            assertTrue(emu.unit(unit).orElseThrow().providerOpen());
            GgateException busy = assertThrows(GgateException.class, () -> control.destroy(unit, false));
            assertTrue(busy.is(Errno.EBUSY), busy::getMessage);
            assertTrue(emu.isPending(id));

            control.destroy(unit, true);
            assertTrue(emu.awaitBio(id, LONG).failedWith(Errno.ENXIO));
            assertTrue(emu.units().isEmpty());
            GgateEmulatorException gone = assertThrows(GgateEmulatorException.class, () -> emu.queueRead(unit, 0, 512));
            assertTrue(gone.is(Errno.ENXIO), gone::getMessage);
        }
    }

    @Test
    void bioTakenByADeadDaemonIsRescuedByCancel() throws Exception {
        try (GgateControl control = GgateControl.open()) {
            int unit = control.create(GgateAbi.UNIT_AUTO, MIB, 512, 0, 0, 0, "");
            long id = emu.queueRead(unit, 1024, 512);
            try (GgateControl dying = GgateControl.open()) {
                Pointer buffer = Memory.allocateDirect(dying.runtime(), 512, true);
                assertEquals(1, start(dying, unit, buffer, 512).getLong(GgateAbi.Io.SEQ));
            } // the daemon is gone without DONE
            assertEquals(1, emu.unit(unit).orElseThrow().taken());

            control.cancel(unit, 0); // what a rescuing daemon does first
            assertEquals(1, emu.unit(unit).orElseThrow().queued());
            Pointer buffer = Memory.allocateDirect(control.runtime(), 512, true);
            Pointer io = start(control, unit, buffer, 512);
            assertEquals(1, io.getLong(GgateAbi.Io.SEQ));
            assertEquals(1024, io.getLong(GgateAbi.Io.OFFSET));
            assertEquals(0, done(control, io, 0));
            assertTrue(emu.awaitBio(id, LONG).ok());
            control.destroy(unit, false);
        }
    }

    @Test
    void loadRunsAgainstAJavaWorker() throws Exception {
        int unit;
        try (GgateControl control = GgateControl.open()) {
            unit = control.create(GgateAbi.UNIT_AUTO, 64 * MIB, 512, 0, 0, 0, "");
        }
        AtomicLong served = new AtomicLong();
        AtomicInteger exitError = new AtomicInteger(-1);
        Thread worker = new Thread(() -> serve(unit, served, exitError), "ggate-emu-test-worker");
        worker.start();

        LoadResult reads = emu.runLoad(LoadSpec.of(unit, GgateEmulator.BIO_READ, 4, 4096, SHORT));
        assertTrue(reads.completed() > 0, reads::toString);
        assertEquals(0, reads.errors(), reads::toString);
        assertEquals(0, reads.abandoned(), reads::toString);
        assertEquals(reads.completed() * 4096, reads.bytes());
        assertTrue(reads.p50().compareTo(reads.p99()) <= 0 && reads.p99().compareTo(reads.max()) <= 0);
        assertTrue(reads.elapsed().compareTo(SHORT) >= 0);
        assertTrue(reads.iops() > 0);

        LoadResult writes = emu.runLoad(LoadSpec.of(unit, GgateEmulator.BIO_WRITE, 2, 131072, SHORT).sequential());
        assertTrue(writes.completed() > 0, writes::toString);
        assertEquals(0, writes.errors(), writes::toString);

        awaitRefs(unit, 1); // back asleep in START: else its next START would get ENXIO
        try (GgateControl control = GgateControl.open()) {
            control.destroy(unit, false);
        }
        worker.join(LONG.toMillis());
        assertFalse(worker.isAlive());
        assertEquals(Errno.ECANCELED.intValue(), exitError.get());
        assertEquals(reads.completed() + writes.completed(), served.get());
    }

    @Test
    void loadWithoutDaemonIsLeftBehind() throws Exception {
        try (GgateControl control = GgateControl.open()) {
            int unit = control.create(GgateAbi.UNIT_AUTO, MIB, 512, 0, 0, 0, "");
            LoadResult r = emu.runLoad(LoadSpec.of(unit, GgateEmulator.BIO_READ, 3, 4096, Duration.ofMillis(50))
                    .withGrace(Duration.ZERO));
            assertEquals(0, r.completed());
            assertEquals(3, r.abandoned());
            assertEquals(3, emu.unit(unit).orElseThrow().queued());
            control.destroy(unit, true);
        }
        assertTrue(emu.units().isEmpty());
    }

    @Test
    void refusalsComeBackAsErrno() throws Exception {
        GgateEmulatorException noUnit = assertThrows(GgateEmulatorException.class, () -> emu.queueRead(42, 0, 512));
        assertTrue(noUnit.is(Errno.ENXIO), noUnit::getMessage);
        GgateEmulatorException noBio = assertThrows(GgateEmulatorException.class, () -> emu.awaitBio(12345, SHORT));
        assertTrue(noBio.is(Errno.ENOENT), noBio::getMessage);
        try (GgateControl control = GgateControl.open()) {
            int unit = control.create(GgateAbi.UNIT_AUTO, MIB, 512, GgateAbi.FLAG_WRITEONLY, 0, 0, "");
            GgateEmulatorException perm = assertThrows(GgateEmulatorException.class,
                    () -> emu.setProviderAccess(unit, 1, 0, 0));
            assertTrue(perm.is(Errno.EPERM), perm::getMessage);
            int ro = control.create(GgateAbi.UNIT_AUTO, MIB, 512, GgateAbi.FLAG_READONLY, 0, 0, "");
            assertTrue(emu.awaitBio(emu.queueWrite(ro, 0, new byte[512]), LONG).failedWith(Errno.EPERM));
            assertTrue(emu.awaitBio(emu.queueRead(ro, 100, 512), LONG).failedWith(Errno.EINVAL)); // misaligned
            control.destroy(unit, false);
            control.destroy(ro, false);
        }
    }

    @Test
    void aSignExtendedRequestIsCountedByTheKernel() throws Exception {
        try (GgateControl control = GgateControl.open()) {
            Pointer create = control.struct(GgateAbi.CREATE_SIZE);
            create.putLong(GgateAbi.Create.MEDIASIZE, MIB);
            create.putInt(GgateAbi.Create.SECTORSIZE, 512);
            create.putInt(GgateAbi.Create.UNIT, GgateAbi.UNIT_AUTO);
            long signExtended = (int) GgateAbi.CMD_CREATE; // what passing an int would do
            assertTrue(signExtended < 0);
            assertEquals(0, control.ioctl(signExtended, create));
            assertEquals(1, emu.signExtensionWarnings());
            control.destroy(create.getInt(GgateAbi.Create.UNIT), false);
        }
    }

    @Test
    void closeStopsTheKernelAndRemovesTheSocket() throws Exception {
        GgateEmulator other = GgateEmulator.start("-v");
        long pid = other.pid();
        other.close();
        assertFalse(Files.exists(other.socketPath()));
        assertFalse(ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false));
        other.close(); // twice is fine
        assertThrows(IllegalStateException.class, other::units);
    }

    /** Waits until {@code refs} ioctls hold the unit: workers asleep in START. */
    private void awaitRefs(int unit, int refs) throws Exception {
        long deadline = System.nanoTime() + LONG.toNanos();
        while (emu.unit(unit).orElseThrow().refs() != refs) {
            assertTrue(System.nanoTime() < deadline, "no " + refs + " STARTs asleep on unit " + unit);
            Thread.sleep(5);
        }
    }

    // ---------------------------------------------------------------- a minimal daemon

    private static Pointer start(GgateControl control, int unit, Pointer buffer, long length) throws GgateException {
        Pointer io = control.struct(GgateAbi.IO_SIZE);
        io.putInt(GgateAbi.Io.UNIT, unit);
        io.putLong(GgateAbi.Io.DATA, buffer.address());
        io.putLong(GgateAbi.Io.LENGTH, length);
        io.putInt(GgateAbi.Io.ERROR, 0);
        int errno = control.ioctl(GgateAbi.CMD_START, io);
        if (errno != 0) {
            throw new GgateException("G_GATE_CMD_START", errno);
        }
        return io;
    }

    /** DONE for what {@code io} came back with; the data (if any) is still at its gctl_data. */
    private static int done(GgateControl control, Pointer io, int error) {
        io.putInt(GgateAbi.Io.ERROR, error);
        return control.ioctl(GgateAbi.CMD_DONE, io);
    }

    /** START, DONE, over and over, until the unit goes away. */
    private static void serve(int unit, AtomicLong served, AtomicInteger exitError) {
        try (GgateControl control = GgateControl.open()) {
            long capacity = 4096;
            Pointer buffer = Memory.allocateDirect(control.runtime(), (int) capacity, true);
            for (;;) {
                Pointer io;
                try {
                    io = start(control, unit, buffer, capacity);
                } catch (GgateException e) {
                    exitError.set(e.errno());
                    return;
                }
                int error = io.getInt(GgateAbi.Io.ERROR);
                if (error == Errno.ENOMEM.intValue()) {
                    capacity = io.getLong(GgateAbi.Io.LENGTH);
                    buffer = Memory.allocateDirect(control.runtime(), (int) capacity, true);
                    continue;
                }
                if (error != 0) {
                    exitError.set(error);
                    return;
                }
                if (io.getLong(GgateAbi.Io.LENGTH) > capacity) { // a READ larger than the buffer
                    capacity = io.getLong(GgateAbi.Io.LENGTH);
                    buffer = Memory.allocateDirect(control.runtime(), (int) capacity, true);
                    io.putLong(GgateAbi.Io.DATA, buffer.address());
                }
                if (done(control, io, 0) != 0) {
                    exitError.set(Integer.MAX_VALUE);
                    return;
                }
                served.incrementAndGet();
            }
        } catch (GgateException e) {
            exitError.set(e.errno());
        }
    }
}
