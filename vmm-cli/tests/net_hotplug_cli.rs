//! Network hot-plug through xenbus, as `xl network-attach` /
//! `network-detach` (tools/libs/light/libxl_nic.c, libxl_device.c),
//! through the binary under the default seccomp filters: the `net` guest
//! starts without an interface (`hotplug`), `vmm ctl add-net` creates the
//! TAP-backed netback and its store nodes (`device/vif/0`, handle 0 as
//! `libxl__device_nextid()` gives the first), the guest notices through its
//! watch on `device/vif`, connects and answers ping and TCP echo from the
//! host; `GET /vm.stats` lists the hot-plugged vif; `vmm ctl
//! remove-device vif/0` moves the back end to Closing, the guest closes
//! (Linux netfront's `netback_changed()`), the removal is "closed" and the
//! interface no longer answers. Runs in a network namespace the test makes
//! and removes (no route out of it). Needs root, `ip` and `ping`.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const HOST: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 1);
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 2);

#[path = "common/netns.rs"]
mod netns;
use netns::{is_root, Netns};

#[path = "common/process.rs"]
mod process;
use process::{ctl, text};

/// `ping -c <n>` of the guest from the namespace: its output.
fn ping(ns: &Netns, n: u32) -> String {
    let out = ns
        .exec(&["ping", "-c", &n.to_string(), "-i", "0.2", "-W", "5", &GUEST.to_string()])
        .output()
        .expect("run ping");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ctl_ok(sock: &Path, args: &[&str]) -> Value {
    let out = ctl(sock, args);
    assert!(out.status.success(), "vmm ctl {args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Kills the VMM if the test fails half-way.
struct Vmm(Child);

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads stdout until a line contains `want`; returns it.
fn until(out: &mut BufReader<ChildStdout>, want: &str) -> String {
    let mut seen = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap_or(0) > 0, "stdout ended before {want:?}: {seen:?}");
        if line.contains(want) {
            return line;
        }
        seen.push(line.clone());
    }
}

/// TCP echo of `data` through the guest's port 7.
fn echo(ns: &Netns, data: Vec<u8>) -> Vec<u8> {
    ns.run(move || {
        let start = Instant::now();
        let mut s = loop {
            match TcpStream::connect_timeout(&SocketAddr::from((GUEST, 7)), Duration::from_secs(2)) {
                Ok(s) => break s,
                Err(e) if start.elapsed() < Duration::from_secs(30) => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("cannot reach the guest's echo port: {e}"),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(&data).unwrap();
        let mut back = vec![0u8; data.len()];
        s.read_exact(&mut back).expect("read the echo");
        back
    })
    .join()
    .unwrap()
}

#[test]
fn a_vif_attached_at_run_time_carries_traffic_and_detaches_cleanly() {
    assert!(is_root(), "this test needs root (network namespace and TAP device)");
    let ns = Netns::new("vif");
    let tap = "pvhp0";
    ns.tap(tap, Some(&format!("{HOST}/24")), None);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let mut child = ns
        .exec(&[env!("CARGO_BIN_EXE_vmm"), "run", "--image", "net", "--timeout", "120"])
        .args(["--cmdline", &format!("ip={GUEST}/24 hotplug"), "--api-socket"])
        .arg(&sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vmm");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let vmm = Vmm(child);
    until(&mut out, "net: waiting for an interface (device/vif)");

    // Attach: the first handle is 0 (libxl__device_nextid()).
    let added = ctl_ok(&sock, &["add-net", &format!("tap={tap},mac=02:00:00:79:00:02")]);
    assert_eq!(added["id"], "vif/0", "{added}");
    assert_eq!(added["frontend"], "/local/domain/1/device/vif/0", "{added}");
    assert_eq!(added["backend"], "/local/domain/0/backend/vif/1/0", "{added}");
    let line = until(&mut out, "net: vif/0 mac");
    assert!(line.contains("02:00:00:79:00:02"), "the guest read the toolstack's mac: {line}");
    until(&mut out, "net: ready");
    // The same TAP again while attached: refused (backend/src/net/tap.rs
    // TapError::Taken), nothing left behind, the VM runs on.
    let again = ctl(&sock, &["add-net", &format!("tap={tap}")]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("is taken"), "{}", text(&again.stderr));

    // Traffic through the hot-plugged interface: ping and TCP echo.
    let p = ping(&ns, 3);
    assert!(p.contains("3 packets transmitted, 3 received"), "{p}");
    let data: Vec<u8> = (0..64 * 1024).map(|i: usize| (i.wrapping_mul(13) ^ (i >> 8)) as u8).collect();
    assert!(echo(&ns, data.clone()) == data, "echoed bytes differ");

    // GET /vm.stats lists it, with the id remove-device takes.
    let stats = ctl_ok(&sock, &["stats"]);
    let vif = stats["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["id"] == "vif/0"))
        .unwrap_or_else(|| panic!("no hot-plugged vif in {stats}"));
    assert_eq!(vif["hotplugged"], true, "{vif}");
    assert_eq!(vif["name"], "/local/domain/0/backend/vif/1/0", "{vif}");
    assert!(vif["counters"].as_object().is_some_and(|c| !c.is_empty()), "{vif}");

    // Detach: Closing, the guest closes, removal "closed" (not forced).
    let removed = ctl_ok(&sock, &["remove-device", "vif/0"]);
    assert_eq!(removed["removal"], "closed", "{removed}");
    until(&mut out, "net: vif/0: closed");
    let stats = ctl_ok(&sock, &["stats"]);
    assert!(!stats["devices"].to_string().contains("vif/0"), "still listed: {stats}");
    // Gone: no reply from the guest's address now.
    let p = ping(&ns, 1);
    assert!(p.contains("1 packets transmitted, 0 received"), "{p}");
    let gone = ctl(&sock, &["remove-device", "vif/0"]);
    assert!(text(&gone.stderr).contains("404"), "{}", text(&gone.stderr));

    ctl_ok(&sock, &["shutdown"]);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let mut child = vmm;
    let status = child.0.wait().unwrap();
    let mut stderr = String::new();
    if let Some(mut e) = child.0.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    assert_eq!(status.code(), Some(0), "{rest}{stderr}");
}

/// Bad `add-net` input: one-line errors, the VM runs on (no namespace or
/// root needed: the spec is refused before any TAP is touched, or the TAP
/// cannot be attached).
#[test]
fn bad_add_net_requests_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--image", "hello", "--cmdline", "wait", "--timeout", "60", "--api-socket"])
        .arg(&sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let vmm = Vmm(child);
    until(&mut out, "hello: waiting for control/shutdown");
    for (spec, want) in
        [("tap=t0,transport=virtio", "cold-plugged"), ("mac=02:00:00:00:00:01", "tap"), ("tap=a/b", "a/b")]
    {
        let o = ctl(&sock, &["add-net", spec]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{spec}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{spec}: one line: {err}");
        assert!(err.contains(want), "{spec}: {err}");
    }
    assert_eq!(ctl_ok(&sock, &["info"])["state"], "running");
    ctl_ok(&sock, &["shutdown"]);
    let mut child = vmm;
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
}

/// A vif whose front end never connects (the `hello` guest has no
/// netfront): the detach waits for the timeout, then is forced (libxl_device.c
/// `device_backend_callback()`: ERROR_TIMEDOUT -> force); the back end is
/// dropped with it, so the same TAP can be attached again.
#[test]
fn a_vif_the_guest_never_closes_is_removed_by_force_and_its_tap_released() {
    assert!(is_root(), "this test needs root (network namespace and TAP device)");
    let ns = Netns::new("force");
    let tap = "pvhp1";
    ns.tap(tap, Some("10.79.1.1/24"), None);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let mut child = ns
        .exec(&[env!("CARGO_BIN_EXE_vmm"), "run", "--image", "hello", "--cmdline", "wait", "--timeout", "60"])
        .arg("--api-socket")
        .arg(&sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vmm");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut vmm = Vmm(child);
    until(&mut out, "hello: waiting for control/shutdown");
    assert_eq!(ctl_ok(&sock, &["add-net", &format!("tap={tap}")])["id"], "vif/0");
    let removed = ctl_ok(&sock, &["remove-device", "vif/0", "--timeout-ms", "300"]);
    assert_eq!(removed["removal"], "forced", "{removed}");
    // The forced removal dropped the back end: its TAP is free again, and
    // the directories are gone, so the first handle is 0 again.
    assert_eq!(ctl_ok(&sock, &["add-net", &format!("tap={tap}")])["id"], "vif/0");
    ctl_ok(&sock, &["shutdown"]);
    assert_eq!(vmm.0.wait().unwrap().code(), Some(0));
}

/// Xen's cooperative suspend of the net guest on a hot-plugged vif
/// (docs/lifecycle.md): suspended, it answers nothing; resumed with the
/// suspend cancelled (`SHUTDOWN_suspend` returns 1,
/// tools/libs/guest/xg_resume.c) it serves on the same rings; resumed as a
/// new domain (returns 0) its netfront reconnects to the reset back end
/// (Linux's `netfront_resume()`) and serves again; `vmm ctl shutdown`
/// (control/shutdown = poweroff) then powers it off with status 0.
#[test]
fn a_net_guest_suspends_and_serves_again_after_both_resumes() {
    assert!(is_root(), "this test needs root (network namespace and TAP device)");
    let ns = Netns::new("susp");
    let tap = "pvhp2";
    ns.tap(tap, Some(&format!("{HOST}/24")), None);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let mut child = ns
        .exec(&[env!("CARGO_BIN_EXE_vmm"), "run", "--image", "net", "--timeout", "120"])
        .args(["--cmdline", &format!("ip={GUEST}/24 hotplug"), "--api-socket"])
        .arg(&sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vmm");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut vmm = Vmm(child);
    until(&mut out, "net: waiting for an interface");
    ctl_ok(&sock, &["add-net", &format!("tap={tap}")]);
    until(&mut out, "net: ready");
    let data: Vec<u8> = (0..16 * 1024).map(|i: usize| (i.wrapping_mul(31) ^ (i >> 7)) as u8).collect();
    assert!(echo(&ns, data.clone()) == data);

    ctl_ok(&sock, &["suspend"]);
    until(&mut out, "net: suspending");
    assert_eq!(ctl_ok(&sock, &["info"])["state"], "suspended");
    let p = ping(&ns, 1);
    assert!(p.contains("1 packets transmitted, 0 received"), "a suspended guest answered: {p}");
    ctl_ok(&sock, &["resume"]);
    until(&mut out, "net: resumed (suspend cancelled)");
    assert!(echo(&ns, data.clone()) == data, "after a cancelled suspend");

    ctl_ok(&sock, &["suspend"]);
    until(&mut out, "net: suspending");
    ctl_ok(&sock, &["resume", "--fresh"]);
    until(&mut out, "net: resumed as a new domain: vif/0 reconnected");
    assert!(echo(&ns, data.clone()) == data, "after a new-domain resume");
    let p = ping(&ns, 3);
    assert!(p.contains("3 packets transmitted, 3 received"), "{p}");

    ctl_ok(&sock, &["shutdown"]);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let mut stderr = String::new();
    let _ = vmm.0.stderr.take().map(|mut e| e.read_to_string(&mut stderr));
    let code = vmm.0.wait().unwrap().code();
    assert!(rest.contains("net: shutdown:"), "{rest}{stderr}");
    assert_eq!(code, Some(0), "{rest}{stderr}");
}
