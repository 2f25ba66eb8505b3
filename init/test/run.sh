#!/bin/sh
# Runs init as process 1 of a fresh PID and mount namespace, chrooted into a
# tmpfs made of busybox-static, and checks each path through it: /etc/rc,
# reaping, reroot with the hook present, absent and failing, a bad root and
# a bad root.conf, the emergency shell, halt/poweroff/reboot.  The new root
# is an ext4 image on a loop device.
#
# usage: test/run.sh path/to/init     (as root; needs unshare, busybox,
#                                      mkfs.ext4, losetup)
set -eu

INIT=$(realpath "${1:?usage: test/run.sh path/to/init [path/to/init-hook3]}")
# The same init built with -DHOOK_TIMEOUT=3, for the case of a hook that runs too long.
INIT_HOOK3=${2:+$(realpath "$2")}
BUSYBOX=$(command -v busybox) || { echo "run.sh: busybox is missing (apt-get install busybox-static)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run.sh: must run as root (namespaces, mounts, loop devices)" >&2; exit 1; }
for tool in unshare mkfs.ext4 losetup timeout; do
	command -v $tool >/dev/null || { echo "run.sh: $tool is missing" >&2; exit 1; }
done

# Both run inside a chroot that holds no libraries.
for bin in "$INIT" "$BUSYBOX"; do
	if ldd "$bin" >/dev/null 2>&1; then
		echo "run.sh: $bin is dynamically linked; it must be static (busybox: apt-get install busybox-static)" >&2
		exit 1
	fi
done

T=$(mktemp -d /tmp/init-test.XXXXXX)
OLD=$T/old
LOOP=
failures=0

cleanup() {
	mountpoint -q "$OLD" 2>/dev/null && umount "$OLD"
	[ -n "$LOOP" ] && losetup -d "$LOOP"
	rm -rf "$T"
}
trap cleanup EXIT

fail() {
	echo "FAIL [$case]: $*"
	failures=$((failures + 1))
}

# expect TEXT: the case's output contains TEXT (a fixed string).
expect() {
	grep -qF -- "$1" "$T/out" || fail "output lacks: $1"
}

# refuse TEXT: the case's output does not contain TEXT.
refuse() {
	! grep -qF -- "$1" "$T/out" || fail "output has: $1"
}

expect_status() {
	[ "$status" = "$1" ] || fail "exit status $status, expected $1 ($2)"
}

applets() {
	for a in sh echo cat cp grep kill sleep wc ls mkdir mount test '['; do
		ln -s busybox "$1/bin/$a"
	done
}

# The new root: an ext4 image whose /sbin/init reports what it finds.
mkdir -p "$T/new/bin" "$T/new/sbin" "$T/new/dev" "$T/new/proc" \
    "$T/new/sys" "$T/new/run"
cp "$BUSYBOX" "$T/new/bin/busybox"
applets "$T/new"
cat > "$T/new/sbin/init" <<'EOF'
#!/bin/sh
echo "NEWROOT-INIT pid=$$"
[ -d /dev/reroot ] && echo "newroot: /dev/reroot present"
[ -x /dev/reroot/init ] && echo "newroot: init copy present"
[ -e /proc/self/stat ] && echo "newroot: /proc present"
grep -q ' / ext4 ' /proc/mounts && echo "newroot: / is ext4"
[ -e /newroot ] && echo "newroot: old root visible"
echo "newroot: tmpfs mounts on /dev/reroot: $(grep -c ' /dev/reroot ' /proc/mounts)"
if [ -f /dev/reroot/daemon.pid ] && kill -0 "$(cat /dev/reroot/daemon.pid)"; then
	echo "newroot: daemon alive"
fi
if [ -f /dev/rc-child.pid ] && ! kill -0 "$(cat /dev/rc-child.pid)" 2>/dev/null; then
	echo "newroot: rc child gone"
fi
echo "newroot: done"
EOF
chmod 755 "$T/new/sbin/init"
truncate -s 32M "$T/root.img"
mkfs.ext4 -q -F -d "$T/new" "$T/root.img"
LOOP=$(losetup -f --show "$T/root.img")
LOOPMAJ=$((0x$(stat -c %t "$LOOP")))
LOOPMIN=$((0x$(stat -c %T "$LOOP")))

