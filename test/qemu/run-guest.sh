#!/bin/bash
# Boots Debian's Linux kernel under qemu (TCG) with a busybox initramfs and runs one guest
# script in it; see README.md next to this file for the whole interface.
#
# Usage: run-guest.sh -o OUTDIR [-m MODULE]... [-f SRC[:DEST]]... [-t SECONDS] [-M MIB]
#                     [-q QEMU_ARG]... [--no-host] GUEST_SCRIPT
#        run-guest.sh --fetch        (download and unpack the kernel into the cache only)
#
# Exit status: the guest script's; 124 when the time limit killed qemu; 125 when the guest
# ended without reporting a status (a panic, a script that powered off itself).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${NBDROOT_CACHE:-$HOME/.cache/nbd-root}
out= timeout=60 mem=1024 host=1 fetch_only=0 script=
modules=() files=() qemu_extra=()

usage() { sed -n '2,/^set -e/p' "$0" | sed '$d;s/^# \{0,1\}//' >&2; exit 2; }
die() { echo "run-guest.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift 2 ;;
    -m) modules+=("$2"); shift 2 ;;
    -f) files+=("$2"); shift 2 ;;
    -t) timeout=$2; shift 2 ;;
    -M) mem=$2; shift 2 ;;
    -q) qemu_extra+=("$2"); shift 2 ;;
    --no-host) host=0; shift ;;
    --fetch) fetch_only=1; shift ;;
    -h|--help) usage ;;
    -*) die "unknown option $1" ;;
    *) [ -z "$script" ] || die "only one GUEST_SCRIPT"; script=$1; shift ;;
  esac
done

# What the harness needs on the host; installed when missing (Debian).
need() {
  command -v "$1" >/dev/null && return
  echo "run-guest.sh: installing $2" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need qemu-system-x86_64 qemu-system-x86; need cpio cpio; need python3 python3
[ -x /bin/busybox ] && /bin/busybox --list | grep -qx switch_root \
  || { need apt-get apt; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null; }

# 1. The kernel: the versioned image linux-image-amd64 depends on, unpacked (never
# installed) into the cache once; vmlinux is its uncompressed ELF (PVH boot skips the
# in-guest decompression, seconds under TCG).
fetch_kernel() {
  local pkg dir
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [ -n "$pkg" ] || { apt-get update -qq; pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'); }
  [ -n "$pkg" ] || die "cannot find the kernel package linux-image-amd64 depends on"
  dir=$cache/$pkg
  if [ ! -f "$dir/vmlinux" ]; then
    mkdir -p "$dir.tmp" && rm -rf "${dir:?}.tmp"/*
    (cd "$dir.tmp" && apt-get download -qq "$pkg" 2>/dev/null && dpkg-deb -x "$pkg"_*.deb k && rm -f "$pkg"_*.deb)
    local kver; kver=$(ls "$dir.tmp/k/lib/modules")
    python3 - "$dir.tmp/k/boot/vmlinuz-$kver" "$dir.tmp/vmlinux" <<'EOP'
import lzma, sys
d = open(sys.argv[1], "rb").read()
open(sys.argv[2], "wb").write(lzma.LZMADecompressor().decompress(d[d.find(b"\xfd7zXZ\x00"):]))
EOP
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  echo "$dir"
}
kdir=$(fetch_kernel)
[ "$fetch_only" = 1 ] && { echo "$kdir"; exit 0; }
[ -n "$script" ] && [ -f "$script" ] || die "name a GUEST_SCRIPT that exists (-h for help)"
[ -n "$out" ] || die "-o OUTDIR is required"
mkdir -p "$out"; out=$(cd "$out" && pwd)
kver=$(ls "$kdir/k/lib/modules")

# 2. The initramfs: busybox, the modules with what they depend on (there is no
# modules.dep in the package: the order comes from each module's own depends= field).
work=$(mktemp -d "$out/.initramfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
ir=$work/root
mkdir -p "$ir"/{bin,proc,sys,dev,tmp,run,host,out,modules}
cp /bin/busybox "$ir/bin/"
for a in $(/bin/busybox --list); do [ -e "$ir/bin/$a" ] || ln -s busybox "$ir/bin/$a"; done
base=(virtio_pci virtio_net nbd ext4 crc32c_generic)
[ "$host" = 1 ] && base+=(9pnet_virtio 9p)
python3 "$here/modules.py" "$kdir/k/lib/modules/$kver/kernel" "$ir/modules" "${base[@]}" "${modules[@]}" \
  > "$work/modules.order"
for spec in "${files[@]}"; do
  src=${spec%%:*}; dst=${spec#*:}; [ "$dst" != "$spec" ] || dst=$src
  mkdir -p "$ir$(dirname "$dst")"; cp -a "$src" "$ir$dst"
done
cp "$script" "$ir/guest.sh"
cp "$here/init" "$ir/init"; chmod 755 "$ir/init"
{ echo "HOST_FS=$host"; echo "MODULES=\"$(tr '\n' ' ' < "$work/modules.order")\""; } > "$ir/harness.conf"
(cd "$ir" && find . | cpio -o -H newc --quiet) > "$work/initrd.cpio"

# 3. Boot. slirp maps the guest's 10.0.2.2 to the host's 127.0.0.1; the host's / is shared
# read-only (tag "host"), OUTDIR read-write (tag "out").
virtfs=()
[ "$host" = 1 ] && virtfs+=(-virtfs local,path=/,mount_tag=host,security_model=none,readonly=on)
virtfs+=(-virtfs "local,path=$out,mount_tag=out,security_model=none")
rm -f "$out/guest.rc"
rc=0
timeout --foreground -k 5 "$timeout" qemu-system-x86_64 -accel tcg -cpu max -m "$mem" -smp 1 \
  -nographic -no-reboot -kernel "$kdir/vmlinux" -initrd "$work/initrd.cpio" \
  -append "console=ttyS0 loglevel=4 panic=-1 quiet" \
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0 "${virtfs[@]}" "${qemu_extra[@]}" \
  < /dev/null > "$out/console.log" 2>&1 || rc=$?
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  echo "run-guest.sh: the guest did not finish within ${timeout}s (console: $out/console.log)" >&2
  exit 124
fi
[ -s "$out/guest.rc" ] || { echo "run-guest.sh: the guest reported no status (console: $out/console.log)" >&2; exit 125; }
exit "$(cat "$out/guest.rc")"
