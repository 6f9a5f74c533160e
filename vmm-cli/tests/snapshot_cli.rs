//! Snapshot and restore end to end through the binary, under the default
//! seccomp filters (docs/snapshot.md): a soak guest (`--image blk
//! --cmdline soak=0`, which writes, flushes, reads back and verifies its
//! disk) is snapshotted mid-run with `vmm ctl snapshot`, the source is
//! killed, and `vmm restore` continues it twice from the same snapshot:
//! each restored guest makes progress, stops when asked (`vmm ctl
//! shutdown`, through its store watch on `control/shutdown`, restored) and
//! exits 0 with every round verified. Truncated, tampered and
//! other-version state files, and a disk still in use, are refused with a
//! one-line error.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

#[path = "common/process.rs"]
mod process;
use process::{ctl, field, text, vmm};

/// A running VMM whose stdout lines arrive on a channel.
struct Running {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn spawn(cmd: &mut Command) -> Running {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn vmm");
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Running { child, lines, seen: Vec::new() }
    }

    /// Waits (at most 120 s) for a stdout line starting with `prefix` that
    /// `pred` accepts; returns it.
    fn wait_line(&mut self, prefix: &str, pred: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + Duration::from_secs(120);
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.starts_with(prefix) && pred(&l) {
                        return l;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let err = self.child.stderr.take().map(|mut e| {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
            s
        });
        panic!("no {prefix:?} line; stdout:\n{}\nstderr:\n{}", self.seen.join("\n"), err.unwrap_or_default());
    }

    /// Waits for the process's end; (status, all stdout lines, stderr).
    fn finish(mut self) -> (Option<i32>, Vec<String>, String) {
        let status = self.child.wait().expect("wait for vmm").code();
        self.seen.extend(self.lines.try_iter());
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        (status, self.seen, err)
    }
}

/// Waits for the socket to accept a request.
fn wait_api(sock: &Path) {
    // Until the socket answers and a vCPU is attached: before that, the
    // VM is "not running" and a snapshot is refused (409, "retry once it
    // has booted"), which a loaded machine makes likely.
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let out = ctl(sock, &["info"]);
        let info: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
        if out.status.success() && info.is_some_and(|i| i["state"] != "not running") {
            return;
        }
        assert!(Instant::now() < end, "the VM behind {} never answered as booted", sock.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Restores `snap` with an API socket, waits for progress past `rounds`,
/// asks the guest to stop, and checks it ended verified with status 0.
/// Returns the final round count.
fn restore_and_finish(tmp: &Path, snap: &Path, name: &str, rounds: u64) -> u64 {
    let sock = tmp.join(format!("{name}.sock"));
    let mut r =
        Running::spawn(vmm().arg("restore").arg(snap).arg("--api-socket").arg(&sock).args(["--timeout", "240"]));
    // The restored guest continues from its snapshot (its counters go on
    // from there), its disk I/O and store round trips work again.
    let line = r.wait_line("soak: progress ", |l| field(l, "rounds") > rounds + 20);
    assert_eq!((field(&line, "verify_errors"), field(&line, "io_errors")), (0, 0), "{line}");
    wait_api(&sock);
    let out = ctl(&sock, &["shutdown"]);
    assert!(out.status.success(), "vmm ctl shutdown: {}", text(&out.stderr));
    let (status, lines, err) = r.finish();
    let all = lines.join("\n");
    assert_eq!(status, Some(0), "{name}: {all}\n{err}");
    // The guest saw `control/shutdown` through the watch it set before the
    // snapshot (pv_store's restored watches): docs/misc/xenstore.txt WATCH.
    assert!(all.contains("soak: control/shutdown: "), "{all}");
    let done = lines.iter().find(|l| l.starts_with("soak: done ")).unwrap_or_else(|| panic!("no done line: {all}"));
    assert_eq!((field(done, "verify_errors"), field(done, "io_errors")), (0, 0), "{done}");
    // Nothing the guest printed before the snapshot is printed again (the
    // console back end continues at the ring's `out_cons`).
    // (A line the guest wrote just before the snapshot but the source's
    // console had not drained yet is printed here: hence `>=`.)
    assert!(lines.iter().filter(|l| l.starts_with("soak: progress ")).all(|l| field(l, "rounds") >= rounds), "{all}");
    field(done, "rounds")
}

/// Copies the snapshot `src` to `dst` with the state file changed by `f`.
fn variant(src: &Path, dst: &Path, f: impl Fn(&mut Vec<u8>)) -> PathBuf {
    std::fs::create_dir_all(dst).unwrap();
    std::fs::copy(src.join("memory"), dst.join("memory")).unwrap();
    let mut state = std::fs::read(src.join("state")).unwrap();
    f(&mut state);
    std::fs::write(dst.join("state"), state).unwrap();
    dst.to_path_buf()
}

/// `vmm restore` of a bad snapshot fails with one `error:` line saying
/// what is wrong (and the VM never runs).
fn assert_refused(dir: &Path, want: &str) {
    let out = vmm().arg("restore").arg(dir).args(["--timeout", "30"]).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}: {err}", dir.display());
    let lines: Vec<_> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(want), "{want}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.stdout.is_empty(), "the guest ran: {}", text(&out.stdout));
}

#[test]
fn soak_guest_snapshot_kill_source_restore_twice_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("soak.img");
    std::fs::write(&img, vec![0u8; 4 << 20]).unwrap();
    let sock = tmp.path().join("src.sock");
    let snap = tmp.path().join("snap");
    let mut src = Running::spawn(
        vmm()
            .args(["run", "--image", "blk", "--timeout", "240", "--cmdline", "soak=0 every=10", "--disk"])
            .arg(&img)
            .arg("--api-socket")
            .arg(&sock),
    );
    src.wait_line("soak: progress ", |l| field(l, "rounds") >= 20);
    wait_api(&sock);
    let out = ctl(&sock, &["snapshot", snap.to_str().unwrap()]);
    assert!(out.status.success(), "vmm ctl snapshot: {}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["memory_bytes"].as_u64().unwrap() > 0, "{report}");
    // Sparse: only pages holding data (docs/snapshot.md), far less than
    // the 64 MiB of RAM.
    let mem = std::fs::metadata(snap.join("memory")).unwrap();
    assert_eq!(mem.len(), 64 << 20);
    assert!(std::os::unix::fs::MetadataExt::blocks(&mem) * 512 < 16 << 20, "not sparse: {mem:?}");
    // The source runs on after the snapshot: its counter moves.
    let after = src.wait_line("soak: progress ", |_| true);
    let at_snapshot = field(&after, "rounds").saturating_sub(10);

    // While the source holds the disk, a restore is refused (the image
    // lock, as for a second `vmm run`).
    let busy = vmm().arg("restore").arg(&snap).args(["--timeout", "30"]).output().unwrap();
    assert_eq!(busy.status.code(), Some(1), "{}", text(&busy.stderr));
    assert_eq!(text(&busy.stderr).lines().count(), 1, "{}", text(&busy.stderr));
    assert!(text(&busy.stderr).contains("soak.img"), "{}", text(&busy.stderr));

    src.child.kill().expect("SIGKILL the source");
    let _ = src.child.wait();
    // The snapshot was taken after `at_snapshot` rounds (the progress line
    // before it); every restore goes on from there.
    let first = restore_and_finish(tmp.path(), &snap, "restore1", at_snapshot);
    let second = restore_and_finish(tmp.path(), &snap, "restore2", at_snapshot);
    assert!(first > at_snapshot && second > at_snapshot, "{first} {second} {at_snapshot}");

    // Bad snapshots (snapshot/format.rs): one line each, never a panic.
    let v = |name: &str, f: &dyn Fn(&mut Vec<u8>)| variant(&snap, &tmp.path().join(name), f);
    assert_refused(&v("truncated", &|s| s.truncate(s.len() / 2)), "truncated snapshot");
    assert_refused(&v("short", &|s| s.truncate(10)), "not a vmm snapshot");
    assert_refused(&v("version", &|s| s[8] = 99), "format version 99");
    assert_refused(
        &v("tampered", &|s| {
            let at = s.len() - 40;
            s[at] ^= 1;
        }),
        "checksum mismatch",
    );
    assert_refused(&tmp.path().join("nothing-here"), "nothing-here");

    // States that pass the checksum (resealed) but not the consistency
    // checks (snapshot/restore.rs, xen_domain::snapshot, pv_store::snapshot).
    type Edit = fn(&mut serde_json::Value);
    let edits: [(&str, Edit, &str); 9] = [
        ("vcpus", |s| s["config"]["vcpus"] = 2.into(), "do not match the 2 vCPUs"),
        ("vcpu-id", |s| s["vcpus"][0]["id"] = 7.into(), "do not match"),
        ("mem", |s| s["config"]["mem_bytes"] = 12345.into(), "corrupt snapshot"),
        ("ram", |s| s["vm"]["domain"]["ram_bytes"] = (128u64 << 20).into(), "cannot restore the domain state"),
        ("port", |s| s["vm"]["domain"]["evtchn"]["ports"][0]["port"] = 1_000_000.into(), "domain state"),
        ("node", |s| s["store"]["tree"]["nodes"][1]["path"] = "no//such".into(), "store state"),
        ("device", |s| s["devices"][0]["back"] = "/local/domain/0/backend/vbd/1/9".into(), "device state"),
        ("regs", |s| s["vcpus"][0]["regs"] = true.into(), "corrupt snapshot"),
        // The suspending vCPU must be one of the VM's (docs/snapshot.md).
        ("suspended", |s| s["suspended"] = serde_json::json!({ "vcpu": 5 }), "suspended by vCPU 5, of 1 vCPUs"),
    ];
    for (name, edit, want) in edits {
        assert_refused(&v(name, &|s| reseal(s, edit)), want);
    }
}

/// FNV-1a 64 (the state file's checksum, snapshot/format.rs).
fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Applies `edit` to the state file's payload and writes a valid header
/// (length, checksum) for it.
fn reseal(file: &mut Vec<u8>, edit: fn(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&file[32..]).unwrap();
    edit(&mut v);
    let payload = serde_json::to_vec(&v).unwrap();
    file.truncate(32);
    file[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    file[24..32].copy_from_slice(&fnv1a64(&payload).to_le_bytes());
    file.extend_from_slice(&payload);
}

const GRUB: &str = "/usr/lib/grub-xen/grub-i386-xen_pvh.bin";

/// Debian's GRUB (a 32-bit Xen PVH guest with its own blkfront, console
/// and store client, as in pvh_grub.rs) waiting at its prompt is
/// snapshotted, the source destroyed, and the restored GRUB takes a typed
/// command that reads the disk through the re-attached blkback (its
/// x86_32-abi ring), then powers off with `halt`.
#[test]
fn grub_at_its_prompt_restores_and_still_reads_its_disk() {
    assert!(Path::new(GRUB).exists(), "{GRUB} missing: run ./setup.sh (installs grub-xen-host)");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::write(root.join("data/restored-9e1f.txt"), "x").unwrap();
    let img = tmp.path().join("disk.img");
    let out = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext2", "-d"])
        .arg(&root)
        .arg(&img)
        .arg("4M")
        .output()
        .expect("mke2fs (e2fsprogs; run ./setup.sh)");
    assert!(out.status.success(), "mke2fs: {}", text(&out.stderr));
    let sock = tmp.path().join("grub.sock");
    let snap = tmp.path().join("snap");
    // GRUB's prompt does not end its line: read the raw stream.
    let mut src = vmm()
        .args(["run", "--kernel", GRUB, "--timeout", "300", "--disk"])
        .arg(&img)
        .arg("--api-socket")
        .arg(&sock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run vmm");
    let mut stdout = src.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !text(&seen).contains("grub>") {
        let n = std::io::Read::read(&mut stdout, &mut buf).unwrap();
        assert!(n > 0, "GRUB ended before its prompt: {}", text(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    wait_api(&sock);
    let out = ctl(&sock, &["snapshot", snap.to_str().unwrap()]);
    assert!(out.status.success(), "vmm ctl snapshot: {}", text(&out.stderr));
    src.kill().unwrap();
    let _ = src.wait();

    let mut r = vmm()
        .arg("restore")
        .arg(&snap)
        .args(["--timeout", "120"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vmm restore");
    let mut stdin = r.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"ls (xen/xvda)/data/\nhalt\n").unwrap();
    let out = r.wait_with_output().unwrap();
    drop(stdin);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    // The typed command ran in the restored GRUB and read the directory
    // through blkback (blkif.h's x86_32 ring, re-attached at its indices).
    assert!(stdout.contains("restored-9e1f.txt"), "not listed:\n{stdout}\n{stderr}");
    // GRUB's `halt` is SCHEDOP_shutdown(poweroff): status 0 (sched_op.c).
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
}

/// `--vcpus 2` with the soak guest, which leaves vCPU 1 down: the down
/// vCPU's thread parks for the pause and reads its own state too, so the
/// snapshot holds both vCPUs (`VCPUOP_down` keeps a vCPU's state for a
/// later `VCPUOP_up`: xen/common/domain.c) and the restore continues.
/// Also: a hot-plugged disk is refused until removed; a paused VM stays
/// paused; a restored VM's own snapshot restores.
#[test]
fn a_guest_with_a_down_vcpu_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("smp.img");
    std::fs::write(&img, vec![0u8; 4 << 20]).unwrap();
    let sock = tmp.path().join("src.sock");
    let snap = tmp.path().join("snap");
    let mut src = Running::spawn(
        vmm()
            .args(["run", "--image", "blk", "--vcpus", "2", "--timeout", "240", "--cmdline", "soak=0 every=10"])
            .arg("--disk")
            .arg(&img)
            .arg("--api-socket")
            .arg(&sock),
    );
    let line = src.wait_line("soak: progress ", |l| field(l, "rounds") >= 20);
    wait_api(&sock);
    // A disk hot-plugged since the start is not in the saved
    // configuration: refused (409, one line) until it is removed.
    let extra = tmp.path().join("extra.img");
    std::fs::write(&extra, vec![0u8; 1 << 20]).unwrap();
    let out = ctl(&sock, &["add-disk", extra.to_str().unwrap()]);
    assert!(out.status.success(), "add-disk: {}", text(&out.stderr));
    let out = ctl(&sock, &["snapshot", snap.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.lines().count() == 1 && err.contains("hot-plugged"), "{err}");
    let out = ctl(&sock, &["remove-device", "xvdb", "--timeout-ms", "100"]);
    assert!(out.status.success(), "remove-device: {}", text(&out.stderr));
    // A paused VM is snapshotted and stays paused (docs/api.md).
    assert!(ctl(&sock, &["pause"]).status.success());
    let out = ctl(&sock, &["snapshot", snap.to_str().unwrap()]);
    assert!(out.status.success(), "vmm ctl snapshot: {}", text(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&ctl(&sock, &["info"]).stdout).unwrap();
    assert_eq!(info["state"], "paused", "{info}");
    src.child.kill().unwrap();
    let _ = src.child.wait();

    // A restored VM is snapshotted in turn, and that snapshot restores.
    let sock1 = tmp.path().join("r1.sock");
    let snap2 = tmp.path().join("snap2");
    let mut r1 =
        Running::spawn(vmm().arg("restore").arg(&snap).arg("--api-socket").arg(&sock1).args(["--timeout", "240"]));
    let line = r1.wait_line("soak: progress ", |l| field(l, "rounds") > field(&line, "rounds") + 20);
    wait_api(&sock1);
    let out = ctl(&sock1, &["snapshot", snap2.to_str().unwrap()]);
    assert!(out.status.success(), "vmm ctl snapshot of a restored VM: {}", text(&out.stderr));
    r1.child.kill().unwrap();
    let _ = r1.child.wait();
    restore_and_finish(tmp.path(), &snap2, "smp", field(&line, "rounds"));
}

/// A virtio-blk guest (`--image virtio --cmdline test=bench`: 6000 random
/// reads, 8 in flight) snapshotted while its requests are in flight: the
/// snapshot waits until the transport has taken every available entry
/// (each is answered under the transport's lock), saves the queues'
/// indices (virtio 1.x 2.7: `last_avail`/`used` idx are the device's),
/// and the restored guest gets every remaining request answered.
#[test]
fn virtio_blk_guest_with_requests_in_flight_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("v.img");
    std::fs::write(&img, vec![0u8; 8 << 20]).unwrap();
    let sock = tmp.path().join("v.sock");
    let snap = tmp.path().join("snap");
    let mut src = Running::spawn(
        vmm()
            .args(["run", "--image", "virtio", "--timeout", "240", "--cmdline", "test=bench n=6000 depth=8"])
            .arg("--disk")
            .arg(format!("{},transport=virtio", img.display()))
            .arg("--api-socket")
            .arg(&sock),
    );
    wait_api(&sock);
    let out = ctl(&sock, &["snapshot", snap.to_str().unwrap()]);
    assert!(out.status.success(), "vmm ctl snapshot: {}", text(&out.stderr));
    src.child.kill().unwrap();
    let (_, before, _) = src.finish();
    assert!(!before.iter().any(|l| l.starts_with("bench:")), "the bench ended before the snapshot: {before:?}");
    let out = vmm().arg("restore").arg(&snap).args(["--timeout", "240"]).output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    // Every request answered OK (`bad` counts VIRTIO_BLK_S_* other than OK).
    assert!(stdout.contains("bench: n=6000 depth=8 bad=0"), "{stdout}\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
}

/// A network namespace with one TAP device, removed on drop (as
/// net_cli.rs makes them; needs root).
struct Netns(String);

impl Netns {
    fn with_tap(tag: &str, tap: &str, host_addr: &str) -> Netns {
        let name = format!("pvsnap-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let ns = Netns(name);
        ns.run_ip(&["netns", "add", &ns.0]);
        for args in [
            vec!["-n", &ns.0, "link", "set", "lo", "up"],
            vec!["-n", &ns.0, "tuntap", "add", "dev", tap, "mode", "tap"],
            vec!["-n", &ns.0, "addr", "add", host_addr, "dev", tap],
            vec!["-n", &ns.0, "link", "set", tap, "up"],
        ] {
            ns.run_ip(&args);
        }
        ns
    }

    fn run_ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("run ip (install iproute2)");
        assert!(out.status.success(), "ip {args:?}: {}", text(&out.stderr));
    }

    fn exec(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]);
        c
    }

    /// The guest's HTTP page through `curl` inside the namespace, retried
    /// for up to 60 s (the guest may still be booting).
    fn page(&self, url: &str) -> String {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.exec().args(["curl", "-s", "-m", "10", url]).output().expect("run curl");
            let page = text(&out.stdout);
            if out.status.success() && page.contains("<h1>PV guest net</h1>") {
                return page;
            }
            assert!(Instant::now() < end, "no page from {url}: {page} {}", text(&out.stderr));
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// The `net` guest (smoltcp over netfront) on a TAP device, snapshotted
/// while it serves HTTP; the restore opens the TAP again by name, netback
/// re-attaches to the restored rings (its posted receive buffers still
/// posted) and the guest answers again, then powers off when asked.
#[test]
fn net_guest_on_a_tap_restores_and_answers_again() {
    net_guest_restores("xen", "");
}

/// The same over virtio-net: the transmit queue is drained, the receive
/// queue's posted buffers stay posted (virtio 1.x 5.1.6.3), both queues'
/// indices are restored.
#[test]
fn virtio_net_guest_restores_and_answers_again() {
    net_guest_restores("vio", ",transport=virtio");
}

fn net_guest_restores(tag: &str, transport: &str) {
    // SAFETY: geteuid has no preconditions.
    assert!(unsafe { libc::geteuid() } == 0, "this test needs root (network namespace and TAP device)");
    let tap = format!("pvsnap{tag}0");
    let ns = Netns::with_tap(tag, &tap, "10.78.0.1/24");
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("net.sock");
    let snap = tmp.path().join("snap");
    let url = "http://10.78.0.2/";
    let mut src = ns
        .exec()
        .arg(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--image", "net", "--timeout", "240", "--net"])
        .arg(format!("tap={tap},mac=02:00:00:78:00:02{transport}"))
        .args(["--cmdline", "ip=10.78.0.2/24", "--api-socket"])
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run vmm");
    ns.page(url);
    wait_api(&sock);
    let out = ctl(&sock, &["snapshot", snap.to_str().unwrap()]);
    assert!(out.status.success(), "vmm ctl snapshot: {}", text(&out.stderr));
    src.kill().unwrap();
    let _ = src.wait();

    let restored = ns
        .exec()
        .arg(env!("CARGO_BIN_EXE_vmm"))
        .arg("restore")
        .arg(&snap)
        .args(["--timeout", "240"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vmm restore");
    // The source is gone: this answer is the restored guest's stack,
    // over the re-attached netif.h rings and the TAP opened again.
    let page = ns.page(url);
    assert!(page.contains("rx_packets"), "{page}");
    let _ = ns.exec().args(["curl", "-s", "-m", "10", &format!("{url}shutdown")]).output();
    let out = restored.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("net: shutdown:"), "{stdout}");
}

/// A soak guest on a fresh 4 MiB disk with an API socket (`extra` added
/// to its command line), once it has done 20 rounds.
fn soak_source(tmp: &Path, extra: &str) -> (Running, PathBuf) {
    let img = tmp.join("soak.img");
    std::fs::write(&img, vec![0u8; 4 << 20]).unwrap();
    let sock = tmp.join("src.sock");
    let mut src = Running::spawn(
        vmm()
            .args(["run", "--image", "blk", "--timeout", "240", "--cmdline", &format!("soak=0 every=10 {extra}")])
            .arg("--disk")
            .arg(&img)
            .arg("--api-socket")
            .arg(&sock),
    );
    src.wait_line("soak: progress ", |l| field(l, "rounds") >= 20);
    wait_api(&sock);
    (src, sock)
}

/// Xen's checkpoint (`xl save -c`) and restore: `vmm ctl snapshot
/// --cooperative` has the soak guest suspend itself, snapshots it, and
/// cancels the suspend (the source runs on); `vmm restore` resumes the
/// snapshot as a new domain: the guest's disk front end reconnects to a
/// back end reset to InitWait and its verified rounds go on.
#[test]
fn cooperative_snapshot_source_runs_on_restore_resumes_as_a_new_domain() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut src, sock) = soak_source(tmp.path(), "");
    let snap = tmp.path().join("coop");
    let out = ctl(&sock, &["snapshot", "--cooperative", snap.to_str().unwrap()]);
    assert!(out.status.success(), "vmm ctl snapshot --cooperative: {}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["cooperative"], true, "{report}");
    // The guest quiesced and suspended (docs/misc/xenstore-paths.pandoc
    // control/shutdown = suspend), then saw its suspend cancelled:
    // SHUTDOWN_suspend returned 1 (xen/include/public/sched.h, libxc's
    // xc_domain_resume fast path), and its rounds go on verified.
    let at = field(&src.wait_line("soak: suspending ", |_| true), "rounds");
    let resumed = src.wait_line("soak: resumed", |_| true);
    assert!(resumed.starts_with("soak: resumed (suspend cancelled)"), "hypercall returned 1: {resumed}");
    let on = src.wait_line("soak: progress ", |l| field(l, "rounds") > at);
    assert_eq!((field(&on, "verify_errors"), field(&on, "io_errors")), (0, 0), "{on}");
    src.child.kill().expect("SIGKILL the source");
    let _ = src.child.wait();

    let rsock = tmp.path().join("restored.sock");
    let mut r =
        Running::spawn(vmm().arg("restore").arg(&snap).arg("--api-socket").arg(&rsock).args(["--timeout", "240"]));
    // SHUTDOWN_suspend returns 0 in the restored domain (sched.h); the
    // guest reconnects its disk through the xenbus state machine (back end
    // in InitWait: docs/misc/xenstore-paths.pandoc, xen/include/public/io/xenbus.h).
    let line = r.wait_line("soak: resumed", |_| true);
    assert!(line.starts_with("soak: resumed as a new domain"), "hypercall returned 0: {line}");
    assert_eq!(field(&line, "rounds"), at, "continues from the snapshot's round: {line}");
    let line = r.wait_line("soak: progress ", |l| field(l, "rounds") > at + 20);
    assert_eq!((field(&line, "verify_errors"), field(&line, "io_errors")), (0, 0), "{line}");
    wait_api(&rsock);
    let out = ctl(&rsock, &["shutdown"]);
    assert!(out.status.success(), "vmm ctl shutdown: {}", text(&out.stderr));
    let (status, lines, err) = r.finish();
    let all = lines.join("\n");
    assert_eq!(status, Some(0), "{all}\n{err}");
    let done = lines.iter().find(|l| l.starts_with("soak: done ")).unwrap_or_else(|| panic!("no done line: {all}"));
    assert_eq!((field(done, "verify_errors"), field(done, "io_errors")), (0, 0), "{done}");
    assert!(field(done, "rounds") > at + 20, "{done}");
    assert!(!all.contains("reconnect failed"), "{all}");

    // The state file records the suspend, by vCPU (docs/snapshot.md).
    let state = std::fs::read(snap.join("state")).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&state[32..]).unwrap();
    assert_eq!(json["suspended"]["vcpu"], 0, "{}", json["suspended"]);
}

/// A guest that does not answer `control/shutdown = suspend` gets no
/// snapshot: one error line (libxl's timeout, the request withdrawn), and
/// it runs on.
#[test]
fn cooperative_snapshot_of_a_guest_that_ignores_suspend_fails_and_it_runs_on() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut src, sock) = soak_source(tmp.path(), "suspend=ignore");
    let snap = tmp.path().join("coop");
    let out = ctl(&sock, &["snapshot", "--cooperative", "--timeout-ms", "1000", snap.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("did not suspend") && err.contains("runs on"), "{err}");
    assert!(!snap.join("state").exists(), "no snapshot was written");
    src.wait_line("soak: suspend requested: ignored", |_| true);
    let info: serde_json::Value = serde_json::from_slice(&ctl(&sock, &["info"]).stdout).unwrap();
    assert_eq!(info["state"], "running", "{info}");
    let line = src.wait_line("soak: progress ", |_| true);
    assert_eq!((field(&line, "verify_errors"), field(&line, "io_errors")), (0, 0), "{line}");
    let out = ctl(&sock, &["shutdown"]);
    assert!(out.status.success(), "vmm ctl shutdown: {}", text(&out.stderr));
    let (status, lines, err) = src.finish();
    assert_eq!(status, Some(0), "{}\n{err}", lines.join("\n"));
}
