#!/bin/bash
# Runs every test. First installs what the tests need when it is missing: the real NBD
# servers they talk to (nbdkit, nbd-server, qemu-nbd), openssl for the TLS tests'
# certificates, fio for the benchmark script, strace for the runtime image's test, a C
# compiler, busybox-static and mkfs.ext4 for the init tests (init/test/run.sh), qemu and
# cpio for the Linux kernel tests (test/qemu), e2fsprogs to check the filesystems they
# make, and Maven's dependencies (Maven fetches those itself).
set -euo pipefail
cd "$(dirname "$0")"

missing=()
for pair in openssl:openssl nbdkit:nbdkit nbd-server:nbd-server qemu-nbd:qemu-utils qemu-img:qemu-utils fio:fio \
    strace:strace cc:gcc make:make mkfs.ext4:e2fsprogs e2fsck:e2fsprogs debugfs:e2fsprogs \
    qemu-system-x86_64:qemu-system-x86 cpio:cpio python3:python3; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
# The init tests chroot into a tree without libraries: static libc. The initramfs needs a
# static busybox with switch_root (Debian's busybox-static).
[ -e "$(cc -print-file-name=libc.a 2>/dev/null)" ] || missing+=(libc6-dev)
[ -x /bin/busybox ] && /bin/busybox --list | grep -qx switch_root || missing+=(busybox-static)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
fi

# The companion init (C): built with -Werror and run as process 1 of a PID namespace.
make -C init check
mvn -B -ntp verify "$@"
# The reroot, end to end: Debian's kernel under qemu boots the initramfs (the init above, the
# rc files, the runtime image just built) and reroots onto a root nbdkit serves (test/qemu).
test/qemu/reroot-boot.sh
