# Guest side of LinuxNbdKernelTest, run by test/qemu/run-guest.sh in a real Linux kernel.
# /out/test.env (written by the test) gives JAVA, CP (the test's class path, under /host),
# PORT (nbdkit on the host's loopback, 10.0.2.2 here) and MODE:
#   data       attach /dev/nbd0 as a daemon, O_DIRECT and buffered writes read back, ext4,
#              graceful destroy
#   reconnect  a write load while the host kills nbdkit and starts it again with a grown
#              export: the load completes, the device grows, the data reads back
#   stop       a write load while the daemon is stopped (SIGSTOP, as systemd's shutdown does
#              to every process) and continued: no I/O error, the data reads back
#   rescue     a write load while the daemon is killed (SIGKILL) and `nbd rescue` takes the
#              device over: the load completes, the data reads back
# ATTACH=ioctl (optional) makes the daemon attach with ioctls instead of netlink.
# Every check prints "CHECK name ok" or "CHECK name FAILED ..."; the host asserts them.
. /out/test.env
mkdir -p /run/nbd-client /sys/kernel/debug
mount -t debugfs none /sys/kernel/debug
# The command as a user runs it. -Xint: compiling costs more than it saves under TCG.
mkdir -p /tmp/bin
cat > /tmp/bin/nbd <<EOI
#!/bin/sh
exec "$JAVA" -Xint -XX:-UsePerfData -Xshare:auto -Xmx192m -Dnbd.rundir=/run/nbd-client \
  -Dnbd.linux.attach=${ATTACH:-netlink} -cp "$CP" \
  org.nbdroot.client.Main "\$@"
EOI
chmod 755 /tmp/bin/nbd
export PATH=/tmp/bin:$PATH
failures=0
check() { # check NAME COMMAND...: runs the command, reports
  name=$1; shift
  if "$@"; then echo "CHECK $name ok"; else echo "CHECK $name FAILED (status $?)"; failures=$((failures + 1)); fi
}
t() { echo "TIME $1 $(cut -d' ' -f1 /proc/uptime)"; }
DD=/usr/bin/dd   # GNU dd: iflag/oflag=direct
MiB=1048576

t attach
if [ "$MODE" = data ]; then
  # An interpreted JVM under TCG on a busy host can take more than the default 10 s to handshake.
  check attach nbd --handshake-timeout 60 10.0.2.2 "$PORT" /dev/nbd0            # the daemon goes to the background
else
  nbd --handshake-timeout 60 -f 10.0.2.2 "$PORT" /dev/nbd0 > /tmp/daemon.out 2> /out/daemon.log &   # one JVM start less
  daemon=$!
  n=0
  while ! grep -q nbd0 /tmp/daemon.out 2>/dev/null && [ $n -lt 3000 ]; do sleep 0.1; n=$((n + 1)); done
  check attach grep -q nbd0 /tmp/daemon.out
fi
t attached
check kernel-size [ "$(cat /sys/block/nbd0/size)" = $((SIZE / 512)) ]
check kernel-timeout-none [ "$(cat /sys/kernel/debug/nbd/nbd0/timeout)" = 0 ]
grep -q NBD_FLAG_SEND_FLUSH /sys/kernel/debug/nbd/nbd0/flags && grep -q NBD_FLAG_SEND_TRIM /sys/kernel/debug/nbd/nbd0/flags
check kernel-flags [ $? = 0 ]
check list-devices sh -c "nbd list-devices | tee /tmp/list | grep -q \"^nbd0 nbd://10.0.2.2:$PORT.* size=$SIZE \""
cat /tmp/list

