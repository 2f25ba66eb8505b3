package org.nbdroot.proto;

import java.util.List;
import java.util.Map;
import org.nbdroot.proto.wire.HeaderStyle;
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
 * @param structuredReplies whether replies come as chunks: structured replies were negotiated, or extended headers
 * @param extendedHeaders whether extended headers (NBD_OPT_EXTENDED_HEADERS) were negotiated: 32-byte headers
 *                        with 64-bit lengths both ways, and no simple replies
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
        boolean extendedHeaders,
        Map<Integer, String> metaContexts) {

    /** Extended headers imply structured replies: one cannot be had without the other. */
    public ExportInfo {
        if (extendedHeaders && !structuredReplies) {
            throw new IllegalArgumentException("extended headers imply structured replies");
        }
    }

    /** An export without extended headers. */
    public ExportInfo(String name, String description, long size, int flags, BlockSize blockSize,
            boolean blockSizeFromServer, boolean structuredReplies, Map<Integer, String> metaContexts) {
        this(name, description, size, flags, blockSize, blockSizeFromServer, structuredReplies, false, metaContexts);
    }

    /** The headers transmission uses on this export's connections. */
    public HeaderStyle headerStyle() {
        return HeaderStyle.of(structuredReplies, extendedHeaders);
    }

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
