#!/bin/bash
# The GEOM Gate path against the engine alone, on Linux through the ggate-kernel emulator.
#
#   ggate:  ggate-kernel's in-kernel load generator (RUN_LOAD: the bios GEOM consumers would
#           send) -> libggate-emu.so -> the daemon's workers (START, NBD request, DONE) -> nbdkit
#   engine: nbd-client bench -> nbdkit (the same nbdkit, export and block size/depth)
#
# Both get the same ramp before measuring (the bench's JVM compiles its hot code in the first
# second or two; the daemon runs for days, but its first round gets the ramp too). Runs
# alternate (ggate, engine, ggate, engine, ...) so a noisy machine hurts both alike; each
# figure is the median of the rounds. Under each row: every round's figure, and where the CPU
# went per I/O (microseconds of CPU time per completed I/O, over the measured window, from
# /proc): one column per process on each path, and "machine" for every CPU of the host (which
# also counts softirq work and anything else running).
#
# --null adds a third column: the same load against a "null daemon" (ggate-load serve: START,
# memcpy, DONE through the same libggate-emu.so, no NBD at all), which is what the emulator
# and the library cost on their own: a ceiling for the ggate column on this machine.
#
# Usage: bench/ggate-compare.sh [--rounds N] [--runtime SECONDS] [--ramp SECONDS] [--size SIZE]
#                               [--rows LIST] [--workers N] [--null]
#   LIST: comma-separated from randread4k (4 KiB random reads, 32 outstanding) and
#         read1m (1 MiB sequential reads, 8 outstanding); default both
#   --workers: the daemon's START threads (default: the daemon's own); the null daemon always
#         has 32 workers (each serves its request synchronously: one per request outstanding)
# Needs: a built image (mvn -q -DskipTests package), nbdkit, gcc, make, python3.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
client="$here/nbd-client/target/image/bin/nbd-client"
emu_src="$here/nbd-client/src/test/c/ggate-emu"
rounds=3 runtime=10 ramp=2 size=1G rows=randread4k,read1m workers= null=0
fail() { echo "ggate-compare.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --runtime) runtime=$2; shift 2 ;;
    --ramp) ramp=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --null) null=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "ggate-compare.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
for n in "$rounds" "$runtime" ${workers:+"$workers"}; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "ggate-compare.sh: '$n' is not a positive whole number" >&2; exit 2; }
done
[[ "$ramp" =~ ^[0-9]+$ ]] || { echo "ggate-compare.sh: --ramp takes whole seconds, not '$ramp'" >&2; exit 2; }
IFS=, read -ra wanted <<< "$rows"
for row in "${wanted[@]}"; do
  case "$row" in
    randread4k|read1m) ;;
    *) echo "ggate-compare.sh: unknown row '$row' (randread4k, read1m)" >&2; exit 2 ;;
  esac
done
for tool in nbdkit gcc make python3; do
  command -v "$tool" >/dev/null || fail "$tool is missing (apt-get install $tool)"
done
[ -x "$client" ] || fail "build first: mvn -q -DskipTests package ($client is missing)"
[ -f "$emu_src/ggate-kernel.c" ] && [ -f "$emu_src/ggate-load.c" ] || fail "no emulator sources in $emu_src"
[ -r /proc/self/stat ] || fail "/proc is needed (Linux only)"

