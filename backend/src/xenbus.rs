//! The back-end half of the xenbus handshake, written once for every
//! split device.
//!
//! A device implements [`SplitBackend`] (its features, how it connects to
//! a front end's ring, what it does when notified). [`XenbusDevice`] runs
//! the state machine around it as an `event-manager` subscriber: it
//! publishes the features and goes `InitWait`; when the front end reaches
//! `Initialised` it reads `event-channel`, lets the device map its rings,
//! binds the event channel and goes `Connected`; when the front end closes
//! it disconnects and goes `Closed`. The store and event channels are
//! reached through the two small traits [`XenbusStore`] and [`EvtchnBinder`]
//! the VMM implements, so this crate stays independent of the VMM.

use crate::metrics::DeviceMetrics;
use crate::Notify;
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use pv_abi::xenbus::keys::{ERROR, EVENT_CHANNEL, STATE};
use pv_abi::xenbus::XenbusState;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use vmm_sys_util::eventfd::EventFd;
use xen_domain::grant_table::GrantTable;

/// Store access for a back-end (absolute paths, domain-0 rights).
pub trait XenbusStore: Send + Sync {
    /// Reads a node as text.
    fn read(&self, path: &str) -> Option<String>;
    /// Writes a node.
    fn write(&self, path: &str, value: &str) -> bool;
    /// Calls `wake` whenever `path` or anything below it changes.
    fn watch(&self, path: &str, wake: Arc<EventFd>) -> bool;
}

/// Event-channel binding for a back-end.
pub trait EvtchnBinder: Send + Sync {
    /// Binds domain 0 to the guest's unbound `port`; the back-end's `wake`
    /// fires on each guest notification. Returns how to notify the guest.
    fn bind(&self, port: u32, wake: Arc<EventFd>) -> Result<Arc<dyn Notify>, String>;
    /// Closes the binding.
    fn close(&self, port: u32);
}

/// What a connecting back-end may read from its front end's directory.
pub trait FrontendKeys {
    /// The value of `key` under the front end's directory.
    fn read(&self, key: &str) -> Option<String>;

    /// `key` as a decimal `u32` (strictly: [`pv_abi::xenbus::parse_u32`]),
    /// with a message naming the key otherwise.
    fn read_u32(&self, key: &str) -> Result<u32, String> {
        let v = self.read(key).ok_or_else(|| format!("front end has no '{key}'"))?;
        pv_abi::xenbus::parse_u32(v.as_bytes()).ok_or_else(|| format!("front end's '{key}' is not a number: {v:?}"))
    }
}

/// A device's back-end logic.
pub trait SplitBackend: Send + 'static {
    /// Device type in the store (`echo`, `vbd`, `vif`).
    fn device_type(&self) -> &'static str;
    /// The device's metrics (shared: readable while the device runs).
    fn metrics(&self) -> Arc<dyn DeviceMetrics>;
    /// `(key, value)` pairs published in the back-end directory before
    /// `InitWait` (`feature-*`, sizes...).
    fn features(&self) -> Vec<(String, String)>;
    /// Maps the front end's rings (through `grants`) and gets ready; the
    /// event channel is bound after this succeeds.
    fn connect(
        &mut self,
        front: &dyn FrontendKeys,
        grants: &Arc<GrantTable>,
        notify: Arc<dyn Notify>,
    ) -> Result<(), String>;
    /// Drops the mappings (the front end is closing).
    fn disconnect(&mut self);
    /// The front end notified us: do the work on the rings, at most
    /// [`PROCESS_BUDGET`] requests. Returns `true` if work was left over;
    /// the caller then re-queues the device behind the other ready ones,
    /// so a guest that keeps producing cannot starve the other devices on
    /// the thread.
    fn process(&mut self) -> bool;
}

/// Requests a back end handles per wake-up before yielding the device
/// thread to the other devices.
pub const PROCESS_BUDGET: usize = 256;

/// Where a device lives in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePaths {
    /// Front-end directory (`/local/domain/<guest>/device/<type>/<id>`).
    pub front: String,
    /// Back-end directory (`/local/domain/0/backend/<type>/<guest>/<id>`).
    pub back: String,
}

/// What the xenbus devices of one guest share: the store (domain 0's
/// handle), event-channel binding and the guest's grant table.
#[derive(Clone)]
pub struct XenbusHost {
    /// The store.
    pub store: Arc<dyn XenbusStore>,
    /// Event-channel binding.
    pub evtchn: Arc<dyn EvtchnBinder>,
    /// The guest's grant table.
    pub grants: Arc<GrantTable>,
}

