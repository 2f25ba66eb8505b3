package org.nbdroot.proto.transport;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.charset.StandardCharsets;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Disabled;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;

/**
 * Export names are free text (uri.md: "any Unicode character except NUL"): percent-encoded into
 * the path they must come back unchanged, and a URI the engine prints must parse back to itself.
 */
class NbdUriPropertiesTest {

    @Property
    void percentEncodedExportNamesDecodeToThemselves(@ForAll("exportNames") String name, @ForAll("hosts") String host) {
        assertEquals(name, NbdUri.parse("nbd://" + host + "/" + percentEncode(name)).exportName());
        assertEquals(name, NbdUri.parse("nbds+unix:///" + percentEncode(name) + "?socket=/run/nbd.sock").exportName());
    }

    @Property
    void toStringParsesBackForNamesOfUnreservedCharacters(@ForAll("plainNames") String name, @ForAll("hosts") String host,
            @ForAll boolean tls) {
        NbdUri uri = NbdUri.parse((tls ? "nbds://" : "nbd://") + host + "/" + name);
        assertEquals(name, uri.exportName());
        assertEquals(uri, NbdUri.parse(uri.toString()));
    }

    @Property
    void toStringParsesBackForAnyName(@ForAll("exportNames") String name, @ForAll("hosts") String host) {
        NbdUri uri = NbdUri.parse("nbd://" + host + "/" + percentEncode(name));
        assertEquals(uri, NbdUri.parse(uri.toString()));
    }

    /** RFC 3986 percent-encoding of everything but the unreserved characters and '/'. */
    static String percentEncode(String s) {
        StringBuilder out = new StringBuilder();
        for (byte b : s.getBytes(StandardCharsets.UTF_8)) {
            int c = b & 0xff;
            if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || "-._~/".indexOf(c) >= 0) {
                out.append((char) c);
            } else {
                out.append('%').append(String.format("%02X", c));
            }
        }
        return out.toString();
    }

    /** Free text without NUL and without lone surrogates (which UTF-8 cannot carry). */
    @Provide
    Arbitrary<String> exportNames() {
        return Arbitraries.strings()
                .withChars(" %+?#&=;:@!$'()*,[]/\\\"<>{}|^`éß€日本")
                .withCharRange('\u0001', '\u007f')
                .withCharRange('\u00a0', '\ud7ff')
                .withCharRange('\ue000', '\ufffd')
                .ofMaxLength(40);
    }

    @Provide
    Arbitrary<String> plainNames() {
        return Arbitraries.strings().alpha().numeric().withChars("-._~/").ofMaxLength(40);
    }

    @Provide
    Arbitrary<String> hosts() {
        return Arbitraries.of("example.com", "localhost", "192.0.2.1", "[::1]", "[2001:db8::7]", "example.com:10810",
                "[::1]:1", "nbd.example.org:65535");
    }
}
