//! A PVH guest's timers, per vCPU: the one-shot timer (armed by
//! `set_timer_op` and `VCPUOP_set_singleshot_timer`,
//! [`crate::sched_op::arm`]) and the periodic timer
//! (`VCPUOP_set_periodic_timer`) of every vCPU, all on one thread that
//! raises that vCPU's `VIRQ_TIMER` when a deadline passes, as Xen's
//! `singleshot_timer` and `periodic_timer` of a vCPU do
//! (`xen/common/sched/core.c`). It knows only the event channels, never
//! the hypercall handlers.

use crate::event_channel::EventChannels;
use pv_abi::hvm::VIRQ_TIMER;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::vcpus::MAX_VCPUS;

pub mod state;

/// One vCPU's two timers.
#[derive(Default, Clone)]
struct VcpuTimer {
    deadline: Option<Instant>,
    /// The periodic timer: its period and next expiry.
    periodic: Option<(Duration, Instant)>,
}

#[derive(Default)]
struct State {
    /// Index: vCPU id (grown on first use, at most `MAX_VCPUS`).
    vcpus: Vec<VcpuTimer>,
    /// The earliest domain-watchdog expiry (`SCHEDOP_watchdog`): the
    /// thread only kicks the vCPU then; the vCPU thread shuts down.
    watchdog: Option<Instant>,
    stop: bool,
}

impl State {
    /// vCPU `vcpu`'s timers (`None` beyond [`MAX_VCPUS`]).
    fn vcpu(&mut self, vcpu: u32) -> Option<&mut VcpuTimer> {
        if vcpu >= MAX_VCPUS {
            return None;
        }
        if self.vcpus.len() <= vcpu as usize {
            self.vcpus.resize(vcpu as usize + 1, VcpuTimer::default());
        }
        self.vcpus.get_mut(vcpu as usize)
    }

    /// The earliest expiry over all vCPUs and the domain watchdog.
    fn next(&self) -> Option<Instant> {
        self.vcpus.iter().filter_map(VcpuTimer::next).chain(self.watchdog).min()
    }

    /// The vCPUs whose `VIRQ_TIMER` is due at `now` (their expiries consumed).
    fn expire(&mut self, now: Instant) -> Vec<u32> {
        (0..self.vcpus.len() as u32).filter(|&v| self.vcpus[v as usize].expire(now)).collect()
    }
}

impl VcpuTimer {
    /// The earlier of the two timers' next expiry.
    fn next(&self) -> Option<Instant> {
        [self.deadline, self.periodic.map(|p| p.1)].into_iter().flatten().min()
    }

    /// Consumes every expiry at or before `now`; whether `VIRQ_TIMER` is due.
    fn expire(&mut self, now: Instant) -> bool {
        let mut fired = false;
        if self.deadline.is_some_and(|d| now >= d) {
            self.deadline = None;
            fired = true;
        }
        if let Some((period, next)) = self.periodic.as_mut() {
            if now >= *next {
                // Missed periods collapse into one event (Xen's
                // `vcpu_periodic_timer_work` re-arms from the current time).
                let due = *next + *period;
                *next = if due > now { due } else { now + *period };
                fired = true;
            }
        }
        fired
    }
}

