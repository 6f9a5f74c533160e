//! The toolstack's part of the xenbus device handshake, and the store as
//! the back ends' state machine reaches it.
//!
//! A device of type `<type>` and index `<id>` for guest `<domid>` lives in
//! two store directories, created by [`create_device`] as Xen's toolstack
//! does:
//!
//! * front end `/local/domain/<domid>/device/<type>/<id>`: `backend`,
//!   `backend-id`, `state`;
//! * back end `/local/domain/0/backend/<type>/<domid>/<id>`: `frontend`,
//!   `frontend-id`, `state`.
//!
//! Both start `Initialising`. The back end publishes its features and
//! switches to `InitWait`; the front end writes `ring-ref` and
//! `event-channel` and switches to `Initialised`; the back end reads them
//! ([`FrontendKeys`], through pv-abi's strict decimal parser), maps the ring and switches to `Connected`; the front end
//! follows. The back end's side of that is `backend::xenbus::XenbusDevice`
//! over this store, reached through [`XenbusStore`] (which [`SharedStore`]
//! implements) and [`FrontendKeys`]: the store defines how it is reached
//! and depends on no device crate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pv_abi::event_channel::DomId;
use pv_abi::xenbus::keys::{BACKEND, BACKEND_ID, DEVICE_TYPE, FRONTEND, FRONTEND_ID, HANDLE, STATE, VIRTUAL_DEVICE};
pub use pv_abi::xenbus::XenbusState;
use vmm_sys_util::eventfd::EventFd;

use super::{SharedStore, StoreError};

/// Failure of a xenbus helper.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XenbusError {
    /// The store refused the operation.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The device type is not a single valid path component.
    #[error("invalid device type {0:?}")]
    BadDeviceType(String),
}

/// Store access for a back-end (absolute paths, domain-0 rights).
pub trait XenbusStore: Send + Sync {
    /// Reads a node as text.
    fn read(&self, path: &str) -> Option<String>;
    /// Writes a node.
    fn write(&self, path: &str, value: &str) -> bool;
    /// Calls `wake` whenever `path` or anything below it changes.
    fn watch(&self, path: &str, wake: Arc<EventFd>) -> bool;
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

/// Where a device lives in the store: its two directories, as
/// [`create_device`] makes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePaths {
    /// Front-end directory (`/local/domain/<guest>/device/<type>/<id>`).
    pub front: String,
    /// Back-end directory (`/local/domain/0/backend/<type>/<guest>/<id>`).
    pub back: String,
}

/// Creates both directories of device `dev_type`/`dev_id` for guest
/// `frontend_domid` (removing any previous contents), each with state
/// `Initialising`.
pub fn create_device(
    store: &SharedStore,
    frontend_domid: DomId,
    dev_type: &str,
    dev_id: u32,
) -> Result<DevicePaths, XenbusError> {
    if dev_type.is_empty() || !dev_type.bytes().all(|c| c != b'/' && super::valid_char(c)) {
        return Err(XenbusError::BadDeviceType(dev_type.to_owned()));
    }
    let front = format!("/local/domain/{frontend_domid}/device/{dev_type}/{dev_id}");
    let back = format!("/local/domain/0/backend/{dev_type}/{frontend_domid}/{dev_id}");
    let init = XenbusState::Initialising.as_str();
    for dir in [&front, &back] {
        match store.rm(dir) {
            Ok(()) | Err(StoreError::NoEntry) => {}
            Err(e) => return Err(e.into()),
        }
    }
    store.write_str(&format!("{back}/{FRONTEND}"), &front)?;
    store.write_str(&format!("{back}/{FRONTEND_ID}"), &frontend_domid.to_string())?;
    store.write_str(&format!("{back}/{STATE}"), init)?;
    store.write_str(&format!("{front}/{BACKEND}"), &back)?;
    store.write_str(&format!("{front}/{BACKEND_ID}"), "0")?;
    store.write_str(&format!("{front}/{STATE}"), init)?;
    for (dir, key, value) in toolstack_keys(dev_type, dev_id, &front, &back) {
        store.write_str(&format!("{dir}/{key}"), &value)?;
    }
    Ok(DevicePaths { front, back })
}

/// The type-specific keys Xen's toolstack writes beside the handshake
/// keys: `virtual-device` and `device-type` for a disk
/// (`tools/libs/light/libxl_disk.c: libxl__device_disk_setdefault()` /
/// `device_disk_add()`; Linux blkfront's probe fails without
/// `virtual-device`), `handle` on both sides of a vif (`libxl_nic.c`).
fn toolstack_keys<'a>(
    dev_type: &str,
    dev_id: u32,
    front: &'a str,
    back: &'a str,
) -> Vec<(&'a str, &'static str, String)> {
    match dev_type {
        "vbd" => vec![
            (front, VIRTUAL_DEVICE, dev_id.to_string()),
            (front, DEVICE_TYPE, "disk".to_owned()),
            (back, DEVICE_TYPE, "disk".to_owned()),
        ],
        "vif" => vec![(front, HANDLE, dev_id.to_string()), (back, HANDLE, dev_id.to_string())],
        _ => Vec::new(),
    }
}

/// The store as the generic xenbus back-end state machine
/// (`backend::xenbus::XenbusDevice`) reaches it: domain-0 rights,
/// absolute paths, and watches that signal an `EventFd`.
impl XenbusStore for SharedStore {
    fn read(&self, path: &str) -> Option<String> {
        self.read_string(path).ok()
    }

