package org.nbdroot.proto.wire;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.nbdroot.proto.WireBytes.bytes;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.util.HexFormat;
import org.junit.jupiter.api.Test;

/** Request headers byte for byte, with the numbers written out from {@code doc/proto.md}. */
class RequestEncoderTest {
    private static final long COOKIE = 0x0102030405060708L;
    private static final long OFFSET = 0x1122334455667788L;

    @Test
    void compactHeaderIs28BytesWithA32BitLength() {
        assertEquals(hex(bytes().u32(0x25609513L).u16(1).u16(1).u64(COOKIE).u64(OFFSET).u32(4096).array()),
                encode(RequestEncoder.COMPACT, Command.WRITE, CommandFlag.FUA, 4096));
        assertEquals(28, RequestEncoder.COMPACT.headerLength());
    }

    @Test
    void extendedWriteIs32BytesWithPayloadLenAndA64BitLength() {
        // NBD_CMD_WRITE MUST carry NBD_CMD_FLAG_PAYLOAD_LEN (bit 5) with extended headers; FUA (bit 0) stays.
        assertEquals(hex(bytes().u32(0x21e41c71L).u16(0x21).u16(1).u64(COOKIE).u64(OFFSET).u64(4096).array()),
                encode(RequestEncoder.EXTENDED, Command.WRITE, CommandFlag.FUA, 4096));
        assertEquals(32, RequestEncoder.EXTENDED.headerLength());
    }

    @Test
    void extendedCommandsWithoutPayloadNeverSetPayloadLenAndTheirLengthIsAnEffectLength() {
        assertEquals(hex(bytes().u32(0x21e41c71L).u16(0).u16(4).u64(COOKIE).u64(OFFSET).u64(0x7fffffffL).array()),
                encode(RequestEncoder.EXTENDED, Command.TRIM, 0, Integer.MAX_VALUE));
        assertEquals(hex(bytes().u32(0x21e41c71L).u16(0x08).u16(7).u64(COOKIE).u64(OFFSET).u64(1 << 30).array()),
                encode(RequestEncoder.EXTENDED, Command.BLOCK_STATUS, CommandFlag.REQ_ONE, 1 << 30));
        assertEquals(hex(bytes().u32(0x21e41c71L).u16(0).u16(0).u64(COOKIE).u64(OFFSET).u64(512).array()),
                encode(RequestEncoder.EXTENDED, Command.READ, 0, 512));
    }

    @Test
    void theEncoderFollowsTheHeaderStyle() {
        assertEquals(RequestEncoder.EXTENDED, RequestEncoder.of(HeaderStyle.EXTENDED));
        assertEquals(RequestEncoder.COMPACT, RequestEncoder.of(HeaderStyle.STRUCTURED));
        assertEquals(RequestEncoder.COMPACT, RequestEncoder.of(HeaderStyle.SIMPLE));
    }

    private static String encode(RequestEncoder encoder, Command command, int flags, int length) {
        ByteBuf out = Unpooled.buffer();
        try {
            encoder.writeHeader(out, command, flags, COOKIE, OFFSET, length);
            byte[] b = new byte[out.readableBytes()];
            out.readBytes(b);
            return hex(b);
        } finally {
            out.release();
        }
    }

    private static String hex(byte[] b) {
        return HexFormat.of().formatHex(b);
    }
}