# make_old RC [HOOK]: a fresh temporary root with init, /etc/rc and the hook.
make_old() {
	mountpoint -q "$OLD" && umount "$OLD"
	mkdir -p "$OLD"
	mount -t tmpfs -o mode=0755 old "$OLD"
	mkdir -p "$OLD/bin" "$OLD/sbin" "$OLD/etc" "$OLD/dev" "$OLD/proc" \
	    "$OLD/sys"
	cp "$BUSYBOX" "$OLD/bin/busybox"
	applets "$OLD"
	cp "$INIT" "$OLD/sbin/init"
	printf '%s\n' "$1" > "$OLD/etc/rc"
	if [ $# -gt 1 ]; then
		printf '%s\n' "$2" > "$OLD/etc/rc.reroot"
		chmod 755 "$OLD/etc/rc.reroot"
	fi
}

# run_init [INPUT...]: run init as process 1; each INPUT line reaches the
# console's stdin two seconds after the previous one.
run_init() {
	status=0
	# The outer braces keep the shell's "Hangup" job notice off the log.
	{ {
		for line in "$@"; do
			sleep 2
			printf '%s\n' "$line"
		done
	} | timeout 60 unshare --pid --fork --kill-child --mount \
	    --propagation private sh -c '
		mount -t tmpfs -o mode=0755 dev "$1/dev" &&
		mknod -m 666 "$1/dev/null" c 1 3 &&
		mknod -m 660 "$1/dev/'"${LOOP#/dev/}"'" b '"$LOOPMAJ $LOOPMIN"' &&
		exec chroot "$1" /sbin/init' sh "$OLD" > "$T/out" 2>&1 ||
	    status=$?; } 2>/dev/null
	sed "s/^/    [$case] /" "$T/out"
}

CONF="ROOT=$LOOP
FSTYPE=ext4"

RC_REROOT='echo "rc: ran as pid $$, parent $PPID, args $*"
[ -e /proc/1/stat ] && echo "rc: /proc mounted"
[ -d /sys/kernel ] && echo "rc: /sys mounted"
sleep 1000 & echo $! > /dev/rc-child.pid
/sbin/init reroot
sleep 1000'

case=cli
status=0; "$INIT" > "$T/out" 2>&1 || status=$?
expect_status 64 "init not as process 1, no command"
expect "usage: init [-r]"
status=0; "$INIT" bogus > "$T/out" 2>&1 || status=$?
expect_status 64 "unknown command"

case=hook
make_old 'echo "rc: ran as pid $$, parent $PPID, args $*"
[ -e /proc/1/stat ] && echo "rc: /proc mounted"
[ -d /sys/kernel ] && echo "rc: /sys mounted"
# Orphans: their parent subshell exits at once, so process 1 must reap them.
i=0
while [ $i -lt 20 ]; do (sleep 0.2 &); i=$((i + 1)); done
sleep 1
# Up to 5 s more for every sleep to end and be reaped: a busy host may start one late.
zombies() { grep -l "^State:.*Z" /proc/[0-9]*/status 2>/dev/null | wc -l; }
t=0
while [ $t -lt 50 ] && { grep -qx sleep /proc/[0-9]*/comm 2>/dev/null || [ "$(zombies)" -gt 0 ]; }; do
	sleep 0.1; t=$((t + 1))
done
echo "rc: zombies=$(zombies)"
sleep 1000 & echo $! > /dev/rc-child.pid
echo "rc: asking for a reroot"
/sbin/init reroot
sleep 1000' "#!/bin/sh
echo \"hook: ran, parent \$PPID\"
grep -q ' /dev/reroot tmpfs ' /proc/mounts && echo 'hook: /dev/reroot is a tmpfs'
kill -0 \"\$(cat /dev/rc-child.pid)\" 2>/dev/null || echo 'hook: rc child killed before the hook'
# The daemon runs from the tmpfs, so nothing ties it to the old root.
cp /bin/busybox /dev/reroot/busybox
cd /dev/reroot
/dev/reroot/busybox sleep 1000 </dev/null >/dev/null 2>&1 &
echo \$! > /dev/reroot/daemon.pid
cat > /dev/reroot/root.conf <<EOF
# written by the hook
ROOT=$LOOP
FSTYPE=ext4
FLAGS=rw,noatime
INIT=/sbin/missing:/sbin/init
ROOTWAIT=2
EOF"
run_init
expect_status 0 "the new root's init exits 0"
expect "rc: ran as pid"
expect ", parent 1, args autoboot"
expect "rc: /proc mounted"
expect "rc: /sys mounted"
expect "rc: zombies=0"
expect "hook: ran, parent 1"
expect "hook: /dev/reroot is a tmpfs"
expect "hook: rc child killed before the hook"
expect "NEWROOT-INIT pid=1"
expect "newroot: /dev/reroot present"
expect "newroot: init copy present"
expect "newroot: /proc present"
expect "newroot: / is ext4"
expect "newroot: daemon alive"
expect "newroot: rc child gone"
expect "newroot: done"
expect "newroot: tmpfs mounts on /dev/reroot: 1"
refuse "newroot: old root visible"
refuse "emergency shell"
# The old root's files were deleted to free its memory.
[ ! -e "$OLD/bin/busybox" ] && [ ! -e "$OLD/etc/rc" ] && [ ! -e "$OLD/sbin/init" ] ||
    fail "the old root still holds files: $(ls -A "$OLD" "$OLD/bin" | tr '\n' ' ')"

case=nohook
make_old "$RC_REROOT"
printf '%s\n' "$CONF" > "$OLD/etc/reroot.conf"
run_init
expect_status 0 "the new root's init exits 0"
expect "init: no /etc/rc.reroot; rerooting without a hook"
expect "NEWROOT-INIT pid=1"
expect "newroot: rc child gone"
expect "newroot: / is ext4"
refuse "newroot: daemon alive"

case=hookfails
make_old "$RC_REROOT" '#!/bin/sh
echo "hook: failing"
exit 3'
run_init 'echo "shell one: pid $$"; exit' '' 'echo "shell two: pid $$"; /sbin/init poweroff'
# reboot(2) in a PID namespace kills its process 1: SIGINT for halt and
# power off, SIGHUP for reboot.
expect_status 130 "poweroff kills the namespace's init with SIGINT"
expect "hook: failing"
expect "init: /etc/rc.reroot exited with status 3"
expect "init: reroot failed"
expect "init: starting an emergency shell (/bin/sh)"
expect "/ # "
expect "shell one: pid"
expect "init: emergency shell exited"
expect "shell two: pid"
refuse "NEWROOT-INIT"

if [ -n "$INIT_HOOK3" ]; then
case=hooktimeout
make_old "$RC_REROOT" '#!/bin/sh
echo "hook: hanging"
sleep 1000 &
echo $! > /dev/reroot/hook-child.pid
wait'
cp "$INIT_HOOK3" "$OLD/sbin/init"
run_init '' '' '' 'if kill -0 "$(cat /dev/reroot/hook-child.pid)" 2>/dev/null; then echo "shell: hook child alive"; else echo "shell: hook child gone"; fi; /sbin/init poweroff'
expect_status 130 "poweroff"
expect "hook: hanging"
expect "init: /etc/rc.reroot did not finish within 3 seconds; killing it"
expect "init: reroot failed"
expect "shell: hook child gone"
refuse "survived SIGKILL"
refuse "NEWROOT-INIT"
else
	echo "run.sh: no init built with -DHOOK_TIMEOUT=3 given: the hook time-out case is not run"
fi

case=badroot
make_old "$RC_REROOT"
printf 'ROOT=/dev/nosuchdisk\nFSTYPE=ext4\nROOTWAIT=1\n' > "$OLD/etc/reroot.conf"
run_init '' '/sbin/init reboot'
expect_status 129 "reboot kills the namespace's init with SIGHUP"
expect 'init: cannot mount /dev/nosuchdisk on /newroot (type ext4, options ""): No such file or directory'
expect "init: reroot failed"
expect "init: starting an emergency shell"
refuse "NEWROOT-INIT"

case=badconf
make_old "$RC_REROOT"
printf '%s\nMODE=fast\n' "$CONF" > "$OLD/etc/reroot.conf"
# From the emergency shell: fix the file and retry.
run_init '' "printf '%s\\n' 'ROOT=$LOOP' 'FSTYPE=ext4' > /etc/reroot.conf; /sbin/init reroot"
expect_status 0 "the retried reroot reaches the new root's init"
expect "newroot: tmpfs mounts on /dev/reroot: 1"
expect 'init: /etc/reroot.conf:3: unknown key "MODE"'
expect "init: starting an emergency shell"
expect "NEWROOT-INIT pid=1"
expect "newroot: / is ext4"

case=noinit
make_old "$RC_REROOT"
printf '%s\nINIT=/sbin/missing\n' "$CONF" > "$OLD/etc/reroot.conf"
run_init '' '/sbin/init poweroff'
expect_status 130 "poweroff"
expect "init: no executable init (/sbin/missing) on $LOOP from /etc/reroot.conf"
expect "init: starting an emergency shell"

case=rcfails
make_old 'echo "rc: failing"; exit 2'
run_init '' 'echo "shell: pid $$"; /sbin/init halt'
expect_status 130 "halt"
expect "init: /etc/rc exited with status 2"
expect "init: starting an emergency shell"
expect "shell: pid"

if [ $failures -ne 0 ]; then
	echo "init tests: $failures failure(s)"
	exit 1
fi
echo "init tests: all passed"
