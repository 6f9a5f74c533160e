//! The vCPU: its KVM fd set up at the image's entry, and the run loop that
//! only dispatches each exit (hypercalls to `xen_domain`'s
//! [`HypercallTable`], the UART baseline to [`Uart`], trapped page-table
//! writes to [`xen_domain::mmu`]).
//!
//! Built by [`crate::builder`]; run by [`crate::vm::Vm::run`] over the
//! guest's [`Domain`].

use crate::boot;
use crate::console::ConsoleOut;
use crate::control::{Destroy, Served, VcpuStats, VmControl};
use crate::error::VmmError;
use crate::kvm_stats::KvmStats;
use crate::pvh::callback::CallbackLine;
use crate::stats::{ExitKind, ExitMetrics};
use crate::uart::{self, Uart};
use crate::virtio_mmio_bus::VirtioBus;
use crate::watchdog::{StopCause, Watchdog};
use kvm_bindings::CpuId;
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Kvm, SyncReg, VcpuExit, VcpuFd, VmFd};
use pv_abi::hypercall::sched_op::SHUTDOWN_CRASH;
use pv_abi::hypercall::{DOORBELL_PORT, HYPERCALL_PORT};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xen_domain::domain::Domain;
use xen_domain::hvm_context::{Segment, VcpuContext};
use xen_domain::hypercall::{HypercallRegs, HypercallTable};
use xen_domain::mmu as paging;
use xen_domain::sched_op::XenShutdown;

/// How a guest run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The guest called `SCHEDOP_shutdown`.
    Shutdown {
        /// `SHUTDOWN_*` reason.
        reason: u32,
        /// Exit status the guest chose.
        code: u32,
    },
    /// A Xen (PVH) guest called `SCHEDOP_shutdown`: only the reason counts
    /// ([`XenShutdown`] maps it to the toolstack's action).
    XenShutdown {
        /// `SHUTDOWN_*` reason, truncated to 8 bits as Xen does.
        reason: u32,
    },
    /// The vCPU triple-faulted (KVM shutdown exit).
    TripleFault {
        /// Instruction pointer at the fault.
        rip: u64,
    },
    /// The run-time limit passed before the guest shut down.
    Timeout,
    /// A stop signal (SIGTERM, SIGINT) ended the run before the guest shut
    /// down: it did not power off within the grace period, or a second
    /// signal came.
    Stopped {
        /// The signal number.
        signal: i32,
        /// A second signal stopped it at once (else the grace ran out).
        forced: bool,
    },
    /// The VM was destroyed through its control ([`crate::control`]):
    /// a destroy request, or a shutdown request whose grace period ran out.
    Destroyed {
        /// The grace period of a shutdown request ran out (else: destroy).
        after_grace: bool,
    },
    /// KVM could not run or emulate the guest.
    InternalError {
        /// What KVM reported, and the instruction bytes at `rip`.
        failure: KvmFailure,
        /// Instruction pointer.
        rip: u64,
    },
}

/// How KVM failed to run the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    /// `KVM_EXIT_FAIL_ENTRY`: the hardware refused the VM entry (reason).
    Entry(u64),
    /// `KVM_EXIT_INTERNAL_ERROR` with its suberror (`KVM_INTERNAL_ERROR_*`:
    /// 1 emulation failure, 2 exception during exception delivery, 3
    /// delivery of an event failed, 4 unexpected exit reason).
    Internal(u32),
    /// An exit the VMM does not handle.
    Unexpected,
}

/// What KVM reported about a failure, for the one-line error: the kind,
/// up to four of KVM's data words, and up to 15 bytes at the guest's `rip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvmFailure {
    /// The kind and KVM's code.
    pub kind: FailKind,
    /// KVM's extra data words (`kvm_run.internal.data`), the first `ndata`.
    pub data: [u64; 4],
    /// How many of `data` are valid.
    pub ndata: u8,
    /// The instruction bytes at `rip`, the first `insn_len` valid.
    pub insn: [u8; 15],
    /// How many bytes of `insn` could be read (0: none).
    pub insn_len: u8,
}

impl KvmFailure {
    fn new(kind: FailKind) -> Self {
        KvmFailure { kind, data: [0; 4], ndata: 0, insn: [0; 15], insn_len: 0 }
    }
}

