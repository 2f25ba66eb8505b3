"""Copies kernel modules and their dependencies; prints the load order.

Usage: modules.py KERNEL_DIR DEST MODULE...   (the package has no modules.dep: the order
comes from each module's own depends= field)."""
import os
import shutil
import sys

root, dest, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
paths = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if f.endswith(".ko"):
            paths[f[:-3].replace("-", "_")] = os.path.join(d, f)


def depends(name):
    for field in open(paths[name], "rb").read().split(b"\0"):
        if field.startswith(b"depends="):
            return [m.replace("-", "_") for m in field[8:].decode().split(",") if m]
    return []


order, seen = [], set()


def add(name):
    name = os.path.basename(name).removesuffix(".ko").replace("-", "_")
    if name in seen:
        return
    if name not in paths:
        sys.exit("no module " + name + " in " + root)
    seen.add(name)
    for dep in depends(name):
        add(dep)
    order.append(name)
    shutil.copy(paths[name], os.path.join(dest, name + ".ko"))


for w in wanted:
    add(w)
print("\n".join(order))
