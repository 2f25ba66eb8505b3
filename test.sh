#!/bin/bash
# Runs every test. First installs what the tests need when it is missing: the real NBD
# servers they talk to (nbdkit, nbd-server, qemu-nbd), fio for the benchmark script, strace
# for the runtime image's test, and Maven's dependencies (Maven fetches those itself).
set -euo pipefail
cd "$(dirname "$0")"

missing=()
for pair in nbdkit:nbdkit nbd-server:nbd-server qemu-nbd:qemu-utils qemu-img:qemu-utils fio:fio strace:strace; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
fi

exec mvn -B -ntp verify "$@"