work=$(mktemp -d /tmp/ggate-compare.XXXXXX)   # short: the kernel's socket path must fit sun_path
nbdkit_pid= kernel_pid= daemon_pid= null_pid= job_pid= daemon_opts=
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
cleanup() {
  local status=$? i
  set +e
  trap - INT TERM
  alive "$job_pid" && kill "$job_pid"        # a measurement under way (it kills its load)
  if alive "$daemon_pid"; then
    # As an operator would: the daemon destroys its unit and exits.
    JAVA_OPTS="$daemon_opts" timeout 30 "$client" destroy -f ggate0 >/dev/null 2>&1 3>&-
    for i in $(seq 100); do alive "$daemon_pid" || break; sleep 0.1; done
    alive "$daemon_pid" && kill "$daemon_pid"
  fi
  alive "$null_pid" && kill "$null_pid"
  exec 3>&-                                  # EOF on the kernel's stdin stops it
  alive "$kernel_pid" && kill "$kernel_pid"
  alive "$nbdkit_pid" && kill "$nbdkit_pid"
  wait 2>/dev/null
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Prints the last lines of a log and fails.
fail_log() { # log message
  echo "ggate-compare.sh: $2; the end of $(basename "$1"):" >&2
  tail -n 20 "$1" >&2
  exit 1
}

# The emulator (kernel, library) and the load generator's CLI, built into the temp dir.
make -C "$emu_src" O="$work/emu" all >"$work/make.log" 2>&1 || fail_log "$work/make.log" "building the emulator failed"
(cd "$emu_src" && gcc -O2 -o "$work/ggate-load" ggate-load.c emu_wire.c) >"$work/gcc.log" 2>&1 ||
  fail_log "$work/gcc.log" "building ggate-load failed"
lib="$work/emu/libggate-emu.so" sock="$work/ggctl.sock"

# A backing file of real data (not a sparse hole), served by nbdkit's file plugin over TCP.
head -c "$size" /dev/urandom > "$work/disk.img"
bytes=$(stat -c %s "$work/disk.img")
[ "$bytes" -ge $((1 << 20)) ] || fail "--size $size: at least 1M, please"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
nbdkit --foreground --exit-with-parent -i 127.0.0.1 -p "$port" -P "$work/nbdkit.pid" file "$work/disk.img" \
  >"$work/nbdkit.log" 2>&1 3>&- &
nbdkit_pid=$!
for _ in $(seq 100); do [ -s "$work/nbdkit.pid" ] && break; alive "$nbdkit_pid" || break; sleep 0.05; done
[ -s "$work/nbdkit.pid" ] || fail_log "$work/nbdkit.log" "nbdkit did not start"
uri="nbd://127.0.0.1:$port/"

# The kernel, with a pipe on its stdin that only this script holds (fd 3; every other child
# gets 3>&-): if the script dies, even by SIGKILL, the kernel sees EOF and exits, and the
# daemon's ioctls then fail with ENXIO, which stops it too.
mkfifo "$work/kernel.in"
"$work/emu/ggate-kernel" "$sock" <"$work/kernel.in" >"$work/kernel.out" 2>"$work/kernel.log" &
kernel_pid=$!
exec 3>"$work/kernel.in"
for _ in $(seq 100); do grep -q '^ready' "$work/kernel.out" 2>/dev/null && break; alive "$kernel_pid" || break; sleep 0.05; done
grep -q '^ready' "$work/kernel.out" || fail_log "$work/kernel.log" "ggate-kernel did not start"

# The daemon, in the foreground (-f) as a child of this script.
mkdir -p "$work/run"
daemon_opts="${JAVA_OPTS:-} -Dnbd.ggate.libc=$lib -Dnbd.ggate.ctl=$sock -Dnbd.rundir=$work/run"
JAVA_OPTS="$daemon_opts" "$client" -f ${workers:+--workers "$workers"} "$uri" ggate0 >"$work/daemon.out" 2>"$work/daemon.log" 3>&- &
daemon_pid=$!
for _ in $(seq 300); do grep -qx ggate0 "$work/daemon.out" && break; alive "$daemon_pid" || break; sleep 0.1; done
grep -qx ggate0 "$work/daemon.out" || fail_log "$work/daemon.log" "the daemon did not serve ggate0"

if [ "$null" = 1 ]; then
  "$work/ggate-load" serve -w 32 "$lib" "$sock" 1 "$bytes" >"$work/null.out" 2>"$work/null.log" 3>&- &
  null_pid=$!
  for _ in $(seq 100); do grep -qx ggate1 "$work/null.out" && break; alive "$null_pid" || break; sleep 0.05; done
  grep -qx ggate1 "$work/null.out" || fail_log "$work/null.log" "the null daemon did not serve ggate1"
fi

# Runs a load command that prints JSON with iops and bytes_per_second, sampling the CPU time
# of the command itself and of the named processes every 50 ms. Prints one line:
#   IOPS BYTES_PER_SECOND CPU_US_PER_IO(command) CPU_US_PER_IO(each pid...) CPU_US_PER_IO(machine)
# The CPU window is the last RUNTIME-1 seconds before the command's end (less 0.3 s): inside
# the measured part of either tool, whatever ramp or JVM start came before it.
cat >"$work/measure.py" <<'PY'
import json, os, signal, subprocess, sys, time
runtime = float(sys.argv[1]); pids = [int(p) for p in sys.argv[2].split(",") if p]
out_path = sys.argv[3]; cmd = sys.argv[4:]
tck = os.sysconf("SC_CLK_TCK")

def ticks(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])   # utime + stime, every thread
    except (OSError, IndexError, ValueError):
        return None

