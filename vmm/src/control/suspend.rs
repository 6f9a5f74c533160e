//! Xen's cooperative suspend, the toolstack's half (libxl's
//! `libxl_dom_suspend.c`, `docs/misc/xenstore-paths.pandoc`
//! `control/shutdown`): [`suspend_cooperatively`] writes
//! `control/shutdown = suspend` and waits for the guest to quiesce and
//! call `SCHEDOP_shutdown(SHUTDOWN_suspend)`; the vCPUs then park.
//! [`resume_suspended`] continues it in one of the two ways Xen has:
//! the suspend *cancelled* (`xc_domain_resume(fast = 1)`: the hypercall
//! returns 1, the guest keeps its connections) or resumed as a *new
//! domain* (the hypercall returns 0, as after a restore: every split back
//! end is reset to `InitWait`, its rings unmapped and its event channel
//! closed, and the guest's front ends reconnect through the xenbus state
//! machine, as Linux's `xenbus_dev_resume()` makes them).
//!
//! Snapshot code suspends a guest with [`suspend_cooperatively`] and, on
//! restore, resumes it with `resume_suspended(.., Resume::NewDomain, ..)`.

use super::{ControlError, VmControl};
use pv_abi::event_channel::DomId;
use pv_abi::xenbus::XenbusState;
use pv_store::SharedStore;
use std::time::{Duration, Instant};

/// How long the guest has to suspend, and each back end to reset: libxl's
/// 60 s (`domain_suspend_common_wait_guest()`).
pub const SUSPEND_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a back-end reset looks at the back ends' states.
const POLL: Duration = Duration::from_millis(10);

/// How a suspended guest continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// The suspend was cancelled: `SHUTDOWN_suspend` returns 1 and the
    /// front ends keep their connections.
    Cancelled,
    /// As a new domain (after a restore): `SHUTDOWN_suspend` returns 0
    /// and the front ends reconnect to back ends reset to `InitWait`.
    NewDomain,
}

/// Why a suspend or a resume failed.
#[derive(Debug, thiserror::Error)]
pub enum SuspendError {
    /// The VM cannot be asked now.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The guest did not suspend in time; the request was withdrawn and
    /// the VM runs on.
    #[error("the guest did not suspend within {0:?} (it must watch control/shutdown and call SCHEDOP_shutdown(SHUTDOWN_suspend)): request withdrawn, the VM runs on")]
    TimedOut(Duration),
    /// The store refused a write.
    #[error("cannot write {path}: {why}")]
    Store {
        /// The node.
        path: String,
        /// The store's error.
        why: pv_store::StoreError,
    },
    /// A back end did not reach the state a new domain's starts in.
    #[error("back end {0} did not reset to InitWait in time")]
    Reset(String),
}

fn shutdown_node(domid: DomId) -> String {
    format!("/local/domain/{domid}/control/shutdown")
}

/// Asks the guest to suspend itself (`control/shutdown = suspend`) and
/// waits up to `timeout` until it has and every vCPU is parked. A guest
/// that does not answer in time gets the request withdrawn (the node is
/// cleared if it still says `suspend`, as libxl does) and runs on.
pub fn suspend_cooperatively(
    control: &VmControl,
    store: &SharedStore,
    domid: DomId,
    timeout: Duration,
) -> Result<(), SuspendError> {
    control.ask_suspend()?;
    let node = shutdown_node(domid);
    if let Err(why) = store.write(&node, b"suspend") {
        control.withdraw_suspend();
        return Err(SuspendError::Store { path: node, why });
    }
    tracing::info!(domid, "asked the guest to suspend (control/shutdown = suspend)");
    match control.wait_suspended(timeout) {
        Ok(()) => Ok(()),
        Err(e) => {
            if store.read(&node).is_ok_and(|v| v == b"suspend") {
                let _ = store.write(&node, b"");
            }
            match e {
                ControlError::Timeout(t) if !control.is_suspended() => Err(SuspendError::TimedOut(t)),
                e => Err(e.into()),
            }
        }
    }
}

/// Resumes a guest [`suspend_cooperatively`] suspended, as `how` says;
/// for a new domain, first resets every split back end of `domid`
/// (waiting up to `timeout` for each).
pub fn resume_suspended(
    control: &VmControl,
    store: &SharedStore,
    domid: DomId,
    how: Resume,
    timeout: Duration,
) -> Result<(), SuspendError> {
    if !control.is_suspended() {
        return Err(ControlError::NotSuspended.into());
    }
    if how == Resume::NewDomain {
        reset_backends(store, domid, timeout)?;
    }
    control.resume_from_suspend(match how {
        Resume::Cancelled => 1,
        Resume::NewDomain => 0,
    })?;
    tracing::info!(domid, how = ?how, "guest resumed");
    Ok(())
}

/// One split device: its back-end and front-end directories.
struct Dev {
    back: String,
    front: String,
}

