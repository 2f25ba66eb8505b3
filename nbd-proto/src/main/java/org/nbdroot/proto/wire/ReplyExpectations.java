package org.nbdroot.proto.wire;

/**
 * What the reply decoder must know about outstanding requests: simple replies do not carry
 * their own length, a chunk's length is bounded by the request it answers, and an extended
 * reply header carries its request's offset.
 */
public interface ReplyExpectations {
    /** Marks a handle with no outstanding request. */
    int UNKNOWN_HANDLE = -1;
    /** Marks a READ once structured replies are negotiated: it must be answered with chunks. */
    int SIMPLE_REPLY_FORBIDDEN = -2;
    /** {@link #requestOffset} of a handle with no outstanding request. */
    long UNKNOWN_OFFSET = -1;

    /** Bytes of data that follow a successful simple reply to this handle (the READ length, else 0). */
    int simpleReplyDataLength(long handle);

    /** The longest chunk payload acceptable for this handle. */
    int maxChunkPayload(long handle);

    /** The offset the request with this handle was sent with: an extended reply header must repeat it. */
    long requestOffset(long handle);
}