def machine():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v[:8]) - v[3] - v[4]                # busy: all but idle and iowait

child = None
def stop(signum, frame):
    if child is not None and child.poll() is None:
        child.kill()
    sys.exit(128 + signum)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
with open(out_path, "wb") as out:
    child = subprocess.Popen(cmd, stdout=out)
    parent = os.getppid()
    samples = []
    while True:
        t = time.monotonic()
        row = [ticks(child.pid)] + [ticks(p) for p in pids] + [machine()]
        if child.poll() is not None or row[0] is None:
            break
        if os.getppid() != parent:                 # the script was killed outright
            stop(signal.SIGTERM, None)
        samples.append((t, row))
        time.sleep(0.05)
    child.wait()
text = open(out_path).read()
try:
    r = json.loads(text)
except ValueError:
    sys.exit("%s printed no JSON (exit status %d): %s" % (os.path.basename(cmd[0]), child.returncode, text[:200]))
if r.get("errors") or r.get("abandoned"):
    sys.exit("%s: %s errors, %s bios abandoned" % (os.path.basename(cmd[0]), r.get("errors"), r.get("abandoned", 0)))
if child.returncode != 0:
    sys.exit("%s failed with exit status %d" % (os.path.basename(cmd[0]), child.returncode))
# The window: the samples closest to [end - 0.3 - w, end - 0.3].
w = max(1.0, runtime - 1.0)
end_t = samples[-1][0] - 0.3 if samples else 0
def at(t):
    return min(samples, key=lambda s: abs(s[0] - t))
cpu = ["nan"] * (len(pids) + 2)
a = b = (0, None)
if samples:
    a, b = at(end_t - w), at(end_t)
if b[0] - a[0] > 0.5 and r["iops"] > 0:
    ios = r["iops"] * (b[0] - a[0])
    cpu = []
    for x, y in zip(a[1], b[1]):
        cpu.append("nan" if x is None or y is None else "%.2f" % ((y - x) / tck * 1e6 / ios))
print(r["iops"], r["bytes_per_second"], *cpu)
PY

median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
# Medians of the columns of a file of numbers ("nan" where unknown).
medians() { python3 - "$1" <<'PY'
import math, statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
out = []
for col in zip(*rows):
    v = [float(x) for x in col if x != "nan" and not math.isnan(float(x))]
    out.append("%.1f" % statistics.median(v) if v else "?")
print(*out)
PY
}

# One run of each kind; each prints "IOPS BYTES_PER_SECOND CPU..." as measure.py does. Only
# ever called through `measure`, in a background subshell that they replace (exec), so that
# the pid `measure` keeps is measure.py's own.
run_ggate() { # unit cmd depth bs random|seq pids
  exec python3 "$work/measure.py" "$runtime" "$6" "$work/load.json" \
    "$work/ggate-load" -r "$ramp" "$sock" "$1" "$2" "$3" "$4" "$runtime" "$5" 3>&-
}
run_engine() { # rw bs depth
  exec python3 "$work/measure.py" "$runtime" "$nbdkit_pid" "$work/bench.json" \
    "$client" bench "$uri" --rw "$1" --bs "$2" --iodepth "$3" --runtime "$runtime" --ramp "$ramp" --size "$size" --json 3>&-
}
# Runs one measurement into $work/line, in the background, and waits for it: a signal to this
# script is then acted on at once (bash runs a trap only once the foreground command is done,
# but a `wait` is cut short).
measure() { # run_ggate|run_engine args...
  "$@" >"$work/line" 3>&- &
  job_pid=$!
  wait "$job_pid" || { job_pid=; return 1; }
  job_pid=
}
value() { # metric iops bps
  if [ "$1" = iops ]; then echo "$2"; else python3 -c "print($3/1e6)"; fi
}

