package org.nbdroot.proto;

import java.util.List;
import java.util.Map;
import org.nbdroot.proto.wire.TransmissionFlag;

/**
 * What the handshake agreed on for one export.
 *
 * @param name           the export name as the client asked for it (the server's canonical name, if it sent one)
 * @param description    the server's description, or null
 * @param size           the export's size in bytes
 * @param flags          the transmission flags ({@link TransmissionFlag})
 * @param blockSize      block size constraints (the defaults when the server sent none)
 * @param blockSizeFromServer whether the server stated the block sizes
 * @param structuredReplies whether structured replies were negotiated
 * @param metaContexts   the meta contexts the server agreed to, by the id it assigned
 */
public record ExportInfo(
        String name,
        String description,
        long size,
        int flags,
        BlockSize blockSize,
        boolean blockSizeFromServer,
        boolean structuredReplies,
        Map<Integer, String> metaContexts) {

    public boolean has(TransmissionFlag flag) {
        return flag.isSetIn(flags);
    }

    public boolean readOnly() {
        return has(TransmissionFlag.READ_ONLY);
    }

    public List<String> flagNames() {
        return TransmissionFlag.names(flags);
    }

    /** The id the server gave to the named meta context, or -1 if it was not negotiated. */
    public int metaContextId(String contextName) {
        for (Map.Entry<Integer, String> e : metaContexts.entrySet()) {
            if (e.getValue().equals(contextName)) {
                return e.getKey();
            }
        }
        return -1;
    }
}
