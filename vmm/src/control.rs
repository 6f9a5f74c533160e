//! Control of a running VM from another thread (the API socket, `vmm
//! ctl`): pause and resume the vCPU, destroy the VM, and read the vCPU's
//! exit counters while it runs.
//!
//! The vCPU thread owns its state and never takes a lock on its fast
//! path: it tests one atomic flag ([`VmControl::pending`]) before each
//! `KVM_RUN` and serves requests only when it is set. A requester sets the
//! flag, then kicks the vCPU out of `KVM_RUN` with the watchdog's kick
//! signal, again every [`KICK_INTERVAL`] until it is served (a signal
//! that lands just before the vCPU enters the guest is otherwise lost, as
//! in [`crate::watchdog`]). A paused vCPU is *parked*: it waits on a
//! condition variable, still answering stats requests, until resumed or
//! destroyed (Xen's `domain_pause()`: the vCPUs are descheduled, nothing
//! else changes).

mod suspend;

pub use suspend::{reset_backends, resume_suspended, suspend_cooperatively, Resume, SuspendError, SUSPEND_TIMEOUT};

use crate::stats::ExitMetrics;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often a requester re-kicks a vCPU that has not served it yet.
pub const KICK_INTERVAL: Duration = Duration::from_millis(20);

/// How long a parked vCPU sleeps before it checks the watchdog again
/// (a stop signal or the time limit still ends a paused VM).
const PARKED_POLL: Duration = Duration::from_millis(50);

/// What the vCPU reports about itself when asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuStats {
    /// The vCPU's id.
    pub id: u32,
    /// Its exit and hypercall counters (with KVM's refreshed).
    pub exits: ExitMetrics,
    /// Event channels: `EVTCHNOP_send` calls, notifications to the guest,
    /// upcalls raised (the domain's counters).
    pub evtchn: [u64; 3],
}

/// The VM's run state as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// No vCPU is attached (being built, rebooting, or ended).
    NotRunning,
    /// The vCPU runs the guest.
    Running,
    /// The vCPU is parked.
    Paused,
    /// The guest suspended itself (`SCHEDOP_shutdown(SHUTDOWN_suspend)`
    /// after the toolstack asked): its vCPUs are parked until a resume.
    Suspended,
}

impl RunState {
    /// The name in API answers.
    pub fn name(self) -> &'static str {
        match self {
            RunState::NotRunning => "not running",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Suspended => "suspended",
        }
    }
}

/// A request could not be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No vCPU is running (the VM is being built, rebooted, or has ended).
    #[error("the VM is not running")]
    NotRunning,
    /// The vCPU did not answer in time.
    #[error("the vCPU did not answer within {0:?}")]
    Timeout(Duration),
    /// A suspend request while one is asked for or in effect.
    #[error("the VM is suspending or suspended already: resume it first")]
    AlreadySuspended,
    /// A suspended VM's resume was asked of a VM that is not suspended.
    #[error("the VM is not suspended")]
    NotSuspended,
}

/// Where a cooperative suspend is (Xen's `control/shutdown = suspend`
/// protocol, `docs/misc/xenstore-paths.pandoc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Suspend {
    /// None asked for: a guest's `SHUTDOWN_suspend` ends the run.
    #[default]
    None,
    /// The toolstack wrote `control/shutdown = suspend`: the guest's
    /// `SHUTDOWN_suspend` is accepted.
    Asked,
    /// vCPU `vcpu` called `SHUTDOWN_suspend`; every vCPU parks.
    Suspended { vcpu: u32 },
    /// Resumed: vCPU `vcpu` returns `value` from the hypercall (1: the
    /// suspend was cancelled, 0: resumed as a new domain) before it
    /// enters the guest again.
    Resuming { vcpu: u32, value: u64 },
}

/// A snapshot's request to the vCPUs failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotAsk {
    /// No vCPU, or no answer in time.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The VM is not paused.
    #[error("the VM is not paused")]
    NotPaused,
    /// A vCPU could not read its state.
    #[error("vCPU {0}: {1}")]
    Vcpu(u32, String),
}

