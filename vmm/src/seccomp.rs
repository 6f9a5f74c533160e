//! Seccomp filters per thread (rust-vmm `seccompiler`), as Firecracker and
//! Cloud Hypervisor do: if a guest ever found a bug in the VMM, the thread
//! it reached could make only the system calls (and KVM ioctls) that
//! thread needs.
//!
//! - [`ThreadKind::Vcpu`]: the thread running [`Vm::run`](crate::Vm::run)
//!   (the main thread of `vmm run`), installed just before the first
//!   `KVM_RUN`; allows the vCPU ioctls and what the process needs to shut
//!   down (stats, closing fds, removing the demo's scratch directory).
//! - [`ThreadKind::Device`]: each device thread, at its start: epoll,
//!   eventfds, disk I/O, `KVM_IOEVENTFD` (doorbells bound on connect).
//! - [`ThreadKind::Watchdog`]: sleep and signal the vCPU thread.
//! - [`ThreadKind::Api`]: the API socket's thread (`vmm run
//!   --api-socket`): accept, poll, read and write its connections (the
//!   socket is bound before the filter), kick the vCPU.
//! - [`ThreadKind::Hotplug`]: the hot-plug thread ([`crate::hotplug`]):
//!   opens hot-plugged disk images and starts their device threads.
//! - [`ThreadKind::Migration`]: the live-migration thread: a socket to
//!   the destination, KVM's dirty log, the disk images' locks.
//! - [`ThreadKind::Snapshot`]: the snapshot writer ([`crate::snapshot`]):
//!   creates the snapshot directory and writes its files.
//! - [`ThreadKind::Main`]: `vmm bench`'s main thread, which builds VM after
//!   VM: everything above plus VM construction (any KVM ioctl, mmap,
//!   eventfds, thread creation).
//!
//! Filters are on when the binary calls [`enable`] (`vmm` does unless
//! `--no-seccomp`). Tests booting VMs in-process turn them on too
//! (`tests::on_vm_thread`, [`run_confined`] for the fuzz smoke run and
//! unit-level KVM tests), running the confined code on threads of its own
//! so the test harness's thread stays free. A forbidden call raises `SIGSYS`; the handler prints one
//! `error: seccomp: ...` line naming the thread kind and the system-call
//! number and exits with [`SIGSYS_EXIT_STATUS`]: never silent.

use crate::kvm_ioctl_nr as nr;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Exit status after a forbidden system call (128 + `SIGSYS`).
pub const SIGSYS_EXIT_STATUS: i32 = 128 + libc::SIGSYS;

/// Environment variable of the test-only probe: `device` makes each device
/// thread (`api`: the API thread) call a forbidden system call (`socket`)
/// right after installing its filter, to prove the filter stops it. Read
/// once by [`enable`].
pub const PROBE_ENV: &str = "VMM_SECCOMP_PROBE";

static ENABLED: AtomicBool = AtomicBool::new(false);
static PROBE_DEVICE: AtomicBool = AtomicBool::new(false);
static PROBE_API: AtomicBool = AtomicBool::new(false);

thread_local! {
    static INSTALLED: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Which thread a filter is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// The vCPU run loop (and process teardown after it).
    Vcpu,
    /// A device thread.
    Device,
    /// The run-time watchdog.
    Watchdog,
    /// A main thread that keeps building VMs (`vmm bench`).
    Main,
    /// The API socket's thread.
    Api,
    /// The hot-plug thread (`crate::hotplug`).
    Hotplug,
    /// The live-migration thread (`crate::migration::send`).
    Migration,
    /// The snapshot writer thread (`crate::snapshot`).
    Snapshot,
}

impl ThreadKind {
    fn name(self) -> &'static str {
        match self {
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Device => "device",
            ThreadKind::Watchdog => "watchdog",
            ThreadKind::Main => "main",
            ThreadKind::Api => "api",
            ThreadKind::Hotplug => "hotplug",
            ThreadKind::Migration => "migration",
            ThreadKind::Snapshot => "snapshot",
        }
    }
}

