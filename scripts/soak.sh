#!/usr/bin/env bash
# soak.sh: a long run of block and net traffic against two VMMs, sampling
# each VMM's resident memory, open file descriptors and threads once a
# minute. A VMM that leaks (memory per request, an fd per reconnect, a
# thread per device event) shows it as a slope in these three numbers; a
# healthy one stays flat after start-up. Results: docs/soak.md.
#
# Usage:  sudo scripts/soak.sh [MINUTES]        (default 30)
#
# What runs, for MINUTES minutes:
#   blk  `vmm run --image blk --disk <fresh image> --cmdline soak=<secs>`:
#        the block demo's soak mode (random-offset write, read-back and
#        verify rounds, a progress line every EVERY rounds, a clean power
#        off with status 0 when nothing failed).
#   net  `vmm run --image net` on a TAP device inside a private network
#        namespace this script creates (and deletes on exit), while a host
#        loop inside that namespace runs `ping -c 1` and `curl` against the
#        guest. No traffic leaves the namespace.
# Every SAMPLE_SECS seconds (a "minute" of the CSV; a shorter SAMPLE_SECS
# makes a quick check, MINUTES then counts samples): VmRSS and Threads from /proc/<pid>/status and
# the entries of /proc/<pid>/fd, into samples.csv. At the end: the table,
# requests served (the guest's last progress line, curl and ping counts),
# errors, and a verdict: max - min of each figure over the samples after
# the first minute must be 0 for fds and threads and at most
# RSS_TOLERANCE_KIB for RSS.
#
# Needs root for the net part (namespace, TAP), plus `ip`, `ping`, `curl`
# (setup.sh installs them); NET=0 runs the block part alone, without root.
# Environment knobs (defaults below): PKG, MINUTES, SAMPLE_SECS, EVERY,
# IMAGE_MIB, RSS_TOLERANCE_KIB, NET, PAUSE, ROOT (the workspace; set it
# when running a copy of this script), OUT (the directory for logs and
# CSV; default a fresh /tmp/soak.XXXXXX). Exit status 0 when everything
# stayed flat and no errors were seen, 1 otherwise, 2 on a set-up failure.
# The last line says which: "soak: PASS" or "soak: FAIL: <what>".
#
# Run a copy (cp scripts/soak.sh /tmp/ && ROOT=$PWD /tmp/soak.sh) if you
# may edit the repository meanwhile: bash reads a script as it runs it.
# Cleanup (VMMs, traffic loop, namespace) runs on every exit path.
set -euo pipefail

# The cargo package that builds the `vmm` binary (may become `vmm-cli`).
PKG=${PKG:-vmm-cli}
MINUTES=${1:-${MINUTES:-30}}
SAMPLE_SECS=${SAMPLE_SECS:-60}
EVERY=${EVERY:-2000}
IMAGE_MIB=${IMAGE_MIB:-64}
RSS_TOLERANCE_KIB=${RSS_TOLERANCE_KIB:-256}
NET=${NET:-1}
# Seconds between two rounds of the host's ping + curl loop.
PAUSE=${PAUSE:-0.2}
NS=pvsoak-$$
TAP=pvsoak0
HOST_IP=10.79.0.1
GUEST_IP=10.79.0.2

die() {
    echo "soak: $*" >&2
    exit 2
}

[[ $MINUTES =~ ^[0-9]+$ && $MINUTES -ge 1 ]] || die "MINUTES must be a whole number >= 1, got '$MINUTES'"
if [[ $NET == 1 ]]; then
    [[ $(id -u) == 0 ]] || die "the net part needs root (namespace, TAP): run with sudo, or NET=0 for the block part alone"
    for t in ip ping curl; do command -v $t >/dev/null || die "'$t' not found: run setup.sh"; done
fi

ROOT=${ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
OUT=${OUT:-$(mktemp -d /tmp/soak.XXXXXX)}
mkdir -p "$OUT"
rm -f "$OUT/stop"
CSV=$OUT/samples.csv
BLK_PID= NET_PID= LOOP_PID=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # Every step runs, whatever the one before returned (`wait` returns
    # the status of what it waited for).
    set +e
    # The loop stops after its current probe (at most ~7 s), so no ping
    # or curl is left running in the namespace.
    [[ -n $LOOP_PID ]] && touch "$OUT/stop" && wait "$LOOP_PID" 2>/dev/null
    for p in $BLK_PID $NET_PID; do
        kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    [[ $NET == 1 ]] && ip netns del "$NS" 2>/dev/null
    exit $rc
}
trap cleanup EXIT
trap 'echo "soak: interrupted, cleaning up" >&2; exit 130' INT TERM