/// A device wired to its guest: what the VMM keeps of it.
pub struct WiredDevice {
    /// Device type in the store.
    pub device_type: &'static str,
    /// Where it lives in the store.
    pub paths: DevicePaths,
    /// Its metrics.
    pub metrics: Arc<dyn DeviceMetrics>,
    /// The event handler to run on a device thread.
    pub subscriber: Arc<Mutex<dyn MutEventSubscriber + Send>>,
}

impl std::fmt::Debug for WiredDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WiredDevice").field("paths", &self.paths).field("metrics", &self.metrics).finish()
    }
}

/// A back end of any device type, as a device table holds it before
/// wiring: every [`SplitBackend`] is one.
pub trait XenbusBackend: Send {
    /// Device type in the store.
    fn device_type(&self) -> &'static str;
    /// Wraps the back end in a [`XenbusDevice`] at `paths` (which must
    /// exist) and returns what the VMM keeps.
    fn wire(self: Box<Self>, paths: DevicePaths, host: &XenbusHost) -> std::io::Result<WiredDevice>;
}

impl<B: SplitBackend> XenbusBackend for B {
    fn device_type(&self) -> &'static str {
        SplitBackend::device_type(self)
    }

    fn wire(self: Box<Self>, paths: DevicePaths, host: &XenbusHost) -> std::io::Result<WiredDevice> {
        let (device_type, metrics) = (SplitBackend::device_type(&*self), self.metrics());
        let dev = XenbusDevice::new(*self, paths, host)?;
        let paths = dev.paths().clone();
        Ok(WiredDevice { device_type, paths, metrics, subscriber: Arc::new(Mutex::new(dev)) })
    }
}

/// A device type the VMM can offer a guest (one line of
/// [`DEVICE_TYPES`](crate::DEVICE_TYPES)).
#[derive(Debug, Clone, Copy)]
pub struct DeviceType {
    /// Type name in the store and on the command line
    /// (`vmm run --device <name>[,<options>]`).
    pub name: &'static str,
    /// Store id of the `i`-th device of this type.
    pub id: fn(usize) -> u32,
    /// Whether each device gets a device thread of its own (disks: a slow
    /// one never delays another) rather than one shared by its type.
    pub own_thread: bool,
    /// Builds a back end from its options (the text after the first comma).
    pub build: fn(&str) -> Result<Box<dyn XenbusBackend>, String>,
}

/// A device asked for on the command line: `<type>[,<options>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceArg {
    /// The type name.
    pub device_type: String,
    /// Its options (may be empty).
    pub options: String,
}

impl DeviceArg {
    /// A device of type `device_type` with `options`.
    pub fn new(device_type: &str, options: &str) -> Self {
        DeviceArg { device_type: device_type.to_string(), options: options.to_string() }
    }

    /// Its type, if known.
    pub fn kind(&self) -> Result<&'static DeviceType, String> {
        crate::DEVICE_TYPES.iter().find(|t| t.name == self.device_type).ok_or_else(|| {
            let known: Vec<_> = crate::DEVICE_TYPES.iter().map(|t| t.name).collect();
            format!("unknown device type '{}' (known: {})", self.device_type, known.join(", "))
        })
    }
}

impl std::str::FromStr for DeviceArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (t, o) = s.split_once(',').unwrap_or((s, ""));
        let arg = DeviceArg::new(t, o);
        arg.kind()?;
        Ok(arg)
    }
}

/// The generic handshake driver and event handler around a [`SplitBackend`].
pub struct XenbusDevice<B: SplitBackend> {
    /// The device.
    pub backend: B,
    paths: DevicePaths,
    store: Arc<dyn XenbusStore>,
    evtchn: Arc<dyn EvtchnBinder>,
    grants: Arc<GrantTable>,
    store_wake: Arc<EventFd>,
    evtchn_wake: Arc<EventFd>,
    port: Option<u32>,
    log: crate::ratelimit::LogLimiter,
}

struct Keys<'a> {
    store: &'a dyn XenbusStore,
    dir: &'a str,
}

impl FrontendKeys for Keys<'_> {
    fn read(&self, key: &str) -> Option<String> {
        self.store.read(&format!("{}/{key}", self.dir))
    }
}

