package org.nbdroot.client.cli;

import java.util.Locale;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.TypeConversionException;

/** Sizes as people write them: {@code 4096}, {@code 4k}, {@code 4KiB}, {@code 1M}, {@code 2G} (powers of 1024). */
public final class SizeConverter implements ITypeConverter<Long> {
    @Override
    public Long convert(String value) {
        return parse(value);
    }

    public static long parse(String value) {
        String s = value.trim().toLowerCase(Locale.ROOT);
        int end = 0;
        while (end < s.length() && Character.isDigit(s.charAt(end))) {
            end++;
        }
        if (end == 0) {
            throw new TypeConversionException("'" + value + "' is not a size (try 4096, 4k, 1M, 2G)");
        }
        long number;
        try {
            number = Long.parseLong(s.substring(0, end));
        } catch (NumberFormatException e) {
            throw new TypeConversionException("'" + value + "' is too large");
        }
        String unit = s.substring(end).replace("ib", "").replace("b", "");
        int shift = switch (unit) {
            case "" -> 0;
            case "k" -> 10;
            case "m" -> 20;
            case "g" -> 30;
            case "t" -> 40;
            default -> throw new TypeConversionException("'" + value + "' has an unknown unit (use k, M, G or T)");
        };
        if (number > (Long.MAX_VALUE >> shift)) {
            throw new TypeConversionException("'" + value + "' is too large");
        }
        return number << shift;
    }
}