/// Every split device of `domid`: `backend/<type>/<domid>/<id>` with the
/// front end its `frontend` node names.
fn devices(store: &SharedStore, domid: DomId) -> Vec<Dev> {
    let mut out = Vec::new();
    for kind in store.directory("/local/domain/0/backend").unwrap_or_default() {
        let dir = format!("/local/domain/0/backend/{kind}/{domid}");
        for id in store.directory(&dir).unwrap_or_default() {
            let back = format!("{dir}/{id}");
            if let Some(front) = store.read(&format!("{back}/frontend")).ok().and_then(|f| String::from_utf8(f).ok()) {
                out.push(Dev { back, front });
            }
        }
    }
    out
}

fn state_of(store: &SharedStore, dir: &str) -> Option<XenbusState> {
    store.read(&format!("{dir}/state")).ok().and_then(|s| XenbusState::parse(&s))
}

/// Writes each device's front-end `state` and waits until every back end
/// is in a state `reached` accepts.
fn step(
    store: &SharedStore,
    devs: &[&Dev],
    front: XenbusState,
    reached: impl Fn(XenbusState) -> bool,
    timeout: Duration,
) -> Result<(), SuspendError> {
    for d in devs {
        let path = format!("{}/state", d.front);
        store.write(&path, front.as_str().as_bytes()).map_err(|why| SuspendError::Store { path, why })?;
    }
    let end = Instant::now() + timeout;
    for d in devs {
        while !state_of(store, &d.back).is_some_and(&reached) {
            if Instant::now() >= end {
                return Err(SuspendError::Reset(d.back.clone()));
            }
            std::thread::sleep(POLL);
        }
    }
    Ok(())
}

