//! Our own guest goes SMP (issue 19 item 3), through the binary under the
//! default seccomp filters: the bundled `smp` guest brings its vCPUs up
//! with `VCPUOP_initialise` + `VCPUOP_up` (`xen/common/domain.c`
//! `common_vcpu_op()`), every vCPU works under one spinlock, takes its own
//! timer, plays IPI ping-pong over `EVTCHNOP_bind_ipi` ports
//! (`xen/common/event_channel.c` `evtchn_bind_ipi()`: the port notifies
//! that vCPU only) and vCPU 1 goes down and up again; the guest checks
//! every count and exits 0 only if all hold. The hostile mode checks the
//! errnos of bad `vcpu_op` arguments.

use std::process::{Command, Output};

fn vmm(vcpus: u32, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--image", "smp", "--mem", "32M", "--timeout", "120", "--stats"])
        .args(["--vcpus", &vcpus.to_string()])
        .args(extra)
        .output()
        .expect("run vmm")
}

/// `key=<n>` in `line`.
fn field(line: &str, key: &str) -> u64 {
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str())?.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// Runs the guest on `n` vCPUs and checks what it and `--stats` report.
fn every_vcpu_works(n: u32, extra: &[&str]) {
    let out = vmm(n, extra);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{n} vCPUs {extra:?}: {stdout}\n{stderr}");
    assert!(stdout.contains(&format!("smp: {n} vCPUs, total {} of {}", 200 * n, 200 * n)), "{stdout}");
    assert!(stdout.contains("misrouted 0, down/up resumed true: verified"), "{stdout}");
    for c in 0..n {
        let line = stdout.lines().find(|l| l.starts_with(&format!("cpu{c}: "))).expect("a line per vCPU");
        assert_eq!(field(line, "work"), 200, "{line}");
        assert!(field(line, "timer_ticks") >= 1, "{line}");
        // 10 ping-pong rounds, vCPU 1 one more (sent while it was down);
        // an IPI port's events reach only its vCPU.
        let ipis = if c == 0 { 0 } else { 10 + u64::from(c == 1) };
        assert_eq!(field(line, "ipis"), ipis, "{line}");
        if c > 0 {
            assert_eq!(field(line, "upcalls"), ipis, "{line}");
        }
        // Each vCPU made hypercalls of its own (--stats, one line each).
        let stats = stderr.lines().find(|l| l.starts_with(&format!("vcpu{c}: "))).expect("a stats line per vCPU");
        assert!(field(stats, "hypercalls") > 0, "{stats}");
    }
}

#[test]
fn one_vcpu() {
    every_vcpu_works(1, &[]);
}

#[test]
fn two_vcpus() {
    every_vcpu_works(2, &[]);
}

#[test]
fn four_vcpus() {
    every_vcpu_works(4, &[]);
}

/// The 2-level ABI (each vCPU scans its own selector, shared bitmaps)
/// and direct paging (the new vCPUs' CR3 checked by the validator).
#[test]
fn three_vcpus_on_2_level_events_and_pv_paging() {
    every_vcpu_works(3, &["--cmdline", "evtchn=2l", "--paging", "pv"]);
}

/// Xen's errnos for bad arguments (`do_vcpu_op()`: `-ENOENT` for a vCPU
/// the domain lacks; `common_vcpu_op()`: `-EINVAL` for `up` before
/// `initialise`; `arch_initialise_vcpu()`: `-EEXIST` the second time;
/// `arch_set_info_hvm_guest()`: `-EINVAL` for a bad context or CR3;
/// `arch_set_info_guest()`: `-EINVAL` for a CR3 that cannot become a root
/// table, in the validated paging modes only), and the VM runs on.
#[test]
fn hostile_vcpu_op_arguments_get_xens_errnos() {
    for (paging, unpinned, good) in [("native", "ok", "EEXIST"), ("pv", "EINVAL", "ok"), ("trapped", "EINVAL", "ok")] {
        let out = vmm(2, &["--cmdline", "hostile", "--paging", paging]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{paging}: {stdout}");
        for want in [
            "hostile: initialise vcpu 2: ENOENT".to_string(),
            "hostile: is_up vcpu 2: ENOENT".into(),
            "hostile: bind_ipi vcpu 2: ENOENT".into(),
            "hostile: up before initialise: EINVAL".into(),
            "hostile: 32-bit context: EINVAL".into(),
            "hostile: cr3 outside RAM: EINVAL".into(),
            format!("hostile: cr3 not a pinned L4: {unpinned}"),
            format!("hostile: initialise: {good}"),
            "hostile: initialise again: EEXIST".into(),
        ] {
            assert!(stdout.lines().any(|l| l == want), "{paging}: no {want:?} in {stdout}");
        }
    }
}

/// The blk demo with `--vcpus N` (issue 19 item 3): one queue per vCPU
/// (`multi-queue-num-queues`, `xen/include/public/io/blkif.h`), each
/// queue's event channel bound to its vCPU (`EVTCHNOP_bind_vcpu`), every
/// vCPU writing its region at once, then reading back the region another
/// vCPU wrote; the guest verifies the data and that no event reached a
/// vCPU its port is not bound to.
fn blk_demo_on(n: u32) {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk).unwrap().set_len(8 << 20).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--mem", "32M", "--timeout", "120", "--vcpus", &n.to_string()])
        .args(["--disk", disk.to_str().unwrap()])
        .output()
        .expect("run vmm");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("blk smp: vcpus={n} queues={n} verified={n}/{n} bad=0 misrouted=0")), "{stdout}");
    for c in 0..n {
        let line = stdout.lines().find(|l| l.starts_with(&format!("blk smp: cpu{c}: "))).expect("a line per vCPU");
        // 40 writes, a flush and 10 reads of 16 KiB on its own queue.
        assert_eq!(field(line, "requests"), 51, "{line}");
        assert!(line.contains(" bad=0 ") && line.ends_with("verified=true"), "{line}");
    }
    // The writes reached the image: each vCPU's region holds data.
    let image = std::fs::read(&disk).unwrap();
    for q in 0..n as usize {
        let region = &image[q * 512 * 512..(q * 512 + 320) * 512];
        assert!(region.iter().any(|&b| b != 0), "region {q} was never written");
    }
}

#[test]
fn blk_demo_on_two_vcpus_uses_a_queue_per_vcpu() {
    blk_demo_on(2);
}

#[test]
fn blk_demo_on_four_vcpus_uses_a_queue_per_vcpu() {
    blk_demo_on(4);
}
