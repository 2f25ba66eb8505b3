/** The steps of /etc/rc.reroot: stage the runtime image, start the daemons, name the new root. */
module org.nbdroot.reroot {
    requires info.picocli;
    requires org.jnrproject.ffi;
    requires org.jnrproject.constants;

    // Unqualified: jnr-ffi implements Kenv.LibC with a class in an unnamed module; the
    // nbd-client command registers RerootCommand.
    exports org.nbdroot.reroot;
    // picocli reads and writes the annotated fields by reflection.
    opens org.nbdroot.reroot to info.picocli;
}
