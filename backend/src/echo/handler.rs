//! The echo device's event-manager subscriber.

use super::Echo;
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use std::sync::{Arc, Mutex};
use vmm_sys_util::eventfd::EventFd;

/// Wakes the echo back-end on its event channel's eventfd.
pub struct EchoHandler {
    /// The device (shared with the VMM for counters).
    pub echo: Arc<Mutex<Echo>>,
    wake: Arc<EventFd>,
}

impl EchoHandler {
    /// A handler for `echo`, woken by `wake`.
    pub fn new(echo: Arc<Mutex<Echo>>, wake: Arc<EventFd>) -> Self {
        EchoHandler { echo, wake }
    }
}

impl MutEventSubscriber for EchoHandler {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.event_set().contains(EventSet::IN) {
            let kicks = self.wake.read().unwrap_or(0);
            if let Ok(mut e) = self.echo.lock() {
                e.counters.kicks += kicks;
                e.process();
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&*self.wake, EventSet::IN)) {
            tracing::error!("echo: cannot watch its eventfd: {e}");
        }
    }
}
