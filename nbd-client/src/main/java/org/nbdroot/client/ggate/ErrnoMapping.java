package org.nbdroot.client.ggate;

import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import jnr.constants.platform.Errno;
import org.nbdroot.proto.NbdServerErrorException;
import org.nbdroot.proto.NbdUnsupportedException;

/**
 * Turns the outcome of an NBD request into the errno a kernel request completes with, in
 * the running platform's numbering (NBD's error values are Linux's; FreeBSD's differ).
 */
public final class ErrnoMapping {
    private ErrnoMapping() {}

    public static int toErrno(Throwable failure) {
        Throwable t = failure;
        while ((t instanceof CompletionException || t instanceof ExecutionException) && t.getCause() != null) {
            t = t.getCause();
        }
        if (t instanceof NbdServerErrorException e) {
            return switch (e.error()) {
                case EPERM -> Errno.EPERM.intValue();
                // Not ENOMEM: GEOM sends a bio that ends with ENOMEM again, for ever, and paces all
                // of GEOM while it does (g_io_deliver); Linux's nbd driver makes every error EIO too.
                case ENOMEM -> Errno.EIO.intValue();
                case EINVAL -> Errno.EINVAL.intValue();
                case ENOSPC -> Errno.ENOSPC.intValue();
                case EOVERFLOW -> Errno.EOVERFLOW.intValue();
                case ENOTSUP -> Errno.EOPNOTSUPP.intValue();
                case EIO, ESHUTDOWN -> Errno.EIO.intValue();
            };
        }
        if (t instanceof NbdUnsupportedException) {
            return Errno.EOPNOTSUPP.intValue();
        }
        if (t instanceof IllegalArgumentException) {
            return Errno.EINVAL.intValue();
        }
        return Errno.EIO.intValue();
    }
}
