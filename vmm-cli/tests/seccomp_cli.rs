//! The per-thread seccomp filters of the `vmm` binary: on by default, the
//! normal paths run clean under them, and a forbidden system call from a
//! device thread stops the VMM with a clear message.

use std::process::{Command, Output};

fn vmm(args: &[&str], probe: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmm"));
    cmd.args(args);
    match probe {
        Some(p) => cmd.env(vmm::seccomp::PROBE_ENV, p),
        None => cmd.env_remove(vmm::seccomp::PROBE_ENV),
    };
    cmd.output().expect("run vmm")
}

fn assert_clean(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{what}: {stderr}");
    assert!(!stderr.contains("seccomp"), "{what}: {stderr}");
}

#[test]
fn demo_block_and_bench_paths_run_clean_under_the_filters() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    for p in [&a, &b] {
        std::fs::File::create(p).unwrap().set_len(4 << 20).unwrap();
    }
    let disks = [format!("{}", a.display()), format!("{},readonly", b.display())];
    assert_clean(&vmm(&["run", "--stats"], None), "demo");
    assert_clean(&vmm(&["run", "--disk", &disks[0], "--disk", &disks[1], "--echo", "1"], None), "two disks");
    assert_clean(&vmm(&["run", "--image", "pvdev", "--echo", "1", "--cmdline", "test=events n=8"], None), "events");
    assert_clean(&vmm(&["run", "--image", "paging", "--paging", "pv", "--cmdline", "test=multicall"], None), "paging");
    let c = dir.path().join("c.img");
    std::fs::File::create(&c).unwrap().set_len(1 << 20).unwrap();
    let virtio = format!("{},transport=virtio", c.display());
    assert_clean(&vmm(&["run", "--image", "virtio", "--disk", &virtio], None), "virtio disk");
    assert_clean(&vmm(&["bench", "--iters", "16", "--reps", "1"], None), "bench");
    // The net path (TAP in a network namespace, root only) runs under the
    // filters in `net_cli.rs`.
}

#[test]
fn a_forbidden_call_from_a_device_thread_stops_the_vmm_with_a_message() {
    let out = vmm(&["run", "--image", "hello"], Some("device"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(vmm::seccomp::SIGSYS_EXIT_STATUS), "{stderr}");
    let want = format!("error: seccomp: the device thread made forbidden system call {}", libc::SYS_socket);
    assert!(stderr.contains(&want), "{stderr}");
    // The switch turns the filters (and so the probe) off.
    let out = vmm(&["run", "--image", "hello", "--no-seccomp"], Some("device"));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A store transaction, as every Xen blkfront and netfront opens one to
/// write its ring references, under the default filters: the store thread
/// must not need a system call its filter forbids (a `HashMap`'s
/// `RandomState` asks for `getrandom`, and the VMM used to exit 159).
/// Semantics from Xen's `docs/misc/xenstore.txt` (TRANSACTION_START/END,
/// `EAGAIN` on conflict).
#[test]
fn a_store_transaction_runs_under_the_filters() {
    let out = vmm(&["run", "--image", "pvdev", "--cmdline", "test=xstxn"], None);
    assert_clean(&out, "store transaction");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for check in [
        "write inside",
        "read inside",
        "not visible outside",
        "commit",
        "read back after commit",
        "conflict is EAGAIN",
        "unknown id is ENOENT",
        "conflicting write dropped",
    ] {
        assert!(stdout.contains(&format!("xstxn: {check}: ok")), "{check}: {stdout}");
    }
    assert!(stdout.contains("xstxn: 0 failed"), "{stdout}");
}
