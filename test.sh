#!/bin/bash
# Runs every test. First installs what the tests need when it is missing: the real NBD
# servers they talk to (nbdkit, nbd-server, qemu-nbd), fio for the benchmark script,
# qemu, busybox and cpio for the Linux kernel tests (test/qemu), e2fsprogs to check the
# filesystems they make, and Maven's dependencies (Maven fetches those itself).
set -euo pipefail
cd "$(dirname "$0")"

missing=()
for pair in nbdkit:nbdkit nbd-server:nbd-server qemu-nbd:qemu-utils qemu-img:qemu-utils fio:fio \
    qemu-system-x86_64:qemu-system-x86 cpio:cpio e2fsck:e2fsprogs debugfs:e2fsprogs python3:python3; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
# The initramfs needs a static busybox with switch_root (Debian's busybox-static).
[ -x /bin/busybox ] && /bin/busybox --list | grep -qx switch_root || missing+=(busybox-static)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
fi

exec mvn -B -ntp verify "$@"