impl std::fmt::Display for KvmFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            FailKind::Entry(r) => write!(f, "VM entry failed (hardware reason {r:#x})")?,
            FailKind::Internal(sub) => {
                let what = match sub {
                    1 => "emulation failure",
                    2 => "exception while delivering an exception",
                    3 => "event delivery failed",
                    4 => "unexpected exit reason",
                    _ => "internal error",
                };
                write!(f, "{what} (KVM internal error suberror {sub})")?;
                if self.ndata > 0 {
                    let words: Vec<String> =
                        self.data[..usize::from(self.ndata)].iter().map(|d| format!("{d:#x}")).collect();
                    write!(f, ", data [{}]", words.join(" "))?;
                }
            }
            FailKind::Unexpected => write!(f, "unexpected exit")?,
        }
        if self.insn_len > 0 {
            let bytes: Vec<String> =
                self.insn[..usize::from(self.insn_len)].iter().map(|b| format!("{b:02x}")).collect();
            write!(f, "; bytes at rip: {}", bytes.join(" "))?;
        }
        Ok(())
    }
}

/// The VMM's exit status when the guest's shutdown code does not fit in
/// a process exit status (0..=255): a failure, never a truncated code
/// (256 would otherwise exit 0, "success").
pub const OUT_OF_RANGE_EXIT_STATUS: i32 = 1;

impl Outcome {
    /// The VMM process exit status for this outcome: for a Xen guest, what
    /// its reason means ([`XenShutdown::exit_status`]); for our own guests
    /// (the status extension) the guest's chosen code if it is in 0..=255; a crash keeps a non-zero
    /// code and maps 0 to 1; a code outside 0..=255 gives
    /// [`OUT_OF_RANGE_EXIT_STATUS`]; anything else that is a failure is 1.
    pub fn exit_status(&self) -> i32 {
        match *self {
            Outcome::Shutdown { code, .. } if code > 255 => OUT_OF_RANGE_EXIT_STATUS,
            Outcome::Shutdown { reason, code } if reason != SHUTDOWN_CRASH => code as i32,
            Outcome::Shutdown { code: 0, .. } => 1,
            Outcome::Shutdown { code, .. } => code as i32,
            Outcome::XenShutdown { reason } => XenShutdown::from_reason(reason).exit_status(),
            // As a shell reports a process a signal ended.
            Outcome::Stopped { signal, .. } => 128 + signal.clamp(1, 127),
            _ => 1,
        }
    }

    /// Why [`exit_status`](Self::exit_status) is not the guest's own code,
    /// for a one-line note on stderr.
    pub fn status_note(&self) -> Option<String> {
        match *self {
            Outcome::Shutdown { code, .. } if code > 255 => Some(format!(
                "guest exit code {code} is outside 0..=255: exiting with status {OUT_OF_RANGE_EXIT_STATUS}"
            )),
            _ => None,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Outcome::Shutdown { reason, code } => {
                write!(f, "guest shut down ({}) with status {code}", XenShutdown::from_reason(reason).name())
            }
            Outcome::XenShutdown { reason } => match XenShutdown::from_reason(reason) {
                XenShutdown::Unknown(n) => write!(f, "guest shut down with unknown reason {n}"),
                x => write!(f, "guest shut down ({})", x.name()),
            },
            Outcome::TripleFault { rip } => write!(f, "guest triple-faulted at rip {rip:#x}"),
            Outcome::Timeout => write!(f, "guest did not shut down within the time limit"),
            Outcome::Stopped { signal, forced: true } => {
                write!(f, "stopped by signal {signal} before the guest shut down (a second stop signal)")
            }
            Outcome::Stopped { signal, forced: false } => {
                write!(f, "stopped by signal {signal}: the guest did not power off within the grace period")
            }
            Outcome::Destroyed { after_grace: false } => write!(f, "destroyed through the API"),
            Outcome::Destroyed { after_grace: true } => {
                write!(f, "stopped through the API: the guest did not power off within the grace period")
            }
            Outcome::InternalError { failure, rip } => {
                write!(f, "KVM could not run the guest at rip {rip:#x}: {failure}")
            }
        }
    }
}

/// What the loop does after one exit.
enum Step {
    /// Enter the guest again.
    Continue,
    /// The guest made a hypercall: dispatch it, then continue.
    Hypercall,
    /// Stop with a triple fault.
    TripleFault,
    /// Stop: KVM could not run the guest.
    Failed(FailKind),
}

/// Exit counters and the emulated UART: what exit handling needs besides
/// the vCPU fd (a separate borrow from the exit, which borrows the fd).
struct ExitHandlers {
    stats: ExitMetrics,
    uart: Uart,
    /// The virtio-mmio register blocks (`crate::virtio_mmio_bus`).
    mmio: Arc<VirtioBus>,
}

