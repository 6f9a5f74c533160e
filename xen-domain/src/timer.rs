//! A PVH guest's one-shot timer (armed by `set_timer_op` and
//! `VCPUOP_set_singleshot_timer`, [`crate::sched_op::arm`]): a thread that
//! raises `VIRQ_TIMER` when the deadline passes. It knows only the event
//! channels, never the hypercall handlers.

use crate::event_channel::EventChannels;
use pv_abi::hvm::VIRQ_TIMER;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

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
    /// Starts the timer thread, which first runs `thread_init` (the VMM
    /// installs the thread's seccomp filter there).
    pub fn start(evtchn: Arc<EventChannels>, thread_init: impl FnOnce() + Send + 'static) -> std::io::Result<Timer> {
        let shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let s = shared.clone();
        let thread = std::thread::Builder::new().name("pv-timer".into()).spawn(move || {
            thread_init();
            run(&s, &evtchn)
        })?;
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