echo "soak: building ($PKG, release)"
(cd "$ROOT" && cargo build --release -q -p "$PKG") || die "build failed"
VMM=${CARGO_TARGET_DIR:-$ROOT/target}/release/vmm
[[ -x $VMM ]] || die "no binary at $VMM"

echo "soak: $MINUTES min, samples every $SAMPLE_SECS s, output in $OUT"
echo "soak: started $(date -u '+%F %T') UTC, load average $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/start.txt"

# (a) the block soak on a fresh image; its guest runs 30 s past the last
# sample so that sample still sees it.
truncate -s 0 "$OUT/soak.img"
truncate -s "${IMAGE_MIB}M" "$OUT/soak.img"
SOAK_SECS=$((MINUTES * SAMPLE_SECS + 30))
"$VMM" run --image blk --disk "$OUT/soak.img" --cmdline "soak=$SOAK_SECS every=$EVERY" \
    --timeout $((SOAK_SECS + 120)) --stats >"$OUT/blk.log" 2>"$OUT/blk.err" &
BLK_PID=$!

# (b) the net guest on a TAP inside a namespace of our own (the recipe of
# vmm/tests/net_cli.rs).
if [[ $NET == 1 ]]; then
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    ip -n "$NS" tuntap add dev $TAP mode tap
    ip -n "$NS" addr add $HOST_IP/24 dev $TAP
    ip -n "$NS" link set $TAP up
    # `ip netns exec` execs the command, so $! is the VMM itself.
    ip netns exec "$NS" "$VMM" run --image net --net tap=$TAP,mac=02:00:00:79:00:02 \
        --cmdline "ip=$GUEST_IP/24" --stats >"$OUT/net.log" 2>"$OUT/net.err" &
    NET_PID=$!
    up=0
    for _ in $(seq 120); do
        if ip netns exec "$NS" curl -s -m 2 -o /dev/null "http://$GUEST_IP/"; then up=1 && break; fi
        sleep 0.5
    done
    [[ $up == 1 ]] || die "the net guest did not answer HTTP within 60 s (see $OUT/net.log, net.err)"
    # One line per probe: "ping 1|0", "curl 1" or "curl 0 rc=<curl status>".
    (
        while [[ ! -e $OUT/stop ]]; do
            if ip netns exec "$NS" ping -c 1 -W 2 -q $GUEST_IP >/dev/null 2>&1; then echo "ping 1"; else echo "ping 0"; fi
            # curl's exit status says how a request failed (7: refused, 28: timed out).
            rc=0 && ip netns exec "$NS" curl -s -m 5 -o /dev/null "http://$GUEST_IP/" || rc=$?
            if [[ $rc == 0 ]]; then echo "curl 1"; else echo "curl 0 rc=$rc"; fi
            sleep "$PAUSE"
        done
    ) >"$OUT/traffic.log" &
    LOOP_PID=$!
fi

# One CSV row per VMM per sample.
sample() {
    local minute=$1 name pid st
    for name in blk net; do
        pid=$([[ $name == blk ]] && echo "$BLK_PID" || echo "$NET_PID")
        [[ -n $pid && -d /proc/$pid ]] || continue
        st=$(cat "/proc/$pid/status" 2>/dev/null) || continue
        printf '%s,%s,%s,%s,%s,%s\n' "$minute" "$(date -u +%T)" "$name" \
            "$(awk '/^VmRSS:/ {print $2}' <<<"$st")" \
            "$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)" \
            "$(awk '/^Threads:/ {print $2}' <<<"$st")" >>"$CSV"
    done
}

echo "minute,time_utc,vmm,rss_kib,fds,threads" >"$CSV"
t0=$(date +%s)
for m in $(seq 0 "$MINUTES"); do
    now=$(date +%s)
    # `wait` on a background sleep, so that INT/TERM end the run at once.
    if (( t0 + m * SAMPLE_SECS > now )); then
        sleep $((t0 + m * SAMPLE_SECS - now)) &
        wait $!
    fi
    sample "$m"
    printf 'soak: minute %s/%s: %s\n' "$m" "$MINUTES" "$(grep -h '^soak: progress' "$OUT/blk.log" | tail -n1)"
done

