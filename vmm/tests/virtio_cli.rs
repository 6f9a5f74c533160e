//! `vmm run --disk <path>,transport=virtio`: durability across a SIGKILL
//! after the flush response, and the CLI's transport option.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn pattern_ok(file: &[u8], sector: u64, nr: u64, seed: u64) -> bool {
    let base = sector * 512;
    (0..nr * 512).step_by(8).all(|w| {
        let at = (base + w) as usize;
        u64::from_le_bytes(file[at..at + 8].try_into().unwrap())
            == frontend_guest::blkfront::pattern_word(seed, base + w)
    })
}

#[test]
fn virtio_flushed_data_survives_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("crash.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let disk = format!("{},transport=virtio", img.display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--timeout", "60", "--image", "virtio", "--cmdline", "test=crash", "--disk", &disk])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn vmm");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let flushed = lines.by_ref().map_while(Result::ok).find(|l| l.starts_with("flushed "));
    // The flush response has reached the guest: kill the VMM at once.
    child.kill().expect("SIGKILL");
    let status = child.wait().unwrap();
    let line = flushed.expect("the guest reported its flush");
    assert!(!status.success(), "killed, not exited: {status}");
    assert_eq!(line, "flushed sector=64 nr=64 seed=50341");
    assert!(pattern_ok(&std::fs::read(&img).unwrap(), 64, 64, 0xc4a5), "the reopened image holds the data");
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
