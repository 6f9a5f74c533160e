//! Disk and network hot-plug through xenbus, as `xl block-attach` /
//! `block-detach` and `network-attach` / `network-detach` do
//! (`tools/libs/light/libxl_disk.c`, `libxl_nic.c`, `libxl_device.c`).
//!
//! Attach builds the back end (opening the image, or attaching the TAP
//! device), creates its two store directories (`device/vbd/<vdev>` and
//! `backend/vbd/<domid>/<vdev>`; `device/vif/<handle>` and
//! `backend/vif/<domid>/<handle>`) and starts its device thread; the
//! guest's front end notices through its watch on `device/vbd` or
//! `device/vif` and runs the handshake. Detach moves the back end
//! to `Closing` (and `online = 0`), as `libxl__initiate_device_generic_remove()`
//! does, and waits for the back end to reach `Closed` (it follows the front
//! end's close); after the timeout (`LIBXL_DESTROY_TIMEOUT`, 10 s, by
//! default) it forces the removal as libxl's `device_backend_callback()`
//! does (`force = 1`). Either way the device thread stops, bindings the
//! back end still holds are closed and both directories are removed
//! (`libxl__device_destroy()`).
//!
//! Disks given with `--disk` can be detached the same way: the builder
//! hands each one's device thread to the hot-plug thread ([`ColdDisk`]).
//!
//! The work happens on a thread of its own ([`HotplugThread`]), started
//! while the VM is built, under [`ThreadKind::Hotplug`]: it may open
//! images and start device threads, which the API thread's filter
//! forbids (a thread inherits its parent's filter, so device threads must
//! not be started from the API thread). Requests reach it through a
//! [`Hotplug`] handle.

use crate::device_spec::DeviceSpec;
use crate::devices::{DeviceThread, EvtchnAdapter};
use crate::seccomp::ThreadKind;
use backend::xenbus::{DevicePaths, XenbusHost};
use pv_abi::event_channel::DomId;
use pv_abi::xenbus::XenbusState;
use pv_store::SharedStore;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use xen_domain::event_channel::EventChannels;
use xen_domain::grant_table::GrantTable;

/// How long a detach waits for the front end to close before forcing:
/// `LIBXL_DESTROY_TIMEOUT` (`tools/libs/light/libxl_internal.h`).
pub const DESTROY_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest detach timeout a request may ask for.
pub const MAX_DESTROY_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a detach looks at the back end's state.
const POLL: Duration = Duration::from_millis(10);

/// At most this many hot-plugged devices at once (each has a thread).
pub const MAX_HOTPLUGGED: usize = 16;

/// Why a hot-plug request failed.
#[derive(Debug, thiserror::Error)]
pub enum HotplugError {
    /// The device spec is bad or its back end cannot be built.
    #[error("{0}")]
    BadDevice(String),
    /// The id names no hot-plugged device.
    #[error("no hot-plugged device {0}: give the id `add-disk` or `add-net` answered (`vbd/<n>`, `<n>` or a disk name such as `xvdb`, `vif/<n>`); Xen disks given with --disk and devices added at run time can be removed")]
    NoDevice(String),
    /// The device number is taken.
    #[error("device/{0}/{1} exists already: give the disk another vdev=")]
    Exists(&'static str, u32),
    /// Too many devices.
    #[error("{MAX_HOTPLUGGED} hot-plugged devices at most: remove one first")]
    TooMany,
    /// The store or a thread failed.
    #[error("{0}")]
    Host(String),
    /// The VM has ended (or is being torn down).
    #[error("the VM is not running")]
    NotRunning,
}

/// How a detach ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The front end closed and the back end reached `Closed`.
    Closed,
    /// The front end did not close within the timeout: removed anyway
    /// (`xl block-detach -f`).
    Forced,
}

impl Removal {
    /// The name in API answers.
    pub fn name(self) -> &'static str {
        match self {
            Removal::Closed => "closed",
            Removal::Forced => "forced",
        }
    }
}

/// A device added at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugged {
    /// `vbd/<vdev>` or `vif/<handle>`.
    pub id: String,
    /// Its store directories.
    pub paths: DevicePaths,
}

enum Request {
    Add(DeviceSpec, Sender<Result<Plugged, HotplugError>>),
    Remove(String, Duration, Sender<Result<Removal, HotplugError>>),
    Stop,
}

