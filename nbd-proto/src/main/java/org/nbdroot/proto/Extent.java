package org.nbdroot.proto;

import org.nbdroot.proto.wire.NbdConstants;

/** One extent of a block status reply: {@code length} bytes from {@code offset} share {@code flags}. */
public record Extent(long offset, long length, int flags) {
    /** For base:allocation: the range is unallocated. */
    public boolean hole() {
        return (flags & NbdConstants.STATE_HOLE) != 0;
    }

    /** For base:allocation: the range reads as zeroes. */
    public boolean zero() {
        return (flags & NbdConstants.STATE_ZERO) != 0;
    }
}
