#!/usr/bin/env python3
"""Start-up, variants interleaved round-robin (fair under a changing machine load).
Wall time and CPU time (user+sys of the JVM, from wait4) per run; prints median and min."""
import os, statistics, subprocess, sys, time
R = int(os.environ.get("R", "20"))
U = "nbd://127.0.0.1:10809/"
JF = "-XX:-UsePerfData -Djffi.boot.library.path=/tmp/jlink-lab/image/lib"
M = "-m org.nbdroot.client/org.nbdroot.client.Main"
base = {
  "A classpath jars, system JDK 17 (default CDS)": "java -cp /tmp/jlink-lab/lib.hidden/* org.nbdroot.client.Main",
  "B image, no CDS": f"/tmp/jlink-lab/image-nocds/bin/java {JF} {M}",
  "C image + AppCDS (lib/server/classes.jsa)": f"/tmp/jlink-lab/image/bin/java {JF} {M}",
  "D C + -XX:TieredStopAtLevel=1": f"/tmp/jlink-lab/image/bin/java {JF} -XX:TieredStopAtLevel=1 {M}",
  "E C + -XX:+UseSerialGC": f"/tmp/jlink-lab/image/bin/java {JF} -XX:+UseSerialGC {M}",
  "F C + ArchiveRelocationMode=0": f"/tmp/jlink-lab/image/bin/java {JF} -XX:+UnlockDiagnosticVMOptions -XX:ArchiveRelocationMode=0 {M}",
  "G image + jlink --generate-cds-archive (JDK classes only)": f"/tmp/jlink-lab/img-cds/bin/java {JF} {M}",
  "H G + dynamic archive of the app (-XX:SharedArchiveFile)": f"/tmp/jlink-lab/img-cds/bin/java {JF} -XX:SharedArchiveFile=/tmp/jlink-lab/img-cds/lib/app-dyn.jsa {M}",
}
only = os.environ.get("ONLY")
if only: base = {k: v for k, v in base.items() if k[0] in only}
for what in sys.argv[1:] or ["--version", f"info {U}"]:
    res = {k: ([], []) for k in base}
    for i in range(R + 2):
        for k, cmd in base.items():
            argv = (cmd + " " + what).split()
            t0 = time.perf_counter()
            p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _, status, ru = os.wait4(p.pid, 0)
            t = (time.perf_counter() - t0) * 1000
            assert status == 0, (argv, status)
            if i >= 2:  # two warm-up rounds
                res[k][0].append(t); res[k][1].append((ru.ru_utime + ru.ru_stime) * 1000)
    print(f"== {what}  (R={R}, load {open('/proc/loadavg').read().split()[0]})")
    for k, (w, c) in res.items():
        print(f"  {k:48s} wall median {statistics.median(w):5.0f} ms, min {min(w):5.0f} ms | cpu median {statistics.median(c):5.0f} ms")