/// A filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the {kind} seccomp filter: {why}")]
pub struct SeccompError {
    kind: &'static str,
    why: String,
}

/// Turns filtering on for this process (installs the `SIGSYS` reporter).
pub fn enable() {
    install_sigsys_handler();
    PROBE_DEVICE.store(std::env::var(PROBE_ENV).is_ok_and(|v| v == "device"), Ordering::SeqCst);
    PROBE_API.store(std::env::var(PROBE_ENV).is_ok_and(|v| v == "api"), Ordering::SeqCst);
    ENABLED.store(true, Ordering::SeqCst);
}

/// Whether [`enable`] was called.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::SeqCst)
}

/// Whether the calling thread already runs under a filter.
pub fn installed() -> bool {
    INSTALLED.with(|c| c.get().is_some())
}

/// Installs the filter for `kind` on the calling thread if filtering is
/// enabled and the thread has none yet.
pub fn install(kind: ThreadKind) -> Result<(), SeccompError> {
    install_with(kind, &[])
}

/// [`install`], with the system calls `extra` allowed too: for test
/// harnesses that build a device's fixtures (eventfds) per input on the
/// thread that then drives the device's code, which in the VMM happens
/// before the device thread starts. The VMM itself never widens a filter.
pub fn install_with(kind: ThreadKind, extra: &[i64]) -> Result<(), SeccompError> {
    if !enabled() || installed() {
        return Ok(());
    }
    let err = |why: String| SeccompError { kind: kind.name(), why };
    let prog: BpfProgram = filter(kind, extra).map_err(|e| err(e.to_string()))?;
    // First: the thread's own filter forbids the `prctl` and `seccomp`
    // calls that installing one makes.
    if kind.refuses_open() {
        let refuse = refuse_open().map_err(|e| err(e.to_string()))?;
        seccompiler::apply_filter(&refuse).map_err(|e| err(e.to_string()))?;
    }
    seccompiler::apply_filter(&prog).map_err(|e| err(e.to_string()))?;
    INSTALLED.with(|c| c.set(Some(kind.name())));
    let probe = match kind {
        ThreadKind::Device => PROBE_DEVICE.load(Ordering::SeqCst),
        ThreadKind::Api => PROBE_API.load(Ordering::SeqCst),
        _ => false,
    };
    if probe {
        // SAFETY: `socket` takes no pointers; the filter stops it.
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    }
    Ok(())
}