impl ExitHandlers {
    /// Handles every exit but a hypercall, which needs the fd's registers.
    fn handle(&mut self, dom: &mut Domain, exit: VcpuExit<'_>) -> Step {
        match exit {
            VcpuExit::IoOut(HYPERCALL_PORT, _) => return Step::Hypercall,
            VcpuExit::IoOut(port, data) => self.io_out(dom, port, data),
            VcpuExit::IoIn(port, data) => self.io_in(dom, port, data),
            VcpuExit::MmioRead(addr, data) if self.mmio.contains(addr) => {
                self.stats.exit(ExitKind::Mmio);
                self.mmio.read(addr, data);
            }
            VcpuExit::MmioWrite(addr, data) if self.mmio.contains(addr) => {
                self.stats.exit(ExitKind::Mmio);
                self.mmio.write(addr, data);
            }
            VcpuExit::MmioRead(addr, data) => {
                self.stats.exit(ExitKind::Mmio);
                data.fill(0xff);
                tracing::debug!(addr, "guest read unbacked memory");
            }
            VcpuExit::MmioWrite(addr, data) => {
                self.stats.exit(ExitKind::Mmio);
                if dom.paging.in_pool(addr) {
                    paging::trapped_write(dom, addr, data);
                } else {
                    tracing::debug!(addr, "guest wrote unbacked memory");
                }
            }
            VcpuExit::Hlt => self.stats.exit(ExitKind::Hlt),
            // Asked for by pvh::callback: the guest can take the upcall now.
            VcpuExit::IrqWindowOpen => self.stats.exit(ExitKind::Interrupted),
            VcpuExit::X86Wrmsr(exit) => {
                self.stats.exit(ExitKind::Msr);
                *exit.error = crate::pvh::wrmsr_exit(dom, exit.index, exit.data);
            }
            VcpuExit::X86Rdmsr(exit) => {
                self.stats.exit(ExitKind::Msr);
                match crate::pvh::hypercall_page::rdmsr(exit.index) {
                    Ok(v) => *exit.data = v,
                    Err(_) => *exit.error = 1,
                }
            }
            VcpuExit::Shutdown => {
                self.stats.exit(ExitKind::Shutdown);
                return Step::TripleFault;
            }
            other => return self.failure(other),
        }
        Step::Continue
    }

    fn io_out(&mut self, dom: &mut Domain, port: u16, data: &[u8]) {
        if port == DOORBELL_PORT {
            // No ioeventfd matched: an unbound port or a bad width.
            self.stats.exit(ExitKind::Doorbell);
            dom.evtchn.doorbell_exit(data);
        } else if uart::PORTS.contains(&port) {
            self.stats.exit(ExitKind::Uart);
            self.uart.write(port, data);
        } else if port == pv_abi::hvm::DEBUGCONS_PORT && dom.pvh.is_some() {
            // Xen's `hvm_print_line()`: the hypervisor console, not the guest's.
            self.stats.exit(ExitKind::OtherIo);
            dom.hv_console.write(data);
        } else {
            self.stats.exit(ExitKind::OtherIo);
            tracing::debug!(port, "guest wrote an unassigned port");
        }
    }

    fn io_in(&mut self, dom: &Domain, port: u16, data: &mut [u8]) {
        if uart::PORTS.contains(&port) {
            self.stats.exit(ExitKind::Uart);
            self.uart.read(port, data);
        } else if port == pv_abi::hvm::DEBUGCONS_PORT && dom.pvh.is_some() {
            // `hvm_print_line()` answers reads with the port number.
            self.stats.exit(ExitKind::OtherIo);
            data.fill(pv_abi::hvm::DEBUGCONS_PORT as u8);
        } else {
            self.stats.exit(ExitKind::OtherIo);
            data.fill(0xff);
            tracing::debug!(port, "guest read an unassigned port");
        }
    }

    fn failure(&mut self, exit: VcpuExit<'_>) -> Step {
        self.stats.exit(ExitKind::Error);
        match exit {
            VcpuExit::FailEntry(reason, _) => Step::Failed(FailKind::Entry(reason)),
            // The suberror is read from `kvm_run` once this borrow ends.
            VcpuExit::InternalError => Step::Failed(FailKind::Internal(0)),
            other => {
                tracing::warn!("unexpected exit {other:?}");
                Step::Failed(FailKind::Unexpected)
            }
        }
    }
}

/// How [`Vcpu::run_until`] ended.
pub(crate) enum Ended {
    /// The run is over.
    Outcome(Outcome),
    /// The vCPU was taken down (`VCPUOP_down`): park until it is up.
    Parked,
    /// Another vCPU thread ended the run.
    Stopped,
}

/// The domain as a vCPU thread reaches it: owned by the one vCPU, or
/// behind the domain lock shared by all vCPU threads (`crate::smp`).
pub(crate) trait DomAccess {
    /// Runs `f` on the domain (under its lock, if shared).
    fn with<R>(&mut self, f: impl FnOnce(&mut Domain) -> R) -> R;
}

impl DomAccess for Domain {
    fn with<R>(&mut self, f: impl FnOnce(&mut Domain) -> R) -> R {
        f(self)
    }
}

