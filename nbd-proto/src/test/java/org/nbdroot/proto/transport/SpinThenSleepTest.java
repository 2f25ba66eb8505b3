package org.nbdroot.proto.transport;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.netty.channel.SelectStrategy;
import io.netty.util.IntSupplier;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

class SpinThenSleepTest {
    private final AtomicInteger ready = new AtomicInteger();
    private final AtomicInteger polls = new AtomicInteger();
    private final IntSupplier selectNow = () -> {
        polls.incrementAndGet();
        return ready.get();
    };

    @Test
    void readyEventsAndTasksAreHandedOnAtOnce() throws Exception {
        SpinThenSleep strategy = new SpinThenSleep(TimeUnit.SECONDS.toNanos(60));
        ready.set(3);
        assertEquals(3, strategy.calculateStrategy(selectNow, false));
        ready.set(0);
        assertEquals(0, strategy.calculateStrategy(selectNow, true), "tasks to run: no waiting");
        assertEquals(2, polls.get(), "every call polls once");
    }

    @Test
    void pollsWithoutSleepingWithinTheWindowAfterWork() throws Exception {
        SpinThenSleep strategy = new SpinThenSleep(TimeUnit.SECONDS.toNanos(60));
        ready.set(1);
        strategy.calculateStrategy(selectNow, false);
        ready.set(0);
        for (int i = 0; i < 1000; i++) {
            assertEquals(SelectStrategy.CONTINUE, strategy.calculateStrategy(selectNow, false));
        }
    }

    @Test
    void sleepsOnceTheWindowHasPassedAndSpinsAgainAfterAWakeUp() throws Exception {
        // Long enough that a busy machine cannot pause this thread past it between the last two calls.
        SpinThenSleep strategy = new SpinThenSleep(TimeUnit.MILLISECONDS.toNanos(300));
        ready.set(1);
        strategy.calculateStrategy(selectNow, false);
        ready.set(0);
        long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        int strategyNow;
        while ((strategyNow = strategy.calculateStrategy(selectNow, false)) == SelectStrategy.CONTINUE) {
            assertTrue(System.nanoTime() < until, "still spinning 10 s after a 300 ms window");
        }
        assertEquals(SelectStrategy.SELECT, strategyNow);
        // Back from epoll_wait (its events already handled): a fresh window starts.
        assertEquals(0, strategy.calculateStrategy(selectNow, false));
        assertEquals(SelectStrategy.CONTINUE, strategy.calculateStrategy(selectNow, false));
    }

    @Test
    void aWindowOfZeroSleepsAtOnce() throws Exception {
        SpinThenSleep strategy = new SpinThenSleep(0);
        assertEquals(0, strategy.calculateStrategy(selectNow, false), "first call: counts as just woken");
        assertEquals(SelectStrategy.SELECT, strategy.calculateStrategy(selectNow, false));
    }

    @Test
    void anIdleEventLoopSleeps() throws Exception {
        try (Transport transport = Transport.create(1)) {
            assumeTrue("epoll".equals(transport.name()) && Transport.spinMicros() > 0,
                    "only epoll loops on more than one CPU poll before they sleep");
            io.netty.channel.EventLoop loop = transport.group().next();
            loop.submit(() -> { }).get(10, TimeUnit.SECONDS);
            Thread.sleep(200); // past the window that task opened
            long before = loop.submit(SpinThenSleepTest::cpuTicksOfThisThread).get(10, TimeUnit.SECONDS);
            Thread.sleep(1000);
            long spent = loop.submit(SpinThenSleepTest::cpuTicksOfThisThread).get(10, TimeUnit.SECONDS) - before;
            assertTrue(spent <= 10, "an idle loop spent " + spent + " clock ticks of CPU in a second");
        }
    }

    /** utime + stime of the calling thread, in clock ticks (Linux). */
    private static long cpuTicksOfThisThread() throws java.io.IOException {
        String stat = java.nio.file.Files.readString(java.nio.file.Path.of("/proc/thread-self/stat"));
        String[] fields = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
        return Long.parseLong(fields[11]) + Long.parseLong(fields[12]); // fields 14 and 15 of stat(5)
    }

    @Test
    void theSpinPropertyIsCheckedAndNamed() {
        String old = System.getProperty("nbd.spin-us");
        try {
            System.setProperty("nbd.spin-us", "fifty");
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, Transport::spinMicros);
            assertTrue(e.getMessage().contains("-Dnbd.spin-us") && e.getMessage().contains("'fifty'"), e.getMessage());
            System.setProperty("nbd.spin-us", "-1");
            assertThrows(IllegalArgumentException.class, Transport::spinMicros);
            System.setProperty("nbd.spin-us", "20");
            long expected = Runtime.getRuntime().availableProcessors() > 1 ? 20 : 0;
            assertEquals(expected, Transport.spinMicros());
        } finally {
            if (old == null) {
                System.clearProperty("nbd.spin-us");
            } else {
                System.setProperty("nbd.spin-us", old);
            }
        }
    }
}
