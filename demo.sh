#!/bin/bash
# The main job on an embedded default: build, serve a 1 GiB memory disk with nbdkit on
# loopback, show what the handshake says about it, and load it with a verified benchmark
# (a random write load whose every block is read back and checked, then random reads).
set -euo pipefail
cd "$(dirname "$0")"
command -v nbdkit >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nbdkit >/dev/null; }
mvn -q -B -ntp -DskipTests package
client=nbd-client/target/image/bin/nbd-client

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
nbdkit --foreground --exit-with-parent -i 127.0.0.1 -p "$port" -P "$work/pid" memory size=1G &
server=$!
trap 'kill $server 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -s "$work/pid" ] && break; sleep 0.05; done
uri="nbd://127.0.0.1:$port/"

echo "== nbd-client info $uri"
"$client" info "$uri"
echo
echo "== nbd-client bench $uri --rw randwrite --bs 4k --iodepth 32 --runtime 5 --verify"
"$client" bench "$uri" --rw randwrite --bs 4k --iodepth 32 --runtime 5 --verify
echo
echo "== nbd-client bench $uri --rw randread --bs 4k --iodepth 32 --runtime 5 --verify --size 256M"
"$client" bench "$uri" --rw randread --bs 4k --iodepth 32 --runtime 5 --verify --size 256M
