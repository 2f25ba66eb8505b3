package org.nbdroot.client.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/** How the daemon finds the command line it starts itself again with. */
class DaemonizerTest {
    @Test
    void theArgumentsAreTheJdksWhereTheJdkKnowsThem() throws Exception {
        ProcessHandle.Info info = ProcessHandle.current().info();
        List<String> jdk = info.arguments().map(List::of).orElseThrow();
        assertEquals(jdk, Daemonizer.arguments(info));
    }

    /**
     * A command line over a page (a long class path does it): the JDK then gives no arguments
     * at all, and the daemon could not go to the background.
     */
    @Test
    void aCommandLineLongerThanAPageIsReadWhole() throws Exception {
        String pad = "x".repeat(6000);
        Path java = Path.of(System.getProperty("java.home"), "bin", "java");
        Process child = new ProcessBuilder(java.toString(), "-Dpad=" + pad, "-cp", System.getProperty("java.class.path"),
                Printer.class.getName(), "last-argument").redirectErrorStream(true).start();
        String out = new String(child.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(child.waitFor(60, TimeUnit.SECONDS));
        assertEquals(0, child.exitValue(), out);
        assertTrue(out.contains("jdk-arguments=none"), "the JDK's view is truncated, as the test expects: " + out);
        assertTrue(out.contains("first=-Dpad=" + pad + "\n") && out.contains("last=last-argument\n"), out);
    }

    /** The child: what the JDK and the daemon each see of its command line. */
    public static final class Printer {
        public static void main(String[] args) throws Exception {
            ProcessHandle.Info info = ProcessHandle.current().info();
            List<String> all = Daemonizer.arguments(info);
            System.out.println("jdk-arguments=" + info.arguments().map(a -> String.valueOf(a.length)).orElse("none"));
            System.out.println("first=" + all.get(0));
            System.out.println("last=" + all.get(all.size() - 1));
        }
    }
}
