package org.nbdroot.proto.session;

import io.netty.buffer.ByteBuf;
import org.nbdroot.proto.wire.Command;

/**
 * The {@link WriteJournal}'s entries, oldest first: a ring of parallel arrays, so that keeping
 * an acknowledged write allocates nothing (an object per entry would be one more per write,
 * and would live long enough to be copied by every young collection). Entry {@code i} counts
 * from the oldest. Not thread-safe: the journal's lock guards it.
 */
final class JournalEntries {
    private long[] seq = new long[64];
    private long[] offset = new long[64];
    private long[] heldExtra = new long[64];
    private int[] length = new int[64];
    private int[] flags = new int[64];
    private Command[] command = new Command[64];
    private ByteBuf[] data = new ByteBuf[64];
    private ByteBuf[] held = new ByteBuf[64];
    private int head;
    private int size;

    void addLast(long seq, Command command, int flags, long offset, int length, ByteBuf data, ByteBuf held,
            long heldExtra) {
        if (size == this.seq.length) {
            grow();
        }
        int at = slot(size);
        this.seq[at] = seq;
        this.command[at] = command;
        this.flags[at] = flags;
        this.offset[at] = offset;
        this.length[at] = length;
        this.data[at] = data;
        this.held[at] = held;
        this.heldExtra[at] = heldExtra;
        size++;
    }

    /** Forgets the oldest entry; its data is the caller's to release (read it first). */
    void removeFirst() {
        data[head] = null;
        held[head] = null;
        command[head] = null;
        head = (head + 1) & (seq.length - 1);
        size--;
    }

    void clear() {
        for (int i = 0; i < size; i++) {
            int at = slot(i);
            data[at] = null;
            held[at] = null;
            command[at] = null;
        }
        head = 0;
        size = 0;
    }

    int size() {
        return size;
    }

    boolean isEmpty() {
        return size == 0;
    }

    long seq(int i) {
        return seq[slot(i)];
    }

    int length(int i) {
        return length[slot(i)];
    }

    ByteBuf data(int i) {
        return data[slot(i)];
    }

    /** The buffer entry {@code i} keeps alive without a copy, or null. */
    ByteBuf held(int i) {
        return held[slot(i)];
    }

    long heldExtra(int i) {
        return heldExtra[slot(i)];
    }

    void setHeldExtra(int i, long extra) {
        heldExtra[slot(i)] = extra;
    }

    /** Entry {@code i} as a record, sharing its data reference (retain it to keep it). */
    WriteJournal.Entry entry(int i) {
        int at = slot(i);
        return new WriteJournal.Entry(seq[at], command[at], flags[at], offset[at], length[at], data[at]);
    }

    private int slot(int i) {
        return (head + i) & (seq.length - 1);
    }

    /** Doubles every array, the oldest entry first again. */
    private void grow() {
        int n = seq.length;
        seq = unwrap(seq, new long[2 * n]);
        offset = unwrap(offset, new long[2 * n]);
        heldExtra = unwrap(heldExtra, new long[2 * n]);
        length = unwrap(length, new int[2 * n]);
        flags = unwrap(flags, new int[2 * n]);
        command = unwrap(command, new Command[2 * n]);
        data = unwrap(data, new ByteBuf[2 * n]);
        held = unwrap(held, new ByteBuf[2 * n]);
        head = 0;
    }

    private <A> A unwrap(A from, A to) {
        int n = java.lang.reflect.Array.getLength(from);
        System.arraycopy(from, head, to, 0, n - head);
        System.arraycopy(from, 0, to, n - head, head);
        return to;
    }
}
