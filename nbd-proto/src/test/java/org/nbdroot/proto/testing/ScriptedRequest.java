package org.nbdroot.proto.testing;

/**
 * One transmission request as the scripted server received it, for assertions.
 *
 * @param connection which accepted connection it came on, counting from 1
 * @param type the command ({@code NBD_CMD_*})
 * @param flags the command flags ({@code NBD_CMD_FLAG_*})
 * @param handle the client's handle, echoed in every reply
 * @param offset the offset (unsigned; negative means above 2^63)
 * @param length the length, as an unsigned 32-bit value (64-bit under extended headers)
 */
public record ScriptedRequest(int connection, int type, int flags, long handle, long offset, long length) {

    public boolean hasFlag(int flag) {
        return (flags & flag) != 0;
    }

    @Override
    public String toString() {
        return ScriptedNbdProtocol.commandName(type)
                + "{flags=0x" + Integer.toHexString(flags)
                + ", handle=0x" + Long.toHexString(handle)
                + ", offset=" + Long.toUnsignedString(offset)
                + ", length=" + length
                + ", connection=" + connection + "}";
    }
}
