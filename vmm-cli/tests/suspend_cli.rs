//! Xen's cooperative suspend through the binary, under the default
//! seccomp filters (docs/lifecycle.md): `vmm ctl suspend` writes
//! `control/shutdown = suspend` (docs/misc/xenstore-paths.pandoc), the
//! soak guest quiesces and calls `SCHEDOP_shutdown(SHUTDOWN_suspend)`
//! (xen/include/public/sched.h), the VM reports "suspended" and makes no
//! progress; `vmm ctl resume` cancels the suspend (the hypercall returns 1,
//! tools/libs/guest/xg_resume.c `modify_returncode()`), `resume --fresh` continues
//! it as a new domain (returns 0; the back ends reset to InitWait and the
//! front ends reconnect, Linux's `xenbus_dev_resume()`); the soak then
//! finishes with every round verified. A guest that does not answer gets
//! a timeout error and runs on (libxl_dom_suspend.c: "guest did not
//! suspend").

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Stdio};
use std::time::Duration;

#[path = "common/process.rs"]
mod process;
use process::{ctl, text, vmm};

fn ctl_ok(sock: &Path, args: &[&str]) -> Value {
    let out = ctl(sock, args);
    assert!(out.status.success(), "vmm ctl {args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The `requests=` count of the disk (`GET /vm.stats`, device 0).
fn disk_requests(sock: &Path) -> u64 {
    let stats = ctl_ok(sock, &["stats"]);
    stats["devices"][0]["counters"]["requests"].as_u64().unwrap_or_else(|| panic!("no requests: {stats}"))
}

struct Vm {
    child: Child,
    stdout: BufReader<ChildStdout>,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Vm {
    /// A soak guest (`soak=0 every=5` plus `extra`) on a 4 MiB disk with an
    /// API socket, once its first progress line is out.
    fn soak(extra: &str) -> Vm {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("soak.img");
        std::fs::write(&img, vec![0u8; 4 << 20]).unwrap();
        let sock = dir.path().join("api.sock");
        let mut child = vmm()
            .args(["run", "--image", "blk", "--timeout", "120", "--disk"])
            .arg(&img)
            .args(["--cmdline", &format!("soak=0 every=5 {extra}")])
            .arg("--api-socket")
            .arg(&sock)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut vm = Vm { child, stdout, sock, _dir: dir };
        vm.until("soak: progress ");
        vm
    }

    /// Reads stdout until a line starts with `want`; returns it.
    fn until(&mut self, want: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("stdout ended before {want:?}");
            }
            if line.starts_with(want) {
                return line;
            }
        }
    }

    fn state(&self) -> String {
        ctl_ok(&self.sock, &["info"])["state"].as_str().unwrap_or_default().to_string()
    }

    /// Asks for a poweroff; (status, rest of stdout, stderr).
    fn shutdown(mut self) -> (Option<i32>, String, String) {
        ctl_ok(&self.sock, &["shutdown"]);
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        let out = self.child.wait_with_output().unwrap();
        (out.status.code(), rest, text(&out.stderr))
    }
}

/// `(verify_errors, io_errors)` of a `soak:` line.
fn errors(line: &str) -> (u64, u64) {
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
    };
    (field("verify_errors"), field("io_errors"))
}

/// Suspends the soak guest and checks it stands still while suspended.
fn suspend_and_check_still(vm: &mut Vm) {
    ctl_ok(&vm.sock, &["suspend"]);
    vm.until("soak: suspending ");
    assert_eq!(vm.state(), "suspended", "GET /vm reports the suspend");
    // vCPUs parked: the disk sees no request while suspended.
    let before = disk_requests(&vm.sock);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(disk_requests(&vm.sock), before, "a suspended guest made I/O");
}

#[test]
fn soak_guest_suspends_resumes_both_ways_and_finishes_verified() {
    let mut vm = Vm::soak("");
    // Cancelled: the guest keeps its rings and goes on.
    suspend_and_check_still(&mut vm);
    ctl_ok(&vm.sock, &["resume"]);
    let line = vm.until("soak: resumed");
    assert!(line.starts_with("soak: resumed (suspend cancelled)"), "hypercall returned 1: {line}");
    assert_eq!(vm.state(), "running");
    assert_eq!(errors(&vm.until("soak: progress ")), (0, 0), "I/O after a cancelled suspend");
    // As a new domain: back ends reset, the guest reconnects its disk and
    // its I/O goes through the new ring.
    suspend_and_check_still(&mut vm);
    let before = disk_requests(&vm.sock);
    ctl_ok(&vm.sock, &["resume", "--fresh"]);
    let line = vm.until("soak: resumed");
    assert!(line.starts_with("soak: resumed as a new domain"), "hypercall returned 0: {line}");
    assert_eq!(errors(&vm.until("soak: progress ")), (0, 0), "I/O after reconnecting");
    assert!(disk_requests(&vm.sock) > before, "the reconnected back end serves requests");
    // `fresh` applies to a suspended VM only.
    let out = ctl(&vm.sock, &["resume", "--fresh"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not suspended"), "{}", text(&out.stderr));
    let (code, rest, stderr) = vm.shutdown();
    let done = rest.lines().find(|l| l.starts_with("soak: done ")).unwrap_or_else(|| panic!("no done: {rest}"));
    assert_eq!(errors(done), (0, 0), "{rest}");
    assert_eq!(code, Some(0), "{rest}{stderr}");
}

#[test]
fn a_guest_that_does_not_answer_a_suspend_times_out_and_runs_on() {
    let mut vm = Vm::soak("suspend=ignore");
    let out = ctl(&vm.sock, &["suspend", "--timeout-ms", "1000"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("did not suspend") && err.contains("504"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    vm.until("soak: suspend requested: ignored");
    assert_eq!(vm.state(), "running");
    // Not suspended: nothing to resume as a new domain; the guest goes on.
    assert_eq!(ctl(&vm.sock, &["resume", "--fresh"]).status.code(), Some(1));
    assert_eq!(errors(&vm.until("soak: progress ")), (0, 0));
    let (code, rest, stderr) = vm.shutdown();
    assert_eq!(code, Some(0), "{rest}{stderr}");
}
