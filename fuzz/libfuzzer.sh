#!/bin/sh
# Builds the libFuzzer targets on the stable toolchain (no -Z flags: only
# stable -C options for SanitizerCoverage; libFuzzer itself comes from the
# libfuzzer-sys crate, compiled with the system C++ compiler) and runs one.
#   fuzz/libfuzzer.sh <target> [libFuzzer options, e.g. -runs=1000000 -max_total_time=600]
# Targets: blkif store paging gnttab evtchn elf. Corpus: fuzz/corpus/<target>.
set -eu
cd "$(dirname "$0")/.."
target=${1:?usage: fuzz/libfuzzer.sh <target> [libFuzzer options]}
shift
host=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks" \
    cargo build --release -p pv-fuzz --features libfuzzer --bin "$target" --target "$host" --target-dir target/fuzz
cargo run --release -q -p pv-fuzz --bin fuzz-runner -- "$target" --seeds-to fuzz/corpus
mkdir -p fuzz/artifacts
exec "target/fuzz/$host/release/$target" -artifact_prefix=fuzz/artifacts/ "fuzz/corpus/$target" "$@"
