//! The guest as the hypercall handlers see it: its RAM and the state its
//! hypercalls act on, the types every handler shares ([`HcResult`],
//! [`Shutdown`]), and the per-exit work budget ([`crate::preempt`]). It
//! sits below the handlers, which import it and never each other's types.

use crate::console::{ConsoleOut, HvConsole};
use crate::event_channel::EventChannels;
use crate::grant_table::mapper::GrantTable;
use crate::guest_memory::GuestRam;
use crate::mmu::validator::PagingState;
use crate::preempt::WORK_PER_EXIT;
use crate::pvh::PvhState;
use crate::vcpus::VcpuSet;
use pv_abi::hypercall::xen_version;
use std::sync::Arc;
use std::time::Instant;

/// A hypercall's outcome: the value for `rax`, or a positive errno.
pub type HcResult = Result<u64, i64>;

/// A guest's request to stop (`SCHEDOP_shutdown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shutdown {
    /// `SHUTDOWN_*` reason.
    pub reason: u32,
    /// Exit status the guest chose.
    pub code: u32,
}

/// A wait a handler left to the vCPU loop, to be done after the domain
/// lock is released (several vCPUs: `Domain::defer_waits`): until
/// `woken`, `deadline` or `cap` (`sched_op`'s `MAX_POLL_WAIT` from when
/// it was made).
pub struct DeferredWait {
    woken: Box<dyn Fn() -> bool + Send>,
    deadline: Option<Instant>,
    cap: Instant,
    /// Run once the wait ends (the vCPU's runstate back to running).
    then: Option<Box<dyn Fn() + Send>>,
}

impl std::fmt::Debug for DeferredWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferredWait").field("deadline", &self.deadline).field("cap", &self.cap).finish()
    }
}

impl DeferredWait {
    /// A wait until `woken`, `deadline` or `cap`.
    pub fn new(woken: Box<dyn Fn() -> bool + Send>, deadline: Option<Instant>, cap: Instant) -> Self {
        DeferredWait { woken, deadline, cap, then: None }
    }

    /// Runs `f` when the wait ends.
    pub fn set_then(&mut self, f: Box<dyn Fn() + Send>) {
        self.then = Some(f);
    }

    /// Sleeps until the condition holds, the deadline or the cap passes.
    pub fn wait(&self) {
        while !(self.woken)() {
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) || now >= self.cap {
                break;
            }
            // The step `SCHEDOP_poll`/`block` wait with (`sched_op`).
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        if let Some(then) = &self.then {
            then();
        }
    }
}

/// One PV domain (the VMM itself is domain 0; this is the guest).
#[derive(Debug)]
pub struct Domain {
    /// Guest RAM.
    pub ram: GuestRam,
    /// Console output.
    pub console: ConsoleOut,
    /// The hypervisor console a Xen guest's `console_io` and port 0xE9
    /// print to (stderr unless the builder says otherwise).
    pub hv_console: HvConsole,
    /// Set by `SCHEDOP_shutdown`; the vCPU loop stops when it sees it.
    pub shutdown: Option<Shutdown>,
    /// Feature bits reported by `XENVER_get_features`.
    pub features: u32,
    /// Event channels.
    pub evtchn: Arc<EventChannels>,
    /// The guest's grant table (shared with the back-ends' mapper).
    pub grants: Arc<GrantTable>,
    /// Direct-paging state (mode, pool, pinned tables).
    pub paging: PagingState,
    /// Xen PVH guest state (`None` for the project's own guests).
    pub pvh: Option<Box<PvhState>>,
    /// The current hypercall came from 32-bit code: arguments use the
    /// compat (32-bit) structure layouts.
    pub compat: bool,
    /// Work units left in this exit (`preempt`).
    pub work_left: u64,
    /// Set by a handler that stopped early: the arguments to re-enter the
    /// same hypercall with (`preempt`).
    pub continuation: Option<[u64; 5]>,
    /// The domain's vCPUs (`VCPUOP_initialise`/`up`/`down`; shared with
    /// the VMM's vCPU threads).
    pub vcpus: Arc<VcpuSet>,
    /// The vCPU making the current hypercall (Xen's `current`), set by
    /// the vCPU loop before each dispatch.
    pub current: u32,
    /// `SCHEDOP_block`/`poll` leave their wait to the vCPU loop
    /// ([`deferred_wait`](Self::deferred_wait)), which does it without
    /// the domain lock (set while several vCPUs run).
    pub defer_waits: bool,
    /// The wait a handler left (`defer_waits`).
    pub deferred_wait: Option<DeferredWait>,
}

impl Domain {
    /// A domain over `ram` writing its console to `console`.
    pub fn new(ram: GuestRam, console: ConsoleOut, evtchn: Arc<EventChannels>, grants: Arc<GrantTable>) -> Self {
        let features = xen_version::FEATURE_CONSOLE_IO
            | xen_version::FEATURE_EVTCHN
            | xen_version::FEATURE_EVTCHN_DOORBELL
            | xen_version::FEATURE_GNTTAB
            | xen_version::FEATURE_DIRECT_PAGING
            | xen_version::FEATURE_MULTICALL;
        Domain {
            ram,
            console,
            hv_console: HvConsole::new(ConsoleOut::Stderr, crate::domid::GUEST_DOMID),
            shutdown: None,
            features,
            evtchn,
            grants,
            paging: PagingState::new(pv_abi::start_info::paging_mode::NATIVE, 0, 0, 0),
            pvh: None,
            compat: false,
            work_left: WORK_PER_EXIT,
            continuation: None,
            vcpus: Arc::new(VcpuSet::new(1)),
            current: 0,
            defer_waits: false,
            deferred_wait: None,
        }
    }

    /// Starts an exit's budget (called by the vCPU loop per hypercall).
    pub fn start_exit(&mut self) {
        self.work_left = WORK_PER_EXIT;
        self.continuation = None;
    }

    /// Charges `units` of work to this exit.
    pub fn charge(&mut self, units: u64) {
        self.work_left = self.work_left.saturating_sub(units);
    }

    /// Whether a handler that has done `done_here` items in this exit must
    /// stop now (the budget is spent; the first item always runs, so every
    /// exit makes progress).
    pub fn preempt_check(&self, done_here: u64) -> bool {
        done_here > 0 && self.work_left == 0
    }

    /// Records that the current hypercall is to be re-entered with `args`.
    pub fn create_continuation(&mut self, args: [u64; 5]) {
        tracing::trace!(?args, "hypercall continuation");
        self.continuation = Some(args);
    }
}
