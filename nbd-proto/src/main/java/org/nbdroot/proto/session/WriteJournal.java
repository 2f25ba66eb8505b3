package org.nbdroot.proto.session;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.logging.Logger;
import org.nbdroot.proto.wire.Command;

/**
 * The writes a server acknowledged since the last FLUSH that succeeded, in the order they were
 * acknowledged. A server may keep acknowledged writes in a volatile cache until a FLUSH, so a
 * server that restarts may have lost any of them: after a reconnect they are written again,
 * in order, before anything else is sent (see {@link Reconnector}). Writing them again is
 * harmless when nothing was lost: the same bytes land in the same order.
 *
 * <p>The journal is bounded by {@code limit} bytes of write data. Past half of it the session
 * sends a FLUSH of its own, which empties it. Should it fill anyway, it is dropped as a whole
 * (a replay of only some writes could put older data over newer that did survive) and stays
 * empty, with a log line, until a FLUSH sent after that point succeeds.
 */
final class WriteJournal {
    private static final Logger LOG = Logger.getLogger(WriteJournal.class.getName());
    /** What an entry without data (TRIM, WRITE_ZEROES) counts against the limit. */
    private static final int ENTRY_OVERHEAD = 64;

    /** One acknowledged write; {@code data} only for WRITE. */
    record Entry(long seq, Command command, int flags, long offset, int length, ByteBuf data) {
        boolean overlaps(Entry o) {
            return offset < o.offset + o.length && o.offset < offset + length;
        }

        String describe() {
            return String.format("NBD_CMD_%s of %d bytes at offset %d", command, length, offset);
        }
    }

    private final long limit;
    private final ArrayDeque<Entry> entries = new ArrayDeque<>();
    private long bytes;
    /** Of {@code bytes}, the write data alone. */
    private long dataBytes;
    /** Acknowledgements counted so far, kept or not. */
    private long seq;
    /** While incomplete: a FLUSH must be sent after this acknowledgement for the journal to be whole again. */
    private long incompleteUntil = -1;

    WriteJournal(long limit) {
        this.limit = limit;
    }

    /** Where a FLUSH sent now starts covering: every acknowledgement up to here. */
    synchronized long mark() {
        return seq;
    }

    /** A write was acknowledged: keeps a copy (of {@code data}, which the caller still owns). */
    synchronized void acknowledged(Command command, int flags, long offset, int length, ByteBuf data) {
        seq++;
        if (incompleteUntil >= 0) {
            incompleteUntil = seq; // still incomplete: only a FLUSH sent from now on covers this one
            return;
        }
        long cost = (data != null ? length : 0) + ENTRY_OVERHEAD;
        if (bytes + cost > limit) {
            LOG.warning("more than " + limit + " bytes written since the last flush: writes are not kept for replay "
                    + "after a server restart until the next flush");
            clear();
            incompleteUntil = seq;
            return;
        }
        ByteBuf copy = null;
        if (data != null) {
            copy = Unpooled.buffer(length, length);
            copy.writeBytes(data, data.readerIndex(), length);
        }
        entries.addLast(new Entry(seq, command, flags, offset, length, copy));
        bytes += cost;
        dataBytes += data != null ? length : 0;
    }

    /** A FLUSH sent at {@code mark} succeeded: what it covers is durable. */
    synchronized void flushed(long mark) {
        while (!entries.isEmpty() && entries.peekFirst().seq() <= mark) {
            Entry e = entries.removeFirst();
            bytes -= (e.data() != null ? e.length() : 0) + ENTRY_OVERHEAD;
            dataBytes -= e.data() != null ? e.length() : 0;
            if (e.data() != null) {
                e.data().release();
            }
        }
        if (incompleteUntil >= 0 && mark >= incompleteUntil) {
            incompleteUntil = -1;
            LOG.info("the journal of unflushed writes is complete again");
        }
    }

    /** Whether the session should send a FLUSH of its own to empty the journal. */
    synchronized boolean wantsFlush() {
        return incompleteUntil >= 0 || bytes > limit / 2;
    }

    /** The entries to write again, oldest first (each with its own data reference), or null when incomplete. */
    synchronized List<Entry> replay() {
        if (incompleteUntil >= 0) {
            return null;
        }
        List<Entry> copy = new ArrayList<>(entries.size());
        for (Entry e : entries) {
            copy.add(new Entry(e.seq(), e.command(), e.flags(), e.offset(), e.length(),
                    e.data() == null ? null : e.data().retainedDuplicate()));
        }
        return copy;
    }

    /** The write data kept, in bytes. */
    synchronized long bytes() {
        return dataBytes;
    }

    synchronized int size() {
        return entries.size();
    }

    synchronized void clear() {
        for (Entry e : entries) {
            if (e.data() != null) {
                e.data().release();
            }
        }
        entries.clear();
        bytes = 0;
        dataBytes = 0;
    }

    /**
     * Splits entries into batches in which no two overlap, in order: a batch may be sent all at
     * once (the server may reorder within it), the next only after it is answered.
     */
    static List<List<Entry>> batches(List<Entry> entries) {
        List<List<Entry>> batches = new ArrayList<>();
        List<Entry> current = new ArrayList<>();
        java.util.TreeMap<Long, Long> ranges = new java.util.TreeMap<>(); // start -> end, of the current batch
        for (Entry e : entries) {
            var before = ranges.floorEntry(e.offset() + e.length() - 1);
            if (before != null && before.getValue() > e.offset()) {
                batches.add(current);
                current = new ArrayList<>();
                ranges.clear();
            }
            current.add(e);
            ranges.put(e.offset(), e.offset() + e.length());
        }
        if (!current.isEmpty()) {
            batches.add(current);
        }
        return batches;
    }
}
