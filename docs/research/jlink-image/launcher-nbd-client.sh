#!/bin/sh
# nbd-client: runs the daemon on the runtime image this script sits in (bin/..).
# JAVA_OPTS is passed to the JVM, e.g. JAVA_OPTS=-Dnbd.transport=nio.
# Every class is in lib/modules; the native libraries are pre-extracted in lib/ (Netty's epoll
# library is found there by System.loadLibrary on sun.boot.library.path; jffi is pointed at it
# with jffi.boot.library.path), so nothing is unpacked to a temporary directory.
# lib/server/classes.jsa, when present, is the class-data-sharing archive of the JDK's and the
# application's classes: the JVM maps it by itself (it is the image's default archive).
self=$0
[ -L "$self" ] && self=$(readlink -f "$self")
here=$(cd "$(dirname "$self")/.." && pwd -P)
# shellcheck disable=SC2086
exec "$here/bin/java" -XX:-UsePerfData -Djffi.boot.library.path="$here/lib" \
    $JAVA_OPTS -m org.nbdroot.client/org.nbdroot.client.Main "$@"
