//! Disk hot-plug through xenbus (`vmm ctl add-disk` / `remove-device`,
//! as `xl block-attach` / `block-detach`), end to end through the binary
//! under the default seccomp filters: the `blk` guest starts with no disk
//! (`hotplug=<rounds>`), notices each attached disk through its watch on
//! `device/vbd`, reads and checks it, and closes it when the back end
//! goes `Closing`; a guest that ignores `Closing` (`hotplug=ignore`) has
//! its disk removed by force after the timeout. See docs/api.md.

#[allow(dead_code)] // this binary uses only some of the shared helpers
mod common;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Output, Stdio};

#[path = "common/process.rs"]
mod process;
use process::{text, vmm};

/// The seed the guest's `hotplug` mode checks by default (blk.rs
/// `HOTPLUG_SEED`).
const SEED: u64 = 0x407;

/// A 64 KiB image holding the guest's pattern for `SEED`.
fn pattern_image(path: &Path) {
    let bytes: Vec<u8> =
        (0..65536u64).step_by(8).flat_map(|o| frontend_guest::blkfront::pattern_word(SEED, o).to_le_bytes()).collect();
    assert!(common::pattern_ok(&bytes, 0, 8, SEED));
    std::fs::write(path, bytes).unwrap();
}

struct Vm {
    child: Child,
    stdout: BufReader<ChildStdout>,
    sock: PathBuf,
    dir: tempfile::TempDir,
}

impl Vm {
    /// `vmm run --image blk --cmdline <cmdline> --api-socket ...`, no disk.
    fn start(cmdline: &str) -> Vm {
        Vm::start_with(cmdline, |_| Vec::new())
    }

    /// As [`start`](Self::start), with the extra arguments `args` makes
    /// in the VM's temporary directory.
    fn start_with(cmdline: &str, args: impl FnOnce(&Path) -> Vec<String>) -> Vm {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let mut child = vmm()
            .args(["run", "--image", "blk", "--timeout", "120", "--cmdline", cmdline])
            .args(args(dir.path()))
            .arg("--api-socket")
            .arg(&sock)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut vm = Vm { child, stdout, sock, dir };
        vm.expect("round 1: waiting for a disk under device/vbd");
        vm
    }

    /// Reads stdout lines until one contains `want`; returns that line.
    fn expect(&mut self, want: &str) -> String {
        let mut seen = Vec::new();
        let mut line = String::new();
        while self.stdout.read_line(&mut line).unwrap_or(0) > 0 {
            if line.contains(want) {
                return line;
            }
            seen.push(std::mem::take(&mut line));
        }
        panic!("no {want:?} in the guest's output: {seen:?}");
    }

    fn ctl(&self, args: &[&str]) -> Output {
        vmm().arg("ctl").arg("--socket").arg(&self.sock).args(args).output().expect("run vmm ctl")
    }

    fn ctl_json(&self, args: &[&str]) -> Value {
        let out = self.ctl(args);
        assert!(out.status.success(), "vmm ctl {args:?}: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
    }

    /// Attaches a [`pattern_image`] at the first free vdev (`xvda`) and
    /// waits for the guest to have read and verified it.
    fn attach_pattern_disk(&mut self) {
        let img = self.dir.path().join("disk.img");
        pattern_image(&img);
        self.ctl_json(&["add-disk", img.to_str().unwrap()]);
        assert!(self.expect("attached").contains("verified"));
    }

    /// Waits for the end: the guest powered off (status 0) and no thread
    /// broke its seccomp filter.
    fn finish(mut self) {
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        let out = self.child.wait_with_output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(!stderr.contains("seccomp"), "{stderr}");
    }
}

/// Attach, read, detach (the front end closes), twice: the second round
/// re-attaches the same image, so the first detach must have released
/// its lock (the back end was dropped), at another vdev.
#[test]
fn a_disk_hot_plugged_into_a_running_guest_is_read_then_unplugged_twice() {
    let mut vm = Vm::start("hotplug=2");
    let img = vm.dir.path().join("disk.img");
    pattern_image(&img);
    let img = img.to_str().unwrap().to_string();

    // Bad requests first: one line each, the VM runs on.
    let out = vm.ctl(&["add-disk", "/nonexistent/disk.img"]);
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.lines().count() == 1 && err.contains("400"), "{err}");
    let out = vm.ctl(&["remove-device", "vbd/51712"]);
    assert!(!out.status.success() && text(&out.stderr).contains("404"), "{}", text(&out.stderr));