impl DomAccess for &Mutex<&mut Domain> {
    fn with<R>(&mut self, f: impl FnOnce(&mut Domain) -> R) -> R {
        // A vCPU thread that panicked mid-hypercall ends the process
        // (panic = abort in release); in tests, carry on with the state.
        let mut d = self.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut d)
    }
}

/// What [`Outcome`] a watchdog that stopped the run means.
pub(crate) fn watchdog_outcome(w: &Watchdog) -> Outcome {
    match w.cause() {
        Some(StopCause::Signal(signal)) => Outcome::Stopped { signal, forced: w.forced() },
        _ => Outcome::Timeout,
    }
}

/// A Xen segment (`struct segment_register`'s packed attributes) as KVM's.
fn kvm_segment(s: Segment) -> kvm_bindings::kvm_segment {
    let limit = if s.g() { (s.limit << 12) | 0xfff } else { s.limit };
    kvm_bindings::kvm_segment {
        base: s.base,
        limit,
        selector: 0,
        type_: s.type_(),
        present: s.p().into(),
        dpl: s.dpl() as u8,
        db: s.db().into(),
        s: s.code_or_data().into(),
        l: s.l().into(),
        g: s.g().into(),
        avl: s.avl().into(),
        unusable: (!s.p()).into(),
        padding: 0,
    }
}

/// The vCPU thread and its `kvm_run.immediate_exit` byte while it runs.
struct KickTarget {
    thread: libc::pthread_t,
    immediate_exit: *mut u8,
}

// SAFETY: the pointer is only dereferenced under the kicker's mutex while
// the vCPU thread is inside `Vcpu::run_until` (it clears the target before
// the `kvm_run` mapping can go away); the thread id is plain data.
unsafe impl Send for KickTarget {}

/// Interrupts one vCPU thread in `KVM_RUN` (`immediate_exit` plus the
/// kick signal, as QEMU does); the thread looks at its flags next.
#[derive(Default)]
pub(crate) struct Kicker {
    target: Mutex<Option<KickTarget>>,
}

impl Kicker {
    /// Called by the vCPU thread when it starts (`Some`) and stops (`None`) running.
    fn set_target(&self, immediate_exit: Option<*mut u8>) {
        let mut t = self.target.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: `pthread_self` has no preconditions.
        *t = immediate_exit.map(|p| KickTarget { thread: unsafe { libc::pthread_self() }, immediate_exit: p });
    }

    /// Makes the vCPU leave (or not enter) the guest; a no-op while it is
    /// parked.
    pub(crate) fn kick(&self) {
        let t = self.target.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = t.as_ref() {
            // SAFETY: `immediate_exit` points into the running vCPU's
            // `kvm_run` page (see `KickTarget`); a one-byte atomic store
            // is what KVM expects from another thread.
            unsafe { AtomicU8::from_ptr(t.immediate_exit) }.store(1, Ordering::SeqCst);
            // SAFETY: signals a live thread of this process (the vCPU
            // thread, which installed a no-op handler for the kick signal).
            unsafe { libc::pthread_kill(t.thread, crate::watchdog::kick_signal()) };
        }
    }
}

/// One vCPU of the guest.
pub struct Vcpu {
    fd: VcpuFd,
    hypercalls: HypercallTable,
    exits: ExitHandlers,
    kvm_stats: Option<KvmStats>,
    /// A PVH guest's callback-vector line, injected before each entry.
    callback: Option<Arc<CallbackLine>>,
    /// Pause, destroy and stats requests from the API ([`crate::control`]).
    control: Option<Arc<VmControl>>,
    /// The vCPU id (Xen's `vcpu_id`, KVM's vCPU and APIC id).
    id: u32,
    /// Interrupts this vCPU's thread in the guest (other vCPUs'
    /// `VCPUOP_down`, the end of the run).
    kicker: Arc<Kicker>,
    /// vCPU 0: the VM, whose clock and irqchip it reads for a snapshot.
    vm_fd: Option<Arc<kvm_ioctls::VmFd>>,
}

impl Vcpu {
    /// Creates vCPU 0 in 64-bit mode at `entry`, with the host's CPUID and
    /// the general registers exchanged through `kvm_run` sync regs.
    pub fn new(kvm: &Kvm, vm: &VmFd, entry: u64, console: ConsoleOut) -> Result<Vcpu, VmmError> {
        let mut fd = vm.create_vcpu(0).map_err(VmmError::kvm("create_vcpu"))?;
        let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(VmmError::kvm("get_supported_cpuid"))?;
        fd.set_cpuid2(&cpuid).map_err(VmmError::kvm("set_cpuid2"))?;
        let mut sregs = fd.get_sregs().map_err(VmmError::kvm("get_sregs"))?;
        boot::long_mode_sregs(&mut sregs);
        fd.set_sregs(&sregs).map_err(VmmError::kvm("set_sregs"))?;
        fd.set_regs(&boot::entry_regs(entry)).map_err(VmmError::kvm("set_regs"))?;
        fd.set_sync_valid_reg(SyncReg::Register);
        Ok(Vcpu::from_fd(fd, 0, console))
    }

