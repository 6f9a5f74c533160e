//! Running the `vmm` binary from the CLI tests (a module, included with
//! `#[path]`; each test binary uses a subset of it).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// The `vmm` binary under test.
pub fn vmm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmm"))
}

/// Output bytes as text (lossy).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `vmm ctl --socket <sock> <args>`, run to its end.
pub fn ctl(sock: &Path, args: &[&str]) -> Output {
    vmm().arg("ctl").arg("--socket").arg(sock).args(args).output().expect("run vmm ctl")
}

/// The number after `name=` in a guest's progress line (`rounds=12`).
pub fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
}
