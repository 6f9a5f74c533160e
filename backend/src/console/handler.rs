//! The console's event-manager subscriber.

use super::Console;
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use vmm_sys_util::eventfd::EventFd;

/// Wakes the console on its event channel's eventfd, and (optionally) on
/// the VMM's standard input, whose bytes become console input.
pub struct ConsoleHandler {
    /// The device (shared so the VMM can drain it a last time at shutdown).
    pub console: Arc<Mutex<Console>>,
    wake: Arc<EventFd>,
    stdin: Option<std::io::Stdin>,
}

impl ConsoleHandler {
    /// A handler for `console`, woken by `wake`.
    pub fn new(console: Arc<Mutex<Console>>, wake: Arc<EventFd>) -> Self {
        ConsoleHandler { console, wake, stdin: None }
    }

    /// Also forwards the VMM's standard input to the guest's console.
    pub fn with_stdin(mut self) -> Self {
        self.stdin = Some(std::io::stdin());
        self
    }

    /// Reads what standard input has; `false` at end of file or error.
    fn read_stdin(&mut self) -> bool {
        let mut buf = [0u8; 512];
        // SAFETY: reads into a local buffer of the given length from fd 0,
        // which epoll reported readable (so this does not block).
        let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return false;
        }
        if let Ok(mut c) = self.console.lock() {
            c.feed(&buf[..n as usize]);
        }
        true
    }
}

impl MutEventSubscriber for ConsoleHandler {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == 0 && self.stdin.is_some() {
            if !self.read_stdin() {
                if let Some(stdin) = self.stdin.take() {
                    let _ = ops.remove(Events::new(&stdin, EventSet::IN));
                }
            }
            return;
        }
        if events.event_set().contains(EventSet::IN) {
            let _ = self.wake.read();
            if let Ok(mut c) = self.console.lock() {
                c.drain();
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&*self.wake, EventSet::IN)) {
            tracing::error!("console: cannot watch its eventfd: {e}");
        }
        if let Some(stdin) = &self.stdin {
            debug_assert_eq!(stdin.as_raw_fd(), 0);
            if let Err(e) = ops.add(Events::new(stdin, EventSet::IN)) {
                tracing::warn!("console: cannot watch standard input ({e}); no console input");
                self.stdin = None;
            }
        }
    }
}