/// One attached vCPU thread.
struct Slot {
    id: u32,
    thread: libc::pthread_t,
    parked: bool,
    /// The last stats request it served, and its answer.
    served: u64,
    stats: Option<VcpuStats>,
    /// The last snapshot request it served, and its answer.
    snapped: u64,
    snap: Option<Result<crate::snapshot::VcpuCapture, String>>,
}

#[derive(Default)]
struct Inner {
    /// The vCPU threads running the guest (the kicks' targets).
    vcpus: Vec<Slot>,
    pause: bool,
    destroy: Option<Destroy>,
    stats_asked: u64,
    suspend: Suspend,
    snap_asked: u64,
}

impl Inner {
    fn slot(&mut self, id: u32) -> Option<&mut Slot> {
        self.vcpus.iter_mut().find(|v| v.id == id)
    }

    fn all_parked(&self) -> bool {
        self.vcpus.iter().all(|v| v.parked)
    }
}

/// Why the VM is being destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destroy {
    /// A destroy request (`PUT /vm.destroy`).
    Now,
    /// A shutdown request's grace period ran out.
    AfterGrace,
}

/// Shared between the vCPU threads and their controllers (`Arc` it).
/// Every vCPU thread attaches with its id; pause parks them all.
#[derive(Default)]
pub struct VmControl {
    pending: AtomicBool,
    inner: Mutex<Inner>,
    cv: Condvar,
}

/// What the vCPU loop does after [`VmControl::serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Enter the guest again.
    Continue,
    /// End the run.
    Destroy(Destroy),
}

impl VmControl {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a vCPU may have a request to serve: one load per exit.
    #[inline]
    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    fn update_pending(&self, i: &Inner) {
        let stats = i.vcpus.iter().any(|v| v.served != i.stats_asked || v.snapped != i.snap_asked);
        self.pending.store(i.pause || i.destroy.is_some() || stats, Ordering::Release);
    }

    /// vCPU `id`'s thread: from now until [`detach`](Self::detach) it
    /// serves requests and may be kicked. A destroy request stays (the VM
    /// must not boot again); the first vCPU of a boot clears an earlier
    /// boot's pause.
    pub fn attach(&self, id: u32) {
        crate::watchdog::install_handler();
        let mut i = self.lock();
        if i.vcpus.is_empty() {
            i.pause = false;
            i.suspend = Suspend::None;
        }
        i.vcpus.retain(|v| v.id != id);
        let (served, snapped) = (i.stats_asked, i.snap_asked);
        // SAFETY: pthread_self has no preconditions.
        let thread = unsafe { libc::pthread_self() };
        i.vcpus.push(Slot { id, thread, parked: false, served, stats: None, snapped, snap: None });
        self.update_pending(&i);
    }

    /// vCPU `id` stops running the guest: no kick is sent to it after this
    /// returns (kicks are sent under the same lock).
    pub fn detach(&self, id: u32) {
        let mut i = self.lock();
        i.vcpus.retain(|v| v.id != id);
        self.update_pending(&i);
        self.cv.notify_all();
    }

    /// The run state.
    pub fn state(&self) -> RunState {
        let i = self.lock();
        match (i.vcpus.is_empty(), i.all_parked()) {
            (true, _) => RunState::NotRunning,
            (false, true) if matches!(i.suspend, Suspend::Suspended { .. }) => RunState::Suspended,
            (false, true) => RunState::Paused,
            (false, false) => RunState::Running,
        }
    }

    /// Whether a destroy was requested.
    pub fn destroy_requested(&self) -> bool {
        self.lock().destroy.is_some()
    }

    fn kick(&self, i: &Inner) {
        for v in &i.vcpus {
            // SAFETY: `v.thread` is an attached vCPU thread, alive until
            // it detaches, which needs the lock the caller holds; the kick
            // handler is installed (`attach`) and does nothing.
            unsafe { libc::pthread_kill(v.thread, crate::watchdog::kick_signal()) };
        }
    }

