#!/bin/bash
# The end-to-end proof of the reroot: Debian's kernel boots under qemu (TCG) from an
# initramfs holding busybox, the companion init, etc/rc, etc/rc.reroot and the
# nbd-client runtime image; the guest reroots onto an ext4 root that nbdkit on the
# host's loopback serves, with the daemon started by rc.reroot from /dev/reroot in the
# data path of the kernel's NBD driver. Then, with every file under /dev/reroot removed,
# the daemon rides out a restart of nbdkit that also grows the export. The failure paths
# (server unreachable, rc.reroot failing) must end in a message and an emergency shell, and
# a retry from that shell must take over a device the failed attempt left attached.
#
# Usage: reroot-boot.sh [-k] [WORKDIR]      (-k: keep WORKDIR)
# Needs: nbd-client/target/image (mvn package), init/init (make -C init), root for apt-get.
# Exit status 0 when every check passed; each check prints PASS or FAIL.
set -euo pipefail
keep=0
[ "${1:-}" = -k ] && { keep=1; shift; }
repo=$(cd "$(dirname "$0")/../.." && pwd)
here=$repo/test/qemu
W=${1:-$(mktemp -d)}; mkdir -p "$W"; W=$(cd "$W" && pwd)
trap 'rc=$?; stop_nbdkit || true; [ "$keep" = 1 ] || rm -rf "$W" || true; exit $rc' EXIT
image=$repo/nbd-client/target/image
init=$repo/init/init
[ -x "$image/bin/java" ] || { echo "reroot-boot.sh: no runtime image at $image (run mvn package)" >&2; exit 2; }
[ -x "$init" ] || { echo "reroot-boot.sh: no companion init at $init (run make -C init)" >&2; exit 2; }
command -v nbdkit >/dev/null && command -v e2fsck >/dev/null && command -v debugfs >/dev/null \
  || { echo "reroot-boot.sh: needs nbdkit and e2fsprogs (./test.sh installs them)" >&2; exit 2; }

. "$here/lib.sh"          # fetch_kernel, copy_modules, busybox_tree
kdir=$(fetch_kernel)

failures=0
check() {     # check NAME COMMAND...: runs COMMAND, prints PASS/FAIL NAME
  if "${@:2}"; then echo "PASS $1"; else echo "FAIL $1"; failures=$((failures + 1)); fi
}
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# 1. The new root: busybox, and a /sbin/init that runs the checks inside the guest.
rm -rf "$W/newroot"; mkdir -p "$W"/newroot/{sbin,proc,sys,dev,tmp,out,data}
busybox_tree "$W/newroot"
cp "$here/newroot-init.sh" "$W/newroot/sbin/init"; chmod 755 "$W/newroot/sbin/init"
mkfs.ext4 -q -F -b 4096 -d "$W/newroot" "$W/root.img" 64M

# 1b. TLS: a CA and a server certificate for the address the guest sees the host at. The guest
# gets only the CA, in the initramfs: the daemon must read it before the reroot takes it away,
# and do TLS again from memory when the server restarts.
mkdir -p "$W/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=reroot test CA" \
  -keyout "$W/tls/ca-key.pem" -out "$W/tls/ca-cert.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=10.0.2.2" \
  -keyout "$W/tls/server-key.pem" -out "$W/tls/server.csr" 2>/dev/null
printf 'subjectAltName=IP:10.0.2.2\nextendedKeyUsage=serverAuth\n' > "$W/tls/server.ext"
openssl x509 -req -in "$W/tls/server.csr" -CA "$W/tls/ca-cert.pem" -CAkey "$W/tls/ca-key.pem" -CAcreateserial \
  -days 2 -extfile "$W/tls/server.ext" -out "$W/tls/server-cert.pem" 2>/dev/null

# 2. The initramfs: the companion init as /init, the rc files, the image under
# /usr/local/nbd-client with the libraries it maps at their usual paths.
ir=$W/initramfs; rm -rf "$ir"; mkdir -p "$ir"/{etc,proc,sys,dev,tmp,usr/local,lib/modules}
busybox_tree "$ir"
cp "$init" "$ir/init"
cp "$repo/etc/rc" "$repo/etc/rc.reroot" "$ir/etc/"
mkdir -p "$ir/etc/nbdroot/tls"; cp "$W/tls/ca-cert.pem" "$ir/etc/nbdroot/tls/"
cp -a "$image" "$ir/usr/local/nbd-client"
for f in $(find "$image" -type f \( -name '*.so' -o -path '*/bin/*' \)); do
  ldd "$f" 2>/dev/null | grep -o '/[^ ]*' || true
