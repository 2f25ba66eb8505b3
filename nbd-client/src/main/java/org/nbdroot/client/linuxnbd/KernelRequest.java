package org.nbdroot.client.linuxnbd;

import io.netty.buffer.ByteBuf;

/**
 * One request the kernel sent: NBD_CMD_* with its flags (the high 16 bits of the type
 * field), the handle to echo in the reply, the range, and for a WRITE its data (owned by
 * whoever takes the request).
 */
record KernelRequest(int command, int flags, long handle, long offset, long length, ByteBuf payload) {
    @Override
    public String toString() {
        return "KernelRequest[command=" + command + ", flags=" + flags + ", handle=" + Long.toHexString(handle)
                + ", offset=" + offset + ", length=" + length + "]";
    }
}
