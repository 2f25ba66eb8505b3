package org.nbdroot.proto.session;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.nbdroot.proto.wire.Command;
import org.nbdroot.proto.wire.HeaderStyle;
import org.nbdroot.proto.wire.NbdConstants;
import org.nbdroot.proto.wire.ReplyExpectations;

/**
 * The requests of one connection that await their reply, by handle. A handle is a slot index
 * in its low 32 bits and that slot's use count in the high 32, so a late or repeated reply
 * for a slot that was reused is still seen as a reply for no outstanding request. Used by
 * the connection's event loop only.
 */
final class InFlightTable implements ReplyExpectations {
    /** An error chunk: error, message length, a message of up to 4096 bytes, an offset. */
    static final int MAX_ERROR_CHUNK = 4 + 2 + NbdConstants.MAX_STRING_LENGTH + 8;
    private static final int MAX_BLOCK_STATUS_CHUNK = 16 * 1024 * 1024;

    private final HeaderStyle style;
    private final int minimumBlock;
    private NbdRequest[] slots = new NbdRequest[64];
    private int[] uses = new int[64];
    private int[] free = new int[64];
    private int freeCount;
    private int nextUnused;
    private int size;

    InFlightTable(HeaderStyle style, int minimumBlock) {
        this.style = style;
        this.minimumBlock = minimumBlock;
    }

    InFlightTable(boolean structuredReplies, int minimumBlock) {
        this(HeaderStyle.of(structuredReplies, false), minimumBlock);
    }

    long add(NbdRequest request) {
        int slot = freeCount > 0 ? free[--freeCount] : takeUnused();
        slots[slot] = request;
        int use = ++uses[slot];
        size++;
        request.handle = ((long) use << 32) | slot;
        return request.handle;
    }

    private int takeUnused() {
        if (nextUnused == slots.length) {
            int capacity = slots.length * 2;
            slots = Arrays.copyOf(slots, capacity);
            uses = Arrays.copyOf(uses, capacity);
            free = Arrays.copyOf(free, capacity);
        }
        return nextUnused++;
    }

    /** The outstanding request with this handle, or null. */
    NbdRequest get(long handle) {
        int slot = (int) handle;
        if (slot < 0 || slot >= nextUnused) {
            return null;
        }
        NbdRequest request = slots[slot];
        return request != null && request.handle == handle ? request : null;
    }

    NbdRequest remove(long handle) {
        NbdRequest request = get(handle);
        if (request != null) {
            int slot = (int) handle;
            slots[slot] = null;
            free[freeCount++] = slot;
            size--;
        }
        return request;
    }

    int size() {
        return size;
    }

    boolean isEmpty() {
        return size == 0;
    }

    /** The request sent longest ago, or null when none awaits a reply. A scan: called about once a second. */
    NbdRequest oldest() {
        NbdRequest oldest = null;
        for (int slot = 0; slot < nextUnused && size > 0; slot++) {
            NbdRequest r = slots[slot];
            if (r != null && (oldest == null || r.sentAt - oldest.sentAt < 0)) {
                oldest = r;
            }
        }
        return oldest;
    }

    /** Empties the table, returning what was in it. */
    List<NbdRequest> removeAll() {
        List<NbdRequest> all = new ArrayList<>(size);
        for (int slot = 0; slot < nextUnused; slot++) {
            if (slots[slot] != null) {
                all.add(slots[slot]);
                slots[slot] = null;
                free[freeCount++] = slot;
            }
        }
        size = 0;
        return all;
    }

    @Override
    public int simpleReplyDataLength(long handle) {
        NbdRequest request = get(handle);
        if (request == null) {
            return UNKNOWN_HANDLE;
        }
        if (request.command != Command.READ) {
            return 0;
        }
        return style.chunks() ? SIMPLE_REPLY_FORBIDDEN : request.length;
    }

    @Override
    public long requestOffset(long handle) {
        NbdRequest request = get(handle);
        return request == null ? UNKNOWN_OFFSET : request.offset;
    }

    @Override
    public int maxChunkPayload(long handle) {
        NbdRequest request = get(handle);
        if (request == null) {
            return UNKNOWN_HANDLE;
        }
        return switch (request.command) {
            case READ -> Math.max(MAX_ERROR_CHUNK, request.length + 8);
            case BLOCK_STATUS -> (int) Math.max(MAX_ERROR_CHUNK,
                    Math.min(MAX_BLOCK_STATUS_CHUNK, style == HeaderStyle.EXTENDED
                            ? 8 + 16L * (request.length / minimumBlock + 2)
                            : 4 + 8L * (request.length / minimumBlock + 2)));
            default -> MAX_ERROR_CHUNK;
        };
    }
}
