//! The vCPU: its KVM fd set up at the image's entry, and the run loop that
//! only dispatches each exit (hypercalls to `xen_domain`'s
//! [`HypercallTable`], the UART baseline to [`Uart`], trapped page-table
//! writes to [`xen_domain::mmu`]).
//!
//! Built by [`crate::builder`]; run by [`crate::vm::Vm::run`] over the
//! guest's [`Domain`].

use crate::boot;
use crate::console::ConsoleOut;
use crate::error::VmmError;
use crate::kvm_stats::KvmStats;
use crate::pvh::callback::CallbackLine;
use crate::stats::{ExitKind, ExitMetrics};
use crate::uart::{self, Uart};
use crate::virtio_mmio_bus::VirtioBus;
use crate::watchdog::Watchdog;
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Kvm, SyncReg, VcpuExit, VcpuFd, VmFd};
use pv_abi::hypercall::sched_op::SHUTDOWN_CRASH;
use pv_abi::hypercall::{DOORBELL_PORT, HYPERCALL_PORT};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xen_domain::domain::Domain;
use xen_domain::hypercall::{HypercallRegs, HypercallTable};
use xen_domain::mmu as paging;

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
    /// The vCPU triple-faulted (KVM shutdown exit).
    TripleFault {
        /// Instruction pointer at the fault.
        rip: u64,
    },
    /// The run-time limit passed before the guest shut down.
    Timeout,
    /// KVM could not run or emulate the guest.
    InternalError {
        /// KVM's reason code (internal error suberror or entry failure reason).
        reason: u64,
        /// Instruction pointer.
        rip: u64,
    },
}

/// The VMM's exit status when the guest's shutdown code does not fit in
/// a process exit status (0..=255): a failure, never a truncated code
/// (256 would otherwise exit 0, "success").
pub const OUT_OF_RANGE_EXIT_STATUS: i32 = 1;

impl Outcome {
    /// The VMM process exit status for this outcome: the guest's chosen code
    /// for a clean shutdown if it is in 0..=255; a crash keeps a non-zero
    /// code and maps 0 to 1; a code outside 0..=255 gives
    /// [`OUT_OF_RANGE_EXIT_STATUS`]; anything else that is a failure is 1.
    pub fn exit_status(&self) -> i32 {
        match *self {
            Outcome::Shutdown { code, .. } if code > 255 => OUT_OF_RANGE_EXIT_STATUS,
            Outcome::Shutdown { reason, code } if reason != SHUTDOWN_CRASH => code as i32,
            Outcome::Shutdown { code: 0, .. } => 1,
            Outcome::Shutdown { code, .. } => code as i32,
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
                let why = ["poweroff", "reboot", "suspend", "crash", "watchdog"]
                    .get(reason as usize)
                    .copied()
                    .unwrap_or("unknown");
                write!(f, "guest shut down ({why}) with status {code}")
            }
            Outcome::TripleFault { rip } => write!(f, "guest triple-faulted at rip {rip:#x}"),
            Outcome::Timeout => write!(f, "guest did not shut down within the time limit"),
            Outcome::InternalError { reason, rip } => {
                write!(f, "KVM could not run the guest (reason {reason}) at rip {rip:#x}")
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
    /// Stop: KVM could not run the guest (reason code).
    Failed(u64),
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
            VcpuExit::IoIn(port, data) => self.io_in(port, data),
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
            self.stats.exit(ExitKind::OtherIo);
            dom.console.write(data);
        } else {
            self.stats.exit(ExitKind::OtherIo);
            tracing::debug!(port, "guest wrote an unassigned port");
        }
    }

    fn io_in(&mut self, port: u16, data: &mut [u8]) {
        if uart::PORTS.contains(&port) {
            self.stats.exit(ExitKind::Uart);
            self.uart.read(port, data);
        } else {
            self.stats.exit(ExitKind::OtherIo);
            data.fill(0xff);
            tracing::debug!(port, "guest read an unassigned port");
        }
    }

    fn failure(&mut self, exit: VcpuExit<'_>) -> Step {
        self.stats.exit(ExitKind::Error);
        match exit {
            VcpuExit::FailEntry(reason, _) => Step::Failed(reason),
            VcpuExit::InternalError => Step::Failed(0),
            other => {
                tracing::warn!("unexpected exit {other:?}");
                Step::Failed(u64::MAX)
            }
        }
    }
}

/// The guest's one vCPU.
pub struct Vcpu {
    fd: VcpuFd,
    hypercalls: HypercallTable,
    exits: ExitHandlers,
    kvm_stats: Option<KvmStats>,
    /// A PVH guest's callback-vector line, injected before each entry.
    callback: Option<Arc<CallbackLine>>,
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
        let kvm_stats = KvmStats::open(&fd);
        Ok(Vcpu {
            fd,
            hypercalls: HypercallTable::default(),
            exits: ExitHandlers { stats: ExitMetrics::default(), uart: Uart::new(console), mmio: Arc::default() },
            kvm_stats,
            callback: None,
        })
    }

    /// Injects `line`'s upcalls before each entry (a PVH guest's callback
    /// vector, `pvh::callback`).
    pub fn attach_callback(&mut self, line: Arc<CallbackLine>) {
        self.callback = Some(line);
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

    /// Runs the guest until it shuts down, fails, or `watchdog` expires.
    pub fn run(&mut self, dom: &mut Domain, watchdog: Option<&Watchdog>) -> Result<Outcome, VmmError> {
        // A PVH guest's callback vector kicks this thread (pvh::callback).
        let line = self.callback.clone();
        if let Some(line) = &line {
            crate::watchdog::install_handler();
            line.set_target(Some(&mut self.fd.get_kvm_run().immediate_exit as *mut u8));
        }
        let outcome = loop {
            if watchdog.is_some_and(Watchdog::expired) {
                break Ok(Outcome::Timeout);
            }
            if let Some(line) = &line {
                line.before_run(&mut self.fd);
            }
            match self.run_once(dom) {
                Ok(None) => {}
                Ok(Some(outcome)) => break Ok(outcome),
                Err(e) => break Err(e),
            }
        };
        if let Some(line) = &line {
            line.set_target(None);
        }
        outcome
    }

    /// Enters the guest once and handles the exit; `Some` when the run ends.
    fn run_once(&mut self, dom: &mut Domain) -> Result<Option<Outcome>, VmmError> {
        let step = match self.fd.run() {
            Ok(exit) => self.exits.handle(dom, exit),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.exits.stats.exit(ExitKind::Interrupted);
                Step::Continue
            }
            Err(e) => return Err(VmmError::Kvm { what: "KVM_RUN", source: e }),
        };
        match step {
            Step::Continue => Ok(None),
            Step::TripleFault => Ok(Some(Outcome::TripleFault { rip: self.rip() })),
            Step::Failed(reason) => Ok(Some(Outcome::InternalError { reason, rip: self.rip() })),
            Step::Hypercall => {
                self.exits.stats.exit(ExitKind::Hypercall);
                self.do_hypercall(dom);
                if let Some(cr3) = dom.paging.pending_cr3.take() {
                    self.load_cr3(cr3)?;
                }
                Ok(dom.shutdown.map(|s| Outcome::Shutdown { reason: s.reason, code: s.code }))
            }
        }
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
