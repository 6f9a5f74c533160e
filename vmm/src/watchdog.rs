//! A run-time limit for a vCPU: after the deadline a watchdog thread
//! interrupts `KVM_RUN` with a signal (repeatedly, so a signal that lands
//! just before the vCPU re-enters the guest is not lost), and the exit loop
//! reports a timeout instead of hanging on a guest that never shuts down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

pub(crate) fn kick_signal() -> i32 {
    libc::SIGRTMIN() + 1
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

pub(crate) fn install_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick) {
            tracing::warn!("cannot install the vCPU kick handler: {e}");
        }
    });
}

/// Watches one vCPU thread (the caller's) until dropped.
pub struct Watchdog {
    expired: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Arms a watchdog for the calling thread, firing after `limit`.
    pub fn arm(limit: Duration) -> Self {
        install_handler();
        // SAFETY: pthread_self has no preconditions.
        let target = unsafe { libc::pthread_self() };
        let expired = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (e, d) = (expired.clone(), done.clone());
        let deadline = Instant::now() + limit;
        let thread = std::thread::spawn(move || {
            crate::seccomp::install_or_exit(crate::seccomp::ThreadKind::Watchdog);
            while !d.load(Ordering::SeqCst) {
                let now = Instant::now();
                if now < deadline {
                    std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
                    continue;
                }
                e.store(true, Ordering::SeqCst);
                // SAFETY: `target` is the vCPU thread, alive until `done`
                // is set (the Watchdog is dropped on that thread before it
                // exits); the handler is installed and does nothing.
                unsafe { libc::pthread_kill(target, kick_signal()) };
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Watchdog { expired, done, thread: Some(thread) }
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        self.expired.load(Ordering::SeqCst)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        // Join so no signal can be sent after the vCPU thread moves on.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
