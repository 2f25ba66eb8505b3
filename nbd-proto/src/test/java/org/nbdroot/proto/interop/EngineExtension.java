package org.nbdroot.proto.interop;

import io.netty.buffer.ByteBuf;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.junit.jupiter.api.extension.AfterAllCallback;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.ExtensionContext;
import org.nbdroot.proto.transport.NbdConnector;
import org.nbdroot.proto.transport.Transport;

/**
 * The engine's transport and connector for one test class, opened before its tests and
 * closed after them: {@code @RegisterExtension static final EngineExtension engine = new EngineExtension();}
 */
public final class EngineExtension implements BeforeAllCallback, AfterAllCallback {
    private final int threads;
    private Transport transport;
    private NbdConnector connector;

    public EngineExtension() {
        this(2);
    }

    public EngineExtension(int threads) {
        this.threads = threads;
    }

    @Override
    public void beforeAll(ExtensionContext context) {
        transport = Transport.create(threads);
        connector = new NbdConnector(transport, Duration.ofSeconds(5));
    }

    @Override
    public void afterAll(ExtensionContext context) {
        transport.close();
    }

    public NbdConnector connector() {
        return connector;
    }

    /** The failure a future ends with; a success (its buffer released) or no answer within 30 s fails the test. */
    public static Throwable failureOf(CompletableFuture<?> future) throws InterruptedException {
        try {
            Object value = future.get(30, TimeUnit.SECONDS);
            if (value instanceof ByteBuf b) {
                b.release();
            }
            throw new AssertionError("expected a failure, got " + value);
        } catch (ExecutionException e) {
            return e.getCause();
        } catch (TimeoutException e) {
            throw new AssertionError("no answer within 30 s: the client hangs", e);
        }
    }
}
