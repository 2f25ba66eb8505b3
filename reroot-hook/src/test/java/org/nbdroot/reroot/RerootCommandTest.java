package org.nbdroot.reroot;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

class RerootCommandTest {
    private record Run(int status, String out, String err) {}

    private static Run run(String... args) {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        CommandLine cli = new CommandLine(new RerootCommand());
        cli.setOut(new PrintWriter(out, true));
        cli.setErr(new PrintWriter(err, true));
        cli.setExecutionExceptionHandler((e, c, p) -> {
            c.getErr().println(e.getMessage());
            return 1;
        });
        return new Run(cli.execute(args), out.toString(), err.toString());
    }

    @Test
    void aDryRunShowsTheDaemonStartedThroughTheStagedLinkerAndTheRootItNames(@TempDir Path dir) throws IOException {
        Files.createDirectories(dir.resolve("lib"));
        Files.writeString(dir.resolve("lib/ld-linux-x86-64.so.2"), "");
        Files.writeString(dir.resolve("runtime-linker"), "ld-linux-x86-64.so.2\n");
        Path conf = dir.resolve("nbdroot.conf");
        Files.writeString(conf, "nbdroot.0.server=\"nbd://10.0.2.2:10809/root\"\nnbdroot.0.options=\"--connections 2\"\n"
                + "nbdroot.root=\"ext4:/dev/nbd0\"\nnbdroot.java.options=\"-Xmx64m\"\n");
        Run r = run("start", "--dry-run", "--from", dir.toString(), "--config", conf.toString());
        assertEquals(0, r.status(), r.err());
        String expected = "would run: " + dir + "/lib/ld-linux-x86-64.so.2 --inhibit-cache " + dir + "/nbd-client/bin/java";
        if (RerootCommand.isFreeBsd()) {
            expected = "would run: " + dir + "/lib/ld-linux-x86-64.so.2 " + dir + "/nbd-client/bin/java";
        }
        assertTrue(r.out().startsWith(expected), r.out());
        assertTrue(r.out().contains(" -Dnbd.rundir=" + dir + "/run "), r.out());
        assertTrue(r.out().contains(" -Djnr.ffi.library.path=" + dir + "/lib "), "jnr finds the staged libc first: " + r.out());
        // Linux: marked as the root's storage daemon, which systemd's shutdown spares.
        String mark = RerootCommand.isFreeBsd() ? "" : " --root-storage";
        assertTrue(r.out().contains(" -Xmx64m -m org.nbdroot.client/org.nbdroot.client.Main --foreground --detached" + mark
                + " --connections 2 nbd://10.0.2.2:10809/root /dev/"), r.out());
        assertTrue(r.out().contains("FSTYPE=ext4"), r.out());
        assertTrue(Files.notExists(dir.resolve("root.conf")), "a dry run writes nothing");
    }

    /** What /etc/rc.final runs on FreeBSD once the shutdown has killed the daemons. */
    @Test
    void aRescueDryRunTakesTheDevicesOverAndNamesNoRoot(@TempDir Path dir) throws IOException {
        Files.createDirectories(dir.resolve("lib"));
        Files.writeString(dir.resolve("lib/ld-elf.so.1"), "");
        Files.writeString(dir.resolve("runtime-linker"), "ld-elf.so.1\n");
        Path conf = dir.resolve("nbdroot.conf");
        Files.writeString(conf, "nbdroot.0.server=\"nbd://192.0.2.1/root\"\nnbdroot.1.server=\"192.0.2.1 10809\"\n"
                + "nbdroot.root=\"ufs:/dev/ggate0\"\n");
        Run r = run("start", "--rescue", "--dry-run", "--from", dir.toString(), "--config", conf.toString());
        assertEquals(0, r.status(), r.err());
        String main = " -m org.nbdroot.client/org.nbdroot.client.Main rescue --foreground --detached";
        assertTrue(r.out().contains(main) && r.out().contains(" nbd://192.0.2.1/root /dev/"), r.out());
        assertTrue(r.out().contains(" 192.0.2.1 10809 /dev/"), r.out());
        assertEquals(2, r.out().lines().filter(l -> l.startsWith("would run: " + dir + "/lib/ld-elf.so.1 ")).count(), r.out());
        assertTrue(!r.out().contains("kenv") && !r.out().contains("root.conf"), "a rescue names no new root: " + r.out());
    }

    @Test
    void startingWithNothingStagedSaysWhatToRunFirst(@TempDir Path dir) throws IOException {
        Path conf = dir.resolve("nbdroot.conf");
        Files.writeString(conf, "nbdroot.0.server=nbd://h/root\nnbdroot.root=ext4:/dev/nbd0\n");
        Run r = run("start", "--from", dir.toString(), "--config", conf.toString());
        assertEquals(1, r.status());
        assertTrue(r.err().contains("nothing staged in " + dir) && r.err().contains("nbd-client reroot stage --to " + dir), r.err());
    }

    @Test
    void stagingSomethingThatIsNotARuntimeImageIsRefused(@TempDir Path dir) {
        Run r = run("stage", "--to", dir.resolve("to").toString(), "--image", dir.toString());
        assertEquals(1, r.status());
        assertTrue(r.err().contains("is not a runtime image"), r.err());
    }
}