    /// Creates secondary vCPU `id` (stopped until `VCPUOP_up`): `cpuid`,
    /// runnable for KVM (no INIT/SIPI: the VMM loads its state), registers
    /// exchanged through sync regs (`sregs` too for a PVH guest, whose
    /// hypercalls read the mode from them).
    pub fn new_secondary(vm: &VmFd, id: u32, cpuid: &CpuId, console: ConsoleOut, pvh: bool) -> Result<Vcpu, VmmError> {
        let mut fd = vm.create_vcpu(id.into()).map_err(VmmError::kvm("create_vcpu"))?;
        fd.set_cpuid2(cpuid).map_err(VmmError::kvm("set_cpuid2"))?;
        let runnable = kvm_bindings::kvm_mp_state { mp_state: kvm_bindings::KVM_MP_STATE_RUNNABLE };
        fd.set_mp_state(runnable).map_err(VmmError::kvm("set_mp_state"))?;
        fd.set_sync_valid_reg(SyncReg::Register);
        if pvh {
            fd.set_sync_valid_reg(SyncReg::SystemRegister);
        }
        Ok(Vcpu::from_fd(fd, id, console))
    }

    /// A vCPU around its configured `fd`: no hypercalls, callback or
    /// control yet, fresh counters.
    fn from_fd(fd: VcpuFd, id: u32, console: ConsoleOut) -> Vcpu {
        let kvm_stats = KvmStats::open(&fd);
        Vcpu {
            fd,
            hypercalls: HypercallTable::default(),
            exits: ExitHandlers { stats: ExitMetrics::default(), uart: Uart::new(console), mmio: Arc::default() },
            kvm_stats,
            callback: None,
            control: None,
            id,
            kicker: Arc::default(),
            vm_fd: None,
        }
    }

    /// vCPU 0 reads the VM-wide state (`vm`'s clock and irqchip) for a
    /// snapshot ([`crate::snapshot`]).
    pub(crate) fn attach_vm(&mut self, vm: Arc<kvm_ioctls::VmFd>) {
        self.vm_fd = Some(vm);
    }

    /// Injects `line`'s upcalls before each entry (a PVH guest's callback
    /// vector, `pvh::callback`).
    pub fn attach_callback(&mut self, line: Arc<CallbackLine>) {
        self.callback = Some(line);
    }

    /// Serves `control`'s requests before each entry ([`crate::control`]).
    pub fn attach_control(&mut self, control: Arc<VmControl>) {
        self.control = Some(control);
    }

    /// What [`crate::control`] reports about this vCPU.
    fn control_stats(&self, dom: &Domain) -> VcpuStats {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let ev = &dom.evtchn.counters;
        VcpuStats { id: self.id, exits: self.stats(), evtchn: [load(&ev.sends), load(&ev.notifies), load(&ev.upcalls)] }
    }

    /// Routes MMIO exits inside `bus`'s register blocks to it.
    pub fn attach_mmio(&mut self, bus: Arc<VirtioBus>) {
        self.exits.mmio = bus;
    }

    /// The vCPU fd (the PVH builder sets its own entry state).
    pub(crate) fn fd_mut(&mut self) -> &mut VcpuFd {
        &mut self.fd
    }

    /// Exit counters, with KVM's own counters refreshed.
    pub fn stats(&self) -> ExitMetrics {
        let mut s = self.exits.stats.clone();
        if let Some(k) = &self.kvm_stats {
            s.guest_instructions = k.get("insn_emulation");
            s.kvm_exits = k.get("exits");
        }
        s
    }

    /// The vCPU's KVM binary statistics, where the host provides them.
    pub fn kvm_stats(&self) -> Option<&KvmStats> {
        self.kvm_stats.as_ref()
    }

    /// Runs the guest until it shuts down, fails, or `watchdog` expires
    /// (the one-vCPU path: no lock around the domain).
    pub fn run(&mut self, dom: &mut Domain, watchdog: Option<&Watchdog>) -> Result<Outcome, VmmError> {
        let stop = AtomicBool::new(false);
        loop {
            match self.run_until(dom, watchdog, &stop)? {
                Ended::Outcome(o) => return Ok(o),
                // vCPU 0 alone is never down (`VCPUOP_down` of the last
                // vCPU shuts the domain down instead); nothing stops it.
                Ended::Parked | Ended::Stopped => continue,
            }
        }
    }

