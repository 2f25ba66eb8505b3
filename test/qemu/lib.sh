# Shell functions shared by the qemu tests (sourced, bash).

# fetch_kernel: prints the cache directory of Debian's kernel (k/ unpacked, vmlinux).
fetch_kernel() {
  "$(dirname "${BASH_SOURCE[0]}")/run-guest.sh" --fetch
}

# busybox_tree DIR: busybox-static in DIR/bin with a link per applet.
busybox_tree() {
  mkdir -p "$1/bin" "$1/sbin"
  cp /bin/busybox "$1/bin/"
  local a
  for a in $(/bin/busybox --list); do [ -e "$1/bin/$a" ] || ln -s busybox "$1/bin/$a"; done
}

# copy_modules KDIR DEST MODULE...: copies the modules and what they depend on into DEST
# and prints their names in load order (the package has no modules.dep: each module's
# depends= field gives the order).
copy_modules() {
  local kdir=$1 dest=$2; shift 2
  python3 "$(dirname "${BASH_SOURCE[0]}")/modules.py" "$kdir/k/lib/modules/$(ls "$kdir/k/lib/modules")/kernel" "$dest" "$@"
}
