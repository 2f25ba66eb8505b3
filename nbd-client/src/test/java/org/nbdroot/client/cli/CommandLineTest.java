package org.nbdroot.client.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nbdroot.proto.interop.PeerServer;

/** The commands as a user runs them: output, exit status, and one clear line on stderr when they fail. */
class CommandLineTest {
    record Run(int status, String out, String err) {}

    static Run run(String... args) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        int status = NbdClientCommand.run(args, new PrintStream(out, true, StandardCharsets.UTF_8),
                new PrintStream(err, true, StandardCharsets.UTF_8));
        return new Run(status, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    }

    @TempDir
    static Path dir;
    static PeerServer server;
    static String uri;

    @BeforeAll
    static void startServer() throws Exception {
        Path disk = dir.resolve("disk.img");
        Files.write(disk, new byte[64 << 20]);
        server = PeerServer.nbdServer(dir, disk, "root");
        uri = server.uri.toString();
    }

    @AfterAll
    static void stopServer() throws Exception {
        server.close();
    }

    @Test
    void listPrintsExportNames() {
        Run r = run("list", "127.0.0.1", String.valueOf(server.uri.endpoint().toString().split(":")[1]));
        assertEquals(0, r.status(), r.err());
        assertEquals("root\n", r.out());
    }

    @Test
    void infoJsonHasTheDocumentedFields() {
        Run r = run("info", uri, "--json");
        assertEquals(0, r.status(), r.err());
        String json = r.out();
        assertTrue(json.contains("\"export\": \"root\""), json);
        assertTrue(json.contains("\"size\": 67108864"), json);
        assertTrue(json.contains("\"flags\": [\"has_flags\", \"send_flush\", \"send_fua\""), json);
        assertTrue(json.matches("(?s).*\"block_size\": \\{\"minimum\": \\d+, \"preferred\": \\d+, \"maximum\": \\d+.*"), json);
    }

    @Test
    void benchVerifiesWhatItWrote() {
        Run r = run("bench", uri, "--rw", "randwrite", "--bs", "4k", "--iodepth", "8", "--runtime", "1", "--verify", "--json");
        assertEquals(0, r.status(), r.err());
        assertTrue(r.out().contains("\"errors\": 0"), r.out());
        assertTrue(r.out().contains("\"verify_failures\": 0"), r.out());
        assertTrue(r.out().matches("(?s).*\"verified_blocks\": [1-9].*"), "something was read back: " + r.out());
        for (String field : List.of("\"iops\"", "\"bytes_per_second\"", "\"p50_us\"", "\"p99_us\"")) {
            assertTrue(r.out().contains(field), field + " in " + r.out());
        }
        // The tests run where Netty's epoll transport is: the run says it used it.
        assertTrue(r.out().contains("\"transport\": \"epoll\""), "the transport it ran on: " + r.out());
    }

    /** Filling the span for a verified read load waits for replies: a server that stops answering ends it, not hangs it. */
    @Test
    void aVerifiedReadLoadGivesUpOnAServerThatStopsAnswering() throws Exception {
        System.setProperty("nbd.bench.grace-seconds", "2");
        try (org.nbdroot.proto.testing.ScriptedNbdServer stalling = org.nbdroot.proto.testing.ScriptedNbdServer.builder()
                .size(16 << 20).start()) {
            stalling.armFault(org.nbdroot.proto.testing.ScriptedNbdServer.Fault.STALL, 3);
            long t0 = System.nanoTime();
            Run r = run("bench", stalling.uri(), "--rw", "randread", "--bs", "4k", "--iodepth", "4", "--runtime", "1",
                    "--verify", "--size", "16M");
            long seconds = (System.nanoTime() - t0) / 1_000_000_000L;
            assertEquals(1, r.status(), r.out() + r.err());
            assertTrue(r.err().contains("filling the span with the verify pattern: no reply for 2 s; giving up"), r.err());
            assertTrue(seconds < 20, "gave up after " + seconds + " s");
        } finally {
            System.clearProperty("nbd.bench.grace-seconds");
        }
    }