done | sort -u | while read -r lib; do mkdir -p "$ir$(dirname "$lib")"; cp -L "$lib" "$ir$lib"; done
copy_modules "$kdir" "$ir/lib/modules" virtio_pci virtio_net nbd ext4 crc32c_generic 9pnet_virtio 9p \
  > "$W/modules.order"
{ echo '#!/bin/sh'; while read -r m; do echo "insmod /lib/modules/$m.ko"; done < "$W/modules.order"; } > "$ir/etc/rc.modules"
chmod 755 "$ir/etc/rc.modules"
(cd "$ir" && find . | cpio -o -H newc --quiet) > "$W/initrd.cpio"
echo "initramfs: $(du -m "$W/initrd.cpio" | cut -f1) MiB"

# C1 only: under TCG, C2's compiling costs more than it saves, but the interpreter (-Xint,
# the fastest start) moves TLS data at ~90 KB/s: 4 MiB written took over 2 minutes, where
# C1 takes 3 s. REROOT_JAVA_OPTIONS replaces these options, for comparing.
JAVA_IN_GUEST="nbdroot.java.options=\"${REROOT_JAVA_OPTIONS:--XX:TieredStopAtLevel=1 -Xmx192m -Xshare:auto}\""

# boot NAME APPEND TIMEOUT [STOP_PATTERN]: boots the guest, console in $W/NAME.log; with
# STOP_PATTERN, qemu is stopped once the console shows it (an emergency shell never ends).
# BOOT_STDIN: what the console reads (default /dev/null).
boot() {
  local name=$1 append=$2 limit=$3 stop=${4:-}
  mkdir -p "$W/out-$name"
  qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 1 -nographic -no-reboot \
    -kernel "$kdir/vmlinux" -initrd "$W/initrd.cpio" \
    -append "console=ttyS0 loglevel=4 panic=-1 quiet nbdroot.net.addr=10.0.2.15/24 nbdroot.net.gw=10.0.2.2 $JAVA_IN_GUEST $append" \
    -netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
    -virtfs "local,path=$W/out-$name,mount_tag=out,security_model=none" \
    < "${BOOT_STDIN:-/dev/null}" > "$W/$name.log" 2>&1 &
  local qemu=$! t=0
  while kill -0 "$qemu" 2>/dev/null; do
    if [ -n "$stop" ] && grep -q "$stop" "$W/$name.log"; then sleep 1; kill "$qemu"; break; fi
    if [ "$t" -ge $((limit * 10)) ]; then echo "boot $name: no end after ${limit}s" >&2; kill -9 "$qemu"; break; fi
    sleep 0.1; t=$((t + 1))
  done
  wait "$qemu" 2>/dev/null || true
}

