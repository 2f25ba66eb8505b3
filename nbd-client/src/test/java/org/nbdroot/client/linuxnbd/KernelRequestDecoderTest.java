package org.nbdroot.client.linuxnbd;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufUtil;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import io.netty.handler.codec.DecoderException;
import org.junit.jupiter.api.Test;
import org.nbdroot.proto.wire.Command;
import org.nbdroot.proto.wire.CommandFlag;
import org.nbdroot.proto.wire.NbdConstants;

class KernelRequestDecoderTest {
    private static ByteBuf request(int type, long handle, long offset, int length, byte[] payload) {
        ByteBuf b = Unpooled.buffer();
        b.writeInt(NbdConstants.REQUEST_MAGIC).writeInt(type).writeLong(handle).writeLong(offset).writeInt(length);
        if (payload != null) {
            b.writeBytes(payload);
        }
        return b;
    }

    /** Feeds the bytes one at a time: the decoder must wait for whole requests. */
    private static void feedByteByByte(EmbeddedChannel channel, ByteBuf bytes) {
        while (bytes.isReadable()) {
            channel.writeInbound(bytes.readRetainedSlice(1));
        }
        bytes.release();
    }

    @Test
    void decodesAWriteWithItsFlagsAndDataFedByteByByte() {
        EmbeddedChannel channel = new EmbeddedChannel(new KernelRequestDecoder(1 << 20));
        byte[] data = {1, 2, 3, 4, 5, 6, 7, 8};
        feedByteByByte(channel, request(CommandFlag.FUA << 16 | Command.WRITE.code(), 0x0000000700000003L, 4096, 8, data));
        KernelRequest r = channel.readInbound();
        assertEquals(Command.WRITE.code(), r.command());
        assertEquals(CommandFlag.FUA, r.flags());
        assertEquals(0x0000000700000003L, r.handle());
        assertEquals(4096, r.offset());
        assertEquals(8, r.length());
        assertArrayEquals(data, ByteBufUtil.getBytes(r.payload()));
        r.payload().release();
        assertFalse(channel.finish());
    }

    @Test
    void aReadCarriesNoDataAndLengthsAreUnsigned() {
        EmbeddedChannel channel = new EmbeddedChannel(new KernelRequestDecoder(1 << 20));
        channel.writeInbound(request(Command.TRIM.code(), 1, 0, 0x80000000, null));
        channel.writeInbound(request(Command.READ.code(), 2, 512, 4096, null));
        KernelRequest trim = channel.readInbound();
        assertEquals(0x80000000L, trim.length());
        KernelRequest read = channel.readInbound();
        assertEquals(Command.READ.code(), read.command());
        assertNull(read.payload());
        assertFalse(channel.finish());
    }

    @Test
    void nothingIsDecodedAfterDisc() {
        EmbeddedChannel channel = new EmbeddedChannel(new KernelRequestDecoder(1 << 20));
        ByteBuf both = request(Command.DISC.code(), 0, 0, 0, null);
        both.writeBytes(request(Command.READ.code(), 2, 0, 4096, null));
        channel.writeInbound(both);
        assertEquals(Command.DISC.code(), ((KernelRequest) channel.readInbound()).command());
        assertNull(channel.readInbound());
        assertFalse(channel.finish());
    }

    @Test
    void aBadMagicIsRefused() {
        EmbeddedChannel channel = new EmbeddedChannel(new KernelRequestDecoder(1 << 20));
        ByteBuf bad = Unpooled.buffer().writeInt(0x12345678).writeZero(24);
        DecoderException e = assertThrows(DecoderException.class, () -> channel.writeInbound(bad));
        assertTrue(e.getMessage().contains("request magic: 0x12345678 (expected: 0x25609513)"), e.getMessage());
    }

    @Test
    void aWriteLongerThanTheKernelSendsIsRefused() {
        EmbeddedChannel channel = new EmbeddedChannel(new KernelRequestDecoder(4096));
        DecoderException e = assertThrows(DecoderException.class,
                () -> channel.writeInbound(request(Command.WRITE.code(), 1, 0, 8192, null)));
        assertTrue(e.getMessage().contains("write length: 8192 (expected: <= 4096)"), e.getMessage());
    }
}
