#!/bin/bash
# Start-up of --version and of info against nbdkit on 127.0.0.1:10809, per variant.
cd /tmp/jlink-lab
U=nbd://127.0.0.1:10809/
R=${R:-30}
JF="-XX:-UsePerfData -Djffi.boot.library.path=/tmp/jlink-lab/image/lib"
M="-m org.nbdroot.client/org.nbdroot.client.Main"
declare -a names cmds
add() { names+=("$1"); cmds+=("$2"); }
for what in "--version" "info $U"; do
  add "classpath, system JDK 17 (+its default CDS) :: $what" "java -cp /tmp/jlink-lab/lib.hidden/* org.nbdroot.client.Main $what"
  add "image, no CDS                               :: $what" "image-nocds/bin/java $JF $M $what"
  add "image, AppCDS classes.jsa                   :: $what" "image/bin/java $JF $M $what"
  add "image, AppCDS, ArchiveRelocationMode=0      :: $what" "image/bin/java $JF -XX:+UnlockDiagnosticVMOptions -XX:ArchiveRelocationMode=0 $M $what"
  add "image, AppCDS, TieredStopAtLevel=1          :: $what" "image/bin/java $JF -XX:TieredStopAtLevel=1 $M $what"
  add "image, AppCDS, SerialGC (archive dumped w/G1):: $what" "image/bin/java $JF -XX:+UseSerialGC $M $what"
done
for i in "${!cmds[@]}"; do
  hyperfine -N -w 3 -r $R --export-json /tmp/jlink-lab/hf.json "${cmds[$i]}" >/dev/null 2>&1
  python3 - "${names[$i]}" <<'PY'
import json, statistics, sys
r = json.load(open('/tmp/jlink-lab/hf.json'))['results'][0]
t = sorted(r['times']); cpu = [u + s for u, s in zip(r['user'], r['system'])] if 'user' in r and isinstance(r['user'], list) else None
print(f"{sys.argv[1]:80s} median {statistics.median(t)*1000:6.0f} ms  min {t[0]*1000:6.0f} ms  cpu(user+sys) mean {(r['user']+r['system'])*1000:6.0f} ms")
PY
done