# start_nbdkit PORT: serves root.img, over TLS only; its pid in $W/nbdkit.pid. nbdkit puts
# itself in the background (started with --foreground from the subshell that restarts it, it
# would die with that subshell).
start_nbdkit() {
  rm -f "$W/nbdkit.pid"
  nbdkit -P "$W/nbdkit.pid" -i 127.0.0.1 -p "$1" --tls=require --tls-certificates="$W/tls" \
    file "$W/root.img" 2>>"$W/nbdkit.log"
  for _ in $(seq 100); do [ -s "$W/nbdkit.pid" ] && break; sleep 0.05; done
}
stop_nbdkit() {    # and wait until it is gone, so that it writes nothing more into $W
  local pid; pid=$(cat "$W/nbdkit.pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

# 3. The reroot, and the daemon riding out a restart of the server that grows the export.
p=$(port)
start_nbdkit "$p"
old_size=$(stat -c %s "$W/root.img")
(
  # The guest says when it has removed /dev/reroot and written its file; then the server goes
  # away for 2 s and comes back with the export 16 MiB larger. Never before the guest said so
  # (a restart the guest did not expect makes every later check fail for another reason).
  until grep -q GUEST-RESTART-SERVER "$W/reroot.log" 2>/dev/null; do sleep 0.1; done
  echo "$(date +%T) stopping the server" >> "$W/restarts.log"
  # SIGTERM, as a service manager stops it: nbdkit answers what is in flight with
  # NBD_ESHUTDOWN and waits for its client a while; SIGKILL if it is still there after 10 s.
  old=$(cat "$W/nbdkit.pid"); kill "$old"
  for _ in $(seq 100); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$old" 2>/dev/null || true
  sleep 2
  truncate -s $((old_size + 16 * 1048576)) "$W/root.img"
  start_nbdkit "$p"
  touch "$W/out-reroot/server-restarted"
  echo "$(date +%T) server restarted, export grown" >> "$W/restarts.log"
) &
restarter=$!
boot reroot "nbdroot.0.server=nbds://10.0.2.2:$p/?tls-certificates=/etc/nbdroot/tls nbdroot.root=ext4:/dev/nbd0 nbdroot.timeout=100" 330
kill "$restarter" 2>/dev/null || true; wait "$restarter" 2>/dev/null || true
stop_nbdkit; sleep 0.5
log=$W/reroot.log
served_pid=$(sed -n 's/^nbd-client reroot: \/dev\/nbd0 served by pid \([0-9]*\).*/\1/p' "$log" | tr -d '\r' | head -1)
guest_pid=$(sed -n 's/^GUEST-DAEMON-PID \([0-9]*\).*/\1/p' "$log" | tr -d '\r' | head -1)
check "rc.reroot started the daemon (pid ${served_pid:-none})" test -n "$served_pid"
check "the new root's init ran" grep -q GUEST-NEWROOT-INIT "$log"
check "the daemon serving the root is the one rc.reroot started" test "${served_pid:-x}" = "${guest_pid:-y}"
check "rc.reroot exempted the daemon from the OOM killer" grep -q "^GUEST-OOM-SCORE-ADJ -1000" "$log"
check "every file the daemon maps or holds lies under /dev/reroot" grep -q GUEST-FILES-OK "$log"
check "/dev/reroot was emptied before the server restart" grep -q GUEST-REROOT-EMPTY "$log"
check "the device grew with the export" grep -q GUEST-GREW "$log"
check "the daemon did TLS again after the restart, its CA long gone with the old root" \
  grep -q "reconnected to nbds://10.0.2.2:$p/" "$W/out-reroot/daemon.log"
check "the guest's writes completed across the restart" grep -q GUEST-DONE "$log"
check "e2fsck finds the served root clean" e2fsck -fn "$W/root.img"
expect=$(sed -n 's/^GUEST-DATA-MD5 \([0-9a-f]*\).*/\1/p' "$log" | tr -d '\r' | head -1)
got=$(debugfs -R 'cat /data/written' "$W/root.img" 2>/dev/null | md5sum | cut -d' ' -f1)
check "a file written by the new root is in the server's image (md5 ${expect:-none})" test -n "$expect" -a "$expect" = "$got"
check "the daemon marked itself as the root's storage daemon (argv[0] = @...)" grep -q GUEST-DAEMON-MARKED "$log"
check "the killing spree killed the unmarked processes" grep -Eq "^GUEST-SPREE-SIGNALLED [1-9]" "$log"
check "the daemon outlived a systemd-style shutdown killing spree" grep -q GUEST-SURVIVED-SHUTDOWN "$log"
last_expect=$(sed -n 's/^GUEST-LAST-MD5 \([0-9a-f]*\).*/\1/p' "$log" | tr -d '\r' | head -1)
last_got=$(debugfs -R 'cat /data/last' "$W/root.img" 2>/dev/null | md5sum | cut -d' ' -f1)
check "a file written after the killing spree is in the server's image" test -n "$last_expect" -a "$last_expect" = "$last_got"
tail_expect=$(sed -n 's/^GUEST-TAIL-MD5 \([0-9a-f]*\).*/\1/p' "$log" | tr -d '\r' | head -1)
tail_got=$(dd if="$W/root.img" bs=1M skip=$((old_size / 1048576)) count=1 2>/dev/null | md5sum | cut -d' ' -f1)
check "bytes written past the old end are in the grown image" test -n "$tail_expect" -a "$tail_expect" = "$tail_got"

# 4. Failure paths: a message and an emergency shell, never a silent hang.
shell_prompt() {   # init's announcement, then busybox sh's prompt after it
  sed -n '/starting an emergency shell/,$p' "$1" | grep -q '^/ # '
}
boot unreachable "nbdroot.0.server=nbd://10.0.2.2:1/ nbdroot.root=ext4:/dev/nbd0 nbdroot.timeout=3" 180 "/ # "
check "server unreachable: the console names the failure" grep -qi "connect\|refused\|not ready" "$W/unreachable.log"
check "server unreachable: an emergency shell prompt" shell_prompt "$W/unreachable.log"
boot badconf "nbdroot.0.server=nbd://10.0.2.2:$p/ nbdroot.root=nodevice" 180 "/ # "
check "rc.reroot failing: the console shows its message" grep -q "nbdroot.root must be FSTYPE:DEVICE" "$W/badconf.log"
check "rc.reroot failing: an emergency shell prompt" shell_prompt "$W/badconf.log"

# 5. A retry from the emergency shell after an attempt that failed late: the second device's
# server is down, so the first device was attached, its daemon then killed by init's retry.
# The retry's daemon takes nbd0 over (creating it again would fail: it is still attached)
# and the reroot goes through once the second server is up.
q=$(port)
rm -f "$W/nbdkit.pid" "$W/nbdkit-1.pid" "$W/retry.in" "$W/retry.log"   # a kept WORKDIR run again
nbdkit -P "$W/nbdkit.pid" -i 127.0.0.1 -p "$p" file "$W/root.img" 2>>"$W/nbdkit.log"
for _ in $(seq 100); do [ -s "$W/nbdkit.pid" ] && break; sleep 0.05; done
mkfifo "$W/retry.in"
exec 3<>"$W/retry.in"   # a writer from the start: qemu's open of the FIFO does not wait, its reads do
(
  # Once the first attempt has ended in the emergency shell: the second server, then the retry.
  until sed -n '/starting an emergency shell/,$p' "$W/retry.log" 2>/dev/null | grep -q '^/ # '; do sleep 0.2; done
  nbdkit -P "$W/nbdkit-1.pid" -i 127.0.0.1 -p "$q" memory 16M 2>>"$W/nbdkit.log"
  for _ in $(seq 100); do [ -s "$W/nbdkit-1.pid" ] && break; sleep 0.05; done
  echo "$(date +%T) second server up; typing /init reroot" >> "$W/restarts.log"
  printf '/init reroot\n' > "$W/retry.in"
) &
typist=$!
# (Every command here with || true: under set -e a failing kill in the trap would be the script's exit status.)
trap 'rc=$?; kill "$typist" 2>/dev/null || true; kill "$(cat "$W/nbdkit-1.pid" 2>/dev/null)" 2>/dev/null || true;
  stop_nbdkit || true; [ "$keep" = 1 ] || rm -rf "$W" || true; exit $rc' EXIT
BOOT_STDIN=$W/retry.in boot retry "nbdroot.0.server=nbd://10.0.2.2:$p/ nbdroot.1.server=nbd://10.0.2.2:$q/ nbdroot.root=ext4:/dev/nbd0 nbdroot.timeout=60" 420 GUEST-NEWROOT-INIT
exec 3>&-
kill "$typist" 2>/dev/null || true; wait "$typist" 2>/dev/null || true
kill "$(cat "$W/nbdkit-1.pid" 2>/dev/null)" 2>/dev/null || true
stop_nbdkit
check "retry: the first attempt failed on the second device" grep -Eq "the daemon for /dev/nbd1 failed|/dev/nbd1 not ready" "$W/retry.log"
check "retry: the first attempt ended in the emergency shell" grep -q "reroot failed" "$W/retry.log"
check "retry: its unit 0, still attached, was taken over" \
  grep -q "/dev/nbd0 is still attached from an earlier attempt, its daemon gone: taking it over" "$W/retry.log"
check "retry: the new root's init ran" grep -q GUEST-NEWROOT-INIT "$W/retry.log"

if [ "$failures" -ne 0 ]; then
  echo "reroot-boot.sh: $failures check(s) failed; consoles in $W (kept)" >&2
  trap 'stop_nbdkit; exit 1' EXIT
  exit 1
fi
echo "reroot-boot.sh: all checks passed"
exit 0
