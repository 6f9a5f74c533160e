#!/usr/bin/env bash
# snapshot-bench.sh: snapshot size and time, and restore time to the first
# guest instruction, for a soak guest with 64 MiB and 1 GiB of RAM
# (docs/snapshot.md, "Numbers").
#
# Usage:  scripts/snapshot-bench.sh [VMM]   (default target/debug/vmm;
#         build it first: cargo build -p vmm-cli [--release])
#
# For each size: `vmm run --image blk --mem <size> --disk <scratch>
# --cmdline "soak=0 every=100" --api-socket ...`, once the first progress
# line is out `vmm ctl snapshot <dir>` (its JSON answer: memory bytes
# written, state file size, pause and total time), `du` of the memory
# file, then `vmm restore <dir> --stats --timeout 1` and its `startup:`
# line (process start to the first KVM_RUN, the build and the restore
# included). Prints one row per size.
set -euo pipefail
VMM=${1:-target/debug/vmm}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '%-6s %12s %12s %10s %10s %s\n' RAM memory_file state_bytes total_ms pause_ms restore
for mem in 64M 1G; do
    truncate -s 4M "$work/$mem.img"
    sock="$work/$mem.sock"
    "$VMM" run --image blk --mem "$mem" --disk "$work/$mem.img" --cmdline "soak=0 every=100" \
        --api-socket "$sock" --timeout 120 >"$work/$mem.out" 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do grep -q "soak: progress" "$work/$mem.out" && break; sleep 0.1; done
    answer=$("$VMM" ctl --socket "$sock" snapshot "$work/snap-$mem" | tr -d ' \n')
    "$VMM" ctl --socket "$sock" destroy >/dev/null || true
    wait "$pid" || true
    field() { echo "$answer" | sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }
    on_disk=$(du -k "$work/snap-$mem/memory" | cut -f1)
    restore=$("$VMM" restore "$work/snap-$mem" --stats --timeout 1 2>&1 >/dev/null | grep '^startup:' || true)
    printf '%-6s %9s KiB %12s %10.1f %10.2f %s\n' "$mem" "$on_disk" "$(field state_bytes)" \
        "$(field total_ms)" "$(field pause_ms)" "${restore#startup: }"
done
