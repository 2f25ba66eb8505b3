package org.nbdroot.client.ggate;

/**
 * FreeBSD's GEOM Gate control interface ({@code sys/geom/gate/g_gate.h}, G_GATE_VERSION 3)
 * as LP64 (amd64, arm64) lays it out: ioctl numbers and the byte offset of every field the
 * daemon uses. The structs are read and written at these offsets in native memory, so this
 * file is the whole ABI: check it against g_gate.h, and the emulator's C asserts check it too.
 */
public final class GgateAbi {
    private GgateAbi() {}

    public static final int VERSION = 3;
    public static final String CONTROL_DEVICE = "/dev/ggctl";
    public static final String PROVIDER_NAME = "ggate";
    public static final int NAME_MAX = 255;
    public static final int INFOSIZE = 2048;
    public static final int MAX_QUEUE_SIZE = 4096;
    public static final int UNIT_AUTO = -1;

    public static final int FLAG_READONLY = 0x0001;
    public static final int FLAG_WRITEONLY = 0x0002;

    public static final int MODIFY_MEDIASIZE = 0x01;
    public static final int MODIFY_INFO = 0x02;

    // sys/bio.h: the commands userland sees in gctl_cmd.
    public static final int BIO_READ = 1;
    public static final int BIO_WRITE = 2;
    public static final int BIO_DELETE = 3;
    public static final int BIO_FLUSH = 5;

    /** FreeBSD's {@code _IOWR(group, number, size)}: in and out, 13 bits of size. */
    public static long iowr(char group, int number, int size) {
        return 0xC0000000L | ((long) (size & 0x1fff) << 16) | ((long) group << 8) | number;
    }

    public static final int CREATE_SIZE = 2608;
    public static final int MODIFY_SIZE = 2336;
    public static final int DESTROY_SIZE = 268;
    public static final int CANCEL_SIZE = 272;
    public static final int IO_SIZE = 56;

    public static final long CMD_CREATE = iowr('m', 0, CREATE_SIZE);
    public static final long CMD_MODIFY = iowr('m', 1, MODIFY_SIZE);
    public static final long CMD_DESTROY = iowr('m', 2, DESTROY_SIZE);
    public static final long CMD_CANCEL = iowr('m', 3, CANCEL_SIZE);
    public static final long CMD_START = iowr('m', 4, IO_SIZE);
    public static final long CMD_DONE = iowr('m', 5, IO_SIZE);

    /** struct g_gate_ctl_create. */
    public static final class Create {
        private Create() {}
        public static final int VERSION = 0;
        public static final int MEDIASIZE = 8;
        public static final int SECTORSIZE = 16;
        public static final int FLAGS = 20;
        public static final int MAXCOUNT = 24;
        public static final int TIMEOUT = 28;
        public static final int NAME = 32;
        public static final int INFO = 287;
        public static final int READPROV = 2335;
        public static final int READOFFSET = 2592;
        public static final int UNIT = 2600;
    }

    /** struct g_gate_ctl_modify. */
    public static final class Modify {
        private Modify() {}
        public static final int VERSION = 0;
        public static final int UNIT = 4;
        public static final int MODIFY = 8;
        public static final int MEDIASIZE = 16;
        public static final int INFO = 24;
        public static final int READPROV = 2072;
        public static final int READOFFSET = 2328;
    }

    /** struct g_gate_ctl_destroy. */
    public static final class Destroy {
        private Destroy() {}
        public static final int VERSION = 0;
        public static final int UNIT = 4;
        public static final int FORCE = 8;
        public static final int NAME = 12;
    }

    /** struct g_gate_ctl_cancel. */
    public static final class Cancel {
        private Cancel() {}
        public static final int VERSION = 0;
        public static final int UNIT = 4;
        public static final int SEQ = 8;
        public static final int NAME = 16;
    }

    /** struct g_gate_ctl_io, used by START and DONE. */
    public static final class Io {
        private Io() {}
        public static final int VERSION = 0;
        public static final int UNIT = 4;
        public static final int SEQ = 8;
        public static final int CMD = 16;
        public static final int OFFSET = 24;
        public static final int LENGTH = 32;
        public static final int DATA = 40;
        public static final int ERROR = 48;
    }
}