if [ "$MODE" = data ]; then
  # pattern.bin (4 MiB) O_DIRECT at 40 MiB, pattern2.bin (4 MiB) buffered at 48 MiB, both
  # read back O_DIRECT and, with the page cache dropped, buffered.
  check write-direct $DD if=/out/pattern.bin of=/dev/nbd0 bs=64k seek=$((40 * 16)) oflag=direct conv=notrunc status=none
  check write-buffered $DD if=/out/pattern2.bin of=/dev/nbd0 bs=1M seek=48 conv=notrunc,fsync status=none
  check read-direct sh -c "$DD if=/dev/nbd0 bs=64k skip=$((40 * 16)) count=64 iflag=direct status=none | cmp - /out/pattern.bin"
  echo 3 > /proc/sys/vm/drop_caches
  check read-buffered sh -c "$DD if=/dev/nbd0 bs=1M skip=48 count=4 status=none | cmp - /out/pattern2.bin"
  check read-many-in-flight sh -c "for i in 0 1 2 3; do $DD if=/dev/nbd0 bs=4k skip=\$((40 * 256 + i * 256)) count=256 iflag=direct status=none > /tmp/part\$i & done; wait; cat /tmp/part0 /tmp/part1 /tmp/part2 /tmp/part3 | cmp - /out/pattern.bin"
  t ext4
  # ext4 in the first 32 MiB: a file copied in, checked after a remount.
  check mkfs mkfs.ext4 -q -F -E nodiscard /dev/nbd0 32M
  mkdir -p /mnt
  check mount mount -t ext4 /dev/nbd0 /mnt
  check copy-in cp /out/pattern.bin /mnt/pattern.bin
  check destroy-refused-while-mounted sh -c '! nbd destroy /dev/nbd0 2>/tmp/refused'
  cat /tmp/refused
  check umount umount /mnt
  echo 3 > /proc/sys/vm/drop_caches
  check remount mount -t ext4 -o ro /dev/nbd0 /mnt
  check file-reads-back cmp /mnt/pattern.bin /out/pattern.bin
  umount /mnt
  # A buffered write left in the page cache: the graceful destroy must write it back.
  check write-unsynced $DD if=/out/pattern2.bin of=/dev/nbd0 bs=1M seek=56 conv=notrunc status=none
fi

if [ "$MODE" = reconnect ]; then
  # 16 MiB in 64 chunks of 256 KiB, O_DIRECT, each at its own offset. After 8 chunks the
  # guest says so (load-started) and waits until the host has killed nbdkit
  # (server-killed); the other 56 go to a daemon with no server until the host starts
  # nbdkit again 2 s later, with the export grown.
  i=0
  while [ $i -lt 64 ]; do
    if [ $i = 8 ]; then
      t load-start
      touch /out/load-started
      n=0
      while [ ! -e /out/server-killed ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
      check server-killed [ -e /out/server-killed ]
      t server-killed
    fi
    $DD if=/out/pattern.bin of=/dev/nbd0 bs=256k skip=$((i % 16)) seek=$i count=1 oflag=direct conv=notrunc status=none \
      || { echo "CHECK load-chunk-$i FAILED"; failures=$((failures + 1)); }
    i=$((i + 1))
  done
  echo "CHECK load-complete ok"
  t load-done
  cat /out/pattern.bin /out/pattern.bin /out/pattern.bin /out/pattern.bin > /tmp/expected
  check reads-back sh -c "$DD if=/dev/nbd0 bs=4M count=4 iflag=direct status=none | cmp - /tmp/expected"
  # The daemon follows the grown export (NBD_SET_SIZE on the running device).
  n=0
  while [ "$(cat /sys/block/nbd0/size)" != $((GROWN / 512)) ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n + 1)); done
  check device-grew [ "$(cat /sys/block/nbd0/size)" = $((GROWN / 512)) ]
  check write-past-old-end sh -c "$DD if=/out/pattern.bin of=/dev/nbd0 bs=1M seek=$((SIZE / MiB)) count=4 oflag=direct conv=notrunc status=none"
fi

