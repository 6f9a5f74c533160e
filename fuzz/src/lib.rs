//! Fuzz targets for every parser of guest-controlled data, in the shape of
//! Cloud Hypervisor's `fuzz/` folder, with two drivers:
//!
//! - [`runner`]: a deterministic corpus runner on the stable toolchain
//!   (seeded mutation of built-in seeds; counts executions). A short run of
//!   each target is part of `cargo test` (`tests/smoke.rs`); `fuzz-runner`
//!   runs them long.
//! - libFuzzer (`fuzz_targets/`, feature `libfuzzer`), built by
//!   `fuzz/libfuzzer.sh` with coverage flags that the stable compiler takes.
//!
//! Every target must return normally for every input: a panic, a hang or
//! unbounded memory is a bug in the VMM.

pub mod runner;
pub mod targets;
