//! The device thread: back-ends as `event-manager` subscribers, woken by
//! the eventfds their event channels signal. The vCPU thread never does
//! device work; it only dispatches exits.

use crate::error::VmmError;
use crate::evtchn::EventChannels;
use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use vmm_sys_util::eventfd::EventFd;

/// A subscriber the device thread runs.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Notifies the guest on one event-channel port (the back-ends' `Notify`).
#[derive(Debug)]
pub struct PortNotifier {
    evtchn: Arc<EventChannels>,
    port: u32,
}

impl PortNotifier {
    /// A notifier for `port`.
    pub fn new(evtchn: Arc<EventChannels>, port: u32) -> Self {
        PortNotifier { evtchn, port }
    }
}

impl backend::Notify for PortNotifier {
    fn notify(&self) {
        if let Err(e) = self.evtchn.notify_guest(self.port) {
            tracing::debug!("notify port {}: {e}", self.port);
        }
    }
}

/// Stops the loop when its eventfd fires.
struct ExitHandler {
    fd: EventFd,
    stop: Arc<AtomicBool>,
}

impl MutEventSubscriber for ExitHandler {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.fd.read();
        self.stop.store(true, Ordering::SeqCst);
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.fd, EventSet::IN)) {
            tracing::error!("device thread: cannot watch exit eventfd: {e}");
        }
    }
}

/// The running device thread.
pub struct DeviceThread {
    exit: EventFd,
    handle: Option<JoinHandle<()>>,
}

impl DeviceThread {
    /// Starts a thread named `name` running `subscribers` until
    /// [`DeviceThread::stop`].
    pub fn start(name: &str, subscribers: Vec<Subscriber>) -> Result<Self, VmmError> {
        let io = |what| move |e| VmmError::Io(what, e);
        let exit = EventFd::new(libc::EFD_NONBLOCK).map_err(io("eventfd"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut em: EventManager<Subscriber> =
            EventManager::new().map_err(|e| VmmError::Io("event manager", std::io::Error::other(e.to_string())))?;
        for s in subscribers {
            em.add_subscriber(s);
        }
        let exit_handler: Subscriber =
            Arc::new(Mutex::new(ExitHandler { fd: exit.try_clone().map_err(io("eventfd"))?, stop: stop.clone() }));
        em.add_subscriber(exit_handler);
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Err(e) = em.run_with_timeout(-1) {
                        tracing::error!("device thread: {e}");
                        break;
                    }
                }
            })
            .map_err(io("device thread"))?;
        Ok(DeviceThread { exit, handle: Some(handle) })
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = self.exit.write(1);
            let _ = h.join();
        }
    }
}

impl Drop for DeviceThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves the guest's store ring on its event channel (and when host-side
/// writes queue watch events for the guest).
pub struct StoreHandler {
    server: pv_store::StoreServer<backend::ring_page::RingPage>,
    wake: Arc<EventFd>,
    notify: PortNotifier,
}

impl StoreHandler {
    /// A handler for `server`, woken by `wake`, notifying the guest on `notify`.
    pub fn new(
        server: pv_store::StoreServer<backend::ring_page::RingPage>,
        wake: Arc<EventFd>,
        notify: PortNotifier,
    ) -> Self {
        let kick = wake.clone();
        server.set_kick(Arc::new(move || {
            let _ = kick.write(1);
        }));
        StoreHandler { server, wake, notify }
    }
}

impl MutEventSubscriber for StoreHandler {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.event_set().contains(EventSet::IN) {
            let _ = self.wake.read();
            if self.server.process() {
                backend::Notify::notify(&self.notify);
            }
            if self.server.more_work() {
                let _ = self.wake.write(1);
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&*self.wake, EventSet::IN)) {
            tracing::error!("store: cannot watch its eventfd: {e}");
        }
    }
}

/// Event-channel binding for back-ends over the guest's channels.
#[derive(Debug, Clone)]
pub struct EvtchnAdapter(pub Arc<EventChannels>);

impl backend::xenbus::EvtchnBinder for EvtchnAdapter {
    fn bind(&self, port: u32, wake: Arc<EventFd>) -> Result<Arc<dyn backend::Notify>, String> {
        self.0.bind_guest_port(port, wake).map_err(|e| e.to_string())?;
        Ok(Arc::new(PortNotifier::new(self.0.clone(), port)))
    }

    fn close(&self, port: u32) {
        if let Err(e) = self.0.close(port) {
            tracing::debug!("close port {port}: {e}");
        }
    }
}
