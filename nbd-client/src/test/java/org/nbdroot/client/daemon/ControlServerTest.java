package org.nbdroot.client.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.logging.Handler;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.condition.EnabledOnOs;
import org.junit.jupiter.api.condition.OS;
import org.junit.jupiter.api.io.TempDir;

class ControlServerTest {
    private String saved;

    @BeforeEach
    void runDirectory(@TempDir Path dir) {
        saved = System.getProperty("nbd.rundir");
        System.setProperty("nbd.rundir", dir.resolve("run").toString());
    }

    @AfterEach
    void restore() {
        if (saved == null) {
            System.clearProperty("nbd.rundir");
        } else {
            System.setProperty("nbd.rundir", saved);
        }
    }

    /** A device name of this test only: abstract addresses are machine-wide. */
    private static String device(String what) {
        return "test-" + what + "-" + ProcessHandle.current().pid();
    }

    @Test
    void theDaemonAnswersThroughItsSocketFile() throws IOException {
        Path socket = RunDirectory.socketFor(device("file"));
        try (ControlServer server = ControlServer.start(socket, request -> "ok you said " + request)) {
            assertTrue(Files.exists(socket));
            assertEquals("ok you said status", ControlClient.request(socket, "status"));
            assertTrue(ControlClient.devices().contains(device("file")));
        }
        assertFalse(Files.exists(socket), "closing removes the socket file");
        assertFalse(ControlClient.isAlive(socket));
    }

    /** A reply of many lines and far more than a request's 256 bytes (stats), on both kinds of socket. */
    @Test
    void aLongReplyOfManyLinesArrivesWhole() throws IOException {
        String name = device("long");
        Path socket = RunDirectory.socketFor(name);
        StringBuilder reply = new StringBuilder("ok");
        for (int i = 0; i < 2000; i++) {
            reply.append("\nnbd.line ").append(i);
        }
        try (ControlServer server = ControlServer.start(socket, request -> reply.toString())) {
            assertEquals(reply.toString(), ControlClient.request(socket, "stats"));
            if (AbstractSocket.supported()) {
                awaitAbstractAddress(name);
                Files.delete(socket);
                assertEquals(reply.toString(), ControlClient.request(socket, "stats"), "through the abstract address");
            }
        }
    }

    /** A daemon that takes the request and never answers (stopped, wedged): the command says so, on both sockets. */
    @Test
    void aDaemonThatNeverAnswersIsGivenUpOn() throws Exception {
        String name = device("mute");
        Path socket = RunDirectory.socketFor(name);
        java.util.concurrent.CountDownLatch release = new java.util.concurrent.CountDownLatch(1);
        System.setProperty("nbd.control.reply-timeout-seconds", "1");
        try (ControlServer server = ControlServer.start(socket, request -> {
            release.await();
            return "ok late";
        })) {
            for (int round = 0; round < (AbstractSocket.supported() ? 2 : 1); round++) {
                if (round == 1) {
                    awaitAbstractAddress(name);
                    Files.delete(socket); // through the abstract address (jnr's channel)
                }
                long t0 = System.nanoTime();
                IOException e = org.junit.jupiter.api.Assertions.assertThrows(IOException.class,
                        () -> ControlClient.request(socket, "status"));
                long waited = (System.nanoTime() - t0) / 1_000_000;
                assertEquals("the daemon of " + name + " did not answer within 1 s (is it stopped? kill -CONT it, "
                        + "or see its log)", e.getMessage());
                assertTrue(waited >= 900 && waited < 5_000, "round " + round + ": waited " + waited + " ms");
            }
        } finally {
            System.clearProperty("nbd.control.reply-timeout-seconds");
            release.countDown();
        }
    }

    @Test
    @EnabledOnOs(OS.LINUX)
    void withItsSocketFileAndRunDirectoryGoneTheDaemonStillAnswersOnLinux() throws IOException {
        String name = device("gone");
        Path socket = RunDirectory.socketFor(name);
        try (ControlServer server = ControlServer.start(socket, request -> "ok " + request)) {
            awaitAbstractAddress(name);
            Files.delete(socket);
            Files.delete(socket.getParent()); // as after the new root's init emptied /dev/reroot
            assertTrue(ControlClient.isAlive(socket));
            assertEquals("ok status", ControlClient.request(socket, "status"));
            assertTrue(ControlClient.devices().contains(name), ControlClient.devices().toString());
        }
        assertFalse(ControlClient.isAlive(socket), "closing ends the abstract address too");
        assertFalse(ControlClient.devices().contains(name));
    }

