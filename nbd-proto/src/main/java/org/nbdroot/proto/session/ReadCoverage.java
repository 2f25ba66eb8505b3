package org.nbdroot.proto.session;

import org.nbdroot.proto.NbdProtocolException;

/**
 * Which bytes of a READ the server's chunks have filled. Chunks must not overlap and, by the
 * final one, must cover the whole request: otherwise the caller would get zeroes for data the
 * server never sent. Servers send chunks mostly in order, so the intervals stay few.
 */
final class ReadCoverage {
    private long[] starts = new long[4];
    private long[] ends = new long[4];
    private int count;
    private long covered;

    /** Records [start, end) relative to the request; rejects an overlap. */
    void add(long start, long end, String what) throws NbdProtocolException {
        int i = 0;
        while (i < count && starts[i] < start) {
            i++;
        }
        if ((i > 0 && ends[i - 1] > start) || (i < count && starts[i] < end)) {
            throw new NbdProtocolException(what + " overlaps data already received for this request");
        }
        boolean joinsLeft = i > 0 && ends[i - 1] == start;
        boolean joinsRight = i < count && starts[i] == end;
        if (joinsLeft && joinsRight) {
            ends[i - 1] = ends[i];
            remove(i);
        } else if (joinsLeft) {
            ends[i - 1] = end;
        } else if (joinsRight) {
            starts[i] = start;
        } else {
            insert(i, start, end);
        }
        covered += end - start;
    }

    long covered() {
        return covered;
    }

    private void insert(int i, long start, long end) {
        if (count == starts.length) {
            starts = java.util.Arrays.copyOf(starts, count * 2);
            ends = java.util.Arrays.copyOf(ends, count * 2);
        }
        System.arraycopy(starts, i, starts, i + 1, count - i);
        System.arraycopy(ends, i, ends, i + 1, count - i);
        starts[i] = start;
        ends[i] = end;
        count++;
    }

    private void remove(int i) {
        System.arraycopy(starts, i + 1, starts, i, count - i - 1);
        System.arraycopy(ends, i + 1, ends, i, count - i - 1);
        count--;
    }
}
