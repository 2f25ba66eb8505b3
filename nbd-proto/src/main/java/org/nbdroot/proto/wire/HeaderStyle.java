package org.nbdroot.proto.wire;

/**
 * Which transmission headers a connection speaks, as its handshake agreed. Each style allows
 * only its own reply magics: a reply of another style means the server lost track of what was
 * negotiated, and the connection cannot be trusted to be in step any more.
 */
public enum HeaderStyle {
    /** Neither option: 28-byte requests, 16-byte simple replies only. */
    SIMPLE,
    /** {@code NBD_OPT_STRUCTURED_REPLY}: 28-byte requests; simple replies and 20-byte structured chunks. */
    STRUCTURED,
    /** {@code NBD_OPT_EXTENDED_HEADERS}: 32-byte requests and 32-byte extended chunks, nothing else. */
    EXTENDED;

    public static HeaderStyle of(boolean structuredReplies, boolean extendedHeaders) {
        return extendedHeaders ? EXTENDED : structuredReplies ? STRUCTURED : SIMPLE;
    }

    /** Whether replies come as chunks (structured or extended), with their length in the header. */
    public boolean chunks() {
        return this != SIMPLE;
    }
}
