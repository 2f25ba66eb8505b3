package org.nbdroot.proto.session;

import io.netty.buffer.ByteBuf;
import org.nbdroot.proto.wire.Command;

/**
 * One transmission request on its way through a connection, with the state its reply builds
 * up. Created by {@link NbdSession}, sent by {@link NbdConnection}, completed exactly once
 * through its {@link Completion}.
 */
final class NbdRequest {
    /** Where the outcome goes; called on the connection's event loop. */
    interface Completion {
        void complete(NbdRequest request, Throwable failure);
    }

    final Command command;
    final int flags;
    final long offset;
    final int length;
    /** WRITE payload, kept until the reply so the request can be sent again on a new connection. */
    ByteBuf payload;
    Completion completion;
    /** The meta context a BLOCK_STATUS asks about. */
    int metaContextId = -1;

    // Reply state.
    long handle;
    /** System.nanoTime() when the request was last written to a connection: its reply deadline counts from here. */
    long sentAt;
    /** READ: the data; assembled from chunks when the server splits it. */
    ByteBuf data;
    ReadCoverage coverage;
    /** BLOCK_STATUS: the extents reported. */
    java.util.List<org.nbdroot.proto.Extent> extents;
    /** The first error the server reported for this request. */
    Throwable serverError;
    /**
     * A journal replay's write: its replay must learn that its connection was lost (and start
     * over), so it fails with the connection instead of being sent again elsewhere.
     */
    boolean replay;

    NbdRequest(Command command, int flags, long offset, int length, ByteBuf payload, Completion completion) {
        this.command = command;
        this.flags = flags;
        this.offset = offset;
        this.length = length;
        this.payload = payload;
        this.completion = completion;
    }

    String describe() {
        return String.format("NBD_CMD_%s of %d bytes at offset %d", command, length, offset);
    }

    /** Forgets what a lost connection's reply had built up, so the request can be sent again as new. */
    void resetForResend() {
        if (data != null) {
            data.release();
            data = null;
        }
        coverage = null;
        extents = null;
        serverError = null;
        handle = 0;
    }

    /** Releases what the request still holds, once it is complete or failed. */
    void releaseBuffers() {
        if (payload != null) {
            payload.release();
            payload = null;
        }
        if (data != null) {
            data.release();
            data = null;
        }
    }
}