/// A hot-plugged device's id, back-end path and counters.
pub type Listed = (String, String, Arc<dyn pv_util::metrics::DeviceMetrics>);

/// A handle on the VM's hot-plug thread (cheap to clone).
#[derive(Clone)]
pub struct Hotplug {
    tx: Arc<Mutex<Sender<Request>>>,
    /// The devices plugged now, as the thread last published them.
    listed: Arc<Mutex<Vec<Listed>>>,
}

impl std::fmt::Debug for Hotplug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hotplug")
    }
}

impl Hotplug {
    fn ask<T>(&self, make: impl FnOnce(Sender<Result<T, HotplugError>>) -> Request) -> Result<T, HotplugError> {
        let (tx, rx) = channel();
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).send(make(tx)).map_err(|_| HotplugError::NotRunning)?;
        rx.recv().map_err(|_| HotplugError::NotRunning)?
    }

    /// Attaches the disk `spec` (`--disk` syntax), as `xl block-attach`.
    pub fn add_disk(&self, spec: DeviceSpec) -> Result<Plugged, HotplugError> {
        if !spec.is_disk() {
            return Err(HotplugError::BadDevice("add-disk takes a disk".into()));
        }
        self.ask(|tx| Request::Add(spec, tx))
    }

    /// Attaches the network interface `spec` (`--net` syntax), as `xl
    /// network-attach`.
    pub fn add_net(&self, spec: DeviceSpec) -> Result<Plugged, HotplugError> {
        if !matches!(spec, DeviceSpec::Net(_)) {
            return Err(HotplugError::BadDevice("add-net takes a network interface".into()));
        }
        self.ask(|tx| Request::Add(spec, tx))
    }

    /// The devices hot-plugged now (`GET /vm.stats`), without waiting for
    /// a request the thread is serving.
    pub fn devices(&self) -> Vec<Listed> {
        self.listed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Detaches hot-plugged device `id` (`vbd/<vdev>`, the vdev's number
    /// or its name), waiting up to `timeout` for the front end to close.
    pub fn remove(&self, id: &str, timeout: Duration) -> Result<Removal, HotplugError> {
        self.ask(|tx| Request::Remove(id.to_string(), timeout.min(MAX_DESTROY_TIMEOUT), tx))
    }
}

/// What the hot-plug thread needs of the guest.
pub struct HotplugHost {
    /// The store.
    pub store: SharedStore,
    /// The guest.
    pub domid: DomId,
    /// Its event channels.
    pub evtchn: Arc<EventChannels>,
    /// Its grant table.
    pub grants: Arc<GrantTable>,
}

/// One device the thread can remove: hot-plugged, or a cold-plugged
/// disk handed over when the VM was built ([`ColdDisk`]).
struct Device {
    plugged: Plugged,
    metrics: Arc<dyn pv_util::metrics::DeviceMetrics>,
    thread: DeviceThread,
    /// A cold-plugged multi-queue disk's further queues' threads.
    queues: Vec<DeviceThread>,
    binder: Arc<EvtchnAdapter>,
    store: Arc<TrackedStore>,
    /// Cold-plugged (listed with the VM's devices, not as hot-plugged).
    cold: bool,
}

impl Device {
    /// Stops its threads: the back end and what it holds (the image
    /// lock, grant mappings) go with the last reference.
    fn stop(&mut self) {
        self.thread.stop();
        for q in &mut self.queues {
            q.stop();
        }
    }
}

/// A cold-plugged Xen disk (`--disk`), given to the hot-plug thread so
/// `remove-device` can detach it as it detaches a hot-plugged one: its
/// own device thread, event-channel binder and tracked store handle.
pub struct ColdDisk {
    /// `vbd/<vdev>` and its store directories.
    pub plugged: Plugged,
    /// Its counters.
    pub metrics: Arc<dyn pv_util::metrics::DeviceMetrics>,
    /// Its device thread (serving this disk only).
    pub thread: DeviceThread,
    /// The threads of its queues 1.. (`pv-vbd<i>q<N>`, each serving
    /// that queue only): stopped with it, so the image lock goes too.
    pub queues: Vec<DeviceThread>,
    /// The binder its back end was wired with.
    pub binder: Arc<EvtchnAdapter>,
    /// The store handle its back end was wired with.
    pub store: Arc<TrackedStore>,
}

/// The store as one removable back end reaches it, remembering the
/// host watches it registers so a detach removes them (each holds the
/// back end's eventfd; without this every attach/detach cycle would
/// leave one behind).
pub struct TrackedStore {
    store: SharedStore,
    watches: Mutex<Vec<(String, String)>>,
}

impl TrackedStore {
    /// A handle on `store` that tracks its watches.
    pub fn new(store: SharedStore) -> Self {
        TrackedStore { store, watches: Mutex::default() }
    }

    fn unwatch_all(&self) {
        for (path, token) in std::mem::take(&mut *self.watches.lock().unwrap_or_else(|p| p.into_inner())) {
            if let Err(e) = self.store.unwatch_host(&path, &token) {
                tracing::debug!(path, "hot-unplug: cannot remove a watch: {e}");
            }
        }
    }
}

impl backend::xenbus::XenbusStore for TrackedStore {
    fn read(&self, path: &str) -> Option<String> {
        backend::xenbus::XenbusStore::read(&self.store, path)
    }

    fn write(&self, path: &str, value: &str) -> bool {
        backend::xenbus::XenbusStore::write(&self.store, path, value)
    }

    fn watch(&self, path: &str, wake: Arc<vmm_sys_util::eventfd::EventFd>) -> bool {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let token = format!("hotplug-wake-{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let sink = Arc::new(move |_: &pv_store::WatchEvent| {
            if let Err(e) = wake.write(1) {
                tracing::warn!("store watch: cannot signal the back end: {e}");
            }
        });
        match self.store.watch_host(path, &token, sink) {
            Ok(()) => {
                self.watches.lock().unwrap_or_else(|p| p.into_inner()).push((path.to_string(), token));
                true
            }
            Err(e) => {
                tracing::warn!(path, "store watch failed: {e}");
                false
            }
        }
    }
}

