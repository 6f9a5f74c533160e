//! Running a guest with several vCPUs: one thread per vCPU, each under
//! its own seccomp filter, sharing the domain behind one lock.
//!
//! vCPU 0 runs on the calling thread (with the watchdog); every other
//! vCPU gets a thread `vcpu<N>` that parks until the guest brings it up
//! (`VCPUOP_initialise`, `VCPUOP_up`: [`xen_domain::vcpus`]), loads the
//! state it was given, and runs the same exit loop. The domain lock is
//! taken per exit, for the handling of that exit only (the KVM_RUN itself
//! runs unlocked), so hypercalls from different vCPUs are serialised as
//! Xen's per-domain locks would serialise most of them. The first vCPU to
//! end the run (shutdown, failure, watchdog) records the outcome, sets
//! the shared stop flag, kicks every other vCPU out of the guest and
//! wakes the parked ones; the scope joins them all before returning.

use crate::error::VmmError;
use crate::vcpu::{watchdog_outcome, Ended, Kicker, Outcome, Vcpu};
use crate::watchdog::Watchdog;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use xen_domain::domain::Domain;
use xen_domain::vcpus::{VcpuSet, Woken};

/// How often a parked vCPU thread looks at the stop flag and watchdog.
const PARK_STEP: Duration = Duration::from_millis(20);

/// What every vCPU thread of one run shares.
struct Run<'a> {
    dom: Mutex<&'a mut Domain>,
    vcpus: Arc<VcpuSet>,
    stop: AtomicBool,
    outcome: Mutex<Option<Result<Outcome, VmmError>>>,
    kickers: Vec<Arc<Kicker>>,
}

impl Run<'_> {
    /// Records `r` if it is the first outcome, and stops every vCPU.
    fn finish(&self, r: Option<Result<Outcome, VmmError>>) {
        if let Some(r) = r {
            self.outcome.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(r);
        }
        self.stop.store(true, Ordering::SeqCst);
        self.vcpus.wake_all();
        self.kickers.iter().for_each(|k| k.kick());
    }
}

/// Runs `bsp` (on this thread, watched by `watchdog`) and `aps` (one
/// thread each) over `dom` until the first of them ends the run.
pub(crate) fn run(
    bsp: &mut Vcpu,
    aps: &mut [Vcpu],
    dom: &mut Domain,
    watchdog: &Watchdog,
) -> Result<Outcome, VmmError> {
    let kickers: Vec<Arc<Kicker>> = std::iter::once(&*bsp).chain(aps.iter()).map(Vcpu::kicker).collect();
    let vcpus = dom.vcpus.clone();
    let hook = kickers.clone();
    vcpus.set_kick(Box::new(move |id| {
        if let Some(k) = hook.get(id as usize) {
            k.kick();
        }
    }));
    // Blocking waits happen outside the domain lock (`vcpu.rs`).
    dom.defer_waits = true;
    let run = Run { dom: Mutex::new(dom), vcpus, stop: AtomicBool::new(false), outcome: Mutex::new(None), kickers };
    std::thread::scope(|s| {
        for ap in aps.iter_mut() {
            let run = &run;
            let spawned = std::thread::Builder::new().name(format!("vcpu{}", ap.id())).spawn_scoped(s, move || {
                // Each vCPU thread installs its own filter before it
                // enters the guest (`seccomp`).
                match crate::seccomp::install(crate::seccomp::ThreadKind::Vcpu) {
                    Ok(()) => run.finish(vcpu_thread(ap, run, None)),
                    Err(e) => run.finish(Some(Err(e.into()))),
                }
            });
            if let Err(e) = spawned {
                run.finish(Some(Err(VmmError::Io("vCPU thread", e))));
            }
        }
        // Threads are spawned: now this thread's own filter (no `clone`).
        match crate::seccomp::install(crate::seccomp::ThreadKind::Vcpu) {
            Ok(()) => run.finish(vcpu_thread(bsp, &run, Some(watchdog))),
            Err(e) => run.finish(Some(Err(e.into()))),
        }
    });
    run.vcpus.set_kick(Box::new(|_| {}));
    let dom = run.dom.into_inner().unwrap_or_else(|p| p.into_inner());
    dom.defer_waits = false;
    dom.deferred_wait = None;
    // Every thread ended through `finish`; one with an outcome came first
    // unless the watchdog stopped a parked vCPU 0.
    run.outcome.into_inner().unwrap_or_else(|p| p.into_inner()).unwrap_or(Ok(watchdog_outcome(watchdog)))
}

/// One vCPU's thread: park while down, load a new state when brought up,
/// run until the vCPU is taken down again or the run ends. `None` when
/// another thread ended the run.
fn vcpu_thread(v: &mut Vcpu, run: &Run<'_>, watchdog: Option<&Watchdog>) -> Option<Result<Outcome, VmmError>> {
    let id = v.id();
    loop {
        // Also when the vCPU is up already: its thread may start after
        // the guest brought it up, with the new state still to load.
        let over = || run.stop.load(Ordering::SeqCst) || watchdog.is_some_and(|w| w.expired());
        match wait_up_serving(v, run, over) {
            None => return watchdog.filter(|w| w.expired()).map(|w| Ok(watchdog_outcome(w))),
            Some(Woken::Load(ctx)) => {
                tracing::debug!(vcpu = id, rip = ctx.rip, "vCPU up with a new state");
                if let Err(e) = v.load_context(&ctx) {
                    return Some(Err(e));
                }
            }
            Some(Woken::Resume) => {}
        }
        match v.run_until(&mut &run.dom, watchdog, &run.stop) {
            Ok(Ended::Outcome(o)) => return Some(Ok(o)),
            Ok(Ended::Parked) => continue,
            Ok(Ended::Stopped) => return None,
            Err(e) => return Some(Err(e)),
        }
    }
}

/// Waits until vCPU `v` is up (`VcpuSet::wait_up`), serving the control's
/// requests meanwhile: a down vCPU parks for a pause like the others and
/// reads its state for a snapshot (its registers are the ones `up` resumes
/// from). `None` when `over` says the run ends, or on a destroy.
fn wait_up_serving(v: &mut Vcpu, run: &Run<'_>, over: impl Fn() -> bool) -> Option<Woken> {
    let id = v.id();
    let Some(control) = v.control() else { return run.vcpus.wait_up(id, PARK_STEP, over) };
    control.attach(id);
    let woken = loop {
        let r = run.vcpus.wait_up(id, PARK_STEP, || over() || control.pending());
        if r.is_some() || over() {
            break r;
        }
        if let crate::control::Served::Destroy(_) = v.serve_control(&control, &mut &run.dom, &over) {
            break None;
        }
    };
    control.detach(id);
    woken
}
