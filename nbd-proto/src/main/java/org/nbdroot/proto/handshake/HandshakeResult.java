package org.nbdroot.proto.handshake;

import java.util.List;
import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.ExportListing;

/**
 * What the handshake produced: the export (goals TRANSMISSION and INFO) or the listing (goal
 * LIST_EXPORTS), the meta contexts the server offers when they were asked for, and whether the
 * connection is now in transmission (always for TRANSMISSION; for INFO when the server had no
 * NBD_OPT_INFO and GO was used instead).
 */
public record HandshakeResult(ExportInfo export, List<ExportListing> exports, List<String> availableMetaContexts,
        boolean transmission) {}