/// The hot-plug thread; stops (with every hot-plugged device) when dropped.
pub struct HotplugThread {
    handle: Hotplug,
    thread: Option<JoinHandle<()>>,
}

impl HotplugThread {
    /// Starts the thread serving `host`, which may also remove the
    /// cold-plugged disks `cold`.
    pub fn start(host: HotplugHost, cold: Vec<ColdDisk>) -> std::io::Result<Self> {
        let (tx, rx) = channel();
        let listed: Arc<Mutex<Vec<Listed>>> = Arc::default();
        let published = listed.clone();
        let thread = std::thread::Builder::new().name("hotplug".into()).spawn(move || {
            // std seeds this thread's hash keys with `getrandom` on first
            // use (the event loop of each device thread it starts holds a
            // HashMap): seed them before the filter, which refuses it.
            let _ = std::collections::hash_map::RandomState::new();
            crate::seccomp::install_or_exit(ThreadKind::Hotplug);
            let devices = cold
                .into_iter()
                .map(|c| Device {
                    plugged: c.plugged,
                    metrics: c.metrics,
                    thread: c.thread,
                    queues: c.queues,
                    binder: c.binder,
                    store: c.store,
                    cold: true,
                })
                .collect();
            serve(host, rx, &published, devices);
        })?;
        Ok(HotplugThread { handle: Hotplug { tx: Arc::new(Mutex::new(tx)), listed }, thread: Some(thread) })
    }

    /// A handle for requests.
    pub fn handle(&self) -> Hotplug {
        self.handle.clone()
    }
}

