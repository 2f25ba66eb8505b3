package org.nbdroot.client.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;
import picocli.CommandLine.TypeConversionException;

class SizeConverterTest {
    @Test
    void unitsArePowersOf1024() {
        assertEquals(4096, SizeConverter.parse("4096"));
        assertEquals(4096, SizeConverter.parse("4k"));
        assertEquals(4096, SizeConverter.parse("4KiB"));
        assertEquals(1 << 20, SizeConverter.parse("1M"));
        assertEquals(3L << 30, SizeConverter.parse("3G"));
        assertEquals(1L << 40, SizeConverter.parse("1t"));
    }

    @Test
    void badSizesNameTheInput() {
        assertEquals("'x' is not a size (try 4096, 4k, 1M, 2G)",
                assertThrows(TypeConversionException.class, () -> SizeConverter.parse("x")).getMessage());
        assertEquals("'4q' has an unknown unit (use k, M, G or T)",
                assertThrows(TypeConversionException.class, () -> SizeConverter.parse("4q")).getMessage());
        assertThrows(TypeConversionException.class, () -> SizeConverter.parse("99999999999T"));
    }
}