# 16 MiB in 64 chunks of 256 KiB, O_DIRECT, each at its own offset, in the background;
# /tmp/load-at-8 appears once 8 are written, /tmp/load.failed names the chunks that failed.
load_in_background() {
  rm -f /tmp/load.failed /tmp/load-at-8 /tmp/load.done
  ( i=0
    while [ $i -lt 64 ]; do
      [ $i = 8 ] && touch /tmp/load-at-8
      $DD if=/out/pattern.bin of=/dev/nbd0 bs=256k skip=$((i % 16)) seek=$i count=1 oflag=direct conv=notrunc status=none \
        || echo "chunk $i" >> /tmp/load.failed
      i=$((i + 1))
    done
    touch /tmp/load.done ) &
  load=$!
  n=0
  while [ ! -e /tmp/load-at-8 ] && [ $n -lt 1200 ]; do sleep 0.1; n=$((n + 1)); done
}
load_completed() { # waits for the background load; ok when every chunk was written
  wait $load
  [ -e /tmp/load.done ] && [ ! -e /tmp/load.failed ] || { cat /tmp/load.failed 2>/dev/null; return 1; }
}
reads_back() {
  cat /out/pattern.bin /out/pattern.bin /out/pattern.bin /out/pattern.bin > /tmp/expected
  echo 3 > /proc/sys/vm/drop_caches
  $DD if=/dev/nbd0 bs=4M count=4 iflag=direct status=none | cmp - /tmp/expected
}
stopped() { grep -q '^State:.*T' /proc/$1/status; }

if [ "$MODE" = stop ]; then
  # What systemd's shutdown does to every process (broadcast_signal: SIGSTOP, the signal,
  # SIGCONT): here only the stop and the continue, in the middle of the load.
  load_in_background
  t stop
  kill -STOP "$daemon"
  sleep 0.5
  check daemon-stopped stopped "$daemon"
  sleep 3
  check load-waits-while-stopped [ ! -e /tmp/load.done ]
  kill -CONT "$daemon"
  t continued
  check load-complete load_completed
  t load-done
  check reads-back reads_back
  check device-still-connected [ -e /sys/block/nbd0/pid ]
fi

if [ "$MODE" = rescue ]; then
  load_in_background
  t kill
  kill -9 "$daemon"
  wait "$daemon" 2>/dev/null
  check daemon-killed sh -c "! kill -0 $daemon 2>/dev/null"
  check device-waits [ -e /sys/block/nbd0/pid ]
  sleep 2
  check load-waits-for-rescue [ ! -e /tmp/load.done ]
  nbd rescue --handshake-timeout 60 -f 10.0.2.2 "$PORT" /dev/nbd0 > /tmp/rescue.out 2> /out/rescue.log &
  n=0
  while ! grep -q nbd0 /tmp/rescue.out 2>/dev/null && [ $n -lt 1200 ]; do sleep 0.1; n=$((n + 1)); done
  check rescued grep -q nbd0 /tmp/rescue.out
  t rescued
  check load-complete load_completed
  t load-done
  check reads-back reads_back
  # A second rescue while the new daemon serves: the kernel's connection is alive, refused.
  check rescue-of-a-live-device-refused sh -c '! nbd rescue -f 10.0.2.2 '"$PORT"' /dev/nbd0 > /dev/null 2> /tmp/refused'
  cat /tmp/refused
  grep -q "connection is alive" /tmp/refused
  check rescue-refusal-says-why [ $? = 0 ]
fi

t destroy
check destroy nbd destroy /dev/nbd0
n=0
while [ -e /sys/block/nbd0/pid ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n + 1)); done
check device-stopped [ ! -e /sys/block/nbd0/pid ]
daemon_alive() { pgrep -f "org.nbdroot.client.Main.* 10.0.2.2 $PORT" >/dev/null; }
n=0
while daemon_alive && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
if daemon_alive; then echo "CHECK daemon-exited FAILED"; failures=$((failures + 1)); else echo "CHECK daemon-exited ok"; fi
cp /run/nbd-client/nbd0.log /out/daemon.log 2>/dev/null
t done
echo "GUEST-FAILURES $failures"
exit $failures
