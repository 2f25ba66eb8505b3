/** The nbd-client daemon and command line. */
module org.nbdroot.client {
    requires transitive org.nbdroot.proto;
    requires info.picocli;
    requires transitive org.jnrproject.ffi;
    requires transitive org.jnrproject.constants;
    requires org.jnrproject.posix;
    requires org.jnrproject.unixsocket;
    requires org.nbdroot.reroot;
    requires java.logging;
    requires micrometer.core;
    requires io.netty.transport.classes.epoll;
    requires io.netty.transport.unix.common;

    // picocli reads and writes the annotated fields and instantiates the commands, mixins,
    // converters and the version provider by reflection.
    opens org.nbdroot.client.cli to info.picocli;
    // jnr-ffi implements GgateLibC with a class it generates in its own class loader (an unnamed
    // module): the interface's package must be exported to everyone.
    exports org.nbdroot.client.ggate;
    exports org.nbdroot.client.linuxnbd;
}
