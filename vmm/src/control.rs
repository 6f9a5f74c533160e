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
}

impl RunState {
    /// The name in API answers.
    pub fn name(self) -> &'static str {
        match self {
            RunState::NotRunning => "not running",
            RunState::Running => "running",
            RunState::Paused => "paused",
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
}

#[derive(Default)]
struct Inner {
    /// The vCPU thread, while it runs the guest (the kick's target).
    vcpu: Option<libc::pthread_t>,
    pause: bool,
    parked: bool,
    destroy: Option<Destroy>,
    stats_asked: u64,
    stats_served: u64,
    stats: Option<VcpuStats>,
}

/// Why the VM is being destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destroy {
    /// A destroy request (`PUT /vm.destroy`).
    Now,
    /// A shutdown request's grace period ran out.
    AfterGrace,
}

/// Shared between the vCPU thread and its controllers (`Arc` it).
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

    /// Whether the vCPU has a request to serve: one relaxed load per exit.
    #[inline]
    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    fn update_pending(&self, i: &Inner) {
        let p = i.pause || i.destroy.is_some() || i.stats_asked != i.stats_served;
        self.pending.store(p, Ordering::Release);
    }

    /// The vCPU thread: from now until [`detach`](Self::detach) it serves
    /// requests and may be kicked. Clears an earlier run's pause, but a
    /// destroy request stays (the VM must not boot again).
    pub fn attach(&self) {
        crate::watchdog::install_handler();
        let mut i = self.lock();
        // SAFETY: pthread_self has no preconditions.
        i.vcpu = Some(unsafe { libc::pthread_self() });
        i.parked = false;
        self.update_pending(&i);
    }

    /// The vCPU thread stops running the guest: no kick is sent after this
    /// returns (kicks are sent under the same lock).
    pub fn detach(&self) {
        let mut i = self.lock();
        i.vcpu = None;
        i.parked = false;
        self.cv.notify_all();
    }

    /// The run state.
    pub fn state(&self) -> RunState {
        let i = self.lock();
        match (i.vcpu.is_some(), i.parked) {
            (false, _) => RunState::NotRunning,
            (true, true) => RunState::Paused,
            (true, false) => RunState::Running,
        }
    }

    /// Whether a destroy was requested.
    pub fn destroy_requested(&self) -> bool {
        self.lock().destroy.is_some()
    }

    fn kick(&self, i: &Inner) {
        if let Some(t) = i.vcpu {
            // SAFETY: `t` is the attached vCPU thread, alive until it
            // detaches, which needs the lock the caller holds; the kick
            // handler is installed (`attach`) and does nothing.
            unsafe { libc::pthread_kill(t, crate::watchdog::kick_signal()) };
        }
    }

    /// Waits, kicking the vCPU, until `done` holds or `timeout` passes.
    fn wait_served<'a>(
        &'a self,
        mut i: MutexGuard<'a, Inner>,
        timeout: Duration,
        done: impl Fn(&Inner) -> bool,
    ) -> Result<MutexGuard<'a, Inner>, ControlError> {
        let end = Instant::now() + timeout;
        while !done(&i) {
            if i.vcpu.is_none() {
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

    /// Parks the vCPU; returns once it is parked (or was).
    pub fn pause(&self, timeout: Duration) -> Result<(), ControlError> {
        let mut i = self.lock();
        if i.vcpu.is_none() {
            return Err(ControlError::NotRunning);
        }
        i.pause = true;
        self.update_pending(&i);
        let r = self.wait_served(i, timeout, |i| i.parked).map(drop);
        if r.is_err() {
            // Not parked in time: withdraw the request, so a late park
            // does not leave a VM paused that the caller was told is not.
            let mut i = self.lock();
            i.pause = false;
            self.update_pending(&i);
            self.cv.notify_all();
        }
        r
    }

    /// Unparks the vCPU (a VM that is not paused stays as it is).
    pub fn resume(&self) -> Result<(), ControlError> {
        let mut i = self.lock();
        if i.vcpu.is_none() {
            return Err(ControlError::NotRunning);
        }
        i.pause = false;
        self.update_pending(&i);
        self.cv.notify_all();
        Ok(())
    }

    /// Ends the run: the vCPU stops before its next entry into the guest,
    /// paused or not. Does not wait.
    pub fn destroy(&self, why: Destroy) {
        let mut i = self.lock();
        i.destroy.get_or_insert(why);
        self.update_pending(&i);
        self.kick(&i);
        self.cv.notify_all();
    }

    /// The vCPU's counters, asked of the vCPU thread (paused or running).
    pub fn vcpu_stats(&self, timeout: Duration) -> Result<VcpuStats, ControlError> {
        let mut i = self.lock();
        if i.vcpu.is_none() {
            return Err(ControlError::NotRunning);
        }
        i.stats_asked += 1;
        let want = i.stats_asked;
        self.update_pending(&i);
        self.cv.notify_all();
        let mut i = self.wait_served(i, timeout, |i| i.stats_served >= want)?;
        i.stats.take().ok_or(ControlError::NotRunning)
    }

    /// The vCPU thread, when [`pending`](Self::pending): serves stats
    /// requests, parks while paused (until resumed, destroyed or `stop`
    /// says the watchdog wants the vCPU), and says whether to end the run.
    pub fn serve(&self, stats: impl Fn() -> VcpuStats, stop: impl Fn() -> bool) -> Served {
        let mut i = self.lock();
        loop {
            if i.stats_asked != i.stats_served {
                i.stats = Some(stats());
                i.stats_served = i.stats_asked;
                self.cv.notify_all();
            }
            if let Some(d) = i.destroy {
                i.parked = false;
                return Served::Destroy(d);
            }
            if !i.pause || stop() {
                i.parked = false;
                self.update_pending(&i);
                return Served::Continue;
            }
            if !i.parked {
                i.parked = true;
                tracing::info!("vCPU parked");
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

    fn stats() -> VcpuStats {
        VcpuStats { id: 0, exits: ExitMetrics::default(), evtchn: [1, 2, 3] }
    }

    /// A fake vCPU loop: serves requests until destroyed, counting passes.
    fn fake_vcpu(c: Arc<VmControl>, passes: Arc<std::sync::atomic::AtomicU64>) -> std::thread::JoinHandle<Destroy> {
        std::thread::spawn(move || {
            c.attach();
            let d = loop {
                passes.fetch_add(1, Ordering::SeqCst);
                if c.pending() {
                    if let Served::Destroy(d) = c.serve(stats, || false) {
                        break d;
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            c.detach();
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
        let t = fake_vcpu(c.clone(), passes.clone());
        while c.state() != RunState::Running {
            std::thread::yield_now();
        }
        c.pause(Duration::from_secs(5)).unwrap();
        assert_eq!(c.state(), RunState::Paused);
        let before = passes.load(Ordering::SeqCst);
        assert_eq!(c.vcpu_stats(Duration::from_secs(5)).unwrap().evtchn, [1, 2, 3]);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(passes.load(Ordering::SeqCst), before, "a parked vCPU ran");
        c.resume().unwrap();
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
}
