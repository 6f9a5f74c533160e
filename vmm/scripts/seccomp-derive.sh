#!/usr/bin/env bash
# Re-derives the per-thread seccomp allowlists (vmm/src/seccomp.rs) from
# what the VMM really does: runs a set of guests with `--no-seccomp` under
# `strace -f -ff`, sorts every thread's system calls (and ioctl requests)
# by thread kind, and prints, per kind, what was seen and what the filter
# lacks. Usage: vmm/scripts/seccomp-derive.sh [path/to/vmm]
# Needs strace, /dev/kvm; the net scenario needs `unshare -rn` (a user and
# network namespace of its own, so the TAP device never leaves it).
#
# Thread kinds: the main thread is the vCPU thread from its first KVM_RUN
# on (the filter is installed just before it); threads named pv-timer and
# unnamed threads (the watchdog) are "watchdog"; every other named thread
# is a device thread (from its start).
set -euo pipefail
VMM=${1:-target/debug/vmm}
SRC=$(dirname "$0")/../src/seccomp.rs
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
GRUB=/usr/lib/grub-xen/grub-i386-xen_pvh.bin
truncate -s 4M "$WORK/disk.img"
truncate -s 4M "$WORK/disk2.img"

run() { # name, args...
    local name=$1; shift
    mkdir -p "$WORK/$name"
    echo "== $name: vmm $*" >&2
    strace -f -ff -qq -o "$WORK/$name/t" "$@" </dev/null >/dev/null 2>"$WORK/$name.err" || true
}
run demo "$VMM" run --no-seccomp --stats --timeout 20
run blk "$VMM" run --no-seccomp --image blk --disk "$WORK/disk.img" --timeout 20
run virtio "$VMM" run --no-seccomp --image virtio --disk "$WORK/disk2.img,transport=virtio" --timeout 20
run selftest "$VMM" run --no-seccomp --image selftest --timeout 20
run paging "$VMM" run --no-seccomp --image paging --paging pv --timeout 20
run pvdev "$VMM" run --no-seccomp --image pvdev --echo 2 --timeout 20
# Store transactions (every Xen blkfront and netfront opens one): the store
# thread's transaction state must not reach for getrandom.
run xstxn "$VMM" run --no-seccomp --image pvdev --cmdline test=xstxn --timeout 20
run timeout "$VMM" run --no-seccomp --image net --timeout 2
if [ -e "$GRUB" ]; then
    run grub "$VMM" run --no-seccomp --kernel "$GRUB" --disk "$WORK/disk.img" --timeout 5
fi
if unshare -rn true 2>/dev/null; then
    run net unshare -rn "$VMM" run --no-seccomp --image net --net tap=tap0 --timeout 3
    run net-virtio unshare -rn "$VMM" run --no-seccomp --image net --net tap=tap0,transport=virtio --timeout 3
fi

python3 - "$WORK" "$SRC" <<'PY'
import os, re, sys, collections
work, src = sys.argv[1], open(sys.argv[2]).read()
def block(name):
    m = re.search(r"const %s: [^=]*= [^;]*?;\n" % name, src, re.S)
    return set(re.findall(r"SYS_(\w+)", m.group(0))) if m else set()
def ioctls(name):
    m = re.search(r"const %s: [^=]*= [^;]*?;\n" % name, src, re.S)
    return set(re.findall(r"(?:nr|tap|libc)::(KVM_\w+|TUN\w+|SIOC\w+)", m.group(0))) if m else set()
common = block("COMMON")
allowed = {k: common | block(k.upper()) | {"ioctl " + i for i in ioctls(k.upper())}
           for k in ("vcpu", "device", "watchdog")}
seen = collections.defaultdict(lambda: collections.defaultdict(set))
call = re.compile(r"^(\w+)\((.*)")
for scen in sorted(os.listdir(work)):
    d = os.path.join(work, scen)
    if not os.path.isdir(d):
        continue
    files = sorted(os.listdir(d), key=lambda f: int(f.split(".")[1]))
    for i, f in enumerate(files):
        lines = open(os.path.join(d, f), errors="replace").read().splitlines()
        name = next((re.search(r'"([^"]*)"', l).group(1) for l in lines if l.startswith("prctl(PR_SET_NAME")), None)
        if i == 0:  # `unshare` execs the VMM: the same thread
            kind = "vcpu"
            start = next((j for j, l in enumerate(lines) if "KVM_RUN" in l), len(lines))
        else:
            kind = "watchdog" if name in (None, "pv-timer") else "device"
            # The filter goes on after the thread is named (std does that).
            start = next((j + 1 for j, l in enumerate(lines) if l.startswith("prctl(PR_SET_NAME")), 0)
        for l in lines[start:]:
            m = call.match(l)
            if not m:
                continue
            sc = m.group(1)
            what = sc
            if sc == "ioctl":
                req = m.group(2).split(", ")[1] if ", " in m.group(2) else "?"
                what = "ioctl " + req
            seen[kind][what].add(scen + (":" + name if name else ""))
for kind in ("vcpu", "device", "watchdog"):
    print("## %s thread" % kind)
    for what in sorted(seen[kind]):
        mark = "" if what in allowed[kind] or what in common else "   <-- not in the filter"
        print("  %-40s %s%s" % (what, ",".join(sorted(seen[kind][what]))[:90], mark))
PY
