//! Disk hot-plug through xenbus, as `xl block-attach` / `block-detach`
//! do (`tools/libs/light/libxl_disk.c`, `libxl_device.c`).
//!
//! Attach builds the back end (opening the image), creates its two store
//! directories (`device/vbd/<vdev>` and `backend/vbd/<domid>/<vdev>`) and
//! starts its device thread; the guest's front end notices through its
//! watch on `device/vbd` and runs the handshake. Detach moves the back end
//! to `Closing` (and `online = 0`), as `libxl__initiate_device_generic_remove()`
//! does, and waits for the back end to reach `Closed` (it follows the front
//! end's close); after the timeout (`LIBXL_DESTROY_TIMEOUT`, 10 s, by
//! default) it forces the removal as libxl's `device_backend_callback()`
//! does (`force = 1`). Either way the device thread stops, bindings the
//! back end still holds are closed and both directories are removed
//! (`libxl__device_destroy()`).
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
    /// The disk spec is bad or its back end cannot be built.
    #[error("{0}")]
    BadDevice(String),
    /// The id names no hot-plugged device.
    #[error("no hot-plugged device {0}: give the id `add-disk` answered (`vbd/<n>`, `<n>` or its name, e.g. `xvdb`); only disks added at run time can be removed")]
    NoDevice(String),
    /// The device number is taken.
    #[error("device/vbd/{0} exists already: give the disk another vdev=")]
    Exists(u32),
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
    /// `vbd/<vdev>`.
    pub id: String,
    /// Its store directories.
    pub paths: DevicePaths,
}

enum Request {
    AddDisk(DeviceSpec, Sender<Result<Plugged, HotplugError>>),
    Remove(String, Duration, Sender<Result<Removal, HotplugError>>),
    Stop,
}