    fn write(&self, path: &str, value: &str) -> bool {
        self.write_str(path, value).map_err(|e| tracing::warn!(path, "store write failed: {e}")).is_ok()
    }

    fn watch(&self, path: &str, wake: Arc<EventFd>) -> bool {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let token = format!("xenbus-wake-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let sink = Arc::new(move |_: &super::WatchEvent| {
            if let Err(e) = wake.write(1) {
                tracing::warn!("store watch: cannot signal the back end: {e}");
            }
        });
        self.watch_host(path, &token, sink).map_err(|e| tracing::warn!(path, "store watch failed: {e}")).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_device_writes_both_directories() {
        let store = SharedStore::new();
        let d = create_device(&store, 3, "echo", 0).unwrap();
        assert_eq!(d.front, "/local/domain/3/device/echo/0");
        assert_eq!(d.back, "/local/domain/0/backend/echo/3/0");
        assert_eq!(store.read_string(&format!("{}/backend", d.front)).unwrap(), d.back);
        assert_eq!(store.read_string(&format!("{}/backend-id", d.front)).unwrap(), "0");
        assert_eq!(store.read_string(&format!("{}/frontend", d.back)).unwrap(), d.front);
        assert_eq!(store.read_string(&format!("{}/frontend-id", d.back)).unwrap(), "3");
        for dir in [&d.front, &d.back] {
            assert_eq!(store.read_string(&format!("{dir}/state")).unwrap(), XenbusState::Initialising.as_str());
        }
        assert_eq!(store.read(&format!("{}/virtual-device", d.front)), Err(StoreError::NoEntry), "only vbd has it");
        assert!(matches!(create_device(&store, 3, "a/b", 0), Err(XenbusError::BadDeviceType(_))));
        assert!(matches!(create_device(&store, 3, "", 0), Err(XenbusError::BadDeviceType(_))));
    }

    #[test]
    fn xenbus_store_adapter_signals_eventfds() {
        let store = SharedStore::new();
        let s: &dyn XenbusStore = &store;
        let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        assert!(s.watch("/local/domain/1/device/echo/0/state", wake.clone()));
        // The initial event.
        assert_eq!(wake.read().unwrap(), 1);
        assert!(wake.read().is_err(), "nothing more pending");
        assert!(s.write("/local/domain/1/device/echo/0/state", "3"));
        assert!(s.write("/local/domain/1/device/echo/0/state", "4"));
        assert_eq!(wake.read().unwrap(), 2);
        assert_eq!(s.read("/local/domain/1/device/echo/0/state").as_deref(), Some("4"));
        assert_eq!(s.read("/local/domain/1/none"), None);
        assert!(!s.write("bad//path", "x"));
        // A second watch on the same path gets its own token.
        assert!(s.watch("/local/domain/1/device/echo/0/state", wake.clone()));
    }

    /// What the back ends read from a front end's directory goes through
    /// pv-abi's strict decimal parser.
    #[test]
    fn guest_written_values_are_validated() {
        struct Front<'a>(&'a SharedStore, String);
        impl FrontendKeys for Front<'_> {
            fn read(&self, key: &str) -> Option<String> {
                XenbusStore::read(self.0, &format!("{}/{key}", self.1))
            }
        }
        let store = SharedStore::new();
        let d = create_device(&store, 1, "echo", 0).unwrap();
        let front = Front(&store, d.front.clone());
        assert!(front.read_u32("event-channel").unwrap_err().contains("has no 'event-channel'"));
        store.write_str(&format!("{}/ring-ref", d.front), "8").unwrap();
        for bad in ["", "-1", "+1", "4294967296", "1x", "0x10", " 1", "99999999999"] {
            store.write_str(&format!("{}/event-channel", d.front), bad).unwrap();
            assert!(front.read_u32("event-channel").is_err(), "{bad:?} accepted");
        }
        store.write(&format!("{}/event-channel", d.front), b"4294967295\0").unwrap();
        assert_eq!(front.read_u32("ring-ref"), Ok(8));
        assert_eq!(front.read_u32("event-channel"), Ok(u32::MAX));
    }

    /// `tools/libs/light/libxl_disk.c` (`device_disk_add()`): the vbd
    /// front end has `virtual-device` = its number and `device-type`
    /// `disk`, the back end `device-type` too; `libxl_nic.c`
    /// (`libxl__set_xenstore_nic()`): `handle` = the devid on both sides.
    #[test]
    fn vbd_and_vif_get_the_keys_libxl_writes() {
        let store = SharedStore::new();
        let read = |p: String| store.read_string(&p).unwrap();
        let d = create_device(&store, 1, "vbd", 768).unwrap();
        assert_eq!(read(format!("{}/virtual-device", d.front)), "768");
        assert_eq!(read(format!("{}/device-type", d.front)), "disk");
        assert_eq!(read(format!("{}/device-type", d.back)), "disk");
        let n = create_device(&store, 1, "vif", 2).unwrap();
        assert_eq!(read(format!("{}/handle", n.front)), "2");
        assert_eq!(read(format!("{}/handle", n.back)), "2");
        assert_eq!(store.read(&format!("{}/virtual-device", n.front)), Err(StoreError::NoEntry));
    }
}