# Let the block guest finish its soak and power off by itself.
blk_rc=
if wait "$BLK_PID"; then blk_rc=0; else blk_rc=$?; fi
BLK_PID=
net_rc=-
if [[ $NET == 1 ]]; then
    touch "$OUT/stop"
    wait "$LOOP_PID" 2>/dev/null || true
    LOOP_PID=
    ip netns exec "$NS" curl -s -m 10 -o /dev/null "http://$GUEST_IP/shutdown" || true
    for _ in $(seq 40); do [[ -d /proc/$NET_PID ]] || break; sleep 0.5; done
    if [[ -d /proc/$NET_PID ]]; then kill "$NET_PID"; fi
    if wait "$NET_PID"; then net_rc=0; else net_rc=$?; fi
    NET_PID=
fi

# Report.
p1=0 p0=0 c1=0 c0=0
if [[ $NET == 1 ]]; then
    p1=$(grep -c '^ping 1' "$OUT/traffic.log" || true)
    p0=$(grep -c '^ping 0' "$OUT/traffic.log" || true)
    c1=$(grep -c '^curl 1' "$OUT/traffic.log" || true)
    c0=$(grep -c '^curl 0' "$OUT/traffic.log" || true)
fi
{
    echo "== samples ($CSV)"
    column -s, -t <"$CSV"
    echo
    echo "== requests and errors"
    echo "blk guest: $(grep -h '^soak: done' "$OUT/blk.log" || echo 'no final line')  (exit status $blk_rc)"
    if [[ $NET == 1 ]]; then
        echo "net guest: ping $p1 answered, $p0 lost ($(awk -v a="$p1" -v b="$p0" 'BEGIN { printf "%.2f", (a + b) ? 100 * b / (a + b) : 0 }')% loss); curl $c1 served, $c0 failed  (exit status $net_rc)"
        [[ $c0 == 0 ]] || echo "curl failures by curl exit status: $(grep -o 'rc=[0-9]*' "$OUT/traffic.log" | sort | uniq -c | xargs)"
    fi
    for f in blk net; do
        [[ -f $OUT/$f.err ]] || continue
        echo "$f VMM log: $(grep -cw 'ERROR' "$OUT/$f.err" || true) ERROR lines, $(grep -cw 'WARN' "$OUT/$f.err" || true) WARN lines; its device metrics (--stats):"
        grep -h '/backend/' "$OUT/$f.err" | sed 's/^/  /' || true
    done
    echo
    echo "== verdict (max - min over samples with minute >= 1; RSS tolerance $RSS_TOLERANCE_KIB KiB)"
    awk -F, -v tol="$RSS_TOLERANCE_KIB" '
        NR > 1 && $1 >= 1 {
            k = $3; n[k]++
            for (i = 4; i <= 6; i++) {
                if (!((k, i) in lo) || $i + 0 < lo[k, i]) lo[k, i] = $i + 0
                if (!((k, i) in hi) || $i + 0 > hi[k, i]) hi[k, i] = $i + 0
            }
        }
        END {
            bad = 0
            for (k in n) {
                r = hi[k, 4] - lo[k, 4]; f = hi[k, 5] - lo[k, 5]; t = hi[k, 6] - lo[k, 6]
                ok = (r <= tol && f == 0 && t == 0)
                bad += !ok
                printf "%s: %d samples, rss %d..%d KiB (delta %d), fds %d..%d (delta %d), threads %d..%d (delta %d): %s\n",
                    k, n[k], lo[k, 4], hi[k, 4], r, lo[k, 5], hi[k, 5], f, lo[k, 6], hi[k, 6], t, ok ? "FLAT" : "NOT FLAT"
            }
            if (length(n) == 0) { print "no samples after the first minute"; bad = 1 }
            exit bad != 0
        }' "$CSV" || true
    echo "finished $(date -u '+%F %T') UTC, load average $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/summary.txt"

not_flat=$(grep -c 'NOT FLAT\|no samples' "$OUT/summary.txt" || true)
errors=$(grep -h '^soak: done' "$OUT/blk.log" | grep -o 'verify_errors=[0-9]* io_errors=[0-9]*' || echo missing)
fail=
[[ $not_flat == 0 ]] || fail+=" not-flat"
[[ $blk_rc == 0 && $errors == "verify_errors=0 io_errors=0" ]] || fail+=" blk-errors"
[[ $NET != 1 || ($net_rc == 0 && $c0 == 0 && $p0 == 0) ]] || fail+=" net-errors"
if [[ -z $fail ]]; then
    echo "soak: PASS"
    exit 0
fi
echo "soak: FAIL:$fail (see $OUT)"
exit 1
