//! How a run ends, through the `vmm` binary: a Xen (PVH) guest's
//! `SCHEDOP_shutdown` reason decides the exit status (Xen's
//! `do_sched_op()` in `xen/common/sched/core.c` reads only `(u8)reason`;
//! the actions are xl's defaults, `tools/xl/xl_vmcontrol.c`
//! `handle_domain_death()`); SIGTERM asks the guest to power off through
//! `control/shutdown` (as `xl shutdown`, `docs/misc/xenstore-paths.pandoc`);
//! a Xen guest's `console_io` and port 0xE9 print on the hypervisor
//! console (stderr) as `(d1) <line>` (`guest_console_write()`,
//! `hvm_print_line()`).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use tests::pvh_asm::{pvh_elf, Asm, HCALL_PAGE};

const XEN_HYPERCALL_MSR: u32 = 0x4000_0000;

/// A PVH guest: descriptors, the hypercall page, long mode if `elf64`,
/// then `body`.
fn guest(dir: &Path, elf64: bool, body: impl FnOnce(&mut Asm)) -> String {
    let mut a = Asm::default();
    a.setup_descriptors().wrmsr(XEN_HYPERCALL_MSR, u64::from(HCALL_PAGE));
    if elf64 {
        a.enter_long_mode();
    }
    body(&mut a);
    let path = dir.join(if elf64 { "guest64.elf" } else { "guest32.elf" });
    std::fs::write(&path, pvh_elf(&a, elf64)).unwrap();
    path.to_str().unwrap().to_owned()
}

fn vmm(kernel: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--mem", "16M", "--timeout", "60", "--kernel", kernel])
        .args(extra)
        .output()
        .expect("run vmm")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn pvh_poweroff_exits_0_whatever_rdx_holds() {
    let dir = tempfile::tempdir().unwrap();
    for elf64 in [false, true] {
        // Junk in rdx/edx (our own guests' status register): Xen ignores it.
        let k = guest(dir.path(), elf64, |a| {
            a.shutdown(0, 0xdead_beef);
        });
        let out = vmm(&k, &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "elf64 {elf64}: {err}");
        assert!(!err.contains("error:"), "elf64 {elf64}: {err}");
        // Reason 256: `(u8)reason` is poweroff.
        let k = guest(dir.path(), elf64, |a| {
            a.shutdown(0x100, 3);
        });
        assert_eq!(vmm(&k, &[]).status.code(), Some(0), "elf64 {elf64}: reason 256");
    }
}

#[test]
fn pvh_crash_watchdog_suspend_and_unknown_reasons_fail_with_an_error_line() {
    let dir = tempfile::tempdir().unwrap();
    for (reason, want) in [
        (3, "guest crashed"),
        (4, "watchdog"),
        (2, "domain has suspended"),
        (5, "soft reset"),
        (9, "Unknown shutdown reason code 9. Destroying domain."),
    ] {
        for elf64 in [false, true] {
            // rdx 0 would have meant "success" under the old status rule.
            let k = guest(dir.path(), elf64, |a| {
                a.shutdown(reason, 0);
            });
            let out = vmm(&k, &[]);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "reason {reason} elf64 {elf64}: {err}");
            let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
            assert!(line.contains(want), "reason {reason} elf64 {elf64}: {err}");
        }
    }
}

