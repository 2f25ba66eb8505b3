package org.nbdroot.client.ggate;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nbdroot.client.cli.CommandLineRunner;
import org.nbdroot.client.ggate.emu.GgateEmulator;
import org.nbdroot.client.ggate.emu.GgateEmulator.BioResult;
import org.nbdroot.proto.interop.PeerServer;

/**
 * {@code nbd-client stats} against a daemon in its own JVM serving a GEOM Gate device (the
 * emulator) from nbdkit: exactly the bios queued are counted, with their bytes, and a restart
 * of nbdkit is one reconnect.
 */
class GgateStatsTest {
    static final int DISK = 32 << 20;
    static final Duration WAIT = Duration.ofSeconds(30);
    static final String DEVICE = "ggate3";
    static final int UNIT = 3;

    @TempDir
    Path dir;
    GgateEmulator kernel;
    Path backing;
    Process daemon;

    @BeforeEach
    void start() throws Exception {
        kernel = GgateEmulator.start();
        kernel.configureBinding();
        System.setProperty("nbd.rundir", dir.resolve("run").toString());
        backing = dir.resolve("disk.img");
        Files.write(backing, new byte[DISK]);
    }

    @AfterEach
    void stop() throws Exception {
        if (daemon != null && daemon.isAlive()) { // a test that failed: destroy would wait for the server
            daemon.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
        }
        kernel.close();
    }

    @Test
    void statsCountTheBiosServedAndAServerRestartIsOneReconnect() throws Exception {
        PeerServer server = PeerServer.nbdkit("nbdkit", dir, backing, List.of(), "file", "file=" + backing);
        try {
            daemon = daemon(server);
            String before = stats();
            assertEquals(0, field(before, "read", "count"), before);
            assertEquals(0, field(before, "write", "count"), before);
            assertTrue(before.contains("\"reconnects\": 0, \"last_reconnect\": null"), before);

            Random random = new Random(7);
            long written = 0;
            long read = 0;
            int writes = 17;
            int reads = 11;
            for (int i = 0; i < writes; i++) { // one at a time: each bio is one NBD request
                byte[] data = new byte[512 * (1 + random.nextInt(256))];
                random.nextBytes(data);
                BioResult r = kernel.awaitBio(kernel.queueWrite(UNIT, (long) i << 20, data), WAIT);
                assertTrue(r.ok(), r.toString());
                written += data.length;
            }
            for (int i = 0; i < reads; i++) {
                int length = 512 * (1 + random.nextInt(256));
                BioResult r = kernel.awaitBio(kernel.queueRead(UNIT, (long) i << 20, length), WAIT);
                assertTrue(r.ok(), r.toString());
                read += length;
            }
            assertTrue(kernel.awaitBio(kernel.queueBio(UNIT, GgateEmulator.BIO_FLUSH, 0, 0, null), WAIT).ok());
            assertTrue(kernel.awaitBio(kernel.queueBio(UNIT, GgateEmulator.BIO_DELETE, 24 << 20, 65536, null), WAIT).ok());

            String after = stats();
            assertEquals(writes, field(after, "write", "count"), after);
            assertEquals(written, field(after, "write", "bytes"), after);
            assertEquals(reads, field(after, "read", "count"), after);
            assertEquals(read, field(after, "read", "bytes"), after);
            assertEquals(1, field(after, "flush", "count"), after);
            assertEquals(1, field(after, "trim", "count"), after);
            assertEquals(65536, field(after, "trim", "bytes"), after);
            assertEquals(0, field(after, "write_zeroes", "count"), after);
            for (String command : List.of("read", "write", "flush", "trim")) {
                assertEquals(0, field(after, command, "errors"), after);
            }
            assertTrue(after.contains("\"in_flight\": 0, \"reconnects\": 0"), after);

            var text = CommandLineRunner.run("stats", "/dev/" + DEVICE);
            assertEquals(0, text.status(), text.err());
            assertTrue(text.out().contains("nbd.bytes command=write " + written + "\n"), text.out());
            assertTrue(text.out().contains("nbd.requests command=read outcome=ok count=" + reads + " "), text.out());

            server.kill9();
            server.restart();
            byte[] data = new byte[4096];
            assertTrue(kernel.awaitBio(kernel.queueWrite(UNIT, 0, data), WAIT).ok(), "a write across the restart");
            String restarted = stats();
            assertEquals(1, field(restarted, null, "reconnects"), restarted);
            assertTrue(restarted.matches("(?s).*\"last_reconnect\": \"20\\d\\d-\\d\\d-\\d\\dT[^\"]+Z\".*"), restarted);
            assertEquals(writes + 1, field(restarted, "write", "count"), restarted);
            assertEquals(written + data.length, field(restarted, "write", "bytes"), restarted);
            assertEquals(0, field(restarted, "write", "errors"), "the reconnect hid the restart: " + restarted);

            assertEquals(0, CommandLineRunner.run("destroy", DEVICE).status());
            assertTrue(daemon.waitFor(20, TimeUnit.SECONDS), "the daemon exits once its device is destroyed");
            assertEquals(0, daemon.exitValue());
        } finally {
            server.close();
        }
    }

    private static String stats() throws Exception {
        var run = CommandLineRunner.run("stats", DEVICE, "--json");
        assertEquals(0, run.status(), run.err());
        return run.out().strip();
    }

    /** A number in the stats' JSON: {@code requests.COMMAND.KEY}, or a top-level KEY when command is null. */
    private static long field(String json, String command, String key) {
        Pattern p = command == null ? Pattern.compile("\"" + key + "\": (\\d+)")
                : Pattern.compile("\"" + command + "\": \\{[^}]*\"" + key + "\": (\\d+)");
        Matcher m = p.matcher(json);
        assertTrue(m.find(), key + " of " + command + " in " + json);
        return Long.parseLong(m.group(1));
    }

    private Process daemon(PeerServer server) throws Exception {
        List<String> command = new ArrayList<>(List.of(ProcessHandle.current().info().command().orElse("java"),
                "-cp", System.getProperty("java.class.path"),
                "-Dnbd.ggate.libc=" + GgateEmulator.libraryPath(),
                "-Dnbd.ggate.ctl=" + kernel.socketPath(),
                "-Dnbd.rundir=" + System.getProperty("nbd.rundir"),
                "org.nbdroot.client.Main", "-f", "--workers", "4", server.uri.toString(), DEVICE));
        Path log = dir.resolve("daemon.log");
        Process p = new ProcessBuilder(command).redirectError(log.toFile()).start();
        String line = new BufferedReader(new InputStreamReader(p.getInputStream())).readLine();
        assertEquals(DEVICE, line, "the daemon prints its device once serving; log: " + Files.readString(log));
        return p;
    }
}