/// [`install`], logging instead of failing (for threads that cannot
/// return an error): a thread that cannot be confined stops the process.
pub fn install_or_exit(kind: ThreadKind) {
    if let Err(e) = install(kind) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Runs `f` on a new thread confined by `kind`'s filter (turning filtering
/// on first) and returns its result; a panic in `f` is resumed on the
/// caller. For tests that drive one thread kind's code paths (fuzz
/// targets on the device filter, a back end's event-channel calls): the
/// filter stays with that thread, so the caller (a test harness thread)
/// goes on unconfined, and a forbidden call stops the process with the
/// `error: seccomp: ...` line as in the VMM.
pub fn run_confined<T: Send>(kind: ThreadKind, f: impl FnOnce() -> T + Send) -> Result<T, SeccompError> {
    enable();
    std::thread::scope(|s| {
        let confined = s.spawn(|| {
            install(kind)?;
            Ok(f())
        });
        match confined.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// System calls every thread may make: memory, locks, signals, exit,
/// time, and writing logs.
const COMMON: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mprotect,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_tgkill,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_rseq,
    libc::SYS_set_robust_list,
];

/// What one thread kind may do beyond [`COMMON`].
struct Allowlist {
    /// System calls allowed with any arguments.
    calls: &'static [i64],
    /// `ioctl` requests allowed (exact match).
    ioctls: &'static [u64],
    /// Any KVM ioctl (type `KVMIO`): building VMs.
    any_kvm_ioctl: bool,
    /// `socket(AF_INET, ..)`: bringing a TAP link up.
    inet_socket: bool,
}

/// The vCPU run loop, and process teardown after it: the stats fd, closing
/// fds, removing the demo's scratch directory, flushing disks.
const VCPU: Allowlist = Allowlist {
    calls: &[
        libc::SYS_read,
        libc::SYS_pread64,
        libc::SYS_fcntl,
        libc::SYS_openat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_getdents64,
        libc::SYS_unlinkat,
        libc::SYS_fsync,
        libc::SYS_fdatasync,
    ],
    ioctls: &[
        nr::KVM_RUN,
        nr::KVM_GET_REGS,
        nr::KVM_SET_REGS,
        nr::KVM_GET_SREGS,
        nr::KVM_SET_SREGS,
        // The instruction bytes of a failed run (`Vcpu::failure`).
        nr::KVM_TRANSLATE,
        // EVTCHNOP_bind_* on the vCPU thread binds a doorbell.
        nr::KVM_IOEVENTFD,
        nr::KVM_SET_USER_MEMORY_REGION,
        nr::KVM_SET_GSI_ROUTING,
        nr::KVM_INTERRUPT,
        // A snapshot: each vCPU reads its own state, vCPU 0 the VM's.
        nr::KVM_GET_FPU,
        nr::KVM_GET_LAPIC,
        nr::KVM_GET_MSRS,
        nr::KVM_GET_MP_STATE,
        nr::KVM_GET_VCPU_EVENTS,
        nr::KVM_GET_DEBUGREGS,
        nr::KVM_GET_XSAVE,
        nr::KVM_GET_XCRS,
        nr::KVM_GET_CLOCK,
        nr::KVM_GET_IRQCHIP,
    ],
    any_kvm_ioctl: false,
    inet_socket: false,
};

/// A device thread (console and store, each Xen disk, net, virtio):
/// epoll, eventfds, disk and TAP I/O, doorbells bound on connect.
const DEVICE: Allowlist = Allowlist {
    calls: &[
        libc::SYS_epoll_wait,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_ctl,
        libc::SYS_read,
        // netback reads a TAP frame and its virtio-net header at once.
        libc::SYS_readv,
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_preadv,
        libc::SYS_pwritev,
        libc::SYS_fdatasync,
        libc::SYS_fsync,
        libc::SYS_fallocate,
        libc::SYS_fcntl,
        // netback arms and stops its receive poll for a front end without
        // feature-rx-notify (the timerfd is created before the filter).
        libc::SYS_timerfd_settime,
    ],
    ioctls: &[nr::KVM_IOEVENTFD],
    any_kvm_ioctl: false,
    inet_socket: false,
};

/// The run-time watchdog and the PVH timer: sleep, lock, signal the vCPU
/// thread, write an upcall eventfd: all in [`COMMON`].
const WATCHDOG: Allowlist = Allowlist { calls: &[], ioctls: &[], any_kvm_ioctl: false, inet_socket: false };

/// The API socket's thread: serve connections on the already bound
/// socket, write store nodes, kick the vCPU (all else in [`COMMON`]).
const API: Allowlist = Allowlist {
    calls: &[
        libc::SYS_accept4,
        libc::SYS_poll,
        libc::SYS_ppoll,
        libc::SYS_read,
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        libc::SYS_fcntl,
        libc::SYS_setsockopt,
        libc::SYS_shutdown,
    ],
    // std's `set_nonblocking` on the listener and each connection.
    ioctls: &[libc::FIONBIO],
    any_kvm_ioctl: false,
    inet_socket: false,
};

/// Attaching a TAP device (`TUNSETIFF`), its offloads, link up and MTU
/// through an AF_INET datagram socket (`backend::net::tap::Tap::open`):
/// the hot-plug thread's vifs and `vmm bench`'s net rows.
const TAP_IOCTLS: &[u64] = &[
    backend::net::tap::TUNSETIFF,
    backend::net::tap::TUNSETOFFLOAD,
    libc::SIOCGIFFLAGS,
    libc::SIOCSIFFLAGS,
    libc::SIOCGIFMTU,
];

/// The hot-plug thread (`crate::hotplug`): opens a disk image (and locks
/// it) or a vif's TAP device, makes the device's eventfds and event loop, writes store nodes,
/// and starts its device thread, which inherits this filter and stacks
/// the device filter (so everything a device thread does, added through
/// [`ThreadKind::starts`], plus `prctl` and `seccomp`).
const HOTPLUG: Allowlist = Allowlist {
    calls: &[
        libc::SYS_openat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_lseek,
        libc::SYS_eventfd2,
        libc::SYS_epoll_create1,
        libc::SYS_clone,
        libc::SYS_clone3,
        libc::SYS_prctl,
        libc::SYS_seccomp,
        // netback's receive poll timer, made when a hot-plugged vif is wired.
        libc::SYS_timerfd_create,
    ],
    // A hot-plugged vif's TAP: attach (`TUNSETIFF`), offloads, link up and
    // MTU through an AF_INET datagram socket (`Tap::open`).
    ioctls: TAP_IOCTLS,
    any_kvm_ioctl: false,
    inet_socket: true,
};

/// The migration thread (`crate::migration::send`): connects to the
/// destination (TCP or Unix: `socket` with any family, the address is the
/// user's), streams guest memory, switches KVM's dirty log and reads it,
/// drops and takes back the disk images' OFD locks (`fcntl`).
const MIGRATION: Allowlist = Allowlist {
    calls: &[
        libc::SYS_socket,
        libc::SYS_connect,
        libc::SYS_getsockopt,
        libc::SYS_setsockopt,
        libc::SYS_poll,
        libc::SYS_ppoll,
        libc::SYS_read,
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        libc::SYS_shutdown,
        libc::SYS_fcntl,
    ],
    ioctls: &[nr::KVM_GET_DIRTY_LOG, nr::KVM_SET_USER_MEMORY_REGION, libc::FIONBIO],
    any_kvm_ioctl: false,
    inet_socket: false,
};

/// The snapshot writer thread (`crate::snapshot::save`): creates the
/// snapshot directory, writes the sparse memory file and the state file.
const SNAPSHOT: Allowlist = Allowlist {
    calls: &[
        libc::SYS_openat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_lseek,
        libc::SYS_mkdir,
        libc::SYS_mkdirat,
        libc::SYS_unlink,
        libc::SYS_unlinkat,
        libc::SYS_fstat,
        libc::SYS_fcntl,
        // Which guest pages were ever touched (the rest are not read).
        libc::SYS_mincore,
        // glibc's `free` reads /proc/sys/vm/overcommit_memory the first
        // time it shrinks this thread's arena (see `refuses_open`; here
        // the open succeeds, so the read must too).
        libc::SYS_read,
        libc::SYS_rename,
        libc::SYS_renameat,
        libc::SYS_renameat2,
        libc::SYS_ftruncate,
        libc::SYS_pwrite64,
        libc::SYS_fsync,
        libc::SYS_fdatasync,
    ],
    ioctls: &[],
    any_kvm_ioctl: false,
    inet_socket: false,
};

/// `vmm bench`'s main thread, which builds VM after VM: everything above
/// plus VM construction. Threads it starts inherit this filter and add
/// their own (so `prctl` and `seccomp`).
const MAIN: Allowlist = Allowlist {
    calls: &[
        libc::SYS_read,
        libc::SYS_pread64,
        libc::SYS_fcntl,
        libc::SYS_openat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_getdents64,
        libc::SYS_unlinkat,
        libc::SYS_mkdir,
        libc::SYS_mkdirat,
        libc::SYS_eventfd2,
        // netback's receive poll timer, made when a vif is wired.
        libc::SYS_timerfd_create,
        libc::SYS_epoll_create1,
        libc::SYS_epoll_ctl,
        libc::SYS_clone,
        libc::SYS_clone3,
        libc::SYS_rt_sigaction,
        libc::SYS_prctl,
        libc::SYS_seccomp,
        libc::SYS_epoll_wait,
        libc::SYS_epoll_pwait,
        // Device threads it starts read TAP frames with readv.
        libc::SYS_readv,
        libc::SYS_pwrite64,
        libc::SYS_preadv,
        libc::SYS_pwritev,
        libc::SYS_fallocate,
        // The bench makes scratch images (`tempfile`, whose names come
        // from a `RandomState`-seeded RNG) VM after VM; std seeds a
        // thread's hash keys with `getrandom` once, maybe after this filter.
        libc::SYS_getrandom,
        libc::SYS_ftruncate,
        libc::SYS_fsync,
        libc::SYS_fdatasync,
    ],
    // Attaching a net device's TAP (`vmm bench`'s net rows), and reading
    // its MTU for the guest (`Tap::open`).
    ioctls: TAP_IOCTLS,
    any_kvm_ioctl: true,
    inet_socket: true,
};

impl ThreadKind {
    fn allowlist(self) -> &'static Allowlist {
        match self {
            ThreadKind::Vcpu => &VCPU,
            ThreadKind::Device => &DEVICE,
            ThreadKind::Watchdog => &WATCHDOG,
            ThreadKind::Main => &MAIN,
            ThreadKind::Api => &API,
            ThreadKind::Hotplug => &HOTPLUG,
            ThreadKind::Migration => &MIGRATION,
            ThreadKind::Snapshot => &SNAPSHOT,
        }
    }

    /// The kind of the threads this kind starts, if any: they inherit this
    /// thread's filter and stack their own, so this filter must allow all
    /// that theirs does (the kernel applies the strictest verdict).
    fn starts(self) -> Option<ThreadKind> {
        match self {
            ThreadKind::Hotplug => Some(ThreadKind::Device),
            _ => None,
        }
    }
}

impl ThreadKind {
    /// Whether `openat` fails with `EACCES` here rather than stopping the
    /// VMM: glibc's `free` opens `/proc/sys/vm/overcommit_memory` the first
    /// time it shrinks a thread arena's heap (`check_may_shrink_heap` in
    /// malloc/arena.c), on whichever thread frees first, and takes a
    /// failed open as "do not shrink". The fuzz smoke run's netif target
    /// hit it on the device filter (`error: seccomp: the device thread made
    /// forbidden system call 257`); a device thread in the VMM could as
    /// well, and the migration thread did (it frees its 1 MiB stream
    /// buffers after a failed migration). Refused, no file can be opened
    /// on these threads.
    fn refuses_open(self) -> bool {
        matches!(self, ThreadKind::Device | ThreadKind::Watchdog | ThreadKind::Api | ThreadKind::Migration)
    }
}

/// A second filter, stacked on a thread's own: `openat` fails with
/// `EACCES` (the kernel applies the strictest verdict of all filters, and
/// the thread's filter allows `openat` only through this one).
fn refuse_open() -> Result<BpfProgram, seccompiler::Error> {
    let rules = BTreeMap::from([(libc::SYS_openat, vec![])]);
    let arch = std::env::consts::ARCH.try_into()?;
    let action = SeccompAction::Errno(libc::EACCES as u32);
    Ok(SeccompFilter::new(rules, SeccompAction::Allow, action, arch)?.try_into()?)
}

/// A rule matching argument `arg` (32 bits) against `value` under `op`.
fn arg_rule(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompRule, seccompiler::BackendError> {
    SeccompRule::new(vec![SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)?])
}

fn filter(kind: ThreadKind, extra: &[i64]) -> Result<BpfProgram, seccompiler::Error> {
    let list = kind.allowlist();
    let started = kind.starts().map(ThreadKind::allowlist);
    let (started_calls, started_ioctls) = started.map_or((&[][..], &[][..]), |l| (l.calls, l.ioctls));
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        COMMON.iter().chain(list.calls).chain(started_calls).chain(extra).map(|&s| (s, vec![])).collect();
    if kind.refuses_open() {
        // Refused with `EACCES` by the stacked `refuse_open` filter.
        rules.insert(libc::SYS_openat, vec![]);
    }
    let mut ioctls = list
        .ioctls
        .iter()
        .chain(started_ioctls)
        .map(|&r| arg_rule(1, SeccompCmpOp::Eq, r))
        .collect::<Result<Vec<_>, _>>()?;
    if list.any_kvm_ioctl {
        ioctls.push(arg_rule(1, SeccompCmpOp::MaskedEq(0xff00), nr::KVMIO << 8)?);
    }
    if !ioctls.is_empty() {
        rules.insert(libc::SYS_ioctl, ioctls);
    }
    if list.inet_socket {
        rules.insert(libc::SYS_socket, vec![arg_rule(0, SeccompCmpOp::Eq, libc::AF_INET as u64)?]);
    }
    let arch = std::env::consts::ARCH.try_into()?;
    Ok(SeccompFilter::new(rules, SeccompAction::Trap, SeccompAction::Allow, arch)?.try_into()?)
}

fn install_sigsys_handler() {
    // SAFETY: `sigaction` is plain data; all-zero is a valid value.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_sigsys as *const () as usize;
    sa.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `sa_mask` is a valid, owned sigset.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    // SAFETY: installs a handler that is async-signal-safe (only `write`
    // and `_exit`); the old action is not needed.
    unsafe { libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()) };
}

/// Formats `n` in decimal into `buf`, returning the digits.
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // `si_syscall` sits at byte 24 of a SIGSYS siginfo on x86-64
    // (`si_call_addr` at 16, `si_syscall` at 24, `si_arch` at 28).
    let at = (info as *const u8).wrapping_add(24).cast::<i32>();
    // SAFETY: the kernel passes a valid 128-byte siginfo to SA_SIGINFO
    // handlers; byte 24 lies inside it.
    let nr = unsafe { at.read_unaligned() } as u32;
    let kind = INSTALLED.with(|c| c.get()).unwrap_or("child");
    let mut digits = [0u8; 10];
    let parts: [&[u8]; 5] = [
        b"error: seccomp: the ",
        kind.as_bytes(),
        b" thread made forbidden system call ",
        decimal(nr, &mut digits),
        b"; stopping the VMM\n",
    ];
    for p in parts {
        // SAFETY: writing a valid buffer to stderr; async-signal-safe.
        unsafe { libc::write(2, p.as_ptr().cast(), p.len()) };
    }
    // SAFETY: `_exit` is async-signal-safe and never returns.
    unsafe { libc::_exit(SIGSYS_EXIT_STATUS) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_filter_compiles() {
        for kind in [
            ThreadKind::Vcpu,
            ThreadKind::Device,
            ThreadKind::Watchdog,
            ThreadKind::Main,
            ThreadKind::Api,
            ThreadKind::Hotplug,
            ThreadKind::Migration,
            ThreadKind::Snapshot,
        ] {
            assert!(filter(kind, &[]).is_ok(), "{kind:?}");
        }
        // The store thread's HashMaps must not need `getrandom` (issue 18):
        // fixed where it is called, never allowed here.
        for list in [&VCPU, &DEVICE, &WATCHDOG, &API, &HOTPLUG, &SNAPSHOT] {
            assert!(!list.calls.contains(&libc::SYS_getrandom));
        }
        assert!(refuse_open().is_ok());
        let mut d = [0u8; 10];
        assert_eq!(decimal(0, &mut d), b"0");
        assert_eq!(decimal(4_294_967_295, &mut d), b"4294967295");
    }
}
