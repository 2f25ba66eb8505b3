#!/usr/bin/env python3
"""Time from exec to the device name on stdout ('device ready'), N runs; destroys the device between runs."""
import os, statistics, subprocess, sys, time
n = int(sys.argv[1]); mode = sys.argv[2]; launcher = sys.argv[3]; extra = sys.argv[4] if len(sys.argv) > 4 else ""
gg = ("-Dnbd.ggate.libc=/tmp/jlink-lab/ggate-emu/libggate-emu.so -Dnbd.ggate.ctl=/tmp/jlink-lab/gg.sock "
      "-Dnbd.rundir=/dev/shm/nbd-run")
env = dict(os.environ, JAVA_OPTS=(gg + " " + extra).strip())
times = []
cpus = []
for i in range(n):
    args = [launcher] + (["-f"] if mode == "foreground" else []) + ["nbd://127.0.0.1:10809/"]
    t0 = time.perf_counter()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    line = p.stdout.readline().strip()
    t1 = time.perf_counter()
    if mode == "foreground":  # CPU time (all threads) the JVM used until it printed the device
        f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
        cpus.append((int(f[11]) + int(f[12])) * 1000 / os.sysconf("SC_CLK_TCK"))
    if mode == "daemon":
        p.wait()
    assert line.startswith("ggate"), line
    for attempt in range(5):
        if subprocess.run([launcher, "destroy", line], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
            break
        time.sleep(1)
    if mode == "foreground":
        p.wait()
    times.append((t1 - t0) * 1000)
times.sort()
print(f"{mode:10s} {extra or '(none)':45s} n={n} median={statistics.median(times):.0f} ms min={times[0]:.0f} ms max={times[-1]:.0f} ms" + (f" cpu-until-ready median={statistics.median(cpus):.0f} ms" if cpus else ""))
