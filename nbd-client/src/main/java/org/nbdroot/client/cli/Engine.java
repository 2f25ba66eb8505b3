package org.nbdroot.client.cli;

import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import org.nbdroot.proto.session.NbdSession;
import org.nbdroot.proto.session.SessionOptions;
import org.nbdroot.proto.transport.NbdConnector;
import org.nbdroot.proto.transport.NbdUri;
import org.nbdroot.proto.transport.TcpLiveness;
import org.nbdroot.proto.transport.Transport;

/** The engine as one command uses it: a transport, a connector, and blocking waits. */
final class Engine implements AutoCloseable {
    final Transport transport;
    final NbdConnector connector;

    Engine(int threads, SessionOptions options) {
        this.transport = Transport.create(threads);
        // TCP_USER_TIMEOUT as the request timeout: unacknowledged data is the kernel's view of the same silence.
        this.connector = new NbdConnector(transport, options.connectTimeout(),
                TcpLiveness.DEFAULT.withUserTimeout(options.requestTimeout()));
    }

    NbdSession open(NbdUri uri, SessionOptions options) throws Exception {
        return await(NbdSession.connect(connector, uri, options));
    }

    /** Waits for a future, throwing its own cause rather than a wrapper. */
    static <T> T await(CompletableFuture<T> future) throws Exception {
        try {
            return future.get();
        } catch (ExecutionException e) {
            Throwable cause = e.getCause();
            if (cause instanceof Exception ex) {
                throw ex;
            }
            throw e;
        }
    }

    @Override
    public void close() {
        transport.close();
    }
}
