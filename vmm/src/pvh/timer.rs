//! Time-driven events for PVH guests: the one-shot timer (`set_timer_op`,
//! `VCPUOP_set_singleshot_timer`) raising `VIRQ_TIMER` from a timer thread,
//! and `SCHEDOP_poll`, which waits on the vCPU thread (bounded per exit)
//! for a pending port or the poll's timeout.

use crate::domain::Domain;
use crate::evtchn::EventChannels;
use crate::hypercall::HcResult;
use pv_abi::errno::{EINVAL, ENOENT, ENOSYS, ETIME};
use pv_abi::hvm::VIRQ_TIMER;
use pv_abi::hypercall::sched_op::POLL as SCHEDOP_POLL;
use pv_abi::hypercall::vcpu_op;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most ports one `SCHEDOP_poll` may name (Xen's limit).
pub const MAX_POLL_PORTS: u32 = 128;
/// Longest a single `SCHEDOP_poll` exit waits before returning (the guest
/// polls again if nothing happened): bounded work per exit.
pub const MAX_POLL_WAIT: Duration = Duration::from_millis(50);

#[derive(Default)]
struct State {
    deadline: Option<Instant>,
    stop: bool,
}

/// The guest's one-shot timer: a thread that raises `VIRQ_TIMER` when the
/// deadline passes.
pub struct Timer {
    shared: Arc<(Mutex<State>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Timer {
    /// Starts the timer thread.
    pub fn start(evtchn: Arc<EventChannels>) -> std::io::Result<Timer> {
        let shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let s = shared.clone();
        let thread = std::thread::Builder::new().name("pv-timer".into()).spawn(move || run(&s, &evtchn))?;
        Ok(Timer { shared, thread: Some(thread) })
    }

    /// Arms (or with `None` cancels) the timer.
    pub fn set(&self, deadline: Option<Instant>) {
        let (m, cv) = &*self.shared;
        m.lock().unwrap_or_else(|p| p.into_inner()).deadline = deadline;
        cv.notify_all();
    }
}

fn run(shared: &(Mutex<State>, Condvar), evtchn: &EventChannels) {
    // Sleeping, locking and writing the upcall eventfd: the watchdog's set.
    crate::seccomp::install_or_exit(crate::seccomp::ThreadKind::Watchdog);
    let (m, cv) = shared;
    let mut st = m.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if st.stop {
            return;
        }
        st = match st.deadline {
            None => cv.wait(st).unwrap_or_else(|p| p.into_inner()),
            Some(d) if Instant::now() >= d => {
                st.deadline = None;
                drop(st);
                if let Err(e) = evtchn.notify_virq(VIRQ_TIMER) {
                    tracing::warn!("timer: cannot raise VIRQ_TIMER: {e}");
                }
                m.lock().unwrap_or_else(|p| p.into_inner())
            }
            Some(d) => cv.wait_timeout(st, d - Instant::now()).unwrap_or_else(|p| p.into_inner()).0,
        };
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let (m, cv) = &*self.shared;
        m.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Arms the timer at absolute system time `ns` (0 cancels) and refreshes
/// the pvclock.
fn arm(dom: &mut Domain, ns: u64) -> Result<(), i64> {
    let ram = dom.ram.clone();
    let pvh = dom.pvh.as_mut().ok_or(ENOSYS)?;
    let deadline = (ns != 0).then(|| pvh.clock.boot + Duration::from_nanos(ns));
    if let Some(t) = &pvh.timer {
        t.set(deadline);
    }
    if pvh.placed[0].is_some() {
        pvh.clock.publish(&ram, pvh.layout.shared_info(), dom.evtchn.layout())?;
    }
    Ok(())
}

/// `set_timer_op(timeout)`: absolute system time in ns (64-bit: `rdi`;
/// 32-bit: low half in `ebx`, high in `ecx`); 0 cancels.
pub fn set_timer_op(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    let ns = if dom.compat { a[0] | (a[1] << 32) } else { a[0] };
    arm(dom, ns).map(|()| 0)
}

/// `vcpu_op(cmd, vcpu, arg)`: the single-shot timer of vCPU 0.
pub fn vcpu_op(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    if dom.pvh.is_none() {
        return Err(ENOSYS);
    }
    if a[1] != 0 {
        return Err(ENOENT);
    }
    match a[0] {
        // Non-Xen numbering kept for now: Xen's 6/7 are the periodic timer.
        vcpu_op::SET_PERIODIC_TIMER => {
            // {u64 timeout_abs_ns; u32 flags} in both layouts.
            let raw = dom.ram.read_vec(a[2], 12)?;
            let ns = u64::from_le_bytes(raw[..8].try_into().expect("8 bytes"));
            let flags = u32::from_le_bytes(raw[8..].try_into().expect("4 bytes"));
            let now = dom.pvh.as_ref().map(|p| p.clock.now_ns()).unwrap_or(0);
            if flags & vcpu_op::SSHOTTMR_FUTURE != 0 && ns < now {
                return Err(ETIME);
            }
            arm(dom, ns.max(1)).map(|()| 0)
        }
        vcpu_op::STOP_PERIODIC_TIMER => arm(dom, 0).map(|()| 0),
        _ => Err(ENOSYS),
    }
}

/// `sched_op`: `SCHEDOP_poll` for PVH guests, the rest as for our guests.
pub fn sched_op(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    if a[0] != SCHEDOP_POLL || dom.pvh.is_none() {
        return crate::hypercall::do_sched_op(dom, a);
    }
    // {handle ports; u32 nr_ports; u64 timeout}: 24 bytes, or 16 in compat.
    let (ports_at, nr, timeout) = if dom.compat {
        let raw = dom.ram.read_vec(a[1], 16)?;
        let w = |i: usize| u32::from_le_bytes(raw[i..i + 4].try_into().expect("4 bytes"));
        (u64::from(w(0)), w(4), u64::from_le_bytes(raw[8..16].try_into().expect("8 bytes")))
    } else {
        let raw = dom.ram.read_vec(a[1], 24)?;
        let q = |i: usize| u64::from_le_bytes(raw[i..i + 8].try_into().expect("8 bytes"));
        (q(0), q(8) as u32, q(16))
    };
    if nr > MAX_POLL_PORTS {
        return Err(EINVAL);
    }
    let raw = dom.ram.read_vec(ports_at, u64::from(nr) * 4)?;
    let ports: Vec<u32> = raw.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
    let pvh = dom.pvh.as_mut().expect("checked");
    let deadline = (timeout != 0).then(|| pvh.clock.boot + Duration::from_nanos(timeout));
    let cap = Instant::now() + MAX_POLL_WAIT;
    while !ports.iter().any(|&p| dom.evtchn.is_pending(p)) {
        let now = Instant::now();
        if now >= cap || deadline.is_some_and(|d| now >= d) {
            break;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    let pvh = dom.pvh.as_mut().expect("checked");
    if pvh.placed[0].is_some() {
        pvh.clock.publish(&dom.ram, pvh.layout.shared_info(), dom.evtchn.layout())?;
    }
    Ok(0)
}