impl<B: SplitBackend> XenbusDevice<B> {
    /// Publishes the back-end directory (features, `InitWait`) and starts
    /// watching the front end. The front-end directory must exist already
    /// (the VMM creates both, as Xen's toolstack does).
    pub fn new(backend: B, paths: DevicePaths, host: &XenbusHost) -> std::io::Result<Self> {
        let XenbusHost { store, evtchn, grants } = host.clone();
        let store_wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK)?);
        let evtchn_wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK)?);
        for (k, v) in backend.features() {
            store.write(&format!("{}/{k}", paths.back), &v);
        }
        store.write(&format!("{}/{STATE}", paths.back), XenbusState::InitWait.as_str());
        if !store.watch(&format!("{}/{STATE}", paths.front), store_wake.clone()) {
            return Err(std::io::Error::other("cannot watch the front end's state"));
        }
        let log = crate::ratelimit::LogLimiter::default();
        Ok(XenbusDevice { backend, paths, store, evtchn, grants, store_wake, evtchn_wake, port: None, log })
    }

    /// The store paths of this device.
    pub fn paths(&self) -> &DevicePaths {
        &self.paths
    }

    fn set_state(&self, state: XenbusState) {
        self.store.write(&format!("{}/{STATE}", self.paths.back), state.as_str());
    }

    fn front_state(&self) -> Option<XenbusState> {
        self.store.read(&format!("{}/{STATE}", self.paths.front)).and_then(|s| XenbusState::parse(s.as_bytes()))
    }

    fn connect(&mut self) -> Result<(), String> {
        let keys = Keys { store: &*self.store, dir: &self.paths.front };
        let port = keys.read_u32(EVENT_CHANNEL)?;
        // Bind first so the device can notify from `connect` on.
        let notify = self.evtchn.bind(port, self.evtchn_wake.clone())?;
        if let Err(e) = self.backend.connect(&keys, &self.grants, notify) {
            self.evtchn.close(port);
            return Err(e);
        }
        self.port = Some(port);
        Ok(())
    }

    fn disconnect(&mut self) {
        if let Some(port) = self.port.take() {
            self.backend.disconnect();
            self.evtchn.close(port);
        }
    }

    /// Re-reads the front end's state and moves the handshake on.
    pub fn frontend_changed(&mut self) {
        match self.front_state() {
            Some(XenbusState::Initialised) | Some(XenbusState::Connected) if self.port.is_none() => {
                match self.connect() {
                    Ok(()) => self.set_state(XenbusState::Connected),
                    Err(e) => {
                        crate::limited_warn!(self.log, "{}: cannot connect: {e}", self.paths.back);
                        self.store.write(&format!("{}/{ERROR}", self.paths.back), &e);
                        self.set_state(XenbusState::Closing);
                    }
                }
            }
            Some(XenbusState::Closing) | Some(XenbusState::Closed) => {
                self.disconnect();
                self.set_state(XenbusState::Closed);
            }
            Some(XenbusState::Initialising) if self.port.is_none() => self.set_state(XenbusState::InitWait),
            _ => {}
        }
    }
}

impl<B: SplitBackend> MutEventSubscriber for XenbusDevice<B> {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if !events.event_set().contains(EventSet::IN) {
            return;
        }
        if events.fd() == self.store_wake.as_raw_fd() {
            let _ = self.store_wake.read();
            self.frontend_changed();
        } else if events.fd() == self.evtchn_wake.as_raw_fd() {
            let _ = self.evtchn_wake.read();
            if self.port.is_some() && self.backend.process() {
                // Work left: come back after the other ready devices.
                let _ = self.evtchn_wake.write(1);
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for fd in [&self.store_wake, &self.evtchn_wake] {
            if let Err(e) = ops.add(Events::new(&**fd, EventSet::IN)) {
                tracing::error!("{}: cannot watch eventfd: {e}", self.paths.back);
            }
        }
        // The front end may have moved before we started watching.
        self.frontend_changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_args_name_a_known_type() {
        let a: DeviceArg = "vbd,/x/d.img,readonly".parse().unwrap();
        assert_eq!(a, DeviceArg::new("vbd", "/x/d.img,readonly"));
        assert_eq!("echo".parse::<DeviceArg>().unwrap(), DeviceArg::new("echo", ""));
        let e = "nosuch,1".parse::<DeviceArg>().unwrap_err();
        assert!(e.contains("unknown device type 'nosuch'") && e.contains("echo, vbd"), "{e}");
        let kind = DeviceArg::new("echo", "x").kind().unwrap();
        assert!((kind.build)("x").is_err(), "echo takes no options");
        assert_eq!(((kind.build)("").unwrap()).device_type(), "echo");
        let vbd = DeviceArg::new("vbd", "").kind().unwrap();
        assert_eq!(((vbd.id)(0), (vbd.id)(1)), (51712, 51728), "xvda, xvdb");
    }
}
