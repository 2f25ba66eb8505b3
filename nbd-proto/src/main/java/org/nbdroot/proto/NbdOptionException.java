package org.nbdroot.proto;

import org.nbdroot.proto.wire.NbdOption;
import org.nbdroot.proto.wire.OptionReplyType;

/** The server refused an option during the handshake ({@code NBD_REP_ERR_*}). */
public class NbdOptionException extends NbdException {
    private final int option;
    private final int replyType;

    public NbdOptionException(int option, int replyType, String serverMessage) {
        super(describe(option, replyType, serverMessage));
        this.option = option;
        this.replyType = replyType;
    }

    /** The refusal with {@code advice} on what to do about it after the server's words. */
    public NbdOptionException(int option, int replyType, String serverMessage, String advice) {
        super(describe(option, replyType, serverMessage) + "; " + advice);
        this.option = option;
        this.replyType = replyType;
    }

    private static String describe(int option, int replyType, String serverMessage) {
        OptionReplyType type = OptionReplyType.ofCode(replyType);
        String text = type == null
                ? String.format("%s refused with unknown error reply 0x%08x", NbdOption.nameOf(option), replyType)
                : String.format("%s refused: %s (%s)", NbdOption.nameOf(option), type.explanation(), type.specName());
        if (serverMessage != null && !serverMessage.isEmpty()) {
            text += ": " + serverMessage;
        }
        return text;
    }

    public int option() {
        return option;
    }

    public int replyType() {
        return replyType;
    }

    public boolean is(OptionReplyType type) {
        return replyType == type.code();
    }
}
