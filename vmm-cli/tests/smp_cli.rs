//! `vmm run --vcpus N` through the binary, under the default seccomp
//! filters: a PVH guest brings up its second vCPU (`tests::smp_asm`),
//! `--stats` prints one line per vCPU then the totals, and a vCPU count
//! out of range is a one-line error.

use std::process::{Command, Output};
use tests::pvh_asm::pvh_elf;

fn vmm(extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--mem", "16M", "--timeout", "120"])
        .args(extra)
        .output()
        .expect("run vmm")
}

#[test]
fn a_pvh_guest_on_three_vcpus_brings_one_up_and_stats_has_a_line_per_vcpu() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("smp64.elf");
    std::fs::write(&path, pvh_elf(&tests::smp_asm::guest(true), true)).unwrap();
    let out = vmm(&["--kernel", path.to_str().unwrap(), "--vcpus", "3", "--stats"]);
    let err = String::from_utf8_lossy(&out.stderr);
    // SCHEDOP_shutdown(poweroff) from vCPU 0 (xen/common/sched/core.c).
    assert_eq!(out.status.code(), Some(0), "{err}");
    let line = |name: &str| err.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {err}"));
    let hypercalls = |l: &str| -> u64 {
        l.split_whitespace().find_map(|w| w.strip_prefix("hypercalls=")?.parse().ok()).expect("hypercalls=")
    };
    assert!(hypercalls(line("vcpu0: ")) >= 11, "{err}");
    // vCPU 1 makes exactly one hypercall (VCPUOP_is_up on itself).
    assert_eq!(hypercalls(line("vcpu1: ")), 1, "{err}");
    assert!(line("vcpu2: ").starts_with("vcpu2: exits=0 hypercalls=0"), "vCPU 2 never came up: {err}");
    assert!(err.contains("vcpus: 3 (totals below)"), "{err}");
}

#[test]
fn a_vcpu_count_out_of_range_is_a_one_line_error() {
    for n in ["0", "33"] {
        let out = vmm(&["--image", "hello", "--vcpus", n]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "--vcpus {n}");
        assert!(err.contains("give --vcpus between 1 and 32"), "--vcpus {n}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "--vcpus {n}: {err}");
    }
}

/// Hostile: every vCPU floods hypercalls; `--timeout` still stops the
/// run (the watchdog stops vCPU 0, which stops the others), every vCPU
/// was running, and the exit is the time limit's.
#[test]
fn a_hypercall_flood_from_every_vcpu_still_honours_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flood.elf");
    std::fs::write(&path, pvh_elf(&tests::smp_asm::flood_guest(4), true)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--mem", "16M", "--timeout", "2", "--shutdown-grace", "0", "--vcpus", "4", "--stats"])
        .args(["--kernel", path.to_str().unwrap()])
        .output()
        .expect("run vmm");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("error: guest did not shut down within the time limit"), "{err}");
    for n in 1..4 {
        let line = err.lines().find(|l| l.starts_with(&format!("vcpu{n}: "))).expect("a line per vCPU");
        let calls: u64 =
            line.split_whitespace().find_map(|w| w.strip_prefix("hypercalls=")?.parse().ok()).expect("hypercalls=");
        assert!(calls > 0, "vCPU {n} flooded too: {line}");
    }
}
