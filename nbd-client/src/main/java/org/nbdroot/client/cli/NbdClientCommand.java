package org.nbdroot.client.cli;

import java.io.PrintStream;
import java.io.PrintWriter;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import org.nbdroot.proto.NbdException;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/** The {@code nbd-client} command line: its subcommands and how failures become exit codes. */
@Command(name = "nbd-client",
        mixinStandardHelpOptions = true,
        versionProvider = NbdClientCommand.Version.class,
        description = {"A userland NBD client: serve an NBD export as a block device, inspect and load exports.",
                "",
                "  nbd-client [options] HOST [PORT] [DEVICE]",
                "  nbd-client [options] URI [DEVICE]",
                ""})
public final class NbdClientCommand implements java.util.concurrent.Callable<Integer> {
    /** Exit status when the work failed (unreachable server, refused option, protocol violation). */
    public static final int EXIT_FAILURE = 1;
    /** Exit status for a command line that does not parse. */
    public static final int EXIT_USAGE = 2;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @CommandLine.Mixin
    DeviceOptions device;

    /** The subcommands, in the order help lists them; added by {@link #addSubcommands}. */
    private static final List<Class<?>> SUBCOMMANDS = List.of(ListCommand.class, InfoCommand.class,
            BenchCommand.class, RescueCommand.class, DestroyCommand.class, ListDevicesCommand.class,
            ResizeCommand.class, StatsCommand.class, org.nbdroot.reroot.RerootCommand.class);

    private String[] args = new String[0];

    /** The command line as given, for starting the daemon again in the background. */
    String[] args() {
        return args.clone();
    }

    @Override
    public Integer call() throws Exception {
        if (device.positional.isEmpty()) {
            throw new CommandLine.ParameterException(spec.commandLine(),
                    "missing HOST [PORT] [DEVICE], URI [DEVICE] or a command (try --help)");
        }
        device.check();
        return ServeCommand.serve(device, false, args);
    }

    /** Runs the command line and returns the exit status; every failure is one line on {@code err}. */
    public static int run(String[] args, PrintStream out, PrintStream err) {
        NbdClientCommand top = new NbdClientCommand();
        top.args = args.clone();
        CommandLine cli = new CommandLine(top);
        addSubcommands(cli, args);
        cli.setOut(new PrintWriter(out, true));
        cli.setErr(new PrintWriter(err, true));
        cli.setExitCodeExceptionMapper(e -> EXIT_FAILURE);
        cli.setParameterExceptionHandler((e, a) -> {
            e.getCommandLine().getErr().println("nbd-client: " + e.getMessage());
            e.getCommandLine().getErr().println("Try '" + e.getCommandLine().getCommandSpec().qualifiedName() + " --help'.");
            return EXIT_USAGE;
        });
        cli.setExecutionExceptionHandler((e, commandLine, parseResult) -> {
            commandLine.getErr().println("nbd-client: " + message(e));
            if (Boolean.getBoolean("nbd.debug")) {
                e.printStackTrace(commandLine.getErr());
            }
            return e instanceof IllegalArgumentException ? EXIT_USAGE : EXIT_FAILURE;
        });
        try {
            return cli.execute(args);
        } catch (OutOfMemoryError e) {
            // An Error passes picocli's handler by: one line still, not a stack trace.
            err.println("nbd-client: out of memory (" + e.getMessage() + "): ask for less (--bs, --iodepth),"
                    + " or give the JVM more (JAVA_OPTS=-XX:MaxDirectMemorySize=..., -Xmx...)");
            err.flush();
            return EXIT_FAILURE;
        }
    }

    /**
     * Adds the subcommands whose names are on the command line, or all of them when help is asked
     * for. Picocli builds a command's model by reflection over its classes, and building all of
     * them was a good part of the daemon's start-up; parsing is the same either way, since a
     * subcommand is only ever chosen by its name.
     */
    static void addSubcommands(CommandLine cli, String[] args) {
        Set<String> words = new HashSet<>(Arrays.asList(args));
        boolean all = args.length == 0 || words.contains("-h") || words.contains("--help");
        for (Class<?> command : SUBCOMMANDS) {
            if (all || words.contains(command.getAnnotation(Command.class).name())) {
                cli.addSubcommand(command);
            }
        }
    }

    /** A failure as one line: the engine's own messages are written for users already. */
    static String message(Throwable e) {
        Throwable t = e;
        while ((t instanceof CompletionException || t instanceof ExecutionException) && t.getCause() != null) {
            t = t.getCause();
        }
        // Ours read well alone; a JDK subclass keeps its name (NoSuchFileException's message is just the path).
        boolean plain = t.getClass() == java.io.IOException.class || t.getClass() == IllegalStateException.class;
        if ((t instanceof NbdException || t instanceof IllegalArgumentException || plain) && t.getMessage() != null) {
            return t.getMessage();
        }
        return t.getMessage() == null ? t.toString() : t.getClass().getSimpleName() + ": " + t.getMessage();
    }

    static final class Version implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() {
            String v = NbdClientCommand.class.getPackage().getImplementationVersion();
            if (v == null) {
                // In the runtime image there is no jar manifest: the module descriptor has the version.
                java.lang.module.ModuleDescriptor module = NbdClientCommand.class.getModule().getDescriptor();
                v = module == null ? null : module.rawVersion().orElse(null);
            }
            return new String[] {"nbd-client " + (v == null ? "(development build)" : v)};
        }
    }
}
