#!/bin/bash
# Start-up of the runtime image, with and without a CDS archive, and with a few JVM flags:
# --version, info, and start to device ready (-f against the GEOM Gate emulator), variants
# interleaved round-robin, medians (bench/image-startup.py). Needs mvn package (the image)
# and mvn test-compile on Linux (the emulator in nbd-client/target/ggate-emu); nbdkit.
# R=ROUNDS (default 20). Extra variants: lines "name<TAB>command" in $EXTRA (a file).
set -euo pipefail
cd "$(dirname "$0")/.."
image=$PWD/nbd-client/target/image
emu=$PWD/nbd-client/target/ggate-emu
[ -x "$image/bin/java" ] || { echo "no $image: run mvn package first" >&2; exit 1; }
[ -x "$emu/ggate-kernel" ] || { echo "no $emu: run mvn test-compile first" >&2; exit 1; }

work=$(mktemp -d /dev/shm/image-startup.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
nbdkit --foreground --exit-with-parent -i 127.0.0.1 -p "$port" memory size=1G &
server=$!
"$emu/ggate-kernel" -i "$work/gg.sock" >"$work/gg.out" 2>"$work/gg.err" </dev/null &
kernel=$!
trap 'kill $server $kernel 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

# The same image twice: as built (no archive unless built with -Dimage.cds=true), and a
# copy with the archive that -Dimage.cds=true would dump.
cp -a "$image" "$work/plain"
rm -f "$work/plain/lib/server/classes.jsa"
cp -a "$work/plain" "$work/cds"
"$work/cds/bin/java" -Xshare:dump -XX:SharedClassListFile=nbd-client/src/main/image/nbd-client.classlist \
    -XX:SharedArchiveFile="$work/cds/lib/server/classes.jsa" -Xlog:cds=off -Xlog:cds+map=off >/dev/null
size() { du -sk "$1" | awk '{ printf "%.1f MiB", $1 / 1024 }'; }
{
  printf 'image, no CDS (%s)\t%s\n' "$(size "$work/plain")" "$work/plain/bin/nbd-client"
  printf 'image, no CDS, -XX:TieredStopAtLevel=1\t%s\n' "$work/plain/bin/java -XX:-UsePerfData -Djffi.boot.library.path=$work/plain/lib -XX:TieredStopAtLevel=1 -m org.nbdroot.client/org.nbdroot.client.Main"
  printf 'image + AppCDS (%s)\t%s\n' "$(size "$work/cds")" "$work/cds/bin/nbd-client"
  printf 'image + AppCDS, -XX:TieredStopAtLevel=1\t%s\n' "$work/cds/bin/java -XX:-UsePerfData -Djffi.boot.library.path=$work/cds/lib -XX:TieredStopAtLevel=1 -m org.nbdroot.client/org.nbdroot.client.Main"
  [ -n "${EXTRA:-}" ] && cat "$EXTRA"
} >"$work/variants"
until [ -s "$work/gg.out" ]; do sleep 0.05; done
GG="$emu/libggate-emu.so $work/gg.sock" RUNDIR="$work/run" python3 bench/image-startup.py "nbd://127.0.0.1:$port/" "$work/variants" "$@"
