//! The back-end half of the xenbus handshake, written once for every
//! split device.
//!
//! A device implements [`SplitBackend`] (its features, how it connects to
//! a front end's ring, what it does when notified). [`XenbusDevice`] runs
//! the state machine around it as an `event-manager` subscriber: it
//! publishes the features and goes `InitWait`; when the front end reaches
//! `Initialised` it reads `event-channel`, lets the device map its rings,
//! binds the event channel and goes `Connected`; when the front end closes
//! it disconnects and goes `Closed`. The store is reached through the
//! store's own [`XenbusStore`] and [`FrontendKeys`] (defined by pv-store,
//! which knows nothing of devices), event channels through [`EvtchnBinder`]
//! the VMM implements, so this crate stays independent of the VMM.

use crate::Notify;
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use pv_abi::xenbus::keys::{ERROR, EVENT_CHANNEL, MULTI_QUEUE_NUM_QUEUES, QUEUE_PREFIX, STATE};
use pv_abi::xenbus::XenbusState;
use pv_util::metrics::DeviceMetrics;
use pv_util::ratelimit::SharedLogLimiter;
use std::sync::{Arc, Mutex};
use vmm_sys_util::eventfd::EventFd;
use xen_domain::grant_table::GrantTable;

pub use pv_store::xenbus::{DevicePaths, FrontendKeys, XenbusStore};

pub use crate::bind_error::BindError;
pub use crate::ring_page::ConnectError;

/// Event-channel binding for a back-end.
pub trait EvtchnBinder: Send + Sync {
    /// Binds domain 0 to the guest's unbound `port`; the back-end's `wake`
    /// fires on each guest notification. Returns how to notify the guest.
    fn bind(&self, port: u32, wake: Arc<EventFd>) -> Result<Arc<dyn Notify>, BindError>;
    /// Closes the binding.
    fn close(&self, port: u32);
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
    /// event channel is bound after this succeeds. Guest-caused log lines
    /// of the connection go through `log`: the device's one budget for its
    /// whole life (a clone of it), so reconnecting never resets it.
    fn connect(
        &mut self,
        front: &dyn FrontendKeys,
        grants: &Arc<GrantTable>,
        notify: Arc<dyn Notify>,
        log: &SharedLogLimiter,
    ) -> Result<(), ConnectError>;
    /// Drops the mappings (the front end is closing).
    fn disconnect(&mut self);
    /// The most queues (rings) this device serves: published as
    /// `multi-queue-max-queues` by the device's features when above 1;
    /// 1 (the default) means the multi-queue keys are ignored.
    fn max_queues(&self) -> u32 {
        1
    }
    /// The eventfd that wakes queue `q` (`1 <= q < max_queues()`): queue 0
    /// is served by [`process`](Self::process) on the device's own thread,
    /// queue `q` by `queue_subscribers()[q - 1]` on a thread of its own.
    fn queue_wake(&self, _q: u32) -> Option<Arc<EventFd>> {
        None
    }
    /// The subscribers serving queues 1.. (one each; the VMM gives each
    /// a thread of its own). Called once, when the device is wired.
    fn queue_subscribers(&self) -> Vec<Arc<Mutex<dyn MutEventSubscriber + Send>>> {
        Vec::new()
    }
    /// Maps the rings of `notifies.len()` (> 1) queues, whose keys the
    /// front end wrote under `queue-<N>/` (`multi-queue-num-queues`); queue
    /// N notifies the guest through `notifies[N]`. Only called when
    /// [`max_queues`](Self::max_queues) allows that many.
    fn connect_queues(
        &mut self,
        front: &dyn FrontendKeys,
        grants: &Arc<GrantTable>,
        notifies: Vec<Arc<dyn Notify>>,
        log: &SharedLogLimiter,
    ) -> Result<(), ConnectError> {
        let _ = (front, grants, log);
        Err(ConnectError::Queues { requested: notifies.len() as u32, max: self.max_queues() })
    }
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
    /// The handlers of the device's queues 1.. (multi-queue), each to run
    /// on a thread of its own: no queue waits for another.
    pub queue_subscribers: Vec<Arc<Mutex<dyn MutEventSubscriber + Send>>>,
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
        let queue_subscribers = self.queue_subscribers();
        let dev = XenbusDevice::new(*self, paths, host)?;
        let paths = dev.paths().clone();
        Ok(WiredDevice { device_type, paths, metrics, subscriber: Arc::new(Mutex::new(dev)), queue_subscribers })
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
    pub build: fn(&str) -> Result<Box<dyn XenbusBackend>, BuildError>,
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
    pub fn kind(&self) -> Result<&'static DeviceType, UnknownDeviceType> {
        crate::DEVICE_TYPES.iter().find(|t| t.name == self.device_type).ok_or_else(|| UnknownDeviceType {
            name: self.device_type.clone(),
            known: crate::DEVICE_TYPES.iter().map(|t| t.name).collect::<Vec<_>>().join(", "),
        })
    }
}