    /**
     * A caller of another uid (nobody, from a child process: the tests run as root) reaches the
     * abstract address, which no file permission guards; SO_PEERCRED must keep its request from
     * the handler. The client is Python, which can connect to an abstract address and runs as
     * nobody (the test's class path under /root could not be read by it).
     */
    @Test
    @EnabledOnOs(OS.LINUX)
    void theAbstractAddressRefusesAnotherUserAndStillServesRoot() throws Exception {
        assertEquals("root", System.getProperty("user.name"), "the test needs root, to start a child as nobody");
        String name = device("peercred");
        List<String> handled = new CopyOnWriteArrayList<>();
        List<String> logged = new CopyOnWriteArrayList<>();
        Logger log = Logger.getLogger(AbstractSocket.class.getName());
        Handler capture = new Handler() {
            @Override
            public void publish(LogRecord record) {
                logged.add(record.getLevel() + " " + record.getMessage());
            }

            @Override
            public void flush() {}

            @Override
            public void close() {}
        };
        log.addHandler(capture);
        Path socket = RunDirectory.socketFor(name);
        try (ControlServer server = ControlServer.start(socket, request -> {
            if (!request.isEmpty()) { // not the empty probes of awaitAbstractAddress
                handled.add(request);
            }
            return "ok " + request;
        })) {
            awaitAbstractAddress(name);
            List<String> nobody = asNobody(AbstractSocket.PREFIX + name, "destroy force");
            assertEquals("65534", nobody.get(0), "the client ran as nobody: " + nobody);
            assertEquals(List.of(), handled, "nobody's request never reached the handler");
            assertEquals("error permission denied: only root and uid 0 may control this daemon\n", nobody.get(2),
                    "the refusal is all nobody gets (then " + nobody.get(1) + ")");
            assertTrue(logged.stream().anyMatch(l -> l.startsWith("WARNING @" + AbstractSocket.PREFIX + name
                    + ": refused a control connection from uid 65534 (pid ")), "the refusal is logged: " + logged);

            assertEquals("ok status", AbstractSocket.request(name, "status"), "root is still served");
            assertEquals(List.of("status"), handled);
        } finally {
            log.removeHandler(capture);
        }
    }

    /**
     * Another user binds the abstract address a daemon of ours would use (its socket file gone, after
     * a reroot): nothing is sent to it, and list-devices does not list it.
     */
    @Test
    @EnabledOnOs(OS.LINUX)
    void anAbstractAddressBoundByAnotherUserIsNoDaemonOfOurs() throws Exception {
        assertEquals("root", System.getProperty("user.name"), "the test needs root, to start a child as nobody");
        String name = device("squatted");
        String answersOk = String.join("\n",
                "print('bound', flush=True)",
                "while True:",
                "    c, _ = s.accept()",
                "    got = c.recv(4096)",
                "    with open(sys.argv[2], 'ab') as f: f.write(got)",
                "    c.sendall(b'ok\\n')",
                "    c.close()");
        Path told = Files.createTempFile("squatter", ".log");
        Files.setPosixFilePermissions(told, java.nio.file.attribute.PosixFilePermissions.fromString("rw-rw-rw-"));
        Process p = listenerAsNobody(8, answersOk, "bound", AbstractSocket.PREFIX + name, told.toString());
        try {
            Path socket = RunDirectory.socketFor(name); // no such file: the abstract address is asked
            IOException refused = org.junit.jupiter.api.Assertions.assertThrows(IOException.class,
                    () -> ControlClient.request(socket, "destroy"));
            assertTrue(refused.getMessage().startsWith("@" + AbstractSocket.PREFIX + name + " is bound by uid 65534 (pid "),
                    refused.getMessage());
            assertFalse(ControlClient.devices().contains(name), "not listed");
            assertEquals("", Files.readString(told), "nothing was sent to it");
        } finally {
            p.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
            Files.deleteIfExists(told);
        }
    }

