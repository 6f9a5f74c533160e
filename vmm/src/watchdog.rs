//! Stopping a vCPU from outside: the run-time limit (`--timeout`) and the
//! stop signals (SIGTERM, SIGINT). Either first *asks* the guest to power
//! off, as Xen's toolstack does (`xl shutdown` writes `control/shutdown =
//! poweroff` into the guest's store directory), then waits a grace period
//! for the guest to shut down, then stops it: a watchdog thread interrupts
//! `KVM_RUN` with a signal (repeatedly, so a signal that lands just before
//! the vCPU re-enters the guest is not lost) and the exit loop reports how
//! the run ended instead of hanging on a guest that never shuts down. A
//! second stop signal stops the guest at once.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
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

/// Stop signals received so far (SIGTERM, SIGINT), and the last one.
static STOP_SIGNALS: AtomicU32 = AtomicU32::new(0);
static LAST_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Records a stop request (the binary's signal thread calls this): the
/// first asks the running guest to power off, the second stops it at once.
pub fn request_stop(signal: i32) {
    LAST_SIGNAL.store(signal, Ordering::SeqCst);
    STOP_SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// Whether a stop signal has arrived in this process.
pub fn stop_requested() -> bool {
    STOP_SIGNALS.load(Ordering::SeqCst) > 0
}

/// Exit status after a third stop signal, when the VMM did not manage to
/// stop by itself (128 + the signal, as a shell reports a killed process).
fn forced_exit_status(signal: i32) -> i32 {
    128 + signal
}

/// Routes SIGTERM and SIGINT to [`request_stop`]: blocks them in the
/// calling thread, so every thread started after this inherits the block
/// (no device thread's system call is interrupted), and waits for them on
/// a thread of their own. A third signal exits the process at once. Call
/// before any other thread starts.
pub fn forward_stop_signals() -> std::io::Result<()> {
    let set = stop_set();
    // SAFETY: `set` is an initialised signal set; the old mask is not wanted.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    std::thread::Builder::new().name("signals".into()).spawn(move || loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` holds the blocked stop signals; `sig` is a valid out-pointer.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            continue;
        }
        request_stop(sig);
        if STOP_SIGNALS.load(Ordering::SeqCst) >= 3 {
            eprintln!("error: third stop signal: exiting at once");
            std::process::exit(forced_exit_status(sig));
        }
    })?;
    Ok(())
}

fn stop_set() -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is a valid value (plain data), and
    // sigemptyset initialises it anyway.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, exclusively borrowed sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: as above; `sig` is a valid signal number.
        unsafe { libc::sigaddset(&mut set, sig) };
    }
    set
}

/// One line on stderr when the guest is asked to power off, as `xl
/// shutdown` reports it: the user then knows a second signal stops it.
fn announce(cause: StopCause, grace: Duration) {
    let why = match cause {
        StopCause::Timeout => "time limit reached".to_string(),
        StopCause::Signal(n) => format!("signal {n}"),
    };
    eprintln!(
        "vmm: {why}: asking the guest to power off (control/shutdown); stopping it in {:.1} s{}",
        grace.as_secs_f64(),
        if matches!(cause, StopCause::Signal(_)) { " or at the next signal" } else { "" }
    );
}

/// Why the guest was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// The run-time limit passed.
    Timeout,
    /// A stop signal arrived (its number).
    Signal(i32),
}

/// `StopCause` packed for an atomic: 0 none, -1 timeout, else the signal.
fn pack(c: StopCause) -> i32 {
    match c {
        StopCause::Timeout => -1,
        StopCause::Signal(n) => n.max(1),
    }
}

fn unpack(v: i32) -> Option<StopCause> {
    match v {
        0 => None,
        -1 => Some(StopCause::Timeout),
        n => Some(StopCause::Signal(n)),
    }
}

/// What the watchdog thread shares with the vCPU thread.
#[derive(Default)]
struct Shared {
    /// The packed [`StopCause`] of the request to the guest, if any.
    asked: AtomicI32,
    /// The vCPU must stop now.
    stop: AtomicBool,
    /// It must because a further stop signal came (not the grace's end).
    forced: AtomicBool,
    /// The watchdog is dropped.
    done: AtomicBool,
}

/// Watches one vCPU thread (the caller's) until dropped.
pub struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Arms a watchdog for the calling thread: after `limit` (if any) or
    /// at a stop signal it calls `ask` (which asks the guest to power
    /// off), then stops the vCPU after `grace`, or at once on a further
    /// stop signal.
    pub fn arm(limit: Option<Duration>, grace: Duration, ask: Box<dyn Fn() + Send>) -> Self {
        install_handler();
        // SAFETY: pthread_self has no preconditions.
        let target = unsafe { libc::pthread_self() };
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let deadline = limit.map(|l| Instant::now() + l);
        let base = STOP_SIGNALS.load(Ordering::SeqCst);
        let thread = std::thread::spawn(move || {
            crate::seccomp::install_or_exit(crate::seccomp::ThreadKind::Watchdog);
            let mut grace_end = None;
            while !s.done.load(Ordering::SeqCst) {
                let signals = STOP_SIGNALS.load(Ordering::SeqCst) - base;
                let now = Instant::now();
                if !s.stop.load(Ordering::SeqCst) {
                    match unpack(s.asked.load(Ordering::SeqCst)) {
                        None => {
                            let cause = if signals > 0 {
                                Some(StopCause::Signal(LAST_SIGNAL.load(Ordering::SeqCst)))
                            } else {
                                deadline.filter(|d| now >= *d).map(|_| StopCause::Timeout)
                            };
                            if let Some(c) = cause {
                                s.asked.store(pack(c), Ordering::SeqCst);
                                announce(c, grace);
                                ask();
                                grace_end = Some(now + grace);
                            }
                        }
                        Some(c) => {
                            let more = signals > u32::from(matches!(c, StopCause::Signal(_)));
                            if more || grace_end.is_some_and(|g| now >= g) {
                                s.forced.store(more, Ordering::SeqCst);
                                s.stop.store(true, Ordering::SeqCst);
                            }
                        }
                    }
                }
                if s.stop.load(Ordering::SeqCst) {
                    // SAFETY: `target` is the vCPU thread, alive until `done`
                    // is set (the Watchdog is dropped on that thread before it
                    // exits); the handler is installed and does nothing.
                    unsafe { libc::pthread_kill(target, kick_signal()) };
                    std::thread::sleep(Duration::from_millis(50));
                } else {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        Watchdog { shared, thread: Some(thread) }
    }

    /// Whether the vCPU must stop now.
    pub fn expired(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst)
    }

    /// Whether the stop came from a further stop signal rather than the
    /// end of the grace period.
    pub fn forced(&self) -> bool {
        self.shared.forced.load(Ordering::SeqCst)
    }

    /// Why the guest was asked to stop, if it was.
    pub fn cause(&self) -> Option<StopCause> {
        unpack(self.shared.asked.load(Ordering::SeqCst))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.done.store(true, Ordering::SeqCst);
        // Join so no signal can be sent after the vCPU thread moves on.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
