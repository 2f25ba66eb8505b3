package org.nbdroot.proto.transport;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** The examples and rules of doc/uri.md, and the errors a user would see. */
class NbdUriTest {

    // ---- doc/uri.md, "NBD URI export name": the table of examples ----

    @ParameterizedTest(name = "{0} -> ''{1}''")
    @CsvSource(value = {
        "nbd://example.com/disk          | disk",
        "nbd+unix:///disk?socket=sock    | disk",
        "nbd://example.com/              | ''",
        "nbd://example.com               | ''",
        "nbd://example.com//disk         | /disk",
        "nbd://example.com/hello%20world | hello world",
    }, delimiter = '|')
    void exportNameExamplesOfUriMd(String uri, String exportName) {
        assertEquals(exportName, NbdUri.parse(uri).exportName());
    }

    @Test
    void tcpEndpointWithTheDefaultPort() {
        NbdUri uri = NbdUri.parse("nbd://example.com/disk");
        assertEquals(new NbdEndpoint.Tcp("example.com", 10809), uri.endpoint());
        assertFalse(uri.tls());
    }

    @Test
    void explicitPort() {
        assertEquals(new NbdEndpoint.Tcp("example.com", 10810), NbdUri.parse("nbd://example.com:10810/export").endpoint());
    }

    @Test
    void ipv6LiteralWithPort() {
        NbdUri uri = NbdUri.parse("nbd://[::1]:10809/disk");
        assertEquals(new NbdEndpoint.Tcp("::1", 10809), uri.endpoint());
        assertEquals("disk", uri.exportName());
    }

    @Test
    void ipv6LiteralWithoutPort() {
        assertEquals(new NbdEndpoint.Tcp("fe80::1", 10809), NbdUri.parse("nbd://[fe80::1]/").endpoint());
    }

    @Test
    void userinfoIsAllowed() {
        // uri.md: the authority MAY contain userinfo (a TLS user name).
        NbdUri uri = NbdUri.parse("nbds://alice@example.com/disk");
        assertEquals(new NbdEndpoint.Tcp("example.com", 10809), uri.endpoint());
    }

    @Test
    void unixSocket() {
        NbdUri uri = NbdUri.parse("nbd+unix:///disk?socket=/run/nbd.sock");
        assertEquals(new NbdEndpoint.Unix(Path.of("/run/nbd.sock")), uri.endpoint());
        assertEquals("disk", uri.exportName());
        assertFalse(uri.tls());
    }

    @Test
    void unixSocketPathIsPercentDecoded() {
        assertEquals(new NbdEndpoint.Unix(Path.of("/tmp/my sock")),
                NbdUri.parse("nbd+unix:///?socket=/tmp/my%20sock").endpoint());
    }

    @Test
    void tlsSchemes() {
        assertTrue(NbdUri.parse("nbds://example.com/disk").tls());
        NbdUri unix = NbdUri.parse("nbds+unix:///disk?socket=sock");
        assertTrue(unix.tls());
        assertEquals(new NbdEndpoint.Unix(Path.of("sock")), unix.endpoint());
    }

    @Test
    void schemeIsCaseInsensitive() {
        // RFC 3986 3.1: schemes are case-insensitive.
        assertEquals("disk", NbdUri.parse("NBD://example.com/disk").exportName());
    }

    @Test
    void plusIsAPlainCharacterInThePath() {
        assertEquals("a+b", NbdUri.parse("nbd://example.com/a+b").exportName());
    }

    @Test
    void percentEncodedUtf8() {
        assertEquals("déjà vu", NbdUri.parse("nbd://example.com/d%C3%A9j%C3%A0%20vu").exportName());
    }

    @Test
    void tlsAndExperimentalQueryParametersAreAccepted() {
        // uri.md: tls-type, tls-hostname, tls-verify-peer; "x-" for experiments.
        NbdUri uri = NbdUri.parse("nbds://example.com/disk?tls-type=x509&tls-hostname=h&tls-verify-peer=0&x-foo=1");
        assertEquals("disk", uri.exportName());
    }

    @Test
    void toStringOfAParsedUri() {
        assertEquals("nbd://example.com:10809/disk", NbdUri.parse("nbd://example.com/disk").toString());
        assertEquals("nbds://[::1]:10809/disk", NbdUri.parse("nbds://[::1]/disk").toString());
        assertEquals("nbd+unix:///disk?socket=sock", NbdUri.parse("nbd+unix:///disk?socket=sock").toString());
    }

    @Test
    void ofHost() {
        NbdUri uri = NbdUri.ofHost("example.com", 10809, null);
        assertEquals("", uri.exportName());
        assertEquals(NbdUri.parse("nbd://example.com"), uri);
    }

    @Test
    void looksLikeUri() {
        assertTrue(NbdUri.looksLikeUri("nbd://example.com"));
        assertFalse(NbdUri.looksLikeUri("example.com"));
    }

    // ---- Errors ----

    @Test
    void unknownScheme() {
        assertError("http://example.com/disk", "unsupported URI scheme 'http'", "expected nbd, nbds, nbd+unix or nbds+unix");
    }

    @Test
    void noScheme() {
        assertError("example.com/disk", "has no scheme");
    }

    @Test
    void notAUri() {
        assertError("nbd://example.com/a b", "not a valid NBD URI 'nbd://example.com/a b'");
    }

    @Test
    void unixWithoutSocket() {
        assertError("nbd+unix:///disk", "lacks the socket=PATH query parameter");
        assertError("nbd+unix:///disk?socket=", "lacks the socket=PATH query parameter");
    }

    @Test
    void unixWithAHost() {
        assertError("nbd+unix://example.com/disk?socket=sock", "a Unix socket URI takes no host");
    }

    @Test
    void socketParameterOnTcp() {
        // uri.md: unknown parameters SHOULD be diagnosed; socket means nothing for TCP.
        assertError("nbd://example.com/disk?socket=sock", "unknown query parameter(s) [socket]");
    }

    @Test
    void unknownQueryParameter() {
        assertError("nbd://example.com/disk?foo=bar", "unknown query parameter(s) [foo]", "nbd://example.com/disk?foo=bar");
    }

    @Test
    void queryParameterGivenTwice() {
        assertError("nbd+unix:///disk?socket=a&socket=b", "query parameter 'socket' given twice");
    }

    @Test
    void portOutOfRange() {
        assertError("nbd://example.com:65536/disk", "port 65536 is not between 1 and 65535");
        assertError("nbd://example.com:0/disk", "port 0 is not between 1 and 65535");
    }

    @Test
    void noHost() {
        assertError("nbd:///disk", "has no host");
    }

    @Test
    void hostWithAnUnderscore() {
        assertEquals(new NbdEndpoint.Tcp("nbd_server", 10809), NbdUri.parse("nbd://nbd_server/disk").endpoint());
    }

    @Test
    void hugePortIsReportedAsABadPort() {
        assertError("nbd://example.com:99999999999/disk", "port");
    }

    private static void assertError(String uri, String... messageParts) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> NbdUri.parse(uri));
        for (String part : messageParts) {
            assertTrue(e.getMessage().contains(part), () -> "expected \"" + part + "\" in: " + e.getMessage());
        }
    }
}
