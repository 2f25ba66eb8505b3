package org.nbdroot.client.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.List;
import org.junit.jupiter.api.Test;

class JsonTest {
    @Test
    void writesNestedValuesWithEscapes() {
        var o = Json.object();
        o.put("name", "a\"b\\c\n\u0001");
        o.put("size", 42L);
        o.put("ratio", 0.5);
        o.put("flags", List.of("read_only"));
        o.put("none", null);
        assertEquals("{\"name\": \"a\\\"b\\\\c\\n\\u0001\", \"size\": 42, \"ratio\": 0.500, \"flags\": [\"read_only\"], \"none\": null}",
                Json.write(o));
    }

    /** ASCII out whatever the locale: a C-locale stdout would print '?' for é. */
    @Test
    void nonAsciiIsEscaped() {
        var o = Json.object();
        o.put("export", "d\u00e9\u007f\ud83d\ude00");
        assertEquals("{\"export\": \"d\\u00e9\\u007f\\ud83d\\ude00\"}", Json.write(o));
    }
}
