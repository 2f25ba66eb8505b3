package org.nbdroot.proto.session;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.netty.buffer.Unpooled;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.nbdroot.proto.testing.ScriptedNbdServer;
import org.nbdroot.proto.transport.NbdConnector;
import org.nbdroot.proto.transport.NbdUri;
import org.nbdroot.proto.transport.Transport;
import org.nbdroot.proto.wire.Command;

/** What a {@link RequestObserver} hears from a session over a real connection. */
class RequestObserverTest {
    /** Every call, as text, in order; completions are heard before the caller's future completes. */
    static final class Recorder implements RequestObserver {
        final List<String> calls = java.util.Collections.synchronizedList(new ArrayList<>());

        @Override
        public void started(Command command) {
            calls.add("start " + command);
        }

        @Override
        public void completed(Command command, int bytes, long nanos, Throwable failure) {
            assertTrue(nanos >= 0, "a duration is never negative: " + nanos);
            calls.add(command + " " + bytes + (failure == null ? " ok" : " failed"));
        }

        @Override
        public void reconnected() {
            calls.add("reconnected");
        }
    }

    Transport transport;
    NbdConnector connector;

    @BeforeEach
    void start() {
        transport = Transport.create(1);
        connector = new NbdConnector(transport, Duration.ofSeconds(5));
    }

    @AfterEach
    void stop() {
        transport.close();
    }

    @Test
    void eachCallersRequestIsHeardOnceWithItsLengthAndOutcome() throws Exception {
        Recorder recorder = new Recorder();
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(1 << 20).start()) {
            NbdSession session = NbdSession.connect(connector, NbdUri.parse(server.uri()),
                    SessionOptions.DEFAULT.withObserver(recorder)).get(10, TimeUnit.SECONDS);
            session.write(0, Unpooled.wrappedBuffer(new byte[4096]), false).get(10, TimeUnit.SECONDS);
            session.read(0, 512).get(10, TimeUnit.SECONDS).release();
            session.flush().get(10, TimeUnit.SECONDS);
            session.trim(8192, 1024, false).get(10, TimeUnit.SECONDS);
            session.writeZeroes(0, 2048, 0).get(10, TimeUnit.SECONDS);
            server.armFault(ScriptedNbdServer.Fault.SIMPLE_ERROR);
            assertTrue(session.flush().handle((v, e) -> e != null).get(10, TimeUnit.SECONDS), "the FLUSH failed");
            assertEquals(List.of("start WRITE", "WRITE 4096 ok", "start READ", "READ 512 ok", "start FLUSH", "FLUSH 0 ok",
                    "start TRIM", "TRIM 1024 ok", "start WRITE_ZEROES", "WRITE_ZEROES 2048 ok",
                    "start FLUSH", "FLUSH 0 failed"), recorder.calls);
            session.close();
        }
    }

    @Test
    void anObserverThatThrowsLeavesNoRequestHanging() throws Exception {
        RequestObserver broken = new RequestObserver() {
            @Override
            public void started(Command command) {
                throw new IllegalStateException("broken at start");
            }

            @Override
            public void completed(Command command, int bytes, long nanos, Throwable failure) {
                throw new IllegalStateException("broken at completion");
            }
        };
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(1 << 20).start()) {
            NbdSession session = NbdSession.connect(connector, NbdUri.parse(server.uri()),
                    SessionOptions.DEFAULT.withObserver(broken)).get(10, TimeUnit.SECONDS);
            byte[] data = new byte[512];
            data[7] = 42;
            session.write(0, Unpooled.wrappedBuffer(data), false).get(10, TimeUnit.SECONDS);
            var read = session.read(0, 512).get(10, TimeUnit.SECONDS);
            assertEquals(42, read.getByte(read.readerIndex() + 7));
            assertEquals(42, server.read(0, 512)[7], "the WRITE reached the server");
            read.release();
            session.close();
        }
    }

    @Test
    void aReconnectIsHeardAndTheRequestsItCarriedAreHeardOnce() throws Exception {
        Recorder recorder = new Recorder();
        try (ScriptedNbdServer server = ScriptedNbdServer.builder().size(1 << 20).volatileWriteCache().start()) {
            SessionOptions options = SessionOptions.DEFAULT.withObserver(recorder)
                    .withReconnect(new ReconnectPolicy(Duration.ofMillis(20), Duration.ofMillis(200), 0));
            NbdSession session = NbdSession.connect(connector, NbdUri.parse(server.uri()), options)
                    .get(10, TimeUnit.SECONDS);
            session.write(0, Unpooled.wrappedBuffer(new byte[512]), false).get(10, TimeUnit.SECONDS);
            server.crash();
            session.read(0, 512).get(30, TimeUnit.SECONDS).release(); // waits out the reconnect
            assertEquals(1, session.reconnects());
            List<String> calls = List.copyOf(recorder.calls);
            assertEquals(1, calls.stream().filter("reconnected"::equals).count(), calls.toString());
            assertEquals(1, calls.stream().filter("WRITE 512 ok"::equals).count(),
                    "the journal's replay of the WRITE is not a caller's request: " + calls);
            assertEquals(1, calls.stream().filter("READ 512 ok"::equals).count(), calls.toString());
            session.close();
        }
    }
}
