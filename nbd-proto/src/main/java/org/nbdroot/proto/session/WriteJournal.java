package org.nbdroot.proto.session;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.buffer.CompositeByteBuf;
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
 * <p>A WRITE's data is kept without a copy when the caller handed its bytes over
 * ({@link NbdSession#write}): the journal takes the session's own reference to the buffer. It
 * is copied (to direct memory from the default allocator: no long-lived heap garbage) when the
 * caller only lent them ({@link NbdSession#writeBorrowed}), and when keeping the buffer would
 * hold on to much more memory than the write (a small slice of a large buffer).
 *
 * <p>The journal is bounded by {@code limit} bytes: every entry counts its data, a fixed
 * overhead, and, when it holds on to a buffer, the rest of that buffer's memory, counted once
 * for consecutive entries in the same buffer. Past half of it the session sends a FLUSH of its
 * own, which empties it. Should it fill anyway, it is dropped as a whole (a replay of only some
 * writes could put older data over newer that did survive) and stays empty, with a log line,
 * until a FLUSH sent after that point succeeds.
 *
 * <p>Acknowledgements come from a connection's event loop, but two connections may acknowledge
 * at once (one being retired by {@link NbdSession#refreshExport}, one reconnected on another
 * loop), and a FLUSH takes its mark on the caller's thread: one uncontended lock, taken once per
 * acknowledgement.
 */
final class WriteJournal {
    private static final Logger LOG = Logger.getLogger(WriteJournal.class.getName());
    /** What an entry counts against the limit beyond its data (TRIM and WRITE_ZEROES count only this). */
    private static final int ENTRY_OVERHEAD = 64;

    /** One acknowledged write, as handed to a replay; {@code data} only for WRITE. */
    record Entry(long seq, Command command, int flags, long offset, int length, ByteBuf data) {
        boolean overlaps(Entry o) {
            return offset < o.offset + o.length && o.offset < offset + length;
        }

        String describe() {
            return String.format("NBD_CMD_%s of %d bytes at offset %d", command, length, offset);
        }
    }

    private final long limit;
    /**
     * Each entry also has the buffer its data keeps alive when kept without a copy ({@code held},
     * else null) and what of that memory beyond its own length it counts ({@code heldExtra}).
     */
    private final JournalEntries entries = new JournalEntries();
    /** What the entries count against the limit. */
    private long bytes;
    /** The write data alone. */
    private long dataBytes;
    /** Acknowledgements counted so far, kept or not. */
    private long seq;
    /** While incomplete: a FLUSH must be sent after this acknowledgement for the journal to be whole again. */
    private long incompleteUntil = -1;
    /** Set when the export stopped offering FLUSH: nothing could empty the journal again, so it keeps nothing. */
    private boolean abandoned;

    WriteJournal(long limit) {
        this.limit = limit;
    }

    /** Where a FLUSH sent now starts covering: every acknowledgement up to here. */
    synchronized long mark() {
        return seq;
    }

    /**
     * The server acknowledged {@code request} (a WRITE, TRIM or WRITE_ZEROES). A WRITE's data is
     * kept: by taking over the request's payload reference (the request then holds none), or,
     * when {@code lent} or keeping it would hold too much memory, by a copy. Returns whether
     * the session should now send a FLUSH of its own.
     */
    synchronized boolean acknowledged(NbdRequest request, boolean lent) {
        if (abandoned) {
            return false;
        }
        seq++;
        if (incompleteUntil >= 0) {
            incompleteUntil = seq; // still incomplete: only a FLUSH sent from now on covers this one
            return true;
        }
        ByteBuf payload = request.payload;
        int length = request.length;
        ByteBuf held = payload == null || lent ? null : keepable(payload, length);
        long heldExtra = held == null ? 0 : extraHeld(held, length);
        long cost = (payload != null ? length : 0) + ENTRY_OVERHEAD + heldExtra;
        if (bytes + cost > limit) {
            LOG.warning("more than " + limit + " bytes written since the last flush: writes are not kept for replay "
                    + "after a server restart until the next flush");
            clear();
            incompleteUntil = seq;
            return true;
        }
        ByteBuf data = null;
        if (held != null) {
            data = payload;
            request.payload = null;
        } else if (payload != null) {
            data = ByteBufAllocator.DEFAULT.directBuffer(length, length);
            data.writeBytes(payload, payload.readerIndex(), length);
        }
        entries.addLast(seq, request.command, request.flags, request.offset, length, data, held, heldExtra);
        bytes += cost;
        dataBytes += payload != null ? length : 0;
        return bytes > limit / 2;
    }

    /**
     * The buffer whose memory {@code payload} keeps alive, when keeping it is worth it: it is the
     * one the last entry already keeps, or not much larger than the write. Null: copy instead.
     */
    private ByteBuf keepable(ByteBuf payload, int length) {
        ByteBuf root = payload;
        while (root.unwrap() != null) {
            root = root.unwrap();
        }
        if (root instanceof CompositeByteBuf) {
            return null; // its components' memory is not what its capacity says
        }
        if (!entries.isEmpty() && entries.held(entries.size() - 1) == root) {
            return root;
        }
        return root.capacity() <= 2L * length ? root : null;
    }

    /** What of {@code held}'s memory beyond the write a new entry counts: nothing when the last entry counts it. */
    private long extraHeld(ByteBuf held, int length) {
        boolean counted = !entries.isEmpty() && entries.held(entries.size() - 1) == held;
        return counted ? 0 : Math.max(0, held.capacity() - length);
    }

    private long cost(int i) {
        return (entries.data(i) != null ? entries.length(i) : 0) + ENTRY_OVERHEAD + entries.heldExtra(i);
    }

    /** A FLUSH sent at {@code mark} succeeded: what it covers is durable. */
    synchronized void flushed(long mark) {
        while (!entries.isEmpty() && entries.seq(0) <= mark) {
            ByteBuf data = entries.data(0);
            ByteBuf held = entries.held(0);
            bytes -= cost(0);
            dataBytes -= data != null ? entries.length(0) : 0;
            entries.removeFirst();
            if (held != null && !entries.isEmpty() && entries.held(0) == held) {
                // The next entry keeps the same buffer alive: it counts that memory from now on.
                long extra = Math.max(0, held.capacity() - entries.length(0));
                bytes += extra - entries.heldExtra(0);
                entries.setHeldExtra(0, extra);
            }
            if (data != null) {
                data.release();
            }
        }
        if (incompleteUntil >= 0 && mark >= incompleteUntil) {
            incompleteUntil = -1;
            LOG.info("the journal of unflushed writes is complete again");
        }
    }

    /** The entries to write again, oldest first (each with its own data reference), or null when incomplete. */
    synchronized List<Entry> replay() {
        if (incompleteUntil >= 0) {
            return null;
        }
        List<Entry> copy = new ArrayList<>(entries.size());
        for (int i = 0; i < entries.size(); i++) {
            Entry e = entries.entry(i);
            copy.add(e.data() == null ? e : new Entry(e.seq(), e.command(), e.flags(), e.offset(), e.length(),
                    e.data().retainedDuplicate()));
        }
        return copy;
    }

    /** The write data kept, in bytes. */
    synchronized long bytes() {
        return dataBytes;
    }

    /** What the entries count against the limit: their data, their overhead, the memory they hold beyond it. */
    synchronized long counted() {
        return bytes;
    }

    /**
     * The most a request of {@code command} over {@code length} bytes can count once acknowledged:
     * a kept (not lent) WRITE may also count the rest of a buffer up to twice its length.
     */
    static long cost(Command command, int length, boolean lent) {
        return (command == Command.WRITE ? (lent ? length : 2L * length) : 0) + ENTRY_OVERHEAD;
    }

    /** Whether {@code cost} more, beyond {@code inFlight} sent and not yet acknowledged, still fits the limit. */
    synchronized boolean hasRoom(long inFlight, long cost) {
        return bytes + inFlight + cost <= limit;
    }

    /** False from an overflow until a FLUSH sent after it succeeds. */
    synchronized boolean isComplete() {
        return incompleteUntil < 0;
    }

    synchronized int size() {
        return entries.size();
    }

    /**
     * Lets go of every entry, as an overflow does, after the server failed the session's own
     * FLUSH: the writes held for room must not wait for a FLUSH that may never succeed. The
     * loss is reported separately ({@link LossReport}).
     */
    synchronized void giveUp() {
        clear();
        incompleteUntil = seq;
    }

    /** Empties the journal for good; the acknowledgements still on their way keep nothing either. */
    synchronized void abandon() {
        abandoned = true;
        clear();
    }

    synchronized void clear() {
        for (int i = 0; i < entries.size(); i++) {
            if (entries.data(i) != null) {
                entries.data(i).release();
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
