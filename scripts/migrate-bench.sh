#!/bin/sh
# docs/migration.md "Figures".
# Migrates a 256 MiB soak guest over TCP on loopback (release build) and
# prints the source's report. Usage: scripts/migrate-bench.sh <vmm binary> <port>
V=$1; PORT=$2; D=$(mktemp -d)
truncate -s 4M $D/soak.img
$V run --incoming tcp:127.0.0.1:$PORT --api-socket $D/dst.sock > $D/dst.out 2> $D/dst.err &
DPID=$!
$V run --image blk --mem 256M --timeout 300 --disk $D/soak.img --cmdline "soak=0 every=5" --api-socket $D/src.sock > $D/src.out 2> $D/src.err &
SPID=$!
sleep 3
$V ctl --socket $D/src.sock migrate tcp:127.0.0.1:$PORT
wait $SPID; echo "source exit $?"; tail -1 $D/src.err
sleep 2; $V ctl --socket $D/dst.sock shutdown; wait $DPID; echo "destination exit $?"
grep "received" $D/dst.err; grep "soak: done" $D/dst.out
rm -rf $D