impl Drop for HotplugThread {
    fn drop(&mut self) {
        let _ = self.handle.tx.lock().unwrap_or_else(|p| p.into_inner()).send(Request::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(host: HotplugHost, rx: Receiver<Request>, listed: &Mutex<Vec<Listed>>, mut devices: Vec<Device>) {
    let publish = |devices: &[Device]| {
        *listed.lock().unwrap_or_else(|p| p.into_inner()) = devices
            .iter()
            .filter(|d| !d.cold)
            .map(|d| (d.plugged.id.clone(), d.plugged.paths.back.clone(), d.metrics.clone()))
            .collect();
    };
    while let Ok(req) = rx.recv() {
        match req {
            Request::Add(spec, reply) => {
                let _ = reply.send(add_device(&host, &mut devices, &spec));
            }
            Request::Remove(id, timeout, reply) => {
                let _ = reply.send(remove(&host, &mut devices, &id, timeout));
            }
            Request::Stop => break,
        }
        publish(&devices);
    }
    publish(&[]);
    // The VM ends: device threads stop before guest memory goes.
    for mut d in devices {
        d.stop();
    }
}

/// The first `xvd` number (xvda, xvdb, ...) not under `device/vbd`.
fn free_vdev(store: &SharedStore, domid: DomId) -> u32 {
    let used = store.directory(&format!("/local/domain/{domid}/device/vbd")).unwrap_or_default();
    (0..).map(backend::block::vbd_vdev).find(|v| !used.iter().any(|u| *u == v.to_string())).unwrap_or(51712)
}

/// libxl's `libxl__device_nextid()` for a vif: one past the highest
/// handle under `device/vif` (0 for the first).
fn next_vif_handle(store: &SharedStore, domid: DomId) -> u32 {
    let used = store.directory(&format!("/local/domain/{domid}/device/vif")).unwrap_or_default();
    used.iter().filter_map(|u| u.parse::<u32>().ok()).max().map_or(0, |m| m.saturating_add(1))
}

fn add_device(host: &HotplugHost, devices: &mut Vec<Device>, spec: &DeviceSpec) -> Result<Plugged, HotplugError> {
    if devices.iter().filter(|d| !d.cold).count() >= MAX_HOTPLUGGED {
        return Err(HotplugError::TooMany);
    }
    let net = matches!(spec, DeviceSpec::Net(_));
    let Some((arg, id)) = spec.xen_device().filter(|_| spec.is_disk() || net) else {
        return Err(HotplugError::BadDevice(
            "only Xen disks and network interfaces can be hot-plugged (virtio devices are cold-plugged)".into(),
        ));
    };
    let kind = arg.kind().map_err(|e| HotplugError::BadDevice(e.to_string()))?;
    let id = match (net, id) {
        (_, Some(id)) => id,
        (true, None) => next_vif_handle(&host.store, host.domid),
        (false, None) => free_vdev(&host.store, host.domid),
    };
    let front = format!("/local/domain/{}/device/{}/{id}", host.domid, kind.name);
    if host.store.read(&front).is_ok() {
        return Err(HotplugError::Exists(kind.name, id));
    }
    let backend = (kind.build)(&arg.options).map_err(|e| HotplugError::BadDevice(e.to_string()))?;
    let host_err = |e: &dyn std::fmt::Display| HotplugError::Host(e.to_string());
    let paths = pv_store::xenbus::create_device(&host.store, host.domid, backend.device_type(), id)
        .map_err(|e| host_err(&e))?;
    if !net {
        crate::store_nodes::name_disks(&host.store, host.domid).map_err(|e| host_err(&e))?;
    }
    let binder = Arc::new(EvtchnAdapter::new(host.evtchn.clone()));
    let store = Arc::new(TrackedStore::new(host.store.clone()));
    let xhost = XenbusHost { store: store.clone(), evtchn: binder.clone(), grants: host.grants.clone() };
    let started = backend.wire(paths.clone(), &xhost).map_err(|e| host_err(&e)).and_then(|dev| {
        // A hot-plugged disk's queues share its device thread (one
        // thread per hot-plugged device keeps the hot-plug bookkeeping
        // simple); they still take no lock of each other's.
        let subs = std::iter::once(dev.subscriber).chain(dev.queue_subscribers).collect();
        let thread = DeviceThread::start(&format!("pv-{}-hp{id}", kind.name), subs);
        thread.map(|t| (t, dev.metrics)).map_err(|e| host_err(&e))
    });
    let (thread, metrics) = match started {
        Ok(t) => t,
        Err(e) => {
            store.unwatch_all();
            remove_nodes(&host.store, &paths);
            return Err(e);
        }
    };
    let plugged = Plugged { id: format!("{}/{id}", kind.name), paths };
    tracing::info!(id = %plugged.id, back = %plugged.paths.back, "device attached");
    devices.push(Device { plugged: plugged.clone(), thread, queues: Vec::new(), binder, store, metrics, cold: false });
    Ok(plugged)
}

/// The device `id` names, as `<type>/<n>`: `vif/<n>`; `vbd/<n>`, `<n>`,
/// or a disk name (`xvdb`).
fn parse_id(id: &str) -> Option<String> {
    if let Some(n) = id.strip_prefix("vif/") {
        return n.parse::<u32>().ok().map(|n| format!("vif/{n}"));
    }
    let id = id.strip_prefix("vbd/").unwrap_or(id);
    id.parse::<u32>().ok().or_else(|| pv_abi::vdev::parse(id).ok()).map(|v| format!("vbd/{v}"))
}

fn remove(host: &HotplugHost, devices: &mut Vec<Device>, id: &str, timeout: Duration) -> Result<Removal, HotplugError> {
    let want = parse_id(id);
    let Some(i) = devices.iter().position(|d| Some(&d.plugged.id) == want.as_ref()) else {
        return Err(HotplugError::NoDevice(id.to_string()));
    };
    let paths = devices[i].plugged.paths.clone();
    let state = format!("{}/state", paths.back);
    // libxl__initiate_device_generic_remove(): online = 0, state = Closing.
    let _ = host.store.write(&format!("{}/online", paths.back), b"0");
    let _ = host.store.write(&state, XenbusState::Closing.as_str().as_bytes());
    let end = Instant::now() + timeout;
    let closed = || host.store.read(&state).ok().as_deref() == Some(XenbusState::Closed.as_str().as_bytes());
    while !closed() && Instant::now() < end {
        std::thread::sleep(POLL);
    }
    let how = if closed() { Removal::Closed } else { Removal::Forced };
    let mut d = devices.swap_remove(i);
    d.stop();
    // Forced: the back end may still hold the guest's port.
    d.binder.close_all();
    d.store.unwatch_all();
    remove_nodes(&host.store, &paths);
    tracing::info!(id = %d.plugged.id, how = how.name(), "device detached");
    Ok(how)
}

/// libxl__device_destroy(): both directories go.
fn remove_nodes(store: &SharedStore, paths: &DevicePaths) {
    for dir in [&paths.front, &paths.back] {
        if let Err(e) = store.rm(dir) {
            tracing::debug!(dir, "hot-unplug: cannot remove: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xen-vbd-interface(7): ids by number or by name.
    #[test]
    fn ids_name_a_vdev() {
        assert_eq!(parse_id("vbd/51728").as_deref(), Some("vbd/51728"));
        assert_eq!(parse_id("51712").as_deref(), Some("vbd/51712"));
        assert_eq!(parse_id("xvdb").as_deref(), Some("vbd/51728"));
        assert_eq!(parse_id("vif/2").as_deref(), Some("vif/2"));
        assert_eq!(parse_id("vbd/nonsense"), None);
        assert_eq!(parse_id("vif/x"), None);
    }

    /// A detach removes the back end's store watches (each holds its
    /// eventfd): a later write no longer wakes it.
    #[test]
    fn a_detached_back_ends_watches_are_removed() {
        use backend::xenbus::XenbusStore;
        let s = SharedStore::new();
        let t = TrackedStore::new(s.clone());
        let wake = Arc::new(vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap());
        assert!(t.watch("/local/domain/1/device/vbd/51712/state", wake.clone()));
        let _ = wake.read(); // the initial event
        s.write("/local/domain/1/device/vbd/51712/state", b"3").unwrap();
        assert!(wake.read().is_ok(), "the watch fires while attached");
        t.unwatch_all();
        s.write("/local/domain/1/device/vbd/51712/state", b"5").unwrap();
        assert!(wake.read().is_err(), "no event after the detach");
        assert!(t.watches.lock().unwrap().is_empty());
    }

    /// libxl_nic.c takes `libxl__device_nextid()`: one past the highest.
    #[test]
    fn next_vif_handle_is_one_past_the_highest() {
        let s = SharedStore::new();
        assert_eq!(next_vif_handle(&s, 1), 0);
        s.write("/local/domain/1/device/vif/0/state", b"1").unwrap();
        s.write("/local/domain/1/device/vif/3/state", b"1").unwrap();
        assert_eq!(next_vif_handle(&s, 1), 4);
    }

    #[test]
    fn free_vdev_skips_taken_numbers() {
        let s = SharedStore::new();
        assert_eq!(free_vdev(&s, 1), 51712, "xvda");
        s.write("/local/domain/1/device/vbd/51712/state", b"1").unwrap();
        s.write("/local/domain/1/device/vbd/51744/state", b"1").unwrap();
        assert_eq!(free_vdev(&s, 1), 51728, "xvdb");
    }
}
