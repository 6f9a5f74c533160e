//! The API socket (`vmm run --api-socket`) and `vmm ctl`, end to end
//! through the binary under the default seccomp filters: every endpoint
//! with `curl --unix-socket` and with `vmm ctl`, pause/resume (a paused
//! guest makes no progress), graceful shutdown (exit 0), destroy, and the
//! bad requests (malformed, unknown, oversized, too many clients), after
//! which the VM still runs. Also the config file (`--config`,
//! `--print-config`). See docs/api.md and docs/cli.md.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/process.rs"]
mod process;
use process::{ctl, text, vmm};

/// Reads stdout lines until one contains `want` (or it ends).
fn read_until(out: &mut BufReader<ChildStdout>, want: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut line = String::new();
    while out.read_line(&mut line).unwrap_or(0) > 0 {
        let done = line.contains(want);
        seen.push(std::mem::take(&mut line));
        if done {
            break;
        }
    }
    seen
}

fn ctl_json(sock: &Path, args: &[&str]) -> Value {
    let out = ctl(sock, args);
    assert!(out.status.success(), "vmm ctl {args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

/// `curl --unix-socket`: (status, body).
fn curl(sock: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", "-X", method, "--unix-socket"]);
    c.arg(sock);
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = c.arg(format!("http://localhost{path}")).output().expect("curl is needed for the API tests");
    let s = text(&out.stdout);
    let (body, code) = s.rsplit_once('\n').unwrap_or(("", &s));
    (code.trim().parse().unwrap_or_else(|_| panic!("curl: {s} {}", text(&out.stderr))), body.to_string())
}

/// Asserts a JSON error answer with `status`.
fn assert_error(got: (u16, String), status: u16, what: &str) {
    assert_eq!(got.0, status, "{what}: {}", got.1);
    let v: Value = serde_json::from_str(&got.1).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", got.1));
    assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {v}");
}

/// Raw bytes to the socket; the answer's status.
fn raw(sock: &Path, bytes: &[u8]) -> (u16, String) {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

struct Vm {
    child: Child,
    stdout: BufReader<ChildStdout>,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

/// Starts `vmm run <args> --api-socket <tmp>/api.sock` and waits for
/// `ready` on stdout.
fn start(args: &[&str], ready: &str) -> Vm {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let mut child = vmm()
        .arg("run")
        .args(args)
        .arg("--api-socket")
        .arg(&sock)
        .args(["--timeout", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let seen = read_until(&mut stdout, ready);
    assert!(seen.last().is_some_and(|l| l.contains(ready)), "no {ready:?}: {seen:?}");
    Vm { child, stdout, sock, _dir: dir }
}

impl Vm {
    /// Waits for the end: (status, rest of stdout, stderr).
    fn finish(mut self) -> (Option<i32>, String, String) {
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        let out = self.child.wait_with_output().unwrap();
        (out.status.code(), rest, text(&out.stderr))
    }
}

fn vcpu_exits(stats: &Value) -> u64 {
    stats["vcpus"][0]["exits_total"].as_u64().unwrap_or_else(|| panic!("no exits_total: {stats}"))
}

fn disk_requests(stats: &Value) -> u64 {
    stats["devices"][0]["counters"]["requests"].as_u64().unwrap_or_else(|| panic!("no requests: {stats}"))
}

#[test]
fn every_endpoint_through_curl_and_ctl_then_graceful_shutdown_exits_0() {
    let vm = start(&["--image", "hello", "--cmdline", "wait"], "hello: waiting for control/shutdown");
    let sock = vm.sock.clone();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    // GET /vm: state and the configuration the run was given.
    let (code, body) = curl(&sock, "GET", "/vm", None);
    assert_eq!(code, 200, "{body}");
    let info: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["state"], "running", "{info}");
    assert_eq!(info["config"]["image"], "hello", "{info}");
    assert_eq!(ctl_json(&sock, &["info"])["config"]["cmdline"], "wait");

    // GET /vm.stats: per-vCPU and event-channel counters as JSON.
    let stats = ctl_json(&sock, &["stats"]);
    assert!(vcpu_exits(&stats) > 0, "{stats}");
    assert!(stats["vcpus"][0]["exits"]["io:hypercall"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["event_channels"]["upcalls"].is_u64(), "{stats}");

    // Pause and resume, through both clients.
    assert_eq!(curl(&sock, "PUT", "/vm.pause", None).0, 204);
    assert_eq!(ctl_json_state(&sock), "paused");
    assert!(ctl(&sock, &["resume"]).status.success());
    assert_eq!(ctl_json_state(&sock), "running");
    assert!(ctl(&sock, &["pause"]).status.success());
    assert_eq!(curl(&sock, "PUT", "/vm.resume", None).0, 204);

    // Balloon: memory/target in the store (xl mem-set), read back by GET /vm.
    assert_eq!(curl(&sock, "PUT", "/vm.balloon", Some(r#"{"target_kib": 32768}"#)).0, 204);
    assert_eq!(ctl_json(&sock, &["info"])["memory"]["target_kib"], 32768);
    assert!(ctl(&sock, &["balloon", "16384"]).status.success());
    assert_eq!(ctl_json(&sock, &["info"])["memory"]["target_kib"], 16384);

    // The bad requests: each a 4xx (or 501) JSON error.
    assert_error(curl(&sock, "PUT", "/vm.balloon", Some("{not json")), 400, "malformed JSON");
    assert_error(curl(&sock, "PUT", "/vm.balloon", Some(r#"{"target_kib":1,"x":2}"#)), 400, "unknown field");
    assert_error(curl(&sock, "PUT", "/vm.balloon", Some(r#"{"target_kib":-1}"#)), 400, "negative");
    assert_error(curl(&sock, "GET", "/vm.nothing", None), 404, "unknown path");
    assert_error(curl(&sock, "GET", "/vm.pause", None), 405, "wrong method");
    assert_error(curl(&sock, "PUT", "/vm.pause", Some("{}")), 400, "body where none is taken");
    let big = format!(r#"{{"target_kib": 1, "pad": "{}"}}"#, "x".repeat(20_000));
    assert_error(curl(&sock, "PUT", "/vm.balloon", Some(&big)), 413, "oversized body");
    assert_error(raw(&sock, b"\x00\x01garbage\r\n\r\n"), 400, "not HTTP");
    assert_error(raw(&sock, b"PUT /vm.balloon HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n"), 413, "huge length");
    assert_error(curl(&sock, "PUT", "/vm.restore", Some("{}")), 501, "/vm.restore");
    // Migration (migrate_cli.rs drives it): a body without its url, a bad
    // url, a closed port (the VM runs on).
    assert_error(curl(&sock, "PUT", "/vm.migrate", Some("{}")), 400, "migrate without url");
    assert_error(curl(&sock, "PUT", "/vm.migrate", Some(r#"{"url":"ftp:x"}"#)), 400, "bad url");
    // A host name is a bad url, not a name lookup on the migration
    // thread (its seccomp filter forbids one: it stopped the VMM).
    let named = curl(&sock, "PUT", "/vm.migrate", Some(r#"{"url":"tcp:dst-host:7000"}"#));
    assert!(named.1.contains("give an IP address"), "{}", named.1);
    assert_error(named, 400, "host name");
    assert_error(curl(&sock, "PUT", "/vm.migrate", Some(r#"{"url":"unix:/nonexistent/m.sock"}"#)), 502, "closed");
    // Snapshots (snapshot_cli.rs drives them): a body without its field.
    assert_error(curl(&sock, "PUT", "/vm.snapshot", Some("{}")), 400, "snapshot without dir");
    // Hot-plug (hotplug_cli.rs drives it): a body without its field, a
    // device that was never hot-plugged.
    assert_error(curl(&sock, "PUT", "/vm.add-disk", Some("{}")), 400, "add-disk without disk");
    assert_error(curl(&sock, "PUT", "/vm.add-net", Some("{}")), 400, "add-net without net");
    assert_error(curl(&sock, "PUT", "/vm.add-net", Some(r#"{"net":"tap=t0,transport=virtio"}"#)), 400, "virtio");
    assert_error(curl(&sock, "PUT", "/vm.remove-device", Some(r#"{"id":"xvdq"}"#)), 404, "no such device");
    // A snapshot that cannot be written: one line naming the path, and
    // the VM runs on (resumed).
    let out = ctl(&sock, &["snapshot", "/proc/no-snapshot-here"]);
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.lines().count() == 1 && err.contains("/proc/no-snapshot-here"), "{err}");
    assert_eq!(ctl_json_state(&sock), "running", "after a failed snapshot");

    // Clients holding connections open without a request, and a burst of
    // clients at once: each answered (200) or refused (503 JSON), never hung.
    let idle: Vec<UnixStream> = (0..3).map(|_| UnixStream::connect(&sock).unwrap()).collect();
    assert_eq!(ctl_json_state(&sock), "running", "a client behind idle connections");
    let burst: Vec<_> = (0..16)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || raw(&sock, b"GET /vm HTTP/1.1\r\nHost: x\r\n\r\n").0)
        })
        .collect();
    for t in burst {
        let code = t.join().unwrap();
        assert!(code == 200 || code == 503, "burst answer {code}");
    }
    drop(idle);
    assert_eq!(ctl_json_state(&sock), "running", "the VM runs on after the bad requests");

    // Graceful shutdown: control/shutdown = poweroff, the guest powers off.
    let out = ctl(&sock, &["shutdown"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (status, rest, err) = vm.finish();
    assert!(rest.contains("control/shutdown: Poweroff requested: powering off"), "{rest}\n{err}");
    assert_eq!(status, Some(0), "{err}");
    assert!(!sock.exists(), "the socket is removed at exit");
}

fn ctl_json_state(sock: &Path) -> String {
    ctl_json(sock, &["info"])["state"].as_str().unwrap().to_string()
}

/// A paused guest makes no progress: its vCPU's exits and its disk's
/// requests stand still until it is resumed; a shutdown request then ends
/// the soak verified (exit 0).
#[test]
fn pause_freezes_the_soak_guest_resume_continues_and_shutdown_ends_it_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("soak.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let disk = img.to_str().unwrap();
    let vm = start(&["--image", "blk", "--disk", disk, "--cmdline", "soak=0 every=50"], "soak: 0 s");
    let sock = vm.sock.clone();
    let moving = ctl_json(&sock, &["stats"]);
    assert_eq!(moving["state"], "running");
    let t = Instant::now();
    assert!(ctl(&sock, &["pause"]).status.success());
    eprintln!("pause answered in {:?}", t.elapsed());
    // Requests issued before the pause may still complete in the back end.
    std::thread::sleep(Duration::from_millis(300));
    let a = ctl_json(&sock, &["stats"]);
    std::thread::sleep(Duration::from_millis(700));
    let b = ctl_json(&sock, &["stats"]);
    assert_eq!(b["state"], "paused");
    assert_eq!(vcpu_exits(&a), vcpu_exits(&b), "a paused vCPU exited: {a}\n{b}");
    assert_eq!(disk_requests(&a), disk_requests(&b), "a paused guest issued requests");
    assert!(ctl(&sock, &["resume"]).status.success());
    let end = Instant::now() + Duration::from_secs(30);
    while disk_requests(&ctl_json(&sock, &["stats"])) == disk_requests(&b) {
        assert!(Instant::now() < end, "no progress after resume");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ctl(&sock, &["shutdown"]).status.success());
    let (status, rest, err) = vm.finish();
    assert!(rest.contains("soak: control/shutdown: Poweroff requested: stopping"), "{rest}\n{err}");
    let done = rest.lines().find(|l| l.starts_with("soak: done ")).unwrap_or_else(|| panic!("{rest}"));
    assert!(done.contains("verify_errors=0 io_errors=0"), "{done}");
    assert_eq!(status, Some(0), "{err}");
}

/// Destroy stops a guest at once, paused or not (`xl destroy`), without
/// waiting for it: exit 1 and the one-line reason.
#[test]
fn destroy_stops_a_paused_guest_at_once() {
    let vm = start(&["--image", "hello", "--cmdline", "wait"], "hello: waiting for control/shutdown");
    let sock = vm.sock.clone();
    assert!(ctl(&sock, &["pause"]).status.success());
    assert_eq!(curl(&sock, "PUT", "/vm.destroy", None).0, 204);
    let (status, rest, err) = vm.finish();
    assert_eq!(status, Some(1), "{err}");
    assert!(err.contains("error: destroyed through the API"), "{err}");
    assert!(!rest.contains("powering off"), "the guest was asked, not destroyed: {rest}");
}

#[test]
fn api_socket_refuses_a_path_that_is_not_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let out = vmm().args(["run", "--image", "hello", "--api-socket"]).arg(&file).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is not a socket") && err.lines().count() == 1, "{err}");
    let out = ctl(&dir.path().join("none.sock"), &["info"]);
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("cannot connect") && err.lines().count() == 1, "{err}");
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn config_file_holds_the_options_and_the_command_line_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "vm.toml",
        "image = \"blk\"\nmem = \"48M\"\ncmdline = \"soak=1\"\nshutdown_grace = 2.5\n\n\
         [[devices]]\nkind = \"disk\"\npath = \"a.img\"\nvdev = 51744\n\n\
         [[devices]]\nkind = \"echo\"\n",
    );
    let print = |extra: &[&str]| {
        let out = vmm().args(["run", "--config"]).arg(&cfg).args(extra).arg("--print-config").output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let t: toml::Table = toml::from_str(&print(&[])).unwrap();
    assert_eq!((t["mem"].as_str(), t["cmdline"].as_str()), (Some("48M"), Some("soak=1")));
    assert_eq!(t["shutdown_grace"].as_float(), Some(2.5));
    let devs = t["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 2);
    assert_eq!(devs[0]["vdev"].as_integer(), Some(51744));
    // The command line wins; a device option replaces the device list.
    let t: toml::Table = toml::from_str(&print(&["--mem", "32M", "--echo", "1"])).unwrap();
    assert_eq!(t["mem"].as_str(), Some("32M"));
    assert_eq!(t["cmdline"].as_str(), Some("soak=1"));
    assert_eq!(t["devices"].as_array().unwrap().len(), 1);
    // What --print-config prints reads back to the same configuration.
    let printed = print(&["--paging", "pv"]);
    let again = write(dir.path(), "again.toml", &printed);
    let out = vmm().args(["run", "--config"]).arg(&again).arg("--print-config").output().unwrap();
    assert_eq!(text(&out.stdout), printed);
}

#[test]
fn config_file_errors_name_the_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("mem = \"64M\"\nmemm = \"1G\"\n", ":2:", "memm"),
        ("mem = \"lots\"\n", ":1:", "mem"),
        ("image = \"hello\"\npaging = \"fast\"\n", ":2:", "paging"),
        ("stats = \"yes\"\n", ":1:", "stats"),
        ("[[devices]]\nkind = \"disk\"\npath = \"a.img\"\nsize = 3\n", ":4:", "size"),
        ("[[devices]]\nkind = \"floppy\"\n", ":", "floppy"),
        ("mem = \n", ":1:", "mem"),
    ];
    for (body, line, key) in cases {
        let cfg = write(dir.path(), "bad.toml", body);
        let out = vmm().args(["run", "--config"]).arg(&cfg).output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{body}: {err}");
        assert_eq!(err.lines().count(), 1, "{body}: {err}");
        assert!(err.contains(&format!("bad.toml{line}")) && err.contains(key), "{body}: {err}");
    }
    let out = vmm().args(["run", "--config", "/nonexistent/vm.toml"]).output().unwrap();
    let err = text(&out.stderr);
    assert!(err.contains("cannot read the config file") && err.lines().count() == 1, "{err}");
}

#[test]
fn a_guest_boots_from_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "vm.toml", "image = \"hello\"\nmem = \"32M\"\nstats = true\n");
    let out = vmm().args(["run", "--config"]).arg(&cfg).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("--- vmm stats ---"), "stats = true from the file: {err}");
}

/// The API thread runs under its own filter: the test-only probe makes it
/// call `socket` (41) right after installing it, and the VMM stops with
/// the seccomp line naming the `api` thread.
#[test]
fn the_api_thread_runs_under_its_own_seccomp_filter() {
    let dir = tempfile::tempdir().unwrap();
    let out = vmm()
        .env("VMM_SECCOMP_PROBE", "api")
        .args(["run", "--image", "hello", "--cmdline", "wait", "--timeout", "60", "--api-socket"])
        .arg(dir.path().join("api.sock"))
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + libc::SIGSYS), "{err}");
    assert!(err.contains("error: seccomp: the api thread made forbidden system call 41"), "{err}");
}