    /// Waits, kicking the vCPUs, until `done` holds or `timeout` passes.
    fn wait_served<'a>(
        &'a self,
        mut i: MutexGuard<'a, Inner>,
        timeout: Duration,
        done: impl Fn(&Inner) -> bool,
    ) -> Result<MutexGuard<'a, Inner>, ControlError> {
        let end = Instant::now() + timeout;
        while !done(&i) {
            if i.vcpus.is_empty() {
                return Err(ControlError::NotRunning);
            }
            let now = Instant::now();
            if now >= end {
                return Err(ControlError::Timeout(timeout));
            }
            self.kick(&i);
            i = self.cv.wait_timeout(i, KICK_INTERVAL.min(end - now)).unwrap_or_else(|p| p.into_inner()).0;
        }
        Ok(i)
    }

    /// Parks every vCPU; returns once all are parked (or were).
    pub fn pause(&self, timeout: Duration) -> Result<(), ControlError> {
        let mut i = self.lock();
        if i.vcpus.is_empty() {
            return Err(ControlError::NotRunning);
        }
        let was_paused = std::mem::replace(&mut i.pause, true);
        self.update_pending(&i);
        let r = self.wait_served(i, timeout, Inner::all_parked).map(drop);
        if r.is_err() {
            // Not parked in time: withdraw this request, so a late park
            // does not leave a VM paused that the caller was told is not
            // (a VM the user had paused stays paused).
            let mut i = self.lock();
            i.pause = was_paused;
            self.update_pending(&i);
            self.cv.notify_all();
        }
        r
    }

    /// Unparks the vCPUs (a VM that is not paused stays as it is).
    pub fn resume(&self) -> Result<(), ControlError> {
        let mut i = self.lock();
        if i.vcpus.is_empty() {
            return Err(ControlError::NotRunning);
        }
        // A suspended guest resumed this way sees its suspend cancelled
        // (Xen's `xc_domain_resume(fast = 1)`: the hypercall returns 1).
        if let Suspend::Suspended { vcpu } = i.suspend {
            i.suspend = Suspend::Resuming { vcpu, value: 1 };
        }
        i.pause = false;
        // Running from now on: a vCPU still waking from its park must not
        // make `state()` answer "paused" to the caller who just resumed.
        for v in &mut i.vcpus {
            v.parked = false;
        }
        self.update_pending(&i);
        self.cv.notify_all();
        Ok(())
    }

    /// Ends the run: the vCPUs stop before their next entry into the
    /// guest, paused or not. Does not wait.
    pub fn destroy(&self, why: Destroy) {
        let mut i = self.lock();
        i.destroy.get_or_insert(why);
        self.update_pending(&i);
        self.kick(&i);
        self.cv.notify_all();
    }

    /// The toolstack is about to write `control/shutdown = suspend`: from
    /// now on the guest's `SHUTDOWN_suspend` is accepted.
    fn ask_suspend(&self) -> Result<(), ControlError> {
        let mut i = self.lock();
        if i.vcpus.is_empty() {
            return Err(ControlError::NotRunning);
        }
        if i.suspend != Suspend::None {
            return Err(ControlError::AlreadySuspended);
        }
        i.suspend = Suspend::Asked;
        Ok(())
    }

    /// Waits until the guest has suspended and every vCPU is parked. On a
    /// timeout a request the guest has not answered is withdrawn (a later
    /// `SHUTDOWN_suspend` is refused again).
    fn wait_suspended(&self, timeout: Duration) -> Result<(), ControlError> {
        let i = self.lock();
        let r = self.wait_served(i, timeout, |i| matches!(i.suspend, Suspend::Suspended { .. }) && i.all_parked());
        if r.is_err() {
            self.withdraw_suspend();
        }
        r.map(drop)
    }

    /// Withdraws a suspend request the guest has not answered.
    fn withdraw_suspend(&self) {
        let mut i = self.lock();
        if i.suspend == Suspend::Asked {
            i.suspend = Suspend::None;
        }
    }

    /// Whether the guest is suspended (its vCPUs may still be parking).
    pub fn is_suspended(&self) -> bool {
        matches!(self.lock().suspend, Suspend::Suspended { .. })
    }

    /// The vCPU whose `SHUTDOWN_suspend` suspended the guest, while it is
    /// suspended (a snapshot records it: its hypercall returns 0 in the
    /// restored domain).
    pub fn suspended_vcpu(&self) -> Option<u32> {
        match self.lock().suspend {
            Suspend::Suspended { vcpu } => Some(vcpu),
            _ => None,
        }
    }

    /// Resumes a suspended guest whose suspend hypercall returns `value`
    /// (1: cancelled, 0: resumed as a new domain).
    fn resume_from_suspend(&self, value: u64) -> Result<(), ControlError> {
        {
            let mut i = self.lock();
            let Suspend::Suspended { vcpu } = i.suspend else { return Err(ControlError::NotSuspended) };
            i.suspend = Suspend::Resuming { vcpu, value };
        }
        self.resume()
    }

    /// vCPU `id`'s thread, when its guest called `SHUTDOWN_suspend`:
    /// accepted (true) only when the toolstack asked for it, as xl acts on
    /// a suspend only while it saves the domain; every vCPU then parks
    /// (Xen's `domain_shutdown()` pauses them) until a resume.
    pub fn guest_suspended(&self, id: u32) -> bool {
        let mut i = self.lock();
        if i.suspend != Suspend::Asked {
            return false;
        }
        i.suspend = Suspend::Suspended { vcpu: id };
        i.pause = true;
        self.update_pending(&i);
        self.cv.notify_all();
        tracing::info!(vcpu = id, "guest suspended (SHUTDOWN_suspend)");
        true
    }

    /// vCPU `id`'s thread, after [`serve`](Self::serve) let it run: the
    /// value its suspend hypercall returns, if it is the vCPU that
    /// suspended and the guest has just been resumed.
    pub fn take_resume_value(&self, id: u32) -> Option<u64> {
        let mut i = self.lock();
        match i.suspend {
            Suspend::Resuming { vcpu, value } if vcpu == id => {
                i.suspend = Suspend::None;
                Some(value)
            }
            _ => None,
        }
    }

    /// Each vCPU's counters, asked of its thread (paused or running),
    /// by id.
    pub fn vcpu_stats(&self, timeout: Duration) -> Result<Vec<VcpuStats>, ControlError> {
        let mut i = self.lock();
        if i.vcpus.is_empty() {
            return Err(ControlError::NotRunning);
        }
        i.stats_asked += 1;
        let want = i.stats_asked;
        self.update_pending(&i);
        self.cv.notify_all();
        let mut i = self.wait_served(i, timeout, |i| i.vcpus.iter().all(|v| v.served >= want))?;
        let mut all: Vec<VcpuStats> = i.vcpus.iter_mut().filter_map(|v| v.stats.take()).collect();
        all.sort_by_key(|v| v.id);
        Ok(all)
    }

    /// Each paused vCPU's state for a snapshot, read by its own thread
    /// (the VM must be paused: [`pause`](Self::pause)), by id.
    pub fn snapshot_capture(&self, timeout: Duration) -> Result<Vec<crate::snapshot::VcpuCapture>, SnapshotAsk> {
        let mut i = self.lock();
        if i.vcpus.is_empty() {
            return Err(SnapshotAsk::Control(ControlError::NotRunning));
        }
        if !i.pause || !i.all_parked() {
            return Err(SnapshotAsk::NotPaused);
        }
        i.snap_asked += 1;
        let want = i.snap_asked;
        self.update_pending(&i);
        self.cv.notify_all();
        let mut i = self.wait_served(i, timeout, |i| i.vcpus.iter().all(|v| v.snapped >= want))?;
        let mut all = Vec::new();
        for v in i.vcpus.iter_mut() {
            match v.snap.take() {
                Some(Ok(c)) => all.push(c),
                Some(Err(e)) => return Err(SnapshotAsk::Vcpu(v.id, e)),
                None => return Err(SnapshotAsk::Vcpu(v.id, "no answer".into())),
            }
        }
        all.sort_by_key(|c| c.vcpu.id);
        Ok(all)
    }

    /// vCPU `id`'s thread, when [`pending`](Self::pending): serves stats
    /// requests, parks while paused (until resumed, destroyed or `stop`
    /// says the watchdog wants the vCPU), and says whether to end the run.
    pub fn serve(&self, id: u32, stats: impl Fn() -> VcpuStats, stop: impl Fn() -> bool) -> Served {
        self.serve_with(id, stats, || Err("snapshots are not served here".into()), stop)
    }

    /// [`serve`](Self::serve), reading the vCPU's state with `snap` when a
    /// snapshot asks for it (while parked).
    pub fn serve_with(
        &self,
        id: u32,
        stats: impl Fn() -> VcpuStats,
        mut snap: impl FnMut() -> Result<crate::snapshot::VcpuCapture, String>,
        stop: impl Fn() -> bool,
    ) -> Served {
        let mut i = self.lock();
        loop {
            let (asked, snap_asked) = (i.stats_asked, i.snap_asked);
            let Some(me) = i.slot(id) else { return Served::Continue };
            if me.served != asked {
                me.stats = Some(stats());
                me.served = asked;
                self.update_pending(&i);
                self.cv.notify_all();
            }
            let Some(me) = i.slot(id) else { return Served::Continue };
            if me.snapped != snap_asked {
                me.snap = Some(snap());
                me.snapped = snap_asked;
                self.update_pending(&i);
                self.cv.notify_all();
            }
            let end = match i.destroy {
                Some(d) => Some(Served::Destroy(d)),
                None => (!i.pause || stop()).then_some(Served::Continue),
            };
            if let Some(end) = end {
                if let Some(me) = i.slot(id) {
                    me.parked = false;
                }
                return end;
            }
            if let Some(me) = i.slot(id).filter(|me| !me.parked) {
                me.parked = true;
                tracing::info!(vcpu = id, "vCPU parked");
                self.cv.notify_all();
            }
            i = self.cv.wait_timeout(i, PARKED_POLL).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A fake vCPU loop: serves requests until destroyed, counting passes.
    fn fake_vcpu(
        c: Arc<VmControl>,
        id: u32,
        passes: Arc<std::sync::atomic::AtomicU64>,
    ) -> std::thread::JoinHandle<Destroy> {
        std::thread::spawn(move || {
            c.attach(id);
            let stats = || VcpuStats { id, exits: ExitMetrics::default(), evtchn: [1, 2, 3] };
            let d = loop {
                passes.fetch_add(1, Ordering::SeqCst);
                if c.pending() {
                    if let Served::Destroy(d) = c.serve(id, stats, || false) {
                        break d;
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            c.detach(id);
            d
        })
    }

    #[test]
    fn requests_without_a_vcpu_say_not_running() {
        let c = VmControl::default();
        assert_eq!(c.state(), RunState::NotRunning);
        assert_eq!(c.pause(Duration::from_millis(10)), Err(ControlError::NotRunning));
        assert_eq!(c.vcpu_stats(Duration::from_millis(10)), Err(ControlError::NotRunning));
        assert!(!c.pending());
    }

    #[test]
    fn a_paused_vcpu_makes_no_passes_but_answers_stats_and_resumes() {
        let c = Arc::new(VmControl::default());
        let passes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let t = fake_vcpu(c.clone(), 0, passes.clone());
        while c.state() != RunState::Running {
            std::thread::yield_now();
        }
        c.pause(Duration::from_secs(5)).unwrap();
        assert_eq!(c.state(), RunState::Paused);
        let before = passes.load(Ordering::SeqCst);
        assert_eq!(c.vcpu_stats(Duration::from_secs(5)).unwrap()[0].evtchn, [1, 2, 3]);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(passes.load(Ordering::SeqCst), before, "a parked vCPU ran");
        c.resume().unwrap();
        // Running as soon as resume returns, whether or not the vCPU has
        // woken yet (`vmm ctl resume` then `info` must not say paused).
        assert_eq!(c.state(), RunState::Running);
        while passes.load(Ordering::SeqCst) < before + 5 {
            std::thread::yield_now();
        }
        assert_eq!(c.state(), RunState::Running);
        c.pause(Duration::from_secs(5)).unwrap();
        // Destroy wakes a parked vCPU.
        c.destroy(Destroy::Now);
        assert_eq!(t.join().unwrap(), Destroy::Now);
        assert_eq!(c.state(), RunState::NotRunning);
        assert!(c.destroy_requested());
    }

    /// Pause parks every attached vCPU before it answers; stats come from
    /// each, by id.
    #[test]
    fn pause_and_stats_cover_every_vcpu() {
        let c = Arc::new(VmControl::default());
        let passes: Vec<_> = (0..3).map(|_| Arc::new(std::sync::atomic::AtomicU64::new(0))).collect();
        let threads: Vec<_> =
            [2, 0, 1].iter().map(|&id| fake_vcpu(c.clone(), id, passes[id as usize].clone())).collect();
        while passes.iter().any(|p| p.load(Ordering::SeqCst) == 0) {
            std::thread::yield_now();
        }
        c.pause(Duration::from_secs(5)).unwrap();
        let before: Vec<u64> = passes.iter().map(|p| p.load(Ordering::SeqCst)).collect();
        let ids: Vec<u32> = c.vcpu_stats(Duration::from_secs(5)).unwrap().iter().map(|v| v.id).collect();
        assert_eq!(ids, [0, 1, 2]);
        std::thread::sleep(Duration::from_millis(100));
        let after: Vec<u64> = passes.iter().map(|p| p.load(Ordering::SeqCst)).collect();
        assert_eq!(before, after, "every vCPU is parked");
        c.destroy(Destroy::Now);
        for t in threads {
            assert_eq!(t.join().unwrap(), Destroy::Now);
        }
        assert_eq!(c.state(), RunState::NotRunning);
    }

    /// A fake vCPU id's capture (no KVM: default registers, `rip` = id).
    fn capture(id: u32) -> Result<crate::snapshot::VcpuCapture, String> {
        use crate::snapshot::vcpu_state::VcpuState;
        if id == 9 {
            return Err("cannot read".into());
        }
        let regs = kvm_bindings::kvm_regs { rip: u64::from(id), ..Default::default() };
        let vcpu = VcpuState {
            id,
            regs,
            sregs: Default::default(),
            fpu: (&kvm_bindings::kvm_fpu::default()).into(),
            xsave: None,
            xcrs: None,
            lapic: Default::default(),
            msrs: vec![(0x10, 7)],
            mp_state: Default::default(),
            events: Default::default(),
            debugregs: Default::default(),
        };
        Ok(crate::snapshot::VcpuCapture { vcpu, vm: None })
    }

    /// A fake vCPU that also answers snapshot requests.
    fn snapping_vcpu(c: Arc<VmControl>, id: u32) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            c.attach(id);
            let stats = || VcpuStats { id, exits: ExitMetrics::default(), evtchn: [0; 3] };
            while !matches!(c.serve_with(id, stats, || capture(id), || false), Served::Destroy(_)) {
                std::thread::sleep(Duration::from_millis(1));
            }
            c.detach(id);
        })
    }

    /// A snapshot's read of the vCPUs: refused unless paused; then every
    /// attached vCPU's own state, by id; a vCPU's failure is the answer.
    #[test]
    fn snapshot_capture_needs_a_pause_and_asks_every_vcpu() {
        let c = Arc::new(VmControl::default());
        let threads: Vec<_> = [1, 0].iter().map(|&id| snapping_vcpu(c.clone(), id)).collect();
        let attached = |n: usize| {
            while c.vcpu_stats(Duration::from_secs(5)).map_or(0, |v| v.len()) < n {
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        attached(2);
        assert_eq!(c.snapshot_capture(Duration::from_secs(5)).err(), Some(SnapshotAsk::NotPaused));
        c.pause(Duration::from_secs(5)).unwrap();
        let caps = c.snapshot_capture(Duration::from_secs(5)).unwrap();
        let ids: Vec<(u32, u64)> = caps.iter().map(|c| (c.vcpu.id, c.vcpu.regs.rip)).collect();
        assert_eq!(ids, [(0, 0), (1, 1)]);
        // Twice: each request is answered afresh.
        assert_eq!(c.snapshot_capture(Duration::from_secs(5)).unwrap().len(), 2);
        let bad = snapping_vcpu(c.clone(), 9);
        attached(3);
        while c.state() != RunState::Paused {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(c.snapshot_capture(Duration::from_secs(5)).err(), Some(SnapshotAsk::Vcpu(9, "cannot read".into())));
        c.destroy(Destroy::Now);
        for t in threads.into_iter().chain([bad]) {
            t.join().unwrap();
        }
    }
}
