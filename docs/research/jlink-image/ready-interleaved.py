#!/usr/bin/env python3
"""Start to 'device ready' (the daemon prints the GEOM Gate unit once serving, against the
ggate emulator and nbdkit on loopback), launchers interleaved. foreground: one JVM, -f;
daemon: the default, a parent JVM starts the -f child and exits once the child printed."""
import os, statistics, subprocess, sys, time
R = int(os.environ.get("R", "12"))
gg = ("-Dnbd.ggate.libc=/tmp/jlink-lab/ggate-emu/libggate-emu.so -Dnbd.ggate.ctl=/tmp/jlink-lab/gg.sock "
      "-Dnbd.rundir=/dev/shm/nbd-run")
L = {"A classpath jars (current launcher)": "/tmp/jlink-lab/cp-launcher",
     "B image, no CDS": "/tmp/jlink-lab/image-nocds/bin/nbd-client",
     "C image + AppCDS": "/tmp/jlink-lab/image/bin/nbd-client"}
env = dict(os.environ, JAVA_OPTS=gg)
for mode in sys.argv[1:] or ["foreground", "daemon"]:
    res = {k: ([], []) for k in L}
    for i in range(R + 1):
        for k, launcher in L.items():
            args = [launcher] + (["-f"] if mode == "foreground" else []) + ["nbd://127.0.0.1:10809/"]
            t0 = time.perf_counter()
            p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
            line = p.stdout.readline().strip()
            t = (time.perf_counter() - t0) * 1000
            cpu = None
            if mode == "foreground":
                f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
                cpu = (int(f[11]) + int(f[12])) * 1000 / os.sysconf("SC_CLK_TCK")
            else:
                p.wait()
            assert line.startswith("ggate"), (k, line)
            for _ in range(5):
                if subprocess.run([launcher, "destroy", line], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL).returncode == 0:
                    break
                time.sleep(1)
            if mode == "foreground":
                p.wait()
            else:
                time.sleep(0.3)
            if i >= 1:
                res[k][0].append(t)
                if cpu is not None: res[k][1].append(cpu)
    print(f"== device ready, {mode} (R={R}, load {open('/proc/loadavg').read().split()[0]})")
    for k, (w, c) in res.items():
        extra = f" | cpu until ready median {statistics.median(c):5.0f} ms" if c else ""
        print(f"  {k:38s} wall median {statistics.median(w):5.0f} ms, min {min(w):5.0f} ms{extra}")
