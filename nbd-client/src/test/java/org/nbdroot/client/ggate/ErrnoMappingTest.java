package org.nbdroot.client.ggate;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;

import java.util.concurrent.CompletionException;
import jnr.constants.platform.Errno;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.nbdroot.proto.NbdException;
import org.nbdroot.proto.NbdServerErrorException;
import org.nbdroot.proto.NbdUnsupportedException;
import org.nbdroot.proto.wire.NbdError;

/** The errno a bio ends with, in the running platform's numbering. */
class ErrnoMappingTest {
    private static int errnoOf(NbdError error) {
        return ErrnoMapping.toErrno(new CompletionException(new NbdServerErrorException(error.code(), "NBD_CMD_WRITE", "")));
    }

    /**
     * GEOM sends a bio that ends with ENOMEM again, for ever, pacing every disk while it does,
     * and EAGAIN on a DONE puts it back in the queue: a server's error must be neither.
     */
    @ParameterizedTest
    @EnumSource(NbdError.class)
    void noServerErrorMakesGeomRetry(NbdError error) {
        int errno = errnoOf(error);
        assertNotEquals(0, errno, "an error is never a success");
        assertNotEquals(Errno.ENOMEM.intValue(), errno);
        assertNotEquals(Errno.EAGAIN.intValue(), errno);
    }

    @Test
    void theServersErrorsKeepTheirMeaning() {
        assertEquals(Errno.EIO.intValue(), errnoOf(NbdError.ENOMEM));
        assertEquals(Errno.EIO.intValue(), errnoOf(NbdError.ESHUTDOWN));
        assertEquals(Errno.ENOSPC.intValue(), errnoOf(NbdError.ENOSPC));
        assertEquals(Errno.EPERM.intValue(), errnoOf(NbdError.EPERM));
        assertEquals(Errno.EOPNOTSUPP.intValue(), errnoOf(NbdError.ENOTSUP));
    }

    @Test
    void theEnginesOwnFailures() {
        assertEquals(Errno.EOPNOTSUPP.intValue(), ErrnoMapping.toErrno(new NbdUnsupportedException("no TRIM")));
        assertEquals(Errno.EINVAL.intValue(), ErrnoMapping.toErrno(new IllegalArgumentException("past the end")));
        assertEquals(Errno.EIO.intValue(), ErrnoMapping.toErrno(new CompletionException(new NbdException("connection lost"))));
    }
}
