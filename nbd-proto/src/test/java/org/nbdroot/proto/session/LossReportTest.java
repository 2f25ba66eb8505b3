package org.nbdroot.proto.session;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

import org.junit.jupiter.api.Test;

/** Which of the callers' FLUSHes report a loss. */
class LossReportTest {
    private final LossReport report = new LossReport();

    @Test
    void withNoLossEveryFlushSucceeds() {
        assertNull(report.flushed(report.flushSent()));
        assertNull(report.flushed(report.flushSent()));
    }

    @Test
    void theFirstFlushToCompleteAfterALossFailsAndTheOnesAfterItSucceed() {
        report.lost("a replayed write was refused");
        long flush = report.flushSent();
        assertEquals("a replayed write was refused", report.flushed(flush));
        assertNull(report.flushed(report.flushSent()), "reported once");
    }

    /** Two callers' FLUSHes out when the loss is found: both may have relied on the missing writes. */
    @Test
    void everyFlushAlreadySentWhenTheLossIsReportedFailsToo() {
        long first = report.flushSent();
        long second = report.flushSent();
        report.lost("the server failed a FLUSH");
        assertEquals("the server failed a FLUSH", report.flushed(second));
        long later = report.flushSent();
        assertEquals("the server failed a FLUSH", report.flushed(first), "sent before the report");
        assertNull(report.flushed(later), "sent after the report");
    }

    /** What a destroy or a closing session asks: a loss is pending until a FLUSH reports it. */
    @Test
    void aLossIsPendingUntilAFlushReportsIt() {
        assertNull(report.pending());
        report.lost("a replayed write was refused");
        assertEquals("a replayed write was refused", report.pending());
        report.flushed(report.flushSent());
        assertNull(report.pending(), "reported");
    }

    @Test
    void aSecondLossBeforeTheReportKeepsTheFirstReason() {
        report.lost("first");
        report.lost("second");
        assertEquals("first", report.flushed(report.flushSent()));
        assertNull(report.flushed(report.flushSent()));
    }

    @Test
    void aLossAfterAReportIsReportedAgain() {
        report.lost("first");
        assertEquals("first", report.flushed(report.flushSent()));
        report.lost("second");
        assertEquals("second", report.flushed(report.flushSent()));
    }
}