echo "ggate path: RUN_LOAD -> ggate-kernel -> libggate-emu.so -> daemon (--workers ${workers:-default}) -> nbdkit; engine: nbd-client bench -> nbdkit"
echo "$rounds rounds of ${runtime} s after a ${ramp} s ramp; $(nproc) CPUs; figures are medians"
if [ "$null" = 1 ]; then
  printf '%-12s %-6s %12s %12s %12s %12s\n' row metric ggate engine ggate/engine null-daemon
else
  printf '%-12s %-6s %12s %12s %12s\n' row metric ggate engine ggate/engine
fi
verdicts=()
for row in "${wanted[@]}"; do
  case "$row" in
    randread4k) rw=randread bs=4k depth=32 order=random metric=iops ;;
    read1m) rw=read bs=1M depth=8 order=seq metric=MB/s ;;
  esac
  g_values=() e_values=() n_values=()
  : >"$work/g.cpu"; : >"$work/e.cpu"; : >"$work/n.cpu"
  for _ in $(seq "$rounds"); do
    measure run_ggate 0 read "$depth" "$bs" "$order" "$kernel_pid,$daemon_pid,$nbdkit_pid" || exit 1
    read -r iops bps cpu <"$work/line"; echo "$cpu" >>"$work/g.cpu"
    g_values+=("$(value "$metric" "$iops" "$bps")")
    alive "$daemon_pid" || fail_log "$work/daemon.log" "the daemon died"
    measure run_engine "$rw" "$bs" "$depth" || exit 1
    read -r iops bps cpu <"$work/line"; echo "$cpu" >>"$work/e.cpu"
    e_values+=("$(value "$metric" "$iops" "$bps")")
    if [ "$null" = 1 ]; then
      measure run_ggate 1 read "$depth" "$bs" "$order" "$kernel_pid,$null_pid" || exit 1
      read -r iops bps cpu <"$work/line"; echo "$cpu" >>"$work/n.cpu"
      n_values+=("$(value "$metric" "$iops" "$bps")")
    fi
  done
  g=$(median "${g_values[@]}"); e=$(median "${e_values[@]}")
  ratio=$(python3 -c "print('%.2f' % ($g/$e))")
  if [ "$null" = 1 ]; then
    n=$(median "${n_values[@]}")
    printf '%-12s %-6s %12.0f %12.0f %12s %12.0f\n' "$row" "$metric" "$g" "$e" "$ratio" "$n"
    echo "  rounds: ggate ${g_values[*]} | engine ${e_values[*]} | null ${n_values[*]}" | sed 's/\([0-9]*\)\.[0-9]*/\1/g'
  else
    printf '%-12s %-6s %12.0f %12.0f %12s\n' "$row" "$metric" "$g" "$e" "$ratio"
    echo "  rounds: ggate ${g_values[*]} | engine ${e_values[*]}" | sed 's/\([0-9]*\)\.[0-9]*/\1/g'
  fi
  read -r _ ck cd cn cm <<< "$(medians "$work/g.cpu")"
  echo "  cpu us/io ggate:  kernel $ck  daemon $cd  nbdkit $cn  (machine $cm)"
  read -r cb cn cm <<< "$(medians "$work/e.cpu")"
  echo "  cpu us/io engine: bench $cb  nbdkit $cn  (machine $cm)"
  if [ "$null" = 1 ]; then
    read -r _ ck cs cm <<< "$(medians "$work/n.cpu")"
    echo "  cpu us/io null:   kernel $ck  null-daemon $cs  (machine $cm)"
  fi
  verdicts+=("$row $ratio")
done
for v in "${verdicts[@]}"; do
  read -r row ratio <<< "$v"
  python3 -c "import sys; sys.exit(0 if $ratio >= 0.9 else 1)" && word=met || word=MISSED
  echo "target ggate/engine >= 0.90 for $row: $word ($ratio)"
done
