#!/bin/sh
# Builds the libFuzzer targets on the stable toolchain (no -Z flags: only
# stable -C options for SanitizerCoverage; libFuzzer itself comes from the
# libfuzzer-sys crate, compiled with the system C++ compiler) and runs one.
#   fuzz/libfuzzer.sh <target> [libFuzzer options, e.g. -runs=1000000 -max_total_time=600]
# Targets: blkif store paging gnttab evtchn virtio netif elf.
# Corpus: $FUZZ_CORPUS/<target> (default fuzz/corpus, not committed: the
# built-in seeds are the committed corpus); crashing inputs go to
# $FUZZ_ARTIFACTS (default fuzz/artifacts).
set -eu
cd "$(dirname "$0")/.."
target=${1:?usage: fuzz/libfuzzer.sh <target> [libFuzzer options]}
shift
host=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks" \
    cargo build --release -p pv-fuzz --features libfuzzer --bin "$target" --target "$host" --target-dir target/fuzz
corpus=${FUZZ_CORPUS:-fuzz/corpus}
artifacts=${FUZZ_ARTIFACTS:-fuzz/artifacts}
cargo run --release -q -p pv-fuzz --bin fuzz-runner -- "$target" --seeds-to "$corpus"
mkdir -p "$artifacts"
exec "target/fuzz/$host/release/$target" -artifact_prefix="$artifacts/" "$corpus/$target" "$@"
