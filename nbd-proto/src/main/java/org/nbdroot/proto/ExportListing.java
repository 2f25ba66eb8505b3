package org.nbdroot.proto;

/** One entry of {@code NBD_OPT_LIST}: an export's name and its (possibly empty) description. */
public record ExportListing(String name, String description) {}
