package org.nbdroot.proto.handshake;

import java.util.List;
import org.nbdroot.proto.ExportInfo;
import org.nbdroot.proto.ExportListing;

/**
 * What the handshake produced: the export (goal TRANSMISSION) or the listing (goal
 * LIST_EXPORTS), and the meta contexts the server offers when they were asked for.
 */
public record HandshakeResult(ExportInfo export, List<ExportListing> exports, List<String> availableMetaContexts) {}