    for (round, vdev, name) in [(1, 51712, "xvda"), (2, 51728, "xvdb")] {
        if round == 2 {
            vm.expect("round 2: waiting for a disk under device/vbd");
        }
        // libxl_disk.c / xen-vbd-interface(7): device/vbd/<vdev> and
        // backend/vbd/<domid>/<vdev>.
        let added = vm.ctl_json(&["add-disk", &format!("{img},vdev={name}")]);
        assert_eq!(added["id"], format!("vbd/{vdev}"), "{added}");
        assert_eq!(added["frontend"], format!("/local/domain/1/device/vbd/{vdev}"), "{added}");
        assert_eq!(added["backend"], format!("/local/domain/0/backend/vbd/1/{vdev}"), "{added}");
        let line = vm.expect("attached");
        assert!(line.contains(&format!("vbd/{vdev} attached, 64 KiB, read 8 sectors: verified")), "{line}");
        // The same number twice: refused while attached.
        let out = vm.ctl(&["add-disk", &format!("{img},vdev={name},readonly")]);
        assert!(!out.status.success() && text(&out.stderr).contains("409"), "{}", text(&out.stderr));
        // libxl_device.c: the back end goes Closing, the front end closes.
        let removed = vm.ctl_json(&["remove-device", name]);
        assert_eq!(removed["removal"], "closed", "{removed}");
        assert!(vm.expect("back end").contains("Closing"));
        // The back end unmapped the ring: the guest's GNTTABOP end of
        // access succeeds (grant_table.h: a mapped entry cannot be ended).
        vm.expect(&format!("vbd/{vdev} closed; ring released"));
    }
    vm.finish();
}

/// A front end that ignores `Closing`: the detach is forced after the
/// timeout (libxl_device.c `device_backend_callback()`: ERROR_TIMEDOUT
/// -> force), the directories vanish, and the guest sees them go.
#[test]
fn a_detach_the_guest_ignores_is_forced_after_the_timeout() {
    let mut vm = Vm::start("hotplug=ignore");
    vm.attach_pattern_disk();
    let removed = vm.ctl_json(&["remove-device", "xvda", "--timeout-ms", "500"]);
    assert_eq!(removed["removal"], "forced", "{removed}");
    // Forced, the back end still unmapped the ring (its grant ends).
    vm.expect("ignored Closing; removed by force; ring released");
    vm.finish();
}

/// Unplugged while busy: the guest reads the disk in a loop until it sees
/// the back end go `Closing`; every read verifies, then it closes as in
/// the idle case and the detach is not forced.
#[test]
fn a_disk_unplugged_while_the_guest_reads_it_closes_cleanly() {
    let mut vm = Vm::start("hotplug=busy");
    vm.attach_pattern_disk();
    vm.expect("reading until the detach");
    let removed = vm.ctl_json(&["remove-device", "vbd/51712"]);
    assert_eq!(removed["removal"], "closed", "{removed}");
    let line = vm.expect("reads until the detach");
    assert!(line.contains("all verified"), "{line}");
    vm.expect("vbd/51712 closed; ring released");
    vm.finish();
}

/// A cold-plugged `--disk` is detached as a hot-plugged one is (Closing,
/// the front end closes, both directories go: libxl_device.c), and its
/// back end is dropped: the same image attached again at run time gets
/// its lock (a held lock would refuse it, disk_lock_cli.rs).
#[test]
fn a_cold_plugged_disk_is_detached_and_its_image_released() {
    let mut vm = Vm::start_with("hotplug=2", |dir| {
        let img = dir.join("disk.img");
        pattern_image(&img);
        vec!["--disk".into(), img.to_str().unwrap().into()]
    });
    assert!(vm.expect("attached").contains("verified"), "the cold disk is read");
    // Cold devices are not listed as hot-plugged.
    let stats = vm.ctl_json(&["stats"]);
    assert!(!stats["devices"].to_string().contains("hotplugged"), "{stats}");
    let removed = vm.ctl_json(&["remove-device", "xvda"]);
    assert_eq!(removed["removal"], "closed", "{removed}");
    vm.expect("vbd/51712 closed; ring released");
    let stats = vm.ctl_json(&["stats"]);
    assert!(!stats["devices"].to_string().contains("backend/vbd/1/51712"), "still listed: {stats}");
    vm.expect("round 2: waiting for a disk");
    let img = vm.dir.path().join("disk.img");
    let added = vm.ctl_json(&["add-disk", img.to_str().unwrap()]);
    assert_eq!(added["id"], "vbd/51712", "{added}");
    assert!(vm.expect("attached").contains("verified"));
    assert_eq!(vm.ctl_json(&["remove-device", "vbd/51712"])["removal"], "closed");
    vm.finish();
}
