//! The out-of-tree example guest (`examples/my-guest`) builds the way
//! docs/writing-a-guest.md says and boots with
//! `vmm run --kernel`.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_example_guest_builds_as_documented_and_boots() {
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/my-guest");
    // Its own target directory under this test's, so later runs are cached.
    let target_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("my-guest-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // docs/writing-a-guest.md's command, run from the example's folder (its
    // `.cargo/config.toml` applies there), with nothing inherited that
    // would change the flags.
    let status = Command::new(cargo)
        .current_dir(&example)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .args(["build", "--release", "--quiet", "--target-dir"])
        .arg(&target_dir)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building examples/my-guest failed");
    let elf = target_dir.join("x86_64-unknown-none/release/my-guest");

    // Linked at the project's layout: entry at the kernel base.
    let bytes = std::fs::read(&elf).unwrap();
    let entry = u64::from_le_bytes(bytes[24..32].try_into().unwrap());
    assert_eq!(entry, pv_abi::layout::KERNEL_BASE, "entry {entry:#x}");

    let out = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--timeout", "60", "--kernel"])
        .arg(&elf)
        .args(["--cmdline", "exit=3"])
        .output()
        .expect("run vmm");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        "my-guest: hello from an out-of-tree guest (64 MiB RAM)\nmy-guest: store says was here\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3));
}