    @Test
    void benchWithMetricsReportsTheMetersToo() {
        Run r = run("bench", uri, "--rw", "randwrite", "--bs", "4k", "--iodepth", "4", "--runtime", "1", "--metrics", "--json");
        assertEquals(0, r.status(), r.err());
        java.util.regex.Matcher ios = java.util.regex.Pattern.compile("\"ios\": (\\d+)").matcher(r.out());
        java.util.regex.Matcher writes = java.util.regex.Pattern.compile(
                "\"metrics\": \\{.*\"write\": \\{\"count\": (\\d+), \"errors\": 0, \"bytes\": (\\d+),").matcher(r.out());
        assertTrue(ios.find() && writes.find(), r.out());
        long counted = Long.parseLong(writes.group(1));
        assertTrue(counted >= Long.parseLong(ios.group(1)) && counted > 0, "the meters saw every WRITE the bench did: " + r.out());
        assertEquals(counted * 4096, Long.parseLong(writes.group(2)), r.out());
        assertTrue(r.out().contains("\"read\": {\"count\": 0,"), r.out());
    }

    @Test
    void failuresAreOneLineAndNonZero() {
        Run noServer = run("info", "nbd://127.0.0.1:1/");
        assertEquals(1, noServer.status());
        assertEquals("nbd-client: cannot connect to 127.0.0.1:1: connection refused\n", noServer.err());

        Run noExport = run("info", uri.replace("/root", "/nosuch"));
        assertEquals(1, noExport.status());
        assertTrue(noExport.err().startsWith("nbd-client: ") && noExport.err().contains("nosuch"), noExport.err());
        assertEquals(1, noExport.err().lines().count(), noExport.err());

        Run badUri = run("info", "http://example.com/");
        assertEquals(2, badUri.status());
        assertTrue(badUri.err().contains("unsupported URI scheme 'http'"), badUri.err());

        Run badOption = run("bench", uri, "--rw", "sideways");
        assertEquals(2, badOption.status());
        assertTrue(badOption.err().contains("--rw must be read, write, randread or randwrite"), badOption.err());

        // Out of range: one line naming the option, not a stack trace from deep inside the transport.
        for (String[] bad : List.of(new String[] {"--connect-timeout", "-5"}, new String[] {"--request-timeout", "3000000"})) {
            Run r = run("info", uri, bad[0], bad[1]);
            assertEquals(2, r.status(), r.err());
            assertEquals("nbd-client: " + bad[0] + " must be 0 to 86400 seconds, not " + bad[1] + "\n", r.err());
        }
        Run nan = run("bench", uri, "--rw", "read", "--bs", "4k", "--iodepth", "1", "--runtime", "NaN");
        assertEquals(2, nan.status(), nan.err());
        assertTrue(nan.err().contains("--runtime must be positive"), nan.err());
    }

    /** Only the subcommands named on a command line are built: help must still list every one. */
    @Test
    void helpListsEverySubcommandAndEachRunsByName() {
        Run help = run("--help");
        assertEquals(0, help.status(), help.err());
        for (String name : List.of("list", "info", "bench", "rescue", "destroy", "list-devices", "resize", "stats", "reroot")) {
            assertTrue(help.out().matches("(?s).*\\n  " + name + " .*"), name + " in " + help.out());
            Run sub = run(name, "--help");
            assertEquals(0, sub.status(), name + ": " + sub.err());
            assertTrue(sub.out().startsWith("Usage: nbd-client " + name), sub.out());
        }
        Run serve = run("-f");
        assertEquals(2, serve.status());
        assertTrue(serve.err().contains("missing HOST [PORT] [DEVICE], URI [DEVICE] or a command"), serve.err());
    }
}
