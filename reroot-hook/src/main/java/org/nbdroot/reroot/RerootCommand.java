package org.nbdroot.reroot;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code nbd-client reroot stage|start}: the two steps {@code /etc/rc.reroot} runs. */
@Command(name = "reroot", mixinStandardHelpOptions = true,
        description = {"The steps /etc/rc.reroot runs while the machine reroots onto an NBD-served root:",
                "  stage   copy this runtime image, the libraries it maps and the runtime linker to DIR",
                "  start   start one daemon per configured device from DIR, then name the new root"},
        subcommands = {RerootCommand.Stage.class, RerootCommand.Start.class})
public final class RerootCommand implements Callable<Integer> {
    static final String DEFAULT_DIR = "/dev/reroot";

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() {
        throw new CommandLine.ParameterException(spec.commandLine(), "give a step: stage or start");
    }

    static boolean isFreeBsd() {
        return System.getProperty("os.name", "").toLowerCase(java.util.Locale.ROOT).contains("freebsd");
    }

    @Command(name = "stage", mixinStandardHelpOptions = true, description = "Copy the runtime image, every library it maps and the runtime linker into DIR.")
    static final class Stage implements Callable<Integer> {
        @CommandLine.Spec
        CommandLine.Model.CommandSpec spec;

        @Option(names = "--to", paramLabel = "DIR", defaultValue = DEFAULT_DIR,
                description = "Where to stage (default ${DEFAULT-VALUE}, the tmpfs that outlives the reroot).")
        Path to;

        @Option(names = "--image", paramLabel = "DIR",
                description = "The runtime image to copy (default: the one running this command).")
        Path image;

        @Option(names = "--with-lib", paramLabel = "NAME",
                description = "Also copy this library, which is loaded with dlopen (e.g. libnss_dns.so.2); repeatable.")
        List<String> extraLibraries = new ArrayList<>();

        @Override
        public Integer call() throws IOException {
            Path from = (image != null ? image : Path.of(System.getProperty("java.home"))).toAbsolutePath().normalize();
            ImageStager stager = new ImageStager(new SharedLibraries(SharedLibraries.defaultSystemDirectories(isFreeBsd())));
            ImageStager.Result r = stager.stage(from, new StagedImage(to.toAbsolutePath()), extraLibraries);
            PrintWriter out = spec.commandLine().getOut();
            out.printf("staged %s into %s: %d files, %.1f MiB, %d libraries from outside the image, runtime linker %s%n",
                    from, to, r.files(), r.bytes() / 1048576.0, r.libraries(), r.runtimeLinker().getFileName());
            return 0;
        }
    }

    @Command(name = "start", mixinStandardHelpOptions = true, description = {"Start one daemon per configured device from the staged copy in DIR,",
            "wait until each device serves, then name the new root (FreeBSD: kenv vfs.root.mountfrom;",
            "Linux: DIR/root.conf for the companion init)."})
    static final class Start implements Callable<Integer> {
        @CommandLine.Spec
        CommandLine.Model.CommandSpec spec;

        @Option(names = "--from", paramLabel = "DIR", defaultValue = DEFAULT_DIR,
                description = "The staging directory (default ${DEFAULT-VALUE}).")
        Path from;

        @Option(names = "--config", paramLabel = "FILE",
                description = "Read nbdroot.* variables from FILE instead of the kernel (FreeBSD: kenv; Linux: /proc/cmdline).")
        Path config;

        @Option(names = "--dry-run", description = "Print what would be started and set, and do nothing.")
        boolean dryRun;

        @Option(names = "--rescue", description = {"Take over the devices instead (their daemons died: a shutdown killed them),",
                "and name no root: for /etc/rc.final on FreeBSD (GEOM Gate)."})
        boolean rescue;

        @Override
        public Integer call() throws IOException, InterruptedException {
            boolean freebsd = isFreeBsd();
            RerootConfig cfg = RerootConfig.from(variables(freebsd));
            StagedImage staged = new StagedImage(from.toAbsolutePath());
            PrintWriter out = spec.commandLine().getOut();
            DaemonLauncher launcher = new DaemonLauncher(staged, freebsd, rescue, System.err);
            if (dryRun) {
                for (RerootConfig.Device d : cfg.devices()) {
                    out.println("would run: " + String.join(" ", launcher.command(d, cfg.javaOptions())));
                }
                if (!rescue) {
                    printRoot(cfg, freebsd, staged, out);
                }
                return 0;
            }
            // One deadline for all devices: init's limit for the whole hook is one too.
            long deadline = System.nanoTime() + cfg.timeout().toNanos();
            for (RerootConfig.Device d : cfg.devices()) {
                java.time.Duration left = java.time.Duration.ofNanos(Math.max(0, deadline - System.nanoTime()));
                DaemonLauncher.Started s = launcher.start(d, left, cfg.timeout(), cfg.javaOptions());
                out.println("nbd-client reroot: " + s.devicePath() + (rescue ? " taken over" : " served") + " by pid "
                        + s.pid() + " from " + String.join(" ", d.server()));
                out.flush();
            }
            if (rescue) {
                return 0;
            }
            if (freebsd) {
                Kenv kenv = Kenv.load();
                for (Map.Entry<String, String> v : NewRoot.freebsdVariables(cfg).entrySet()) {
                    kenv.set(v.getKey(), v.getValue());
                }
            } else {
                NewRoot.writeLinuxRootConf(cfg, staged.root().resolve("root.conf"));
            }
            printRoot(cfg, freebsd, staged, out);
            return 0;
        }

        private Map<String, String> variables(boolean freebsd) throws IOException {
            if (config != null) {
                return ConfigFile.read(config);
            }
            return freebsd ? Kenv.load().all() : KernelCommandLine.parse(Files.readString(Path.of("/proc/cmdline")));
        }

        private static void printRoot(RerootConfig cfg, boolean freebsd, StagedImage staged, PrintWriter out) {
            if (freebsd) {
                NewRoot.freebsdVariables(cfg).forEach((k, v) -> out.println("nbd-client reroot: kenv " + k + "=\"" + v + "\""));
            } else {
                out.print("nbd-client reroot: " + staged.root().resolve("root.conf") + ":\n" + NewRoot.linuxRootConf(cfg));
            }
            out.flush();
        }
    }
}
