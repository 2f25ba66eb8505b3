package org.nbdroot.client.bench;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import org.junit.jupiter.api.Test;

class VerifyPatternTest {
    private final VerifyPattern pattern = new VerifyPattern(7);

    @Test
    void aBlockMatchesItselfOnly() {
        ByteBuf block = Unpooled.buffer(4096);
        pattern.fill(block, 8192, 4096, 3);
        assertTrue(pattern.matches(block, 8192, 3));
        assertFalse(pattern.matches(block, 8192, 2), "an older generation");
        assertFalse(pattern.matches(block, 8192, 3 + 65536), "a generation 2^16 later");
        assertFalse(pattern.matches(block, 8192, 3 + (1 << 24)), "a generation 2^24 later");
        assertFalse(pattern.matches(block, 4096, 3), "another place");
        assertFalse(new VerifyPattern(8).matches(block, 8192, 3), "another run");
        block.setByte(4095, block.getByte(4095) ^ 1);
        assertFalse(pattern.matches(block, 8192, 3), "one flipped bit");
    }

    @Test
    void aChunkIsTheConcatenationOfItsBlocks() {
        ByteBuf chunk = Unpooled.buffer(16384);
        pattern.fill(chunk, 0, 16384, 1);
        assertTrue(pattern.matches(chunk.slice(4096, 4096), 4096, 1));
    }
}
