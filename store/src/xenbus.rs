//! The back-end half of the xenbus device handshake.
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
//! ([`read_frontend_ring`]), maps the ring and switches to `Connected`; the
//! front end follows. Everything read from the front end's directory is
//! guest-written and validated here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pv_abi::event_channel::DomId;
pub use pv_abi::xenbus::XenbusState;
use vmm_sys_util::eventfd::EventFd;

use super::{SharedStore, StoreError};

/// Failure of a xenbus helper.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XenbusError {
    /// The store refused the operation.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A node holds something that is not what the protocol says.
    #[error("store node {path} holds {value:?}, expected {expected}")]
    BadValue {
        /// The node.
        path: String,
        /// What it holds (lossily decoded, at most 64 bytes).
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// The device type is not a single valid path component.
    #[error("invalid device type {0:?}")]
    BadDeviceType(String),
}

/// The two directories of one device (the back-end crate's type, so
/// [`create_device`]'s result goes straight to `XenbusDevice`).
pub use backend::xenbus::DevicePaths;

/// What a front end publishes for a one-ring device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrontendRing {
    /// Grant reference of the shared ring page (`ring-ref`).
    pub ring_ref: u32,
    /// The front end's event-channel port (`event-channel`).
    pub event_channel: u32,
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
    store.write_str(&format!("{back}/frontend"), &front)?;
    store.write_str(&format!("{back}/frontend-id"), &frontend_domid.to_string())?;
    store.write_str(&format!("{back}/state"), init)?;
    store.write_str(&format!("{front}/backend"), &back)?;
    store.write_str(&format!("{front}/backend-id"), "0")?;
    store.write_str(&format!("{front}/state"), init)?;
    Ok(DevicePaths { front, back })
}

/// Writes `state` to `<dev_path>/state`.
pub fn switch_state(store: &SharedStore, dev_path: &str, state: XenbusState) -> Result<(), XenbusError> {
    store.write_str(&format!("{dev_path}/state"), state.as_str())?;
    Ok(())
}

/// Reads the state node `state_path` (for example `<front>/state`). A
/// missing node reads as `Unknown`, as in Linux's xenbus; anything but a
/// state number is an error.
pub fn read_state(store: &SharedStore, state_path: &str) -> Result<XenbusState, XenbusError> {
    let v = match store.read(state_path) {
        Ok(v) => v,
        Err(StoreError::NoEntry) => return Ok(XenbusState::Unknown),
        Err(e) => return Err(e.into()),
    };
    XenbusState::parse(&v).ok_or_else(|| bad_value(state_path, &v, "a xenbus state (0..8)"))
}

/// Parses a decimal u32 as written to the store: ASCII digits only (a
/// trailing NUL is tolerated), no sign, no overflow.
pub fn parse_u32(v: &[u8]) -> Option<u32> {
    let v = v.strip_suffix(b"\0").unwrap_or(v);
    if v.is_empty() || v.len() > 10 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u32, |a, d| a.checked_mul(10)?.checked_add(u32::from(d - b'0')))
}

/// Reads a node holding a decimal u32.
pub fn read_u32(store: &SharedStore, path: &str) -> Result<u32, XenbusError> {
    let v = store.read(path)?;
    parse_u32(&v).ok_or_else(|| bad_value(path, &v, "a decimal u32"))
}

/// Reads the front end's `ring-ref` and `event-channel` from its directory.
pub fn read_frontend_ring(store: &SharedStore, front: &str) -> Result<FrontendRing, XenbusError> {
    Ok(FrontendRing {
        ring_ref: read_u32(store, &format!("{front}/ring-ref"))?,
        event_channel: read_u32(store, &format!("{front}/event-channel"))?,
    })
}

/// The store as the generic xenbus back-end state machine
/// ([`backend::xenbus::XenbusDevice`]) reaches it: domain-0 rights,
/// absolute paths, and watches that signal an `EventFd`.
impl backend::xenbus::XenbusStore for SharedStore {
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

fn bad_value(path: &str, v: &[u8], expected: &'static str) -> XenbusError {
    XenbusError::BadValue {
        path: path.to_owned(),
        value: String::from_utf8_lossy(&v[..v.len().min(64)]).into_owned(),
        expected,
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
            assert_eq!(read_state(&store, &format!("{dir}/state")).unwrap(), XenbusState::Initialising);
        }
        switch_state(&store, &d.back, XenbusState::InitWait).unwrap();
        assert_eq!(read_state(&store, &format!("{}/state", d.back)).unwrap(), XenbusState::InitWait);
        assert!(matches!(create_device(&store, 3, "a/b", 0), Err(XenbusError::BadDeviceType(_))));
        assert!(matches!(create_device(&store, 3, "", 0), Err(XenbusError::BadDeviceType(_))));
    }

    #[test]
    fn xenbus_store_adapter_signals_eventfds() {
        use backend::xenbus::XenbusStore;
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

    #[test]
    fn guest_written_values_are_validated() {
        let store = SharedStore::new();
        let d = create_device(&store, 1, "echo", 0).unwrap();
        assert_eq!(read_state(&store, "/local/domain/1/device/echo/9/state").unwrap(), XenbusState::Unknown);
        store.write_str(&format!("{}/state", d.front), "9").unwrap();
        assert!(matches!(read_state(&store, &format!("{}/state", d.front)), Err(XenbusError::BadValue { .. })));
        assert!(matches!(read_frontend_ring(&store, &d.front), Err(XenbusError::Store(StoreError::NoEntry))));
        store.write_str(&format!("{}/ring-ref", d.front), "8").unwrap();
        for bad in ["", "-1", "+1", "4294967296", "1x", "0x10", " 1", "99999999999"] {
            store.write_str(&format!("{}/event-channel", d.front), bad).unwrap();
            assert!(
                matches!(read_frontend_ring(&store, &d.front), Err(XenbusError::BadValue { .. })),
                "{bad:?} accepted"
            );
        }
        store.write(&format!("{}/event-channel", d.front), b"4294967295\0").unwrap();
        assert_eq!(
            read_frontend_ring(&store, &d.front).unwrap(),
            FrontendRing { ring_ref: 8, event_channel: u32::MAX }
        );
    }
}
