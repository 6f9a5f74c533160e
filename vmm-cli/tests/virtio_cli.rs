//! `vmm run --disk <path>,transport=virtio`: durability across a SIGKILL
//! after the flush response, and the CLI's transport option.

mod common;

use std::process::Command;

#[test]
fn virtio_flushed_data_survives_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("crash.img");
    let disk = format!("{},transport=virtio", img.display());
    common::flushed_data_survives_sigkill("virtio", &disk, &img);
}

#[test]
fn unknown_transport_is_a_one_line_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--disk", "x.img,transport=pci"])
        .output()
        .expect("run vmm");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("unknown transport 'pci'"), "{stderr}");
}

#[test]
fn stats_report_the_virtio_transport_and_block_counters() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("s.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let disk = format!("{},transport=virtio", img.display());
    let out = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--timeout", "60", "--image", "virtio", "--stats", "--disk", &disk])
        .output()
        .expect("run vmm");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("virtio-mmio@0xd0000000 (device 2):")).expect(&stderr);
    assert!(line.contains("bad_chains=0") && line.contains("needs_reset=0"), "{line}");
    let blk = stderr.lines().find(|l| l.starts_with("virtio-blk0:")).expect(&stderr);
    assert!(blk.contains("flushes=1") && blk.contains("errors=0"), "{blk}");
}
