#!/usr/bin/env python3
"""Start-up of runtime-image variants, interleaved round-robin (fair under a changing load).

usage: image-startup.py URI VARIANTS_FILE [what ...]
  VARIANTS_FILE: one variant a line, "name<TAB>command" (the command that runs nbd-client,
  e.g. "img/bin/nbd-client" or "img/bin/java -Xshare:off ... -m org.nbdroot.client/...Main").
  what: "version" (--version), "info" (info URI), "ready" (-f URI against the GEOM Gate
  emulator until the device name is printed, then destroy), "daemon" (the same without -f:
  the daemon starts itself again in the background). Default: all four.
Environment: R rounds (20), GG "LIBC SOCKET" of a running ggate-emu kernel for "ready" and
"daemon", RUNDIR the daemons' run directory (/dev/shm/nbd-run).
Prints wall-clock median and min, and the CPU time (user+sys) median, per variant."""
import os, shlex, statistics, subprocess, sys, time

uri, vfile = sys.argv[1], sys.argv[2]
whats = sys.argv[3:] or ["version", "info", "ready", "daemon"]
R = int(os.environ.get("R", "20"))
variants = [l.rstrip("\n").split("\t", 1) for l in open(vfile) if l.strip() and not l.startswith("#")]
gg = os.environ.get("GG", "").split()
env = dict(os.environ)
if gg:
    rundir = os.environ.get("RUNDIR", "/dev/shm/nbd-run")
    env["JAVA_OPTS"] = (f"-Dnbd.ggate.libc={gg[0]} -Dnbd.ggate.ctl={gg[1]} -Dnbd.rundir={rundir} "
                        + env.get("JAVA_OPTS", "")).strip()


def cpu_of(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def once(cmd, what):
    argv = shlex.split(cmd)
    if argv[0].endswith("/java"):  # the launcher reads JAVA_OPTS; a bare java gets it here
        argv[1:1] = shlex.split(env.get("JAVA_OPTS", ""))
    if what in ("ready", "daemon"):
        t0 = time.perf_counter()
        p = subprocess.Popen(argv + (["-f"] if what == "ready" else []) + [uri], stdout=subprocess.PIPE,
                             stderr=None if os.environ.get("DEBUG") else subprocess.DEVNULL, env=env, text=True)
        line = p.stdout.readline().strip()
        t = (time.perf_counter() - t0) * 1000
        cpu = cpu_of(p.pid)  # daemon: the parent's only
        assert line.startswith("ggate"), (cmd, line)
        p.wait(timeout=30) if what == "daemon" else None
        subprocess.run(argv + ["destroy", line], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        p.wait(timeout=30)
        time.sleep(0.2 if what == "daemon" else 0)  # the background daemon's exit
        return t, cpu
    argv += ["--version"] if what == "version" else ["info", uri]
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    t = (time.perf_counter() - t0) * 1000
    assert status == 0, (argv, status)
    return t, (ru.ru_utime + ru.ru_stime) * 1000


for what in whats:
    res = {name: ([], []) for name, _ in variants}
    for i in range(R + 2):
        for name, cmd in variants:
            t, cpu = once(cmd, what)
            if i >= 2:  # two warm-up rounds
                res[name][0].append(t)
                res[name][1].append(cpu)
    print(f"== {what} (R={R}, load {open('/proc/loadavg').read().split()[0]})", flush=True)
    for name, (w, c) in res.items():
        print(f"  {name:50s} wall median {statistics.median(w):5.0f} ms, min {min(w):5.0f} ms | "
              f"cpu median {statistics.median(c):5.0f} ms", flush=True)