/// Resets every split back end of `domid` to what a new domain's starts
/// in, as a restore's toolstack creates them: the front end is made to
/// read `Closed` (the back end unmaps its rings, closes its event channel
/// and goes `Closed`), then `Initialising` (the back end goes `InitWait`).
/// The guest's vCPUs are parked (or, on a restore, not yet run)
/// meanwhile, so it sees only the result.
pub fn reset_backends(store: &SharedStore, domid: DomId, timeout: Duration) -> Result<(), SuspendError> {
    let all = devices(store, domid);
    // Back ends already waiting for a front end have nothing to reset;
    // ones being removed (`Closing`/`Closed` by the toolstack) are left.
    let live: Vec<&Dev> =
        all.iter().filter(|d| matches!(state_of(store, &d.back), Some(XenbusState::Connected))).collect();
    step(store, &live, XenbusState::Closed, |s| s == XenbusState::Closed, timeout)?;
    step(store, &live, XenbusState::Initialising, |s| s == XenbusState::InitWait, timeout)?;
    tracing::info!(domid, devices = live.len(), "back ends reset to InitWait");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A back end that follows its front end's state as
    /// `backend::xenbus::XenbusDevice::frontend_changed` does.
    fn follow(store: SharedStore, back: String, front: String, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let next = match state_of(&store, &front) {
                Some(XenbusState::Closed) => Some(XenbusState::Closed),
                Some(XenbusState::Initialising) => Some(XenbusState::InitWait),
                _ => None,
            };
            if let Some(n) = next.filter(|n| state_of(&store, &back) != Some(*n)) {
                store.write(&format!("{back}/state"), n.as_str().as_bytes()).unwrap();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A new domain's back ends start in `InitWait` (libxl creates them so
    /// on restore); connected ones are reset through `Closed`, others are
    /// left alone.
    #[test]
    fn reset_takes_connected_back_ends_to_initwait() {
        let s = SharedStore::new();
        let (back, front) = ("/local/domain/0/backend/vbd/1/51712", "/local/domain/1/device/vbd/51712");
        s.write(&format!("{back}/frontend"), front.as_bytes()).unwrap();
        s.write(&format!("{back}/state"), b"4").unwrap();
        s.write(&format!("{front}/state"), b"4").unwrap();
        let idle = "/local/domain/0/backend/vif/1/0";
        s.write(&format!("{idle}/frontend"), b"/local/domain/1/device/vif/0").unwrap();
        s.write(&format!("{idle}/state"), b"2").unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let t = {
            let (s, b, f, stop) = (s.clone(), back.to_string(), front.to_string(), stop.clone());
            std::thread::spawn(move || follow(s, b, f, stop))
        };
        reset_backends(&s, 1, Duration::from_secs(5)).unwrap();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        t.join().unwrap();
        assert_eq!(state_of(&s, back), Some(XenbusState::InitWait));
        assert_eq!(state_of(&s, front), Some(XenbusState::Initialising));
        assert_eq!(s.read("/local/domain/1/device/vif/0/state").ok(), None, "an idle back end is not touched");
    }

    /// A back end that does not follow is an error naming it, not a hang.
    #[test]
    fn a_back_end_that_does_not_reset_is_named() {
        let s = SharedStore::new();
        let back = "/local/domain/0/backend/vbd/1/51712";
        s.write(&format!("{back}/frontend"), b"/local/domain/1/device/vbd/51712").unwrap();
        s.write(&format!("{back}/state"), b"4").unwrap();
        let e = reset_backends(&s, 1, Duration::from_millis(50)).unwrap_err().to_string();
        assert!(e.contains(back), "{e}");
    }

    /// A fake vCPU whose guest answers `control/shutdown = suspend` with
    /// `SHUTDOWN_suspend` (when `answers`), parks, and records the value
    /// its hypercall returns when resumed; ends when destroyed.
    fn fake_guest(
        c: std::sync::Arc<VmControl>,
        s: SharedStore,
        answers: bool,
        returned: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            c.attach(0);
            let stats = || super::super::VcpuStats { id: 0, exits: Default::default(), evtchn: [0; 3] };
            let mut awaiting = false;
            loop {
                if c.pending() {
                    if let super::super::Served::Destroy(_) = c.serve(0, stats, || false) {
                        break;
                    }
                    continue;
                }
                if let Some(v) = c.take_resume_value(0).filter(|_| awaiting) {
                    returned.lock().unwrap().push(v);
                    awaiting = false;
                }
                if answers && s.read("/local/domain/1/control/shutdown").is_ok_and(|v| v == b"suspend") {
                    s.write("/local/domain/1/control/shutdown", b"").unwrap();
                    awaiting = c.guest_suspended(0);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            c.detach(0);
        })
    }

    /// Suspend parks the guest ("suspended"); a plain resume returns 1
    /// (cancelled), a new-domain resume 0 (`tools/libs/guest/xg_resume.c`
    /// `modify_returncode()` / a restore), each once.
    #[test]
    fn suspend_then_resume_both_ways() {
        use super::super::RunState;
        let s = SharedStore::new();
        let c = std::sync::Arc::new(VmControl::default());
        let returned = std::sync::Arc::default();
        let t = fake_guest(c.clone(), s.clone(), true, std::sync::Arc::clone(&returned));
        while c.state() != RunState::Running {
            std::thread::yield_now();
        }
        suspend_cooperatively(&c, &s, 1, Duration::from_secs(5)).unwrap();
        assert_eq!(c.state(), RunState::Suspended);
        let e = suspend_cooperatively(&c, &s, 1, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(e, SuspendError::Control(ControlError::AlreadySuspended)), "{e}");
        resume_suspended(&c, &s, 1, Resume::Cancelled, Duration::from_secs(5)).unwrap();
        assert_eq!(c.state(), RunState::Running);
        // Until the vCPU has returned from the hypercall, the suspend is
        // not over.
        while returned.lock().unwrap().is_empty() {
            std::thread::yield_now();
        }
        suspend_cooperatively(&c, &s, 1, Duration::from_secs(5)).unwrap();
        resume_suspended(&c, &s, 1, Resume::NewDomain, Duration::from_secs(5)).unwrap();
        while returned.lock().unwrap().len() < 2 {
            std::thread::yield_now();
        }
        assert_eq!(*returned.lock().unwrap(), [1, 0]);
        c.destroy(super::super::Destroy::Now);
        t.join().unwrap();
    }

    /// A guest that ignores the request: a timeout error, the node is
    /// cleared, the VM runs on, and a late `SHUTDOWN_suspend` is refused.
    #[test]
    fn a_guest_that_does_not_answer_runs_on() {
        use super::super::RunState;
        let s = SharedStore::new();
        let c = std::sync::Arc::new(VmControl::default());
        let t = fake_guest(c.clone(), s.clone(), false, std::sync::Arc::default());
        while c.state() != RunState::Running {
            std::thread::yield_now();
        }
        let e = suspend_cooperatively(&c, &s, 1, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(e, SuspendError::TimedOut(_)), "{e}");
        assert_eq!(s.read("/local/domain/1/control/shutdown").unwrap(), b"", "request withdrawn");
        assert_eq!(c.state(), RunState::Running);
        assert!(!c.guest_suspended(0), "a suspend nobody asked for is not accepted");
        c.destroy(super::super::Destroy::Now);
        t.join().unwrap();
    }

    /// Without a vCPU nothing is asked and nothing is written.
    #[test]
    fn suspend_of_a_vm_that_is_not_running_writes_nothing() {
        let s = SharedStore::new();
        let c = VmControl::default();
        let e = suspend_cooperatively(&c, &s, 1, Duration::from_millis(10)).unwrap_err();
        assert!(matches!(e, SuspendError::Control(ControlError::NotRunning)), "{e}");
        assert!(s.read("/local/domain/1/control/shutdown").is_err());
        let e = resume_suspended(&c, &s, 1, Resume::Cancelled, Duration::from_millis(10)).unwrap_err();
        assert!(matches!(e, SuspendError::Control(ControlError::NotSuspended)), "{e}");
    }
}