    /** A listener that never accepts, its backlog full: connecting would wait for ever; the commands give up in 5 s. */
    @Test
    @EnabledOnOs(OS.LINUX)
    @org.junit.jupiter.api.Timeout(value = 60, threadMode = org.junit.jupiter.api.Timeout.ThreadMode.SEPARATE_THREAD)
    void aListenerThatNeverAcceptsCannotHangTheCommands() throws Exception {
        assertEquals("root", System.getProperty("user.name"), "the test needs root, to start a child as nobody");
        String name = device("backlog");
        String fillsItsBacklog = String.join("\n",
                "held = []",
                "for _ in range(4):  # fill the backlog with connections of its own, never accepted",
                "    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)",
                "    c.setblocking(False)",
                "    try:",
                "        c.connect('\\0' + sys.argv[1])",
                "        held.append(c)",
                "    except (BlockingIOError, OSError):",
                "        break",
                "print('full', flush=True)",
                "time.sleep(120)");
        Process p = listenerAsNobody(0, fillsItsBacklog, "full", AbstractSocket.PREFIX + name);
        try {
            long t0 = System.nanoTime();
            assertFalse(ControlClient.isAlive(RunDirectory.socketFor(name)), "no connection: nobody there to talk to");
            assertFalse(ControlClient.devices().contains(name), "not listed");
            long seconds = (System.nanoTime() - t0) / 1_000_000_000L;
            assertTrue(seconds < 20, "gave up in " + seconds + " s");
        } finally {
            p.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
        }
    }

    /**
     * Starts a python3 script as uid and gid 65534 that listens on the abstract address {@code args[0]}
     * with {@code backlog}, then runs {@code body}; waits for its first line, {@code ready}.
     */
    private static Process listenerAsNobody(int backlog, String body, String ready, String... args) throws IOException {
        String script = String.join("\n",
                "import socket, sys, time",
                "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)",
                "s.bind('\\0' + sys.argv[1])",
                "s.listen(" + backlog + ")",
                body);
        List<String> command = new java.util.ArrayList<>(List.of("setpriv", "--reuid=65534", "--regid=65534",
                "--clear-groups", "/usr/bin/python3", "-c", script));
        command.addAll(List.of(args));
        Process p = new ProcessBuilder(command).directory(Path.of("/").toFile()).redirectErrorStream(true).start();
        assertEquals(ready, new java.io.BufferedReader(new java.io.InputStreamReader(p.getInputStream())).readLine());
        return p;
    }

    /** Connects to {@code @address} as uid and gid 65534, sends {@code request}: [uid, how it ended, what came back]. */
    private static List<String> asNobody(String address, String request) throws Exception {
        String client = String.join("\n",
                "import os, socket, sys",
                "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)",
                "s.settimeout(20)",
                "s.connect('\\0' + sys.argv[1])",
                "try:",
                "    s.sendall(sys.argv[2].encode() + b'\\n')",
                "except (BrokenPipeError, ConnectionResetError):",
                "    pass  # refused before the request was read: what comes back still tells",
                "data, end = b'', 'eof'",
                "try:",
                "    while True:",
                "        chunk = s.recv(4096)",
                "        if not chunk: break",
                "        data += chunk",
                "except ConnectionResetError:",
                "    end = 'reset'",
                "sys.stdout.write(str(os.getuid()) + '\\n' + end + '\\n' + data.decode())");
        Process p = new ProcessBuilder("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                "/usr/bin/python3", "-c", client, address, request).directory(Path.of("/").toFile())
                .redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(30, TimeUnit.SECONDS), "the client as nobody ends");
        assertEquals(0, p.exitValue(), "the client as nobody: " + out);
        String[] parts = out.split("\n", 3);
        assertEquals(3, parts.length, out);
        return List.of(parts);
    }

    /** The abstract address is bound in the background, so that the device does not wait for it. */
    private static void awaitAbstractAddress(String name) {
        long deadline = System.nanoTime() + 10_000_000_000L;
        while (!AbstractSocket.isAlive(name)) {
            assertTrue(System.nanoTime() < deadline, "no @nbd-client/" + name + " after 10 s");
            Thread.onSpinWait();
        }
    }

    @Test
    void aHandlerFailureIsAnErrorReplyNotASilentClose() throws IOException {
        Path socket = RunDirectory.socketFor(device("fail"));
        try (ControlServer server = ControlServer.start(socket, request -> {
            throw new IllegalStateException("the device is busy");
        })) {
            assertEquals("error the device is busy", ControlClient.request(socket, "destroy"));
        }
    }
}