/// The guest's timers: a thread that raises `VIRQ_TIMER` when a deadline
/// passes.
pub struct Timer {
    shared: Arc<(Mutex<State>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

/// What the timer thread calls when a domain watchdog expires: it must
/// make the vCPU leave the guest so it sees the expiry (a hung guest makes
/// no exits of its own).
pub type WatchdogKick = Arc<dyn Fn() + Send + Sync>;

impl Timer {
    /// Starts the timer thread, which first runs `thread_init` (the VMM
    /// installs the thread's seccomp filter there).
    pub fn start(evtchn: Arc<EventChannels>, thread_init: impl FnOnce() + Send + 'static) -> std::io::Result<Timer> {
        Self::start_with_kick(evtchn, None, thread_init)
    }

    /// [`start`](Self::start) with the vCPU kick a domain watchdog's
    /// expiry runs.
    pub fn start_with_kick(
        evtchn: Arc<EventChannels>,
        kick: Option<WatchdogKick>,
        thread_init: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<Timer> {
        let shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let s = shared.clone();
        let thread = std::thread::Builder::new().name("pv-timer".into()).spawn(move || {
            thread_init();
            run(&s, &evtchn, kick.as_deref())
        })?;
        Ok(Timer { shared, thread: Some(thread) })
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        let (m, cv) = &*self.shared;
        f(&mut m.lock().unwrap_or_else(|p| p.into_inner()));
        cv.notify_all();
    }

    /// Arms (or with `None` cancels) vCPU 0's one-shot timer.
    pub fn set(&self, deadline: Option<Instant>) {
        self.set_for(0, deadline);
    }

    /// Arms (or with `None` cancels) vCPU `vcpu`'s one-shot timer.
    pub fn set_for(&self, vcpu: u32, deadline: Option<Instant>) {
        self.update(|s| {
            if let Some(t) = s.vcpu(vcpu) {
                t.deadline = deadline;
            }
        });
    }

    /// Starts (or with `None` stops) vCPU 0's periodic timer.
    pub fn set_periodic(&self, period: Option<Duration>) {
        self.set_periodic_for(0, period);
    }

    /// Starts (or with `None` stops) vCPU `vcpu`'s periodic timer; the
    /// first event comes one period from now (Xen's
    /// `vcpu_set_periodic_timer`).
    pub fn set_periodic_for(&self, vcpu: u32, period: Option<Duration>) {
        self.update(|s| {
            if let Some(t) = s.vcpu(vcpu) {
                t.periodic = period.map(|p| (p, Instant::now() + p));
            }
        });
    }

    /// Sets (or with `None` clears) the earliest domain-watchdog expiry.
    pub fn set_watchdog(&self, expiry: Option<Instant>) {
        self.update(|s| s.watchdog = expiry);
    }
}

fn run(shared: &(Mutex<State>, Condvar), evtchn: &EventChannels, kick: Option<&(dyn Fn() + Send + Sync)>) {
    let (m, cv) = shared;
    let mut st = m.lock().unwrap_or_else(|p| p.into_inner());
    // A periodic timer may fire every millisecond: a failing raise must
    // not write a line each time.
    let mut limiter = pv_util::ratelimit::LogLimiter::new(5, std::time::Duration::from_secs(1));
    loop {
        if st.stop {
            return;
        }
        let now = Instant::now();
        if st.watchdog.is_some_and(|w| now >= w) {
            // Once: the vCPU thread now finds the expiry at its next exit.
            st.watchdog = None;
            if let Some(kick) = kick {
                drop(st);
                kick();
                st = m.lock().unwrap_or_else(|p| p.into_inner());
            }
            continue;
        }
        let fired = st.expire(now);
        st = match st.next() {
            _ if !fired.is_empty() => {
                drop(st);
                for vcpu in fired {
                    if let Err(e) = evtchn.notify_vcpu_virq(VIRQ_TIMER, vcpu) {
                        pv_util::limited_warn!(limiter, vcpu, "timer: cannot raise VIRQ_TIMER: {e}");
                    }
                }
                m.lock().unwrap_or_else(|p| p.into_inner())
            }
            None => cv.wait(st).unwrap_or_else(|p| p.into_inner()),
            Some(d) => cv.wait_timeout(st, d.saturating_duration_since(now)).unwrap_or_else(|p| p.into_inner()).0,
        };
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.update(|s| s.stop = true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Against `xen/common/sched/core.c` (`vcpu_periodic_timer_work`: one
/// `VIRQ_TIMER` per period, re-armed from the current time).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missed_periods_collapse_into_one_event_and_one_shot_fires_once() {
        let t0 = Instant::now();
        let p = Duration::from_millis(10);
        let mut s = VcpuTimer { deadline: Some(t0), periodic: Some((p, t0)) };
        assert_eq!(s.next(), Some(t0));
        assert!(s.expire(t0 + 10 * p), "both due");
        assert_eq!(s.deadline, None, "the one-shot timer is spent");
        let next = s.periodic.unwrap().1;
        assert!(next > t0 + 10 * p, "the periodic timer re-arms in the future, not once per missed period");
        assert!(!s.expire(t0 + 10 * p), "nothing more is due now");
    }

    /// A domain watchdog's expiry kicks the vCPU once (it then sees the
    /// expiry and shuts down, `crate::sched_op::watchdog_expired`), and
    /// raises no `VIRQ_TIMER`.
    #[test]
    fn a_watchdog_expiry_kicks_the_vcpu_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let t = crate::fake::TestDomain::pvh();
        let kicks = Arc::new(AtomicUsize::new(0));
        let k = kicks.clone();
        let kick: WatchdogKick = Arc::new(move || {
            k.fetch_add(1, Ordering::SeqCst);
        });
        let timer = Timer::start_with_kick(t.dom.evtchn.clone(), Some(kick), || {}).unwrap();
        timer.set_watchdog(Some(Instant::now()));
        // Bounded wait for the thread (no timing assertion: only that it
        // happens within a generous limit).
        let end = Instant::now() + Duration::from_secs(10);
        while kicks.load(Ordering::SeqCst) == 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(kicks.load(Ordering::SeqCst), 1);
        assert!(t.platform.upcalls() == 0, "no VIRQ_TIMER for a watchdog");
    }

    /// Per vCPU (`xen/common/sched/core.c`: each `struct vcpu` has its own
    /// `singleshot_timer`): the one that is due fires, alone.
    #[test]
    fn each_vcpu_has_its_own_timers() {
        let t0 = Instant::now();
        let mut s = State::default();
        s.vcpu(2).unwrap().deadline = Some(t0);
        s.vcpu(1).unwrap().deadline = Some(t0 + Duration::from_secs(60));
        assert!(s.vcpu(MAX_VCPUS).is_none());
        assert_eq!(s.next(), Some(t0));
        assert_eq!(s.expire(t0), vec![2]);
        assert_eq!(s.next(), Some(t0 + Duration::from_secs(60)));
        assert_eq!(s.expire(t0), Vec::<u32>::new());
    }
}
