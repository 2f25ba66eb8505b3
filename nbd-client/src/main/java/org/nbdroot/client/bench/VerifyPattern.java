package org.nbdroot.client.bench;

import io.netty.buffer.ByteBuf;

/**
 * The data a verifying benchmark writes: every 8-byte word is a hash of the run's seed, the
 * word's offset in the export and the generation of its block, so a word that lands in the
 * wrong place, comes from an older write, or is corrupted does not match.
 */
public final class VerifyPattern {
    private final long seed;

    public VerifyPattern(long seed) {
        this.seed = seed;
    }

    long word(long offset, int generation) {
        // All 32 bits of the generation count: shifted left by 48 they wrapped after 65,536 writes of a block.
        long z = seed ^ (offset * 0x9E3779B97F4A7C15L) ^ ((generation & 0xffffffffL) * 0xD6E8FEB86659FD93L);
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    /** Fills {@code length} bytes (a multiple of 8) for the block at {@code offset}. */
    public void fill(ByteBuf out, long offset, int length, int generation) {
        for (int i = 0; i < length; i += 8) {
            out.writeLong(word(offset + i, generation));
        }
    }

    /** Whether the readable bytes of {@code data}, read from {@code offset}, match the generation. */
    public boolean matches(ByteBuf data, long offset, int generation) {
        int start = data.readerIndex();
        int length = data.readableBytes();
        for (int i = 0; i < length; i += 8) {
            if (data.getLong(start + i) != word(offset + i, generation)) {
                return false;
            }
        }
        return true;
    }
}