    /// Runs the guest until the run ends ([`Ended::Outcome`]), this vCPU
    /// is taken down ([`Ended::Parked`]) or `stop` is set by another vCPU
    /// thread ([`Ended::Stopped`]). `dom` is the domain or its lock.
    pub(crate) fn run_until<D: DomAccess>(
        &mut self,
        dom: &mut D,
        watchdog: Option<&Watchdog>,
        stop: &AtomicBool,
    ) -> Result<Ended, VmmError> {
        // A PVH guest's callback vector and the other vCPUs kick this
        // thread (pvh::callback, `Kicker`).
        crate::watchdog::install_handler();
        let line = self.callback.clone();
        let immediate_exit = &mut self.fd.get_kvm_run().immediate_exit as *mut u8;
        self.kicker.set_target(Some(immediate_exit));
        if let Some(line) = &line {
            line.set_target(Some(immediate_exit));
        }
        let vcpus = dom.with(|d| d.vcpus.clone());
        // A lone vCPU is never down (`VCPUOP_down` of the last one shuts
        // the domain down instead): no lock on `vcpus` per exit then.
        let smp = vcpus.count() > 1;
        let control = self.control.clone();
        if let Some(c) = &control {
            c.attach(self.id);
        }
        let ended = loop {
            // Cleared before the checks: a kick after them makes KVM_RUN
            // return at once instead of being lost.
            self.fd.get_kvm_run().immediate_exit = 0;
            if let Some(line) = &line {
                line.before_run(&mut self.fd);
            }
            if let Some(w) = watchdog.filter(|w| w.expired()) {
                break Ok(Ended::Outcome(watchdog_outcome(w)));
            }
            if stop.load(Ordering::SeqCst) {
                break Ok(Ended::Stopped);
            }
            if let Some(c) = control.as_ref().filter(|c| c.pending()) {
                let halt = || watchdog.is_some_and(Watchdog::expired) || stop.load(Ordering::SeqCst);
                if let Served::Destroy(d) = self.serve_control(c, dom, halt) {
                    break Ok(Ended::Outcome(Outcome::Destroyed { after_grace: d == Destroy::AfterGrace }));
                }
                continue;
            }
            if self.id != 0 && vcpus.is_down(self.id) {
                break Ok(Ended::Parked);
            }
            match self.run_once(dom) {
                // A domain watchdog (`SCHEDOP_watchdog`) expired.
                Ok(None) if dom.with(xen_domain::sched_op::watchdog_expired) => {
                    let reason = dom.with(|d| d.shutdown.map_or(0, |s| s.reason));
                    break Ok(Ended::Outcome(Outcome::XenShutdown { reason }));
                }
                Ok(None) => {}
                Ok(Some(outcome)) => break Ok(Ended::Outcome(outcome)),
                Err(e) => break Err(e),
            }
            if smp && self.id == 0 && vcpus.is_down(0) {
                break Ok(Ended::Parked);
            }
        };
        self.kicker.set_target(None);
        if let Some(line) = &line {
            line.set_target(None);
        }
        if let Some(c) = &control {
            c.detach(self.id);
        }
        ended
    }

    /// Serves `c`'s requests ([`VmControl::serve_with`]): stats, parking
    /// while paused, and a snapshot's read of this vCPU's state (vCPU 0's
    /// with the VM-wide state and the domain).
    pub(crate) fn serve_control<D: DomAccess>(
        &mut self,
        c: &VmControl,
        dom: &mut D,
        halt: impl Fn() -> bool,
    ) -> Served {
        let stats = dom.with(|d| self.control_stats(d));
        let (fd, id, vm) = (&mut self.fd, self.id, self.vm_fd.clone());
        let snap = || {
            crate::snapshot::save::capture(fd, id, vm.as_deref(), || dom.with(crate::snapshot::save::domain_state))
                .map_err(|e| e.to_string())
        };
        c.serve_with(id, || stats.clone(), snap, halt)
    }

    /// The control this vCPU serves, if any.
    pub(crate) fn control(&self) -> Option<Arc<VmControl>> {
        self.control.clone()
    }