#[test]
fn pvh_reboot_restarts_the_guest_or_exits_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let k = guest(dir.path(), true, |a| {
        a.debugcon(b"booted\n").shutdown(1, 5);
    });
    let out = vmm(&k, &["--on-reboot", "exit"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(err.matches("(d1) booted").count(), 1, "{err}");
    // Restart (xl's default): booted again and again until the time limit.
    let out = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--mem", "16M", "--timeout", "1", "--shutdown-grace", "0", "--kernel", &k])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.matches("(d1) booted").count() >= 2, "booted more than once: {err}");
    assert!(err.contains("guest rebooted: booting it again"), "{err}");
    assert!(err.contains("error: guest did not shut down within the time limit"), "{err}");
}

#[test]
fn pvh_console_io_and_port_e9_print_once_on_stderr_prefixed() {
    let dir = tempfile::tempdir().unwrap();
    let k = guest(dir.path(), true, |a| {
        a.console_write(b"via console_io\x07\n", 0).debugcon(b"via port e9\n").debugcon(b"no newline").poweroff(0);
    });
    let out = vmm(&k, &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr.matches("(d1) via console_io\n").count(), 1, "{stderr}");
    assert_eq!(stderr.matches("(d1) via port e9\n").count(), 1, "{stderr}");
    assert_eq!(stderr.matches("(d1) no newline\n").count(), 1, "flushed at the end: {stderr}");
    assert!(!stdout.contains("via"), "not on the guest's console: {stdout}");
}

/// Reads `child`'s `stream` lines until one contains `want`; returns the
/// lines read.
fn read_until(stream: impl Read, want: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for line in BufReader::new(stream).lines().map_while(Result::ok) {
        let done = line.contains(want);
        seen.push(line);
        if done {
            break;
        }
    }
    seen
}

fn sigterm(child: &Child) {
    // SAFETY: kill with a live child's pid and a valid signal.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
}

#[test]
fn sigterm_asks_our_guest_to_power_off_and_prints_stats() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--image", "hello", "--cmdline", "wait", "--stats", "--timeout", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let seen = read_until(&mut stdout, "hello: waiting for control/shutdown");
    assert!(seen.last().is_some_and(|l| l.contains("waiting")), "{seen:?}");
    sigterm(&child);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(rest.contains("control/shutdown: Poweroff requested: powering off"), "{rest}\n{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("--- vmm stats ---") && err.contains("guest shut down (poweroff) with status 0"), "{err}");
}

#[test]
fn sigterm_stops_a_pvh_guest_that_does_not_watch_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let k = guest(dir.path(), true, |a| {
        // hlt forever (interrupts off): it never reads control/shutdown.
        a.debugcon(b"ready\n").raw(&[0xfa, 0xf4, 0xeb, 0xfd]);
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--mem", "16M", "--stats", "--shutdown-grace", "0.2", "--timeout", "60", "--kernel", &k])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let seen = read_until(&mut stderr, "(d1) ready");
    assert!(seen.last().is_some_and(|l| l.contains("ready")), "{seen:?}");
    sigterm(&child);
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{rest}");
    assert!(rest.contains("--- vmm stats ---"), "{rest}");
    assert!(
        rest.contains("error: stopped by signal 15: the guest did not power off within the grace period"),
        "{rest}"
    );
}

#[test]
fn a_second_sigterm_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let k = guest(dir.path(), true, |a| {
        a.debugcon(b"ready\n").raw(&[0xfa, 0xf4, 0xeb, 0xfd]);
    });
    // A grace far longer than the test: only the second signal can end it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--mem", "16M", "--shutdown-grace", "600", "--kernel", &k])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let seen = read_until(&mut stderr, "(d1) ready");
    assert!(seen.last().is_some_and(|l| l.contains("ready")), "{seen:?}");
    sigterm(&child);
    // Signals of one kind do not queue: the second only after the first was seen.
    let seen = read_until(&mut stderr, "asking the guest to power off");
    assert!(seen.last().is_some_and(|l| l.contains("or at the next signal")), "{seen:?}");
    sigterm(&child);
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{rest}");
    assert!(rest.contains("error: stopped by signal 15 before the guest shut down (a second stop signal)"), "{rest}");
}

/// KVM internal errors name the suberror and the bytes at `rip`
/// (`kvm_run.internal`, `linux/kvm.h` `KVM_INTERNAL_ERROR_*`).
#[test]
fn kvm_internal_errors_name_the_suberror_and_the_bytes_at_rip() {
    let dir = tempfile::tempdir().unwrap();
    // Executing from unbacked memory: KVM cannot fetch the instruction.
    let k = guest(dir.path(), true, |a| {
        a.eax(0x3000_0000).raw(&[0xff, 0xe0]); // jmp rax
    });
    let out = vmm(&k, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
    assert!(line.contains("KVM could not run the guest at rip 0x30000000"), "{err}");
    assert!(line.contains("(KVM internal error suberror 1)"), "{err}");
}

/// An instruction a KVM without hardware virtualization cannot emulate
/// (`ldmxcsr`, DESIGN.md "machine facts"): the error shows its bytes, read
/// through the guest's page tables. With VT-x/AMD-V the CPU runs it and
/// raises `#UD` (SSE is off), which with no handler is a triple fault.
#[test]
fn an_unemulated_instruction_shows_its_bytes() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hardware = cpuinfo.split_whitespace().any(|w| w == "vmx" || w == "svm");
    let dir = tempfile::tempdir().unwrap();
    let k = guest(dir.path(), true, |a| {
        a.raw(&[0x0f, 0xae, 0x14, 0x25, 0x00, 0x50, 0x10, 0x00]); // ldmxcsr [0x105000]
    });
    let out = vmm(&k, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    if hardware {
        assert!(err.contains("error: guest triple-faulted"), "{err}");
    } else {
        assert!(err.contains("emulation failure") && err.contains("bytes at rip: 0f ae 14 25 00 50 10 00"), "{err}");
    }
}
