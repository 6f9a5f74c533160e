//! Image locking through the CLI: while one VMM runs a guest on an image,
//! a second VMM (either transport, even read-only) is refused with a
//! one-line error and the first one's data survives; the same image twice
//! in one VM is refused too; `,lock=off` (unsafe) skips the lock. QEMU's
//! OFD image locking (and its `file.locking=off`) is the model.

#[allow(dead_code)] // this binary uses only some of the shared helpers
mod common;
use common::pattern_ok;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

fn vmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmm")).args(args).output().expect("run vmm")
}

fn assert_refused(out: &Output, img: &str, holder: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    let want = format!("disk image {img} is in use: another VMM or another --disk of this VM has it open {holder}");
    assert!(stderr.starts_with("error: ") && stderr.contains(&want), "expected {want:?} in {stderr}");
    assert!(stderr.contains(",lock=off"), "the error names the override: {stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("blk"), "the guest never ran");
}

#[test]
fn a_second_vmm_on_a_running_image_is_refused_and_the_data_survives() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("shared.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let path = img.to_str().unwrap();
    // VMM A writes and flushes a pattern, then keeps the guest (and the
    // image) open until it is killed.
    let mut a = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--timeout", "120", "--image", "blk", "--cmdline", "test=crash", "--disk", path])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn vmm A");
    let mut lines = BufReader::new(a.stdout.take().unwrap()).lines();
    let flushed = lines.by_ref().map_while(Result::ok).find(|l| l.starts_with("flushed "));
    assert!(flushed.is_some(), "VMM A's guest flushed its pattern");

    // The demo would overwrite sectors 8.. and its own patterns; each is refused first.
    assert_refused(&vmm(&["run", "--timeout", "30", "--disk", path]), path, "for writing");
    let virtio = format!("{path},transport=virtio");
    assert_refused(&vmm(&["run", "--timeout", "30", "--image", "virtio", "--disk", &virtio]), path, "for writing");
    let ro = format!("{path},readonly");
    assert_refused(&vmm(&["run", "--timeout", "30", "--disk", &ro]), path, "for writing");

    a.kill().expect("kill VMM A");
    a.wait().unwrap();
    let data = std::fs::read(&img).unwrap();
    assert!(pattern_ok(&data, 64, 64, 0xc4a5), "VMM A's flushed data is intact");
    assert!(data[..64 * 512].iter().all(|&b| b == 0), "nobody else wrote the image");

    // With A gone the lock is gone: the image is usable again.
    let out = vmm(&["run", "--timeout", "60", "--disk", path]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_same_image_twice_in_one_vm_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("d.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let path = img.to_str().unwrap();
    assert_refused(&vmm(&["run", "--timeout", "30", "--disk", path, "--disk", path]), path, "for writing");
    let virtio = format!("{path},transport=virtio");
    assert_refused(&vmm(&["run", "--timeout", "30", "--disk", path, "--disk", &virtio]), path, "for writing");
    let ro = format!("{path},readonly");
    assert_refused(&vmm(&["run", "--timeout", "30", "--disk", &ro, "--disk", path]), path, "read-only");
    assert!(std::fs::read(&img).unwrap().iter().all(|&b| b == 0), "nothing was written");
}

#[test]
fn two_vmms_with_lock_off_both_start() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("shared.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let unlocked = format!("{},lock=off", img.to_str().unwrap());
    // VMM A keeps its guest (and the image) open until it is killed.
    let mut a = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--timeout", "120", "--image", "blk", "--cmdline", "test=crash", "--disk", &unlocked])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn vmm A");
    let mut lines = BufReader::new(a.stdout.take().unwrap()).lines();
    let flushed = lines.by_ref().map_while(Result::ok).find(|l| l.starts_with("flushed "));
    assert!(flushed.is_some(), "VMM A's guest runs on the image");
    // VMM B on the same image, also unlocked, is let in and runs its guest.
    let out = vmm(&["run", "--timeout", "60", "--disk", &unlocked]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("in use"), "{stderr}");
    a.kill().expect("kill VMM A");
    a.wait().unwrap();
}
