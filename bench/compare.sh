#!/bin/bash
# Runs `nbd-client bench` and fio's nbd engine side by side against one nbdkit on loopback
# and prints ours/fio for each row. Both get the same ramp time before measuring
# (the JVM compiles its hot code in the first second or two; a daemon runs for days). Runs alternate (fio, ours, fio, ours, ...) so a noisy
# machine hurts both alike; each figure is the median of the rounds. Under each row: every
# round's figure, then each side's peak resident memory and CPU time per I/O (user and
# system over the whole process: the JVM's start-up and both sides' ramp included).
#
# Usage: bench/compare.sh [--rounds N] [--runtime SECONDS] [--ramp SECONDS] [--size SIZE] [--rows LIST]
#   LIST: comma-separated from randread4k,read1m,randwrite4k,randwrite4k-journal (default: all four)
#   BENCH_ARGS in the environment: more options for nbd-client bench (--replay-limit 0)
# Needs: a built image (mvn -DskipTests package), nbdkit, fio, python3.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
client="$here/nbd-client/target/image/bin/nbd-client"
rounds=3 runtime=10 ramp=2 size=1G rows=randread4k,read1m,randwrite4k,randwrite4k-journal
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --runtime) runtime=$2; shift 2 ;;
    --ramp) ramp=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    *) echo "compare.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
for tool in nbdkit fio python3; do
  command -v "$tool" >/dev/null || { echo "compare.sh: $tool is missing (apt-get install $tool)" >&2; exit 1; }
done
[ -x "$client" ] || { echo "compare.sh: build first: mvn -q -DskipTests package" >&2; exit 1; }

work=$(mktemp -d)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# A backing file of real data (not a sparse hole), served by nbdkit's file plugin over TCP.
head -c "$size" /dev/urandom > "$work/disk.img"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
nbdkit --foreground --exit-with-parent -i 127.0.0.1 -p "$port" -P "$work/pid" file "$work/disk.img" &
server_pid=$!
for _ in $(seq 100); do [ -s "$work/pid" ] && break; sleep 0.05; done
uri="nbd://127.0.0.1:$port/"

# Every run starts from a backing file with nothing dirty in the page cache. Without this,
# the first FLUSH of a run (nbd-client's write journal sends them) would also write back what
# `head` or the previous fio run left dirty: fio never flushes, so one side would pay for both.
settle() { sync "$work/disk.img"; }

# Prints "IOPS BYTES_PER_SECOND", then "PEAK_RSS_KIB CPU_SECONDS", of one fio run.
run_fio() { # rw bs iodepth
  settle
  measured fio --name=bench --ioengine=nbd --uri="$uri" --rw="$1" --bs="$2" --iodepth="$3" \
      --runtime="$runtime" --ramp_time="$ramp" --time_based --size="$size" --output-format=json --output="$work/fio.json" >/dev/null
  python3 - "$work/fio.json" "$1" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
side = job["write" if "write" in sys.argv[2] else "read"]
print(side["iops"], side["bw_bytes"])
PY
  cat "$work/usage"
}

# Prints "IOPS BYTES_PER_SECOND", then "PEAK_RSS_KIB CPU_SECONDS", of one nbd-client bench run.
run_ours() { # rw bs iodepth [more options]
  settle
  # shellcheck disable=SC2086 # BENCH_ARGS is a list of options
  measured "$client" bench "$uri" --rw "$1" --bs "$2" --iodepth "$3" --runtime "$runtime" --ramp "$ramp" --size "$size" --json \
      "${@:4}" ${BENCH_ARGS:-} > "$work/ours.json"
  python3 - "$work/ours.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
if r["errors"]:
    sys.exit("nbd-client bench reported %d errors" % r["errors"])
print(r["iops"], r["bytes_per_second"])
PY
  cat "$work/usage"
}

# Runs a command and leaves "PEAK_RSS_KIB CPU_SECONDS" (user + system, over the whole life of
# the process and its children: start-up and ramp included) in $work/usage.
measured() {
  python3 -c '
import resource, subprocess, sys
status = subprocess.call(sys.argv[2:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write("%d %.3f\n" % (r.ru_maxrss, r.ru_utime + r.ru_stime))
sys.exit(status)' "$work/usage" "$@"
}

# Microseconds of CPU per I/O over a whole run: CPU_SECONDS over IOPS x (ramp + runtime).
cpu_per_io() { python3 -c "print($1 * 1e6 / ($2 * ($ramp + $runtime)))"; }

median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
median_mib() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]) / 1024)' "$@"; }

printf '%-20s %-10s %14s %14s %8s\n' row metric fio nbd-client ours/fio
IFS=, read -ra wanted <<< "$rows"
for row in "${wanted[@]}"; do
  extra=
  case "$row" in
    randread4k) rw=randread bs=4k depth=32 metric=iops ;;
    read1m) rw=read bs=1M depth=8 metric=MB/s ;;
    # fio keeps no copy of unflushed writes, so the like-for-like row runs without the
    # replay journal; the next row shows what the journal's own FLUSHes cost (see README).
    randwrite4k) rw=randwrite bs=4k depth=32 metric=iops extra=--replay-limit=0 ;;
    randwrite4k-journal) rw=randwrite bs=4k depth=32 metric=iops ;;
    *) echo "compare.sh: unknown row '$row'" >&2; exit 2 ;;
  esac
  fio_values=() our_values=() fio_rss=() our_rss=() fio_cpu=() our_cpu=()
  for _ in $(seq "$rounds"); do
    { read -r iops bps; read -r rss cpu; } < <(run_fio "$rw" "$bs" "$depth")
    fio_values+=("$([ "$metric" = iops ] && echo "$iops" || python3 -c "print($bps/1e6)")")
    fio_rss+=("$rss") fio_cpu+=("$(cpu_per_io "$cpu" "$iops")")
    # shellcheck disable=SC2086 # extra is empty or one option
    case " ${BENCH_ARGS:-} " in *" --replay-limit"*) extra= ;; esac # picocli takes an option once
    { read -r iops bps; read -r rss cpu; } < <(run_ours "$rw" "$bs" "$depth" $extra)
    our_values+=("$([ "$metric" = iops ] && echo "$iops" || python3 -c "print($bps/1e6)")")
    our_rss+=("$rss") our_cpu+=("$(cpu_per_io "$cpu" "$iops")")
  done
  f=$(median "${fio_values[@]}"); o=$(median "${our_values[@]}")
  printf '%-20s %-10s %14.0f %14.0f %8.2f\n' "$row" "$metric" "$f" "$o" "$(python3 -c "print($o/$f)")"
  echo "  rounds: fio ${fio_values[*]} | nbd-client ${our_values[*]}" | sed 's/\([0-9]*\)\.[0-9]*/\1/g'
  fm=$(median_mib "${fio_rss[@]}") om=$(median_mib "${our_rss[@]}") fc=$(median "${fio_cpu[@]}") oc=$(median "${our_cpu[@]}")
  printf '  peak RSS: fio %.0f MiB | nbd-client %.0f MiB (%.1fx);  CPU per I/O: fio %.1f us | nbd-client %.1f us (%.2fx)\n' \
      "$fm" "$om" "$(python3 -c "print($om/$fm)")" "$fc" "$oc" "$(python3 -c "print($oc/$fc)")"
  case "$row: ${BENCH_ARGS:-} " in
    *" --replay-limit"*) ;;
    randwrite4k-journal:*) echo "  not like for like: our journal FLUSHes every 32 MiB (the server's fdatasync); fio never flushes" ;;
  esac
done
