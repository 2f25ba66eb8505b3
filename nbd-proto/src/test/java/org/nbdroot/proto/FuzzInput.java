package org.nbdroot.proto;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.TreeSet;

/**
 * The fuzzer's bytes read as choices, front to back. When they run out every choice is the
 * smallest one, so any input, even an empty one, is a complete (if short) scenario; a fuzzer
 * that mutates a byte changes one decision, which keeps coverage guidance meaningful.
 */
public final class FuzzInput {
    private final byte[] data;
    private int position;

    public FuzzInput(byte[] data) {
        this.data = data;
    }

    public boolean exhausted() {
        return position >= data.length;
    }

    public int u8() {
        return position < data.length ? data[position++] & 0xff : 0;
    }

    public int u16() {
        return u8() << 8 | u8();
    }

    public long u32() {
        return (long) u16() << 16 | u16();
    }

    public long u64() {
        return u32() << 32 | u32();
    }

    public boolean bool() {
        return (u8() & 1) != 0;
    }

    /** A value in [min, max], from as few bytes as the range needs. */
    public int intIn(int min, int max) {
        long range = (long) max - min + 1;
        long v = range <= 0x100 ? u8() : range <= 0x10000 ? u16() : u32();
        return (int) (min + v % range);
    }

    public <T> T pick(List<T> choices) {
        return choices.get(intIn(0, choices.size() - 1));
    }

    @SafeVarargs
    public final <T> T pick(T... choices) {
        return choices[intIn(0, choices.length - 1)];
    }

    public byte[] bytes(int n) {
        byte[] b = new byte[n];
        for (int i = 0; i < n; i++) {
            b[i] = (byte) u8();
        }
        return b;
    }

    /**
     * Cuts {@code wire} into socket reads at up to {@code maxCuts} chosen points; never an empty
     * read (an empty wrapped buffer is the shared, never-freed EMPTY_BUFFER).
     */
    public List<ByteBuf> socketReads(byte[] wire, int maxCuts) {
        TreeSet<Integer> cuts = new TreeSet<>();
        int n = intIn(0, maxCuts);
        for (int i = 0; i < n && wire.length > 1; i++) {
            cuts.add(1 + (int) (u32() % (wire.length - 1)));
        }
        List<ByteBuf> reads = new ArrayList<>();
        int start = 0;
        for (int cut : cuts) {
            reads.add(Unpooled.wrappedBuffer(Arrays.copyOfRange(wire, start, cut)));
            start = cut;
        }
        if (start < wire.length) {
            reads.add(Unpooled.wrappedBuffer(Arrays.copyOfRange(wire, start, wire.length)));
        }
        return reads;
    }
}
