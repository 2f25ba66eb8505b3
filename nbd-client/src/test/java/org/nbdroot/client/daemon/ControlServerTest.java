package org.nbdroot.client.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
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
