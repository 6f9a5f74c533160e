//! The device thread: back-ends as `event-manager` subscribers, woken by
//! the eventfds their event channels signal. The vCPU thread never does
//! device work; it only dispatches exits.

use crate::device_spec::DeviceSpec;
use crate::error::VmmError;
use backend::xenbus::{DeviceType, WiredDevice, XenbusBackend, XenbusHost};
use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use pv_store::SharedStore;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use vmm_sys_util::eventfd::EventFd;
use xen_domain::event_channel::{Binding, EventChannels};

/// A subscriber the device thread runs.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Notifies the guest on one event-channel binding (the back-ends'
/// `Notify`): after the guest closes the port, notifications through this
/// notifier are dropped, never delivered to whoever binds the number next.
#[derive(Debug)]
pub struct PortNotifier {
    evtchn: Arc<EventChannels>,
    binding: Binding,
}

impl PortNotifier {
    /// A notifier for the current binding of `port` (generation 0, which
    /// matches nothing, if the port is not bound).
    pub fn new(evtchn: Arc<EventChannels>, port: u32) -> Self {
        let binding = evtchn.binding(port).unwrap_or(Binding { port, gen: 0 });
        PortNotifier { evtchn, binding }
    }
}

impl backend::Notify for PortNotifier {
    fn notify(&self) {
        if let Err(e) = self.evtchn.notify_binding(self.binding) {
            tracing::debug!("notify port {}: {e}", self.binding.port);
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
                crate::seccomp::install_or_exit(crate::seccomp::ThreadKind::Device);
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

impl StoreHandler {
    /// Adds the guest connection's server side to `state` (a snapshot).
    pub(crate) fn save_into(&self, state: &mut pv_store::snapshot::StoreState) {
        self.server.save_into(state);
    }

    /// Serves the guest's connection as `state` saved it (a restore: the
    /// store was restored from `state`, guest memory holds the ring at
    /// `gpa`), notifying through `notify` (the port re-attached).
    pub(crate) fn restore(
        &mut self,
        store: pv_store::SharedStore,
        mem: &vm_memory::GuestMemoryMmap,
        gpa: u64,
        state: &pv_store::snapshot::StoreState,
        notify: PortNotifier,
    ) -> Result<(), String> {
        let page = backend::ring_page::RingPage::assigned(mem, gpa).map_err(|e| e.to_string())?;
        let server = pv_store::StoreServer::restore(store.clone(), xen_domain::domid::GUEST_DOMID, page, state)
            .map_err(|e| e.to_string())?;
        // The build's server, dropped here, disconnects only its own
        // connection, not the restored one with the same id (pv-store).
        self.server = server;
        let kick = self.wake.clone();
        self.server.set_kick(Arc::new(move || {
            let _ = kick.write(1);
        }));
        self.notify = notify;
        Ok(())
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

/// Event-channel binding for one back-end device over the guest's
/// channels: it remembers the bindings it made and closes only those.
/// One per device (a shared one could not tell whose binding a port is).
pub struct EvtchnAdapter {
    evtchn: Arc<EventChannels>,
    bound: Mutex<Vec<Binding>>,
}

impl EvtchnAdapter {
    /// An adapter for one device.
    pub fn new(evtchn: Arc<EventChannels>) -> Self {
        EvtchnAdapter { evtchn, bound: Mutex::new(Vec::new()) }
    }
}

impl EvtchnAdapter {
    /// Closes every binding this device still holds (a forced hot-unplug:
    /// the back end was stopped without its front end closing).
    pub fn close_all(&self) {
        let bound = std::mem::take(&mut *self.bound.lock().unwrap_or_else(|p| p.into_inner()));
        for b in bound {
            if let Err(e) = self.evtchn.close_binding(b) {
                tracing::debug!("close port {}: {e}", b.port);
            }
        }
    }
}

impl backend::xenbus::EvtchnBinder for EvtchnAdapter {
    fn bind(&self, port: u32, wake: Arc<EventFd>) -> Result<Arc<dyn backend::Notify>, backend::xenbus::BindError> {
        let b = match self.evtchn.bind_guest_port(port, wake.clone()) {
            Ok(b) => b,
            // After a restore the port the store names comes back
            // detached from its back end: take it over.
            Err(e) => self.evtchn.reattach(port, wake).map_err(|_| e)?,
        };
        let mut bound = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        bound.retain(|x| x.port != port);
        bound.push(b);
        Ok(Arc::new(PortNotifier { evtchn: self.evtchn.clone(), binding: b }))
    }

    fn close(&self, port: u32) {
        let mut bound = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        let Some(i) = bound.iter().position(|b| b.port == port) else {
            tracing::debug!(port, "close of a port this device did not bind");
            return;
        };
        let b = bound.swap_remove(i);
        if let Err(e) = self.evtchn.close_binding(b) {
            tracing::debug!("close port {port}: {e}");
        }
    }
}

/// One row of the device table: a device type, its id in the store, and
/// its back end (already built, so bad input fails before KVM is touched).
pub struct DeviceRow {
    kind: &'static DeviceType,
    index: usize,
    id: u32,
    backend: Box<dyn XenbusBackend>,
}

/// The device table for a VM: one row per Xen-transport device of
/// `specs`, in list order, each built by its type's one constructor
/// (`backend::DEVICE_TYPES`), at the store id it asks for or else its
/// type's next one.
pub fn device_table(specs: &[DeviceSpec]) -> Result<Vec<DeviceRow>, VmmError> {
    let mut rows: Vec<DeviceRow> = Vec::new();
    for (arg, id) in specs.iter().filter_map(DeviceSpec::xen_device) {
        let kind = arg.kind().map_err(|e| VmmError::Device { what: "device", why: e.to_string() })?;
        let backend =
            (kind.build)(&arg.options).map_err(|e| VmmError::Device { what: kind.name, why: e.to_string() })?;
        let index = rows.iter().filter(|r| r.kind.name == kind.name).count();
        let id = id.unwrap_or((kind.id)(index));
        if rows.iter().any(|r| r.kind.name == kind.name && r.id == id) {
            let why = format!("two devices would be device/{}/{id}: give each disk its own vdev=", kind.name);
            return Err(VmmError::Device { what: kind.name, why });
        }
        rows.push(DeviceRow { kind, index, id, backend });
    }
    Ok(rows)
}

/// Device threads to start: (name, subscribers).
pub type Threads = Vec<(String, Vec<Subscriber>)>;

/// Wires every row of `table` for guest `domid`: its store directories,
/// the generic xenbus device around its back end, and its device thread
/// (added to `threads`). Returns the wired devices.
pub fn wire_devices(
    table: Vec<DeviceRow>,
    store: &SharedStore,
    domid: pv_abi::event_channel::DomId,
    host: &dyn Fn() -> XenbusHost,
    threads: &mut Threads,
) -> Result<PvDevices, VmmError> {
    let mut devices = Vec::new();
    for DeviceRow { kind, index, id, backend } in table {
        let paths = pv_store::xenbus::create_device(store, domid, backend.device_type(), id)
            .map_err(VmmError::device(kind.name))?;
        let dev = backend.wire(paths, &host()).map_err(|e| VmmError::Io("xenbus device", e))?;
        let thread = if kind.own_thread { format!("pv-{}{index}", kind.name) } else { format!("pv-{}", kind.name) };
        match threads.iter_mut().find(|(name, _)| *name == thread) {
            Some((_, subs)) => subs.push(dev.subscriber.clone()),
            None => threads.push((thread, vec![dev.subscriber.clone()])),
        }
        devices.push(dev);
    }
    Ok(PvDevices(devices))
}

/// The VM's split devices, in device-table order.
#[derive(Debug, Default)]
pub struct PvDevices(pub Vec<WiredDevice>);

impl PvDevices {
    /// The `n`-th device of type `device_type`.
    pub fn get(&self, device_type: &str, n: usize) -> Option<&WiredDevice> {
        self.0.iter().filter(|d| d.device_type == device_type).nth(n)
    }

    /// The metrics of the `n`-th device of type `device_type`, as `M`.
    pub fn metrics<M: 'static>(&self, device_type: &str, n: usize) -> Option<&M> {
        self.get(device_type, n)?.metrics.as_any().downcast_ref()
    }

    /// Every device.
    pub fn iter(&self) -> impl Iterator<Item = &WiredDevice> {
        self.0.iter()
    }
}