/// Why a back end could not be built from its options.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The disk spec is bad or the disk cannot be opened.
    #[error(transparent)]
    Disk(#[from] crate::block::DiskError),
    /// The net spec is bad.
    #[error(transparent)]
    NetSpec(#[from] crate::net::NetSpecError),
    /// The tap device cannot be opened.
    #[error(transparent)]
    Tap(#[from] crate::net::tap::TapError),
    /// The echo device was given options.
    #[error("echo takes no options (got '{0}')")]
    EchoOptions(String),
}

/// A device type name no back end in [`crate::DEVICE_TYPES`] has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown device type '{name}' (known: {known})")]
pub struct UnknownDeviceType {
    /// The name asked for.
    pub name: String,
    /// The known names, comma-separated.
    pub known: String,
}

impl std::str::FromStr for DeviceArg {
    type Err = UnknownDeviceType;

    fn from_str(s: &str) -> Result<Self, UnknownDeviceType> {
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
    /// The event channels bound for the connection, one per queue (empty
    /// while disconnected).
    ports: Vec<u32>,
    /// The device's guest-caused log budget for the VM's lifetime, shared
    /// with every connection ([`SplitBackend::connect`]).
    log: SharedLogLimiter,
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
        let log = SharedLogLimiter::default();
        Ok(XenbusDevice { backend, paths, store, evtchn, grants, store_wake, evtchn_wake, ports: Vec::new(), log })
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

    /// The queues the front end asks for, as Linux's blkback and netback
    /// read them (`connect_ring()` in `drivers/block/xen-blkback/xenbus.c`,
    /// `connect()` in `drivers/net/xen-netback/xenbus.c`):
    /// `multi-queue-num-queues`, 1 when absent; 0 or above our maximum is
    /// refused ("guest requested N queues, exceeding the maximum of M").
    fn num_queues(&self, keys: &dyn FrontendKeys) -> Result<u32, ConnectError> {
        let max = self.backend.max_queues();
        if max <= 1 || keys.read(MULTI_QUEUE_NUM_QUEUES).is_none() {
            return Ok(1);
        }
        let requested = keys.read_u32(MULTI_QUEUE_NUM_QUEUES).map_err(ConnectError::FrontendKey)?;
        if requested == 0 || requested > max {
            return Err(ConnectError::Queues { requested, max });
        }
        Ok(requested)
    }

    /// Binds queue `q`'s event channel (`event-channel` with one queue,
    /// `queue-<q>/event-channel` with several), waking the queue's server.
    fn bind_queue(&mut self, keys: &dyn FrontendKeys, q: u32, queues: u32) -> Result<Arc<dyn Notify>, ConnectError> {
        let key = if queues == 1 { EVENT_CHANNEL.to_string() } else { format!("{QUEUE_PREFIX}{q}/{EVENT_CHANNEL}") };
        let port = keys.read_u32(&key).map_err(ConnectError::FrontendKey)?;
        let wake = if q == 0 { Some(self.evtchn_wake.clone()) } else { self.backend.queue_wake(q) };
        let wake = wake.ok_or(ConnectError::Queues { requested: queues, max: self.backend.max_queues() })?;
        let notify = self.evtchn.bind(port, wake)?;
        self.ports.push(port);
        Ok(notify)
    }

    fn connect(&mut self) -> Result<(), ConnectError> {
        let (store, dir) = (self.store.clone(), self.paths.front.clone());
        let keys = Keys { store: &*store, dir: &dir };
        // Bind first so the device can notify from `connect` on.
        let r = self.num_queues(&keys).and_then(|queues| {
            let notifies = (0..queues).map(|q| self.bind_queue(&keys, q, queues)).collect::<Result<Vec<_>, _>>()?;
            match <[_; 1]>::try_from(notifies) {
                Ok([notify]) => self.backend.connect(&keys, &self.grants, notify, &self.log),
                Err(notifies) => self.backend.connect_queues(&keys, &self.grants, notifies, &self.log),
            }
        });
        if r.is_err() {
            for port in std::mem::take(&mut self.ports) {
                self.evtchn.close(port);
            }
        }
        r
    }

    fn disconnect(&mut self) {
        if !self.ports.is_empty() {
            self.backend.disconnect();
            for port in std::mem::take(&mut self.ports) {
                self.evtchn.close(port);
            }
        }
    }

    /// Re-reads the front end's state and moves the handshake on.
    pub fn frontend_changed(&mut self) {
        match self.front_state() {
            Some(XenbusState::Initialised) | Some(XenbusState::Connected) if self.ports.is_empty() => {
                match self.connect() {
                    Ok(()) => self.set_state(XenbusState::Connected),
                    Err(e) => {
                        pv_util::limited_warn!(self.log, "{}: cannot connect: {e}", self.paths.back);
                        self.store.write(&format!("{}/{ERROR}", self.paths.back), &e.to_string());
                        self.set_state(XenbusState::Closing);
                    }
                }
            }
            Some(XenbusState::Closing) | Some(XenbusState::Closed) => {
                self.disconnect();
                self.set_state(XenbusState::Closed);
            }
            Some(XenbusState::Initialising) if self.ports.is_empty() => self.set_state(XenbusState::InitWait),
            _ => {}
        }
    }
}

/// The data word each event source is registered with, so `process`
/// tells sources apart by what they are rather than by raw fd number.
/// One list for every subscriber that wraps a [`XenbusDevice`], so a
/// wrapper's own sources never collide with the device's.
pub(crate) mod token {
    /// The device's store watch eventfd.
    pub const STORE_WAKE: u32 = 0;
    /// The device's event-channel doorbell eventfd.
    pub const EVTCHN_WAKE: u32 = 1;
    /// netback: the TAP port.
    pub const NET_PORT: u32 = 2;
    /// netback: the receive poll timer.
    pub const NET_RX_POLL: u32 = 3;
    /// netback: queue N's event-channel eventfd is `NET_QUEUE_BASE + N`
    /// (N >= 1; queue 0 is [`EVTCHN_WAKE`]).
    pub const NET_QUEUE_BASE: u32 = 16;
}

impl<B: SplitBackend> MutEventSubscriber for XenbusDevice<B> {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if !events.event_set().contains(EventSet::IN) {
            return;
        }
        if events.data() == token::STORE_WAKE {
            let _ = self.store_wake.read();
            self.frontend_changed();
        } else if events.data() == token::EVTCHN_WAKE {
            let _ = self.evtchn_wake.read();
            if !self.ports.is_empty() && self.backend.process() {
                // Work left: come back after the other ready devices.
                let _ = self.evtchn_wake.write(1);
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (fd, token) in [(&self.store_wake, token::STORE_WAKE), (&self.evtchn_wake, token::EVTCHN_WAKE)] {
            if let Err(e) = ops.add(Events::with_data(&**fd, token, EventSet::IN)) {
                tracing::error!("{}: cannot watch eventfd: {e}", self.paths.back);
            }
        }
        // The front end may have moved before we started watching.
        self.frontend_changed();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::net::harness::{CountNotify, HostNetFront, RX_RING_REF, TX_RING_REF};
    use crate::net::{peer, NetBackend};
    use pv_abi::netif::{keys as nk, NetifTxRequest};
    use pv_util::ratelimit::LogLimiter;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    /// A store in a map, for back-end tests that drive the handshake
    /// themselves (`frontend_changed`), here and in `block::mq_tests`.
    #[derive(Default)]
    pub(crate) struct MapStore(Mutex<BTreeMap<String, String>>);

    impl XenbusStore for MapStore {
        fn read(&self, path: &str) -> Option<String> {
            self.0.lock().unwrap().get(path).cloned()
        }
        fn write(&self, path: &str, value: &str) -> bool {
            self.0.lock().unwrap().insert(path.to_owned(), value.to_owned());
            true
        }
        fn watch(&self, _: &str, _: Arc<EventFd>) -> bool {
            true // the test calls `frontend_changed` itself
        }
    }

    struct Binder;

    impl EvtchnBinder for Binder {
        fn bind(&self, _: u32, _: Arc<EventFd>) -> Result<Arc<dyn Notify>, BindError> {
            Ok(Arc::new(CountNotify::default()))
        }
        fn close(&self, _: u32) {}
    }

    /// Counts WARN events.
    struct CountWarns(Arc<AtomicUsize>);

    impl tracing::Subscriber for CountWarns {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, e: &tracing::Event<'_>) {
            if *e.metadata().level() == tracing::Level::WARN {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    /// A netfront that connects, sends 12 packets netback refuses, and
    /// disconnects, 60 times over, through the real handshake driver: the
    /// log sees one device's budget (at most `BURST` lines plus one
    /// "suppressed" line per window), not 60 fresh ones (600 lines before).
    #[test]
    fn reconnecting_netfront_gets_one_log_budget() {
        let mut front = HostNetFront::new(4).unwrap();
        let store = Arc::new(MapStore::default());
        let host = XenbusHost { store: store.clone(), evtchn: Arc::new(Binder), grants: front.grants().clone() };
        let paths = DevicePaths {
            front: "/local/domain/1/device/vif/0".into(),
            back: "/local/domain/0/backend/vif/1/0".into(),
        };
        let f = |k: &str| format!("{}/{k}", paths.front);
        for (k, v) in [
            (EVENT_CHANNEL, "5".to_string()),
            (nk::TX_RING_REF, TX_RING_REF.to_string()),
            (nk::RX_RING_REF, RX_RING_REF.to_string()),
            (nk::REQUEST_RX_COPY, "1".into()),
            (nk::FEATURE_RX_NOTIFY, "1".into()),
            (STATE, XenbusState::Initialising.as_str().into()),
        ] {
            store.write(&f(k), &v);
        }
        let (port, _peer) = peer::pair(true).unwrap();
        let mut dev =
            XenbusDevice::new(NetBackend::new(Box::new(port), [2, 0, 0, 0, 0, 1]), paths.clone(), &host).unwrap();
        let warns = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let mut id = 0u16;
        tracing::subscriber::with_default(CountWarns(warns.clone()), || {
            for _ in 0..60 {
                store.write(&f(STATE), XenbusState::Initialised.as_str());
                dev.frontend_changed();
                let back_state = store.read(&format!("{}/{STATE}", paths.back));
                assert_eq!(back_state.as_deref(), Some(XenbusState::Connected.as_str()));
                for _ in 0..12 {
                    id = id.wrapping_add(1);
                    // A grant the front end never gave: refused and logged.
                    front.push_tx(&NetifTxRequest { gref: 999, offset: 0, flags: 0, id, size: 60 }).unwrap();
                }
                front.publish_tx();
                dev.backend.process();
                assert_eq!(std::iter::from_fn(|| front.pop_tx().ok().flatten()).count(), 12);
                store.write(&f(STATE), XenbusState::Closing.as_str());
                dev.frontend_changed();
            }
        });
        assert_eq!(dev.backend.net_metrics().snapshot().tx_errors, 720, "every refusal still counted");
        let windows = (start.elapsed().as_secs_f64() / LogLimiter::WINDOW.as_secs_f64()).floor() as usize + 1;
        let lines = warns.load(Ordering::SeqCst);
        let budget = windows * (LogLimiter::BURST as usize + 1);
        assert!((1..=budget).contains(&lines), "{lines} warnings for 720 refusals (budget {budget})");
    }

    /// netif multi-queue through the handshake driver (`netif.h`
    /// "Multi-queue"; Linux's netback `connect()`): two queues connect,
    /// each with its own rings; 0, 5 or a missing queue key is refused
    /// with the back end going Closing and saying why.
    #[test]
    fn netback_connects_two_queues_and_refuses_bad_queue_keys() {
        let front = HostNetFront::new(8).unwrap();
        let paths = DevicePaths {
            front: "/local/domain/1/device/vif/0".into(),
            back: "/local/domain/0/backend/vif/1/0".into(),
        };
        let f = |k: &str| format!("{}/{k}", paths.front);
        let g = |i: u32| front.page_gref(i).to_string();
        type Keys = Vec<(&'static str, String)>;
        let two: Keys = vec![
            ("multi-queue-num-queues", "2".into()),
            ("queue-0/tx-ring-ref", TX_RING_REF.to_string()),
            ("queue-0/rx-ring-ref", RX_RING_REF.to_string()),
            ("queue-0/event-channel", "5".into()),
            ("queue-1/tx-ring-ref", g(0)),
            ("queue-1/rx-ring-ref", g(1)),
            ("queue-1/event-channel", "6".into()),
        ];
        let with = |num: &str, drop: Option<&str>| -> Keys {
            two.iter()
                .filter(|(k, _)| Some(*k) != drop)
                .map(|(k, v)| (*k, if *k == "multi-queue-num-queues" { num.to_string() } else { v.clone() }))
                .collect()
        };
        let cases: [(Keys, Option<&str>); 4] = [
            (with("2", None), None),
            (with("0", None), Some("guest requested 0 queues, exceeding the maximum of 4.")),
            (with("5", None), Some("guest requested 5 queues, exceeding the maximum of 4.")),
            (with("2", Some("queue-1/rx-ring-ref")), Some("front end has no 'queue-1/rx-ring-ref'")),
        ];
        for (keys, refused) in cases {
            let store = Arc::new(MapStore::default());
            let host = XenbusHost { store: store.clone(), evtchn: Arc::new(Binder), grants: front.grants().clone() };
            for (k, v) in keys
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .chain([(nk::REQUEST_RX_COPY, "1".to_string()), (STATE, XenbusState::Initialised.as_str().to_string())])
            {
                store.write(&f(k), &v);
            }
            let (port, _peer) = peer::pair(true).unwrap();
            let mut dev =
                XenbusDevice::new(NetBackend::new(Box::new(port), [2, 0, 0, 0, 0, 1]), paths.clone(), &host).unwrap();
            assert_eq!(store.read(&format!("{}/multi-queue-max-queues", paths.back)).as_deref(), Some("4"));
            dev.frontend_changed();
            let state = store.read(&format!("{}/{STATE}", paths.back));
            match refused {
                None => {
                    assert_eq!(state.as_deref(), Some(XenbusState::Connected.as_str()));
                    assert!(dev.backend.dev.is_some() && dev.backend.more.len() == 1, "two queues");
                    assert_eq!(front.grants().mapped_refs(), 4, "two rings per queue");
                }
                Some(why) => {
                    assert_eq!(state.as_deref(), Some(XenbusState::Closing.as_str()), "{why}");
                    let err = store.read(&format!("{}/{ERROR}", paths.back)).unwrap_or_default();
                    assert!(err.contains(why), "{err:?} for {why:?}");
                    assert!(dev.backend.dev.is_none() && dev.backend.more.is_empty());
                    assert_eq!(front.grants().mapped_refs(), 0, "nothing left mapped");
                }
            }
        }
    }

    #[test]
    fn device_args_name_a_known_type() {
        let a: DeviceArg = "vbd,/x/d.img,readonly".parse().unwrap();
        assert_eq!(a, DeviceArg::new("vbd", "/x/d.img,readonly"));
        assert_eq!("echo".parse::<DeviceArg>().unwrap(), DeviceArg::new("echo", ""));
        let e = "nosuch,1".parse::<DeviceArg>().unwrap_err().to_string();
        assert!(e.contains("unknown device type 'nosuch'") && e.contains("echo, vbd"), "{e}");
        let kind = DeviceArg::new("echo", "x").kind().unwrap();
        assert!((kind.build)("x").is_err(), "echo takes no options");
        assert_eq!(((kind.build)("").unwrap()).device_type(), "echo");
        let vbd = DeviceArg::new("vbd", "").kind().unwrap();
        assert_eq!(((vbd.id)(0), (vbd.id)(1)), (51712, 51728), "xvda, xvdb");
    }
}
