package org.nbdroot.client;

import org.nbdroot.client.cli.NbdClientCommand;

/** Entry point of the {@code nbd-client} command. */
public final class Main {
    private Main() {}

    public static void main(String[] args) {
        System.exit(NbdClientCommand.run(args, System.out, System.err));
    }
}
