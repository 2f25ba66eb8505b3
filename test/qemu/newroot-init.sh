#!/bin/sh
# /sbin/init of the NBD-served root in reroot-boot.sh: checks the daemon from inside the
# guest, empties /dev/reroot, writes across a server restart, and powers off. Markers
# (GUEST-...) on the console are what the host asserts on.
export PATH=/bin:/sbin
# Each marker ends with the guest's uptime, for whoever reads a slow run's console.
say() { echo "$* (at $(cut -d' ' -f1 /proc/uptime) s)"; }
say "GUEST-NEWROOT-INIT pid $$"
mount -t 9p -o trans=virtio,version=9p2000.L out /out || say "GUEST-ERROR cannot mount /out"

daemon=
for d in /proc/[0-9]*; do
  if tr '\0' ' ' < "$d/cmdline" 2>/dev/null | grep -q 'org.nbdroot.client.Main'; then daemon=${d#/proc/}; fi
done
say "GUEST-DAEMON-PID $daemon"
say "GUEST-OOM-SCORE-ADJ $(cat /proc/"$daemon"/oom_score_adj)"

# Linux's nearest equivalent of FreeBSD's forced unmount of /dev/reroot: every file gone.
rm -rf /dev/reroot/* /dev/reroot/.[!.]* 2>/dev/null
[ -z "$(ls -A /dev/reroot)" ] && say "GUEST-REROOT-EMPTY"

# Every file the daemon maps or holds open must lie under /dev/reroot (device nodes aside).
files() {
  awk '$6 ~ /^\// {print $6}' "/proc/$daemon/maps"
  for f in /proc/"$daemon"/task/*/fd/* /proc/"$daemon"/fd/*; do readlink "$f"; done 2>/dev/null
}
outside=$(files | sed 's/ (deleted)$//' | sort -u | grep '^/' | grep -v '^/dev/reroot/' \
  | grep -Ev '^/dev/(null|console|nbd[0-9]+|ttyS?[0-9]*|u?random)$')
if [ -n "$daemon" ] && [ -z "$outside" ]; then say "GUEST-FILES-OK $(files | sort -u | grep -c '^/dev/reroot/')"; else
  say "GUEST-FILES-OUTSIDE:"; echo "$outside"; fi

# The daemon's log, through the descriptor it still holds on the removed file, copied to the
# host every 2 s (out/daemon.log) for whoever debugs a failure.
for f in /proc/"$daemon"/fd/*; do case $(readlink "$f") in *.log*) log=$f;; esac; done
( while [ -n "$log" ]; do cat "$log" > /out/daemon.log 2>/dev/null; sleep 2; done ) &

dd if=/dev/urandom of=/data/written bs=1M count=4 2>/dev/null && sync
say "GUEST-DATA-MD5 $(md5sum < /data/written | cut -d' ' -f1)"
old=$(cat /sys/block/nbd0/size)

# The host restarts the server (and grows the export) now; these writes wait it out.
say "GUEST-RESTART-SERVER"
( dd if=/dev/urandom of=/data/during bs=64k count=64 2>/dev/null; sync; say "GUEST-DURING-MD5 $(md5sum < /data/during | cut -d' ' -f1)" ) &
writer=$!
n=0; while [ ! -e /out/server-restarted ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
# Up to 120 s: the daemon sees the growth once it has replayed its unflushed writes over a new
# TLS connection (about 5 s with C1 under TCG; with -Xint, 3.6 MB took 37 s).
n=0; while [ "$(cat /sys/block/nbd0/size)" -le "$old" ] && [ $n -lt 1200 ]; do sleep 0.1; n=$((n + 1)); done
new=$(cat /sys/block/nbd0/size)
[ "$new" -gt "$old" ] && say "GUEST-GREW $old $new"
wait $writer

# Bytes past the old end, written to the raw device.
dd if=/dev/urandom of=/tmp/tail bs=1M count=1 2>/dev/null
dd if=/tmp/tail of=/dev/nbd0 bs=1M seek=$((old * 512 / 1048576)) conv=fsync 2>/dev/null \
  && say "GUEST-TAIL-MD5 $(md5sum < /tmp/tail | cut -d' ' -f1)"
say "GUEST-DONE"

# A shutdown the way systemd's ends (src/shared/killall.c, after every service is stopped):
# SIGSTOP to all; the signal to every process but pid 1, kernel threads and root processes
# whose argv[0] starts with '@'; SIGCONT to all; SIGTERM first, then SIGKILL. The daemon
# marked itself (--root-storage), so it must still serve the root's last writes, and being
# stopped must not end its device (with the ioctl interface it did: a signal interrupts
# NBD_DO_IT, and the kernel then shuts the device down; through netlink nothing waits there).
[ "$(head -c 1 /proc/"$daemon"/cmdline)" = @ ] && say "GUEST-DAEMON-MARKED"
spree() {
  kill -STOP -1
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [ "$pid" = 1 ] && continue
    first=$(head -c 1 "$d/cmdline" 2>/dev/null)
    [ -z "$first" ] || [ "$first" = @ ] || { kill -"$1" "$pid" 2>/dev/null && signalled=$((signalled + 1)); }
  done
  kill -CONT -1
  sleep 1
}
signalled=0; spree TERM; spree KILL
say "GUEST-SPREE-SIGNALLED $signalled"     # the log copier above, at least: the spree does kill
if kill -0 "$daemon" 2>/dev/null; then
  say "GUEST-SURVIVED-SHUTDOWN"
  dd if=/dev/urandom of=/data/last bs=64k count=16 2>/dev/null && sync \
    && say "GUEST-LAST-MD5 $(md5sum < /data/last | cut -d' ' -f1)"
fi
cat "$log" > /out/daemon.log 2>/dev/null
sync; umount /out
mount -o remount,ro /      # flush the journal, or fsck sees needs_recovery
poweroff -f
