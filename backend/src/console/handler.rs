//! The console's event-manager subscriber.

use super::Console;
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use std::sync::{Arc, Mutex};
use vmm_sys_util::eventfd::EventFd;

/// Wakes the console on its event channel's eventfd.
pub struct ConsoleHandler {
    /// The device (shared so the VMM can drain it a last time at shutdown).
    pub console: Arc<Mutex<Console>>,
    wake: Arc<EventFd>,
}

impl ConsoleHandler {
    /// A handler for `console`, woken by `wake`.
    pub fn new(console: Arc<Mutex<Console>>, wake: Arc<EventFd>) -> Self {
        ConsoleHandler { console, wake }
    }
}

impl MutEventSubscriber for ConsoleHandler {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
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
    }
}