    /// Enters the guest once and handles the exit; `Some` when the run ends.
    fn run_once<D: DomAccess>(&mut self, dom: &mut D) -> Result<Option<Outcome>, VmmError> {
        let id = self.id;
        let exits = &mut self.exits;
        let step = match self.fd.run() {
            Ok(exit) => dom.with(|d| {
                d.current = id;
                exits.handle(d, exit)
            }),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                exits.stats.exit(ExitKind::Interrupted);
                Step::Continue
            }
            Err(e) => return Err(VmmError::Kvm { what: "KVM_RUN", source: e }),
        };
        match step {
            Step::Continue => Ok(None),
            Step::TripleFault => Ok(Some(Outcome::TripleFault { rip: self.rip() })),
            Step::Failed(kind) => {
                let failure = dom.with(|d| self.failure(kind, d));
                Ok(Some(Outcome::InternalError { failure, rip: self.rip() }))
            }
            Step::Hypercall => {
                self.exits.stats.exit(ExitKind::Hypercall);
                let (cr3, shutdown, xen, wait) = dom.with(|d| {
                    // `do_hypercall` sets `d.current`.
                    self.do_hypercall(d);
                    (d.paging.pending_cr3.take(), d.shutdown, d.pvh.is_some(), d.deferred_wait.take())
                });
                if let Some(cr3) = cr3 {
                    self.load_cr3(cr3)?;
                }
                // `SCHEDOP_block`/`poll` with several vCPUs: wait here,
                // without the domain lock (`Domain::defer_waits`).
                if let Some(w) = wait {
                    w.wait();
                }
                Ok(shutdown.map(|s| match xen {
                    true => Outcome::XenShutdown { reason: s.reason },
                    false => Outcome::Shutdown { reason: s.reason, code: s.code },
                }))
            }
        }
    }

    /// Loads the register state `VCPUOP_initialise` gave (Xen's
    /// `arch_set_info_hvm_guest`: general registers, control registers,
    /// EFER and the five segments, selectors 0; GDTR and IDTR untouched).
    pub(crate) fn load_context(&mut self, c: &VcpuContext) -> Result<(), VmmError> {
        let mut sregs = self.fd.get_sregs().map_err(VmmError::kvm("get_sregs"))?;
        sregs.cs = kvm_segment(c.cs);
        sregs.ds = kvm_segment(c.ds);
        sregs.ss = kvm_segment(c.ss);
        sregs.es = kvm_segment(c.es);
        sregs.tr = kvm_segment(c.tr);
        (sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer) = (c.cr0, c.cr3, c.cr4, c.efer);
        self.fd.set_sregs(&sregs).map_err(VmmError::kvm("set_sregs"))?;
        let [rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi] = c.gprs;
        let regs = kvm_bindings::kvm_regs {
            rax,
            rcx,
            rdx,
            rbx,
            rsp,
            rbp,
            rsi,
            rdi,
            rip: c.rip,
            rflags: c.rflags,
            ..Default::default()
        };
        self.fd.set_regs(&regs).map_err(VmmError::kvm("set_regs"))
    }

    /// This vCPU's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// What interrupts this vCPU's thread in the guest.
    pub(crate) fn kicker(&self) -> Arc<Kicker> {
        self.kicker.clone()
    }

    /// Benchmark support: runs the vCPU for `n` exits that must all be
    /// hypercalls, dispatching each, and returns the time spent in the
    /// VMM's own handling (from `KVM_RUN` returning to the registers being
    /// written back), excluding the kernel's exit and entry.
    pub fn time_hypercall_dispatch(&mut self, dom: &mut Domain, n: u64) -> Result<Duration, VmmError> {
        let mut spent = Duration::ZERO;
        for _ in 0..n {
            match self.fd.run() {
                Ok(VcpuExit::IoOut(HYPERCALL_PORT, _)) => {}
                Ok(other) => return Err(VmmError::Bench(format!("expected a hypercall exit, got {other:?}"))),
                Err(e) => return Err(VmmError::Kvm { what: "KVM_RUN", source: e }),
            }
            let t = Instant::now();
            self.exits.stats.exit(ExitKind::Hypercall);
            self.do_hypercall(dom);
            spent += t.elapsed();
        }
        Ok(spent)
    }

    fn do_hypercall(&mut self, dom: &mut Domain) {
        // A PVH guest may call from 32-bit code: Xen's 32-bit convention.
        dom.compat = dom.pvh.is_some() && !crate::pvh::long_mode(&self.fd.sync_regs().sregs);
        dom.current = self.id;
        let r = &self.fd.sync_regs_mut().regs;
        let mut hr = HypercallRegs {
            rax: r.rax,
            rbx: r.rbx,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            r8: r.r8,
            r10: r.r10,
            rip: r.rip,
        };
        let (nr, args) = hr.args(dom.compat);
        self.exits.stats.hypercall(nr);
        dom.start_exit();
        let ret = self.hypercalls.dispatch(dom, nr, &args);
        hr.complete(dom.compat, ret, dom.continuation.take());
        let r = &mut self.fd.sync_regs_mut().regs;
        (r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.r8, r.r10, r.rip) =
            (hr.rax, hr.rbx, hr.rcx, hr.rdx, hr.rsi, hr.rdi, hr.r8, hr.r10, hr.rip);
        self.fd.set_sync_dirty_reg(SyncReg::Register);
    }

    /// Loads CR3 (`MMUEXT_NEW_BASEPTR`); KVM drops the vCPU's cached
    /// translations when CR3 changes through `KVM_SET_SREGS`.
    fn load_cr3(&mut self, cr3: u64) -> Result<(), VmmError> {
        let mut sregs = self.fd.get_sregs().map_err(VmmError::kvm("get_sregs"))?;
        sregs.cr3 = cr3;
        self.fd.set_sregs(&sregs).map_err(VmmError::kvm("set_sregs"))
    }

    /// What KVM reported about a failed run: for an internal error the
    /// suberror and data words from `kvm_run.internal`; for every kind the
    /// bytes at the guest's `rip`.
    fn failure(&mut self, kind: FailKind, dom: &Domain) -> KvmFailure {
        let mut f = KvmFailure::new(kind);
        if let FailKind::Internal(_) = kind {
            // SAFETY: the exit was KVM_EXIT_INTERNAL_ERROR, so KVM filled
            // the `internal` member of the exit union.
            let internal = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal };
            f.kind = FailKind::Internal(internal.suberror);
            let n = (internal.ndata as usize).min(f.data.len());
            f.data[..n].copy_from_slice(&internal.data[..n]);
            f.ndata = n as u8;
        }
        if let Some(gpa) = self.rip_gpa() {
            // Up to 15 bytes, fewer where RAM ends.
            for len in (1..=f.insn.len()).rev() {
                if dom.ram.read(gpa, &mut f.insn[..len]).is_ok() {
                    f.insn_len = len as u8;
                    break;
                }
            }
        }
        f
    }

    /// The guest-physical address of `cs:rip`: through the guest's own
    /// page tables (`KVM_TRANSLATE`) when it has paging on, else the linear
    /// address itself (paging off, or best effort for identity-mapped
    /// guests if the translation fails). Instruction bytes on a page
    /// boundary are read as if the next page followed physically.
    fn rip_gpa(&self) -> Option<u64> {
        let regs = self.fd.get_regs().ok()?;
        let sregs = self.fd.get_sregs().ok()?;
        let mut linear = sregs.cs.base.wrapping_add(regs.rip);
        if sregs.efer & (1 << 10) == 0 {
            linear &= 0xffff_ffff; // not in long mode: 32-bit addresses
        }
        if sregs.cr0 & (1 << 31) == 0 {
            return Some(linear);
        }
        match self.fd.translate_gva(linear) {
            Ok(t) if t.valid != 0 => Some(t.physical_address),
            _ => Some(linear),
        }
    }

    fn rip(&self) -> u64 {
        self.fd.get_regs().map(|r| r.rip).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_follows_the_guest() {
        assert_eq!(Outcome::Shutdown { reason: 0, code: 42 }.exit_status(), 42);
        assert_eq!(Outcome::Shutdown { reason: SHUTDOWN_CRASH, code: 0 }.exit_status(), 1);
        assert_eq!(Outcome::Shutdown { reason: SHUTDOWN_CRASH, code: 101 }.exit_status(), 101);
        assert_eq!(Outcome::TripleFault { rip: 0 }.exit_status(), 1);
    }

    /// Xen guests: the reason alone decides (`do_sched_op()` in
    /// `xen/common/sched/core.c`; xl's `handle_domain_death()`).
    #[test]
    fn xen_guest_status_follows_the_reason() {
        assert_eq!(Outcome::XenShutdown { reason: 0 }.exit_status(), 0);
        for reason in [2, SHUTDOWN_CRASH, 4, 5, 77] {
            assert_eq!(Outcome::XenShutdown { reason }.exit_status(), 1, "reason {reason}");
        }
        assert_eq!(Outcome::XenShutdown { reason: 5 }.to_string(), "guest shut down (soft_reset)");
        assert_eq!(Outcome::XenShutdown { reason: 77 }.to_string(), "guest shut down with unknown reason 77");
    }

    #[test]
    fn exit_codes_outside_a_byte_are_failures_not_truncated() {
        for code in [256, 512, 0x1_0000, 0x100 | 42, u32::MAX] {
            for reason in [0, SHUTDOWN_CRASH] {
                let s = Outcome::Shutdown { reason, code }.exit_status();
                assert_eq!(s, OUT_OF_RANGE_EXIT_STATUS, "code {code} reason {reason}");
            }
        }
        assert_eq!(Outcome::Shutdown { reason: 0, code: 255 }.exit_status(), 255);
        assert_eq!(Outcome::Shutdown { reason: 0, code: 0 }.exit_status(), 0);
    }
}