/// A handle on the VM's hot-plug thread (cheap to clone).
#[derive(Clone)]
pub struct Hotplug {
    tx: Arc<Mutex<Sender<Request>>>,
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
        self.ask(|tx| Request::AddDisk(spec, tx))
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

/// One hot-plugged device as the thread keeps it.
struct Device {
    plugged: Plugged,
    thread: DeviceThread,
    binder: Arc<EvtchnAdapter>,
    store: Arc<TrackedStore>,
}

/// The store as one hot-plugged back end reaches it, remembering the
/// host watches it registers so a detach removes them (each holds the
/// back end's eventfd; without this every attach/detach cycle would
/// leave one behind).
struct TrackedStore {
    store: SharedStore,
    watches: Mutex<Vec<(String, String)>>,
}

impl TrackedStore {
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
    /// Starts the thread serving `host`.
    pub fn start(host: HotplugHost) -> std::io::Result<Self> {
        let (tx, rx) = channel();
        let thread = std::thread::Builder::new().name("hotplug".into()).spawn(move || {
            // std seeds this thread's hash keys with `getrandom` on first
            // use (the event loop of each device thread it starts holds a
            // HashMap): seed them before the filter, which refuses it.
            let _ = std::collections::hash_map::RandomState::new();
            crate::seccomp::install_or_exit(ThreadKind::Hotplug);
            serve(host, rx);
        })?;
        Ok(HotplugThread { handle: Hotplug { tx: Arc::new(Mutex::new(tx)) }, thread: Some(thread) })
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

fn serve(host: HotplugHost, rx: Receiver<Request>) {
    let mut devices: Vec<Device> = Vec::new();
    while let Ok(req) = rx.recv() {
        match req {
            Request::AddDisk(spec, reply) => {
                let _ = reply.send(add_disk(&host, &mut devices, &spec));
            }
            Request::Remove(id, timeout, reply) => {
                let _ = reply.send(remove(&host, &mut devices, &id, timeout));
            }
            Request::Stop => break,
        }
    }
    // The VM ends: device threads stop before guest memory goes.
    for mut d in devices {
        d.thread.stop();
    }
}

/// The first `xvd` number (xvda, xvdb, ...) not under `device/vbd`.
fn free_vdev(store: &SharedStore, domid: DomId) -> u32 {
    let used = store.directory(&format!("/local/domain/{domid}/device/vbd")).unwrap_or_default();
    (0..).map(backend::block::vbd_vdev).find(|v| !used.iter().any(|u| *u == v.to_string())).unwrap_or(51712)
}

fn add_disk(host: &HotplugHost, devices: &mut Vec<Device>, spec: &DeviceSpec) -> Result<Plugged, HotplugError> {
    if devices.len() >= MAX_HOTPLUGGED {
        return Err(HotplugError::TooMany);
    }
    let Some((arg, vdev)) = spec.xen_device().filter(|_| spec.is_disk()) else {
        return Err(HotplugError::BadDevice(
            "only Xen disks can be hot-plugged (virtio devices are cold-plugged)".into(),
        ));
    };
    let vdev = vdev.unwrap_or_else(|| free_vdev(&host.store, host.domid));
    let front = format!("/local/domain/{}/device/vbd/{vdev}", host.domid);
    if host.store.read(&front).is_ok() {
        return Err(HotplugError::Exists(vdev));
    }
    let kind = arg.kind().map_err(|e| HotplugError::BadDevice(e.to_string()))?;
    let backend = (kind.build)(&arg.options).map_err(|e| HotplugError::BadDevice(e.to_string()))?;
    let host_err = |e: &dyn std::fmt::Display| HotplugError::Host(e.to_string());
    let paths = pv_store::xenbus::create_device(&host.store, host.domid, backend.device_type(), vdev)
        .map_err(|e| host_err(&e))?;
    crate::store_nodes::name_disks(&host.store, host.domid).map_err(|e| host_err(&e))?;
    let binder = Arc::new(EvtchnAdapter::new(host.evtchn.clone()));
    let store = Arc::new(TrackedStore { store: host.store.clone(), watches: Mutex::default() });
    let xhost = XenbusHost { store: store.clone(), evtchn: binder.clone(), grants: host.grants.clone() };
    let started = backend.wire(paths.clone(), &xhost).map_err(|e| host_err(&e)).and_then(|dev| {
        // A hot-plugged disk's queues share its device thread (one
        // thread per hot-plugged device keeps the hot-plug bookkeeping
        // simple); they still take no lock of each other's.
        let subs = std::iter::once(dev.subscriber).chain(dev.queue_subscribers).collect();
        DeviceThread::start(&format!("pv-vbd-hp{vdev}"), subs).map_err(|e| host_err(&e))
    });
    let thread = match started {
        Ok(t) => t,
        Err(e) => {
            store.unwatch_all();
            remove_nodes(&host.store, &paths);
            return Err(e);
        }
    };
    let plugged = Plugged { id: format!("vbd/{vdev}"), paths };
    tracing::info!(id = %plugged.id, back = %plugged.paths.back, "disk attached");
    devices.push(Device { plugged: plugged.clone(), thread, binder, store });
    Ok(plugged)
}

/// The vdev number `id` names: `vbd/<n>`, `<n>`, or a name (`xvdb`).
fn parse_id(id: &str) -> Option<u32> {
    let id = id.strip_prefix("vbd/").unwrap_or(id);
    id.parse::<u32>().ok().or_else(|| pv_abi::vdev::parse(id).ok())
}

fn remove(host: &HotplugHost, devices: &mut Vec<Device>, id: &str, timeout: Duration) -> Result<Removal, HotplugError> {
    let want = parse_id(id).map(|v| format!("vbd/{v}"));
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
    d.thread.stop();
    // Forced: the back end may still hold the guest's port.
    d.binder.close_all();
    d.store.unwatch_all();
    remove_nodes(&host.store, &paths);
    tracing::info!(id = %d.plugged.id, how = how.name(), "disk detached");
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
        assert_eq!(parse_id("vbd/51728"), Some(51728));
        assert_eq!(parse_id("51712"), Some(51712));
        assert_eq!(parse_id("xvdb"), Some(51728));
        assert_eq!(parse_id("vbd/nonsense"), None);
    }

    /// A detach removes the back end's store watches (each holds its
    /// eventfd): a later write no longer wakes it.
    #[test]
    fn a_detached_back_ends_watches_are_removed() {
        use backend::xenbus::XenbusStore;
        let s = SharedStore::new();
        let t = TrackedStore { store: s.clone(), watches: Mutex::default() };
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

    #[test]
    fn free_vdev_skips_taken_numbers() {
        let s = SharedStore::new();
        assert_eq!(free_vdev(&s, 1), 51712, "xvda");
        s.write("/local/domain/1/device/vbd/51712/state", b"1").unwrap();
        s.write("/local/domain/1/device/vbd/51744/state", b"1").unwrap();
        assert_eq!(free_vdev(&s, 1), 51728, "xvdb");
    }
}
