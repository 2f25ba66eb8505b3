package org.nbdroot.client.daemon;

import java.io.BufferedReader;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.logging.Handler;
import java.util.logging.Logger;
import java.util.logging.SimpleFormatter;
import java.util.logging.StreamHandler;
import jnr.posix.POSIXFactory;

/**
 * Puts the daemon in the background the way a JVM can: it starts itself again with
 * {@code -f} and waits until the child says it is serving (its line on stdout naming the
 * device), relaying what the child says on stderr until then. The child detaches into
 * a session of its own and, once serving, sends its output to a log file.
 */
public final class Daemonizer {
    private Daemonizer() {}

    /** What the child prints once it serves: its device's name. */
    static final java.util.regex.Pattern DEVICE_NAME = java.util.regex.Pattern.compile("(ggate|nbd)[0-9]+");

    /** In the parent: runs the same command in the foreground as a child; returns the exit status. */
    public static int runDetached(String[] appArgs, PrintStream out, PrintStream err) throws IOException, InterruptedException {
        return runDetached(appArgs, 0, out, err);
    }

    /**
     * The same, the child's {@code --foreground --detached} put before {@code appArgs[optionsAt]}:
     * after a subcommand's name ({@code rescue}), as that subcommand's own options.
     */
    public static int runDetached(String[] appArgs, int optionsAt, PrintStream out, PrintStream err)
            throws IOException, InterruptedException {
        ProcessHandle.Info info = ProcessHandle.current().info();
        List<String> all = arguments(info);
        if (info.command().isEmpty() || all.size() < appArgs.length) {
            throw new IOException("cannot find this process's command line to start the daemon; run with -f");
        }
        List<String> command = new ArrayList<>();
        command.add(info.command().get());
        command.addAll(all.subList(0, all.size() - appArgs.length));
        command.addAll(List.of(appArgs).subList(0, optionsAt));
        command.add("--foreground");
        command.add("--detached");
        command.addAll(List.of(appArgs).subList(optionsAt, appArgs.length));
        Process child = new ProcessBuilder(command).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")))
                .start();
        Thread relay = new Thread(() -> copy(child.getErrorStream(), err), "stderr-relay");
        relay.setDaemon(true);
        relay.start();
        BufferedReader lines = new BufferedReader(new InputStreamReader(child.getInputStream(), StandardCharsets.UTF_8));
        String ready = lines.readLine();
        // The JVM's own lines (-Xlog, -verbose:gc in JAVA_OPTS) come first: passed on to stderr, so that stdout
        // holds the device's name alone, and not taken for readiness.
        while (ready != null && !DEVICE_NAME.matcher(ready).matches()) {
            err.println(ready);
            ready = lines.readLine();
        }
        if (ready == null) {
            int status = child.waitFor();
            relay.join(1000);
            return status == 0 ? 1 : status;
        }
        out.println(ready);
        out.flush();
        return 0;
    }

    /**
     * The JVM's arguments, after argv[0]. The JDK gives none for a command line longer than a
     * page (it reads only that much of /proc/PID/cmdline: a long class path is enough), so on
     * Linux they are read from /proc/self/cmdline, which has no such limit.
     */
    static List<String> arguments(ProcessHandle.Info info) throws IOException {
        Path cmdline = Path.of("/proc/self/cmdline");
        if (!java.nio.file.Files.isReadable(cmdline)) {
            return info.arguments().map(List::of).orElse(List.of());
        }
        // The encoding the JVM decoded its own arguments with.
        String encoding = System.getProperty("sun.jnu.encoding", java.nio.charset.Charset.defaultCharset().name());
        String[] argv = new String(java.nio.file.Files.readAllBytes(cmdline), java.nio.charset.Charset.forName(encoding))
                .split("\0", -1);
        // NUL-terminated: the split leaves one empty string after the last
        int end = argv.length > 0 && argv[argv.length - 1].isEmpty() ? argv.length - 1 : argv.length;
        return end <= 1 ? List.of() : List.of(argv).subList(1, end);
    }

    /** In the child, first of all: leave the terminal's session, so its hangup does not reach us. */
    public static void enterOwnSession() {
        POSIXFactory.getNativePOSIX().setsid();
    }

    /** In the child, once the device is ready: further output goes to {@code log}, not to the parent's pipes. */
    public static void redirectOutput(Path log) throws IOException {
        PrintStream logStream = new PrintStream(new FileOutputStream(log.toFile(), true), true, StandardCharsets.UTF_8);
        System.out.flush();
        System.setOut(new PrintStream(OutputStream.nullOutputStream()));
        System.setErr(logStream);
        Logger root = Logger.getLogger("");
        for (Handler h : root.getHandlers()) {
            root.removeHandler(h);
        }
        StreamHandler handler = new StreamHandler(logStream, new SimpleFormatter()) {
            @Override
            public synchronized void publish(java.util.logging.LogRecord record) {
                super.publish(record);
                flush();
            }
        };
        root.addHandler(handler);
    }

    private static void copy(InputStream in, PrintStream err) {
        byte[] buffer = new byte[4096];
        try {
            int n;
            while ((n = in.read(buffer)) > 0) {
                err.write(buffer, 0, n);
                err.flush();
            }
        } catch (IOException e) {
            // the child went away
        }
    }
}
