package org.nbdroot.proto.session;

import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.wire.Command;
import org.nbdroot.proto.wire.CommandFlag;
import org.nbdroot.proto.wire.NbdConstants;
import org.nbdroot.proto.wire.TransmissionFlag;

/**
 * Whether a request the session checked against one description of the export still fits the
 * export a connection negotiated: a reconnect or a refresh may bring a smaller, read-only or
 * less capable one, and a request checked just before must not then go out unchecked.
 */
final class ExportFit {
    private ExportFit() {
    }

    /**
     * Why {@code now} cannot take {@code r}, or null. {@code beforeSize} is the size the request
     * was checked against, for the message, or -1 when not known.
     */
    static String problem(NbdRequest r, ExportInfo now, long beforeSize) {
        if (r.offset + r.length > now.size()) {
            return beforeSize >= 0 ? "the export shrank from " + beforeSize + " to " + now.size() + " bytes"
                    : "the export is now " + now.size() + " bytes";
        }
        boolean writes = r.command == Command.WRITE || r.command == Command.TRIM || r.command == Command.WRITE_ZEROES;
        if (writes && now.readOnly()) {
            return "the export became read-only";
        }
        TransmissionFlag needed = switch (r.command) {
            case FLUSH -> TransmissionFlag.SEND_FLUSH;
            case TRIM -> TransmissionFlag.SEND_TRIM;
            case WRITE_ZEROES -> TransmissionFlag.SEND_WRITE_ZEROES;
            case CACHE -> TransmissionFlag.SEND_CACHE;
            default -> null;
        };
        if (needed != null && !now.has(needed)) {
            return "the export no longer offers " + needed.displayName();
        }
        if ((r.flags & CommandFlag.FUA) != 0 && !now.has(TransmissionFlag.SEND_FUA)) {
            return "the export no longer offers send_fua";
        }
        if ((r.flags & CommandFlag.FAST_ZERO) != 0 && !now.has(TransmissionFlag.SEND_FAST_ZERO)) {
            return "the export no longer offers send_fast_zero";
        }
        // By name: each connection numbers its meta contexts (the connection sends its own id).
        if (r.command == Command.BLOCK_STATUS && now.metaContextId(NbdConstants.BASE_ALLOCATION) < 0) {
            return "the export no longer offers the meta context " + NbdConstants.BASE_ALLOCATION;
        }
        return null;
    }
}
