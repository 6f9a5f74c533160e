//! Builds the guest ELF images as part of the ordinary host build.
//!
//! On the host target this runs a nested `cargo build` of this same package
//! for `x86_64-unknown-none` (feature `guest-image`) with its own target
//! directory and a scrubbed environment, then generates `images.rs`, which
//! embeds each image with `include_bytes!`. In that nested build (target
//! `x86_64-unknown-none`) it only passes the linker script. Either way it
//! exports the script's path to dependent crates (`links = "pv_guest"`).

use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

const GUEST_TARGET: &str = "x86_64-unknown-none";
/// Image binaries (see `[[bin]]` in Cargo.toml).
const IMAGES: &[&str] = &["hello", "selftest", "pvdev", "paging", "blk", "net", "virtio", "smp"];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let target = env::var("TARGET").expect("cargo sets TARGET");
    println!("cargo:rerun-if-changed=guest.ld");
    // For out-of-tree guests: their build script reads this as
    // `DEP_PV_GUEST_LINKER_SCRIPT` (the `links` key in Cargo.toml).
    println!("cargo:linker-script={}", manifest_dir.join("guest.ld").display());
    if target == GUEST_TARGET {
        println!("cargo:rustc-link-arg-bins=-T{}", manifest_dir.join("guest.ld").display());
        return;
    }

    for dir in [
        "src",
        "Cargo.toml",
        "../pv-abi/src",
        "../pv-abi/Cargo.toml",
        "../ring-buffers/src",
        "../ring-buffers/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", manifest_dir.join(dir).display());
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let guest_target_dir = out_dir.join("guest-target");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());

    let mut cmd = Command::new(cargo);
    // Scrub what the outer cargo (and clippy, coverage or sanitizer wrappers)
    // set, so the guest gets exactly the flags below and nothing else.
    cmd.env_clear();
    for key in ["PATH", "HOME", "CARGO_HOME", "RUSTUP_HOME", "RUSTUP_TOOLCHAIN", "TMPDIR"] {
        if let Some(v) = env::var_os(key) {
            cmd.env(key, v);
        }
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Crelocation-model=static")
        .arg("build")
        .arg("--release")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(manifest_dir.join("Cargo.toml"))
        .arg("--target")
        .arg(GUEST_TARGET)
        .arg("--features")
        .arg("guest-image")
        .arg("--bins")
        .arg("--target-dir")
        .arg(&guest_target_dir);
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run nested cargo for the guest images: {e}"));
    if !status.success() {
        panic!(
            "building the guest images for {GUEST_TARGET} failed (is the target installed? run `rustup target add {GUEST_TARGET}`)"
        );
    }

    let mut images = String::new();
    let mut all = String::from("/// Every bundled image, by name.\npub const ALL: &[(&str, &[u8])] = &[\n");
    for name in IMAGES {
        let path = guest_target_dir.join(GUEST_TARGET).join("release").join(name);
        let konst = name.to_uppercase();
        writeln!(images, "/// The `{name}` guest image (ELF, x86_64-unknown-none).").unwrap();
        writeln!(images, "pub const {konst}: &[u8] = include_bytes!({:?});", path.display().to_string()).unwrap();
        writeln!(all, "    ({name:?}, {konst}),").unwrap();
    }
    all.push_str("];\n");
    images.push_str(&all);
    std::fs::write(out_dir.join("images.rs"), images).expect("write images.rs");
}
