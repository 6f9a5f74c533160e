//! The `vmm` binary: exit statuses and one-line errors for bad input.

use std::path::PathBuf;
use std::process::{Command, Output};

fn vmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmm")).args(args).output().expect("run vmm")
}

fn vmm_env(args: &[&str], key: &str, val: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmm")).args(args).env(key, val).output().expect("run vmm")
}

/// Asserts a failed run printed exactly one `error:` line containing `want`.
fn assert_one_line_error(out: &Output, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(want), "expected {want:?} in {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
}

/// A file in a fresh temporary directory (removed when the guard drops).
fn scratch(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    (dir, p)
}

#[test]
fn demo_guest_runs_and_exit_status_is_the_guests() {
    let out = vmm(&["run", "--cmdline", "exit=7 from-cli"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{stdout}");
    assert!(stdout.contains("Hello from the PV guest"), "{stdout}");
    assert!(stdout.contains("cmdline: exit=7 from-cli"), "{stdout}");
}

#[test]
fn stats_report_exits_hypercalls_and_instructions() {
    let out = vmm(&["run", "--stats", "--image", "selftest", "--cmdline", "test=uart n=5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("io:uart        5"), "{stderr}");
    assert!(stderr.contains("sched_op(29)   1"), "{stderr}");
    assert!(stderr.contains("guest instructions"), "{stderr}");
}

#[test]
fn missing_kernel() {
    assert_one_line_error(
        &vmm(&["run", "--kernel", "/nonexistent/guest.elf"]),
        "not found: pass an existing guest ELF",
    );
}

#[test]
fn not_an_elf() {
    let (_dir, p) = scratch("notelf", b"#!/bin/sh\necho hi\n");
    assert_one_line_error(&vmm(&["run", "--kernel", p.to_str().unwrap()]), "no ELF magic");
}

#[test]
fn wrong_class_and_32_bit_without_the_pvh_note_are_named() {
    // The real image with EI_CLASS 3: the error names the class.
    let mut img = frontend_guest::images::HELLO.to_vec();
    img[4] = 3;
    let (_dir, p) = scratch("badclass", &img);
    assert_one_line_error(&vmm(&["run", "--kernel", p.to_str().unwrap()]), "unknown ELF class 3");
    // An ELF32 executable (EM_386, one PT_LOAD) with no PVH note anywhere:
    // the error says which note is missing, not "not a 64-bit ELF".
    let mut img = vec![0u8; 0x200];
    img[..7].copy_from_slice(&[0x7f, b'E', b'L', b'F', 1, 1, 1]);
    img[16] = 2; // ET_EXEC
    img[18] = 3; // EM_386
    img[28] = 52; // e_phoff
    img[42] = 32; // e_phentsize
    img[44] = 1; // e_phnum
    for (i, v) in [1u32, 0x100, 0x10_0000, 0x10_0000, 1, 0x1000, 5, 0x1000].iter().enumerate() {
        img[52 + i * 4..56 + i * 4].copy_from_slice(&v.to_le_bytes());
    }
    let (_dir, p) = scratch("elf32", &img);
    let out = vmm(&["run", "--kernel", p.to_str().unwrap()]);
    assert_one_line_error(&out, "32-bit ELF without a Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("64-bit little-endian"));
}

#[test]
fn elf_that_does_not_fit_in_ram() {
    // The real image, with its first PT_LOAD moved to 3 GiB.
    let mut img = frontend_guest::images::HELLO.to_vec();
    let phoff = u64::from_le_bytes(img[32..40].try_into().unwrap()) as usize;
    let phnum = u16::from_le_bytes(img[56..58].try_into().unwrap()) as usize;
    let ph = (0..phnum).map(|i| phoff + i * 56).find(|&o| img[o] == 1).unwrap();
    img[ph + 24..ph + 32].copy_from_slice(&0xc000_0000u64.to_le_bytes());
    let (_dir, p) = scratch("toobig", &img);
    assert_one_line_error(&vmm(&["run", "--kernel", p.to_str().unwrap()]), "does not fit in guest RAM");
}

#[test]
fn memory_too_small_or_not_a_size() {
    assert_one_line_error(&vmm(&["run", "--mem", "1M"]), "too small");
    assert_one_line_error(&vmm(&["run", "--mem", "lots"]), "not a size");
}

#[test]
fn unknown_bundled_image() {
    assert_one_line_error(&vmm(&["run", "--image", "nope"]), "vmm images");
}

#[test]
fn no_kvm_device() {
    assert_one_line_error(&vmm_env(&["run"], "VMM_KVM_DEVICE", "/nonexistent/kvm"), "/dev/kvm not found");
}

#[test]
fn triple_fault_is_reported_without_a_panic() {
    let out = vmm(&["run", "--image", "selftest", "--cmdline", "test=triplefault"]);
    assert_one_line_error(&out, "guest triple-faulted at rip");
}

#[test]
fn no_permission_on_kvm_device() {
    // Needs root to drop to an unprivileged user; /dev/kvm here is 0600 root.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/usr/bin/setpriv").exists() {
        panic!("prerequisite missing: needs root and setpriv to run the VMM as an unprivileged user");
    }
    let meta = std::fs::metadata("/dev/kvm").unwrap();
    if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o006 != 0 {
        panic!("prerequisite missing: /dev/kvm is world-accessible on this host");
    }
    let out = Command::new("/usr/bin/setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_vmm"))
        .arg("run")
        .output()
        .expect("run setpriv");
    if String::from_utf8_lossy(&out.stderr).starts_with("setpriv:") {
        panic!("prerequisite missing: the unprivileged user cannot execute the test binary here");
    }
    assert_one_line_error(&out, "permission denied opening /dev/kvm");
}

#[test]
fn guest_exit_codes_outside_a_byte_are_not_success() {
    for code in ["256", "512"] {
        let out = vmm(&["run", "--image", "hello", "--cmdline", &format!("exit={code}")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "exit={code}: {stderr}");
        assert!(stderr.contains("outside 0..=255"), "exit={code}: {stderr}");
    }
}

/// Log lines to a pipe (a file, a test) carry no ANSI colour codes.
#[test]
fn log_lines_to_a_pipe_have_no_colour_codes() {
    let out = vmm_env(&["run", "--image", "selftest", "--cmdline", "test=hostile"], "VMM_LOG", "debug");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("hypercall failed"), "the hostile calls are logged at debug: {stderr}");
    assert!(!stderr.contains("\x1b["), "colour codes in piped logs: {stderr:?}");
}
