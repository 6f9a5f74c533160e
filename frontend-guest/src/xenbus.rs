//! The front end's half of the xenbus device handshake.
//!
//! The VMM creates the device's two directories (front end
//! `device/<type>/<id>` in the guest's tree, with `backend`, `backend-id`
//! and `state`; back end `/local/domain/0/backend/<type>/<domid>/<id>`).
//! The front end then:
//!
//! 1. reads the back end's path ([`read_backend_path`]) and waits for it to
//!    reach `InitWait` ([`wait_for_state`] on `<backend>/state`);
//! 2. allocates its ring, grant and event channel, writes `ring-ref` and
//!    `event-channel` into its directory and switches to `Initialised`
//!    ([`switch_state`]);
//! 3. waits for the back end to be `Connected`, then switches to
//!    `Connected` itself.
//!
//! Functions that switch a state take the device *directory*; functions
//! that read or wait take the `state` *node* path.

use core::fmt;

use pv_abi::xenbus::keys;
pub use pv_abi::xenbus::XenbusState;
use ring_buffers::RingMemory;

use crate::store::{fmt_u32, StoreClient, StoreError, StoreTransport};

/// The watch token [`wait_for_state`] registers (and removes again).
pub const WAIT_STATE_TOKEN: &str = "xenbus-wait-state";

/// A store path built without heap: up to `N` bytes.
#[derive(Clone, Copy)]
pub struct NodePath<const N: usize = 128> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> NodePath<N> {
    /// A path holding `s` ([`TooLong`](StoreError::TooLong) if it does not
    /// fit).
    pub fn new(s: &str) -> Result<Self, StoreError> {
        let mut p = NodePath { buf: [0; N], len: 0 };
        p.push_raw(s.as_bytes())?;
        Ok(p)
    }

    fn push_raw(&mut self, b: &[u8]) -> Result<(), StoreError> {
        let end = self.len.checked_add(b.len()).ok_or(StoreError::TooLong)?;
        if end > N {
            return Err(StoreError::TooLong);
        }
        self.buf[self.len..end].copy_from_slice(b);
        self.len = end;
        Ok(())
    }

    /// Appends `/` and `component`.
    pub fn push(&mut self, component: &str) -> Result<&mut Self, StoreError> {
        let saved = self.len;
        let r = self.push_raw(b"/").and_then(|()| self.push_raw(component.as_bytes()));
        if r.is_err() {
            self.len = saved;
        }
        r.map(|()| self)
    }

    /// Appends `/` and `v` in decimal.
    pub fn push_u32(&mut self, v: u32) -> Result<&mut Self, StoreError> {
        let mut d = [0u8; 10];
        let d = fmt_u32(v, &mut d);
        // Digits are ASCII.
        self.push(core::str::from_utf8(d).unwrap_or("0"))
    }

    /// The path so far.
    pub fn as_str(&self) -> &str {
        // Only whole `&str`s and ASCII are ever appended.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> fmt::Debug for NodePath<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Writes `state` to `<dev_path>/state`.
pub fn switch_state<M: RingMemory, T: StoreTransport>(
    client: &mut StoreClient<M, T>,
    dev_path: &str,
    state: XenbusState,
) -> Result<(), StoreError> {
    let mut p = NodePath::<256>::new(dev_path)?;
    p.push(keys::STATE)?;
    client.write(p.as_str(), state.as_str().as_bytes())
}

/// Reads the state node `state_path`. A missing node reads as `Unknown`
/// (as in Linux's xenbus); a value that is not a state is
/// [`BadValue`](StoreError::BadValue).
pub fn read_state<M: RingMemory, T: StoreTransport>(
    client: &mut StoreClient<M, T>,
    state_path: &str,
) -> Result<XenbusState, StoreError> {
    let mut buf = [0u8; 8];
    match client.read(state_path, &mut buf) {
        Ok(n) => XenbusState::parse(&buf[..n]).ok_or(StoreError::BadValue),
        Err(StoreError::Xs(e)) if e == pv_abi::errno::ENOENT => Ok(XenbusState::Unknown),
        Err(StoreError::BufferTooSmall(_)) => Err(StoreError::BadValue),
        Err(e) => Err(e),
    }
}

/// Waits until the state node `state_path` (typically the other end's)
/// holds a state for which `wanted` is true, and returns it. Uses a watch
/// (token [`WAIT_STATE_TOKEN`]), removed again before returning; events of
/// other watches stay queued.
pub fn wait_for_state<M: RingMemory, T: StoreTransport>(
    client: &mut StoreClient<M, T>,
    state_path: &str,
    wanted: impl Fn(XenbusState) -> bool,
) -> Result<XenbusState, StoreError> {
    client.watch(state_path, WAIT_STATE_TOKEN)?;
    let r = (|| loop {
        let s = read_state(client, state_path)?;
        if wanted(s) {
            return Ok(s);
        }
        let mut path = [0u8; 256];
        match client.wait_watch_token(WAIT_STATE_TOKEN, &mut path) {
            Ok(_) | Err(StoreError::BufferTooSmall(_)) => {}
            Err(e) => return Err(e),
        }
    })();
    let u = client.unwatch(state_path, WAIT_STATE_TOKEN);
    let s = r?;
    u?;
    Ok(s)
}

/// Reads `<dev_path>/backend` (the back end's directory) into `buf`.
pub fn read_backend_path<'b, M: RingMemory, T: StoreTransport>(
    client: &mut StoreClient<M, T>,
    dev_path: &str,
    buf: &'b mut [u8],
) -> Result<&'b str, StoreError> {
    let mut p = NodePath::<256>::new(dev_path)?;
    p.push(keys::BACKEND)?;
    let n = client.read(p.as_str(), buf)?;
    core::str::from_utf8(&buf[..n]).map_err(|_| StoreError::BadValue)
}

/// Reads `<dev_path>/backend-id` (the back end's domain).
pub fn read_backend_id<M: RingMemory, T: StoreTransport>(
    client: &mut StoreClient<M, T>,
    dev_path: &str,
) -> Result<u32, StoreError> {
    let mut p = NodePath::<256>::new(dev_path)?;
    p.push(keys::BACKEND_ID)?;
    client.read_u32(p.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_path() {
        let mut p = NodePath::<24>::new("device").unwrap();
        p.push("echo").unwrap().push_u32(12).unwrap();
        assert_eq!(p.as_str(), "device/echo/12");
        assert_eq!(p.push("toolongtoolong").err(), Some(StoreError::TooLong));
        assert_eq!(p.as_str(), "device/echo/12", "unchanged on failure");
        assert!(NodePath::<4>::new("12345").is_err());
    }
}

/// The front end's whole half of the xenbus handshake for the device at
/// `dev_dir` (e.g. `device/echo/0`): waits for the back end to reach
/// `InitWait`, lets `publish` write the device's keys (`ring-ref`,
/// `event-channel`, ...), goes `Initialised`, waits for the back end to be
/// `Connected`, and goes `Connected`. Returns the back end's final state as
/// an error if it gave up (`Closing`/`Closed`).
pub fn connect_frontend<M: RingMemory, T: StoreTransport>(
    client: &mut StoreClient<M, T>,
    dev_dir: &str,
    publish: impl FnOnce(&mut StoreClient<M, T>, &str) -> Result<(), StoreError>,
) -> Result<(), ConnectError> {
    let mut be = [0u8; 128];
    let be_len = read_backend_path(client, dev_dir, &mut be)?.len();
    let mut be_state = NodePath::<256>::new(core::str::from_utf8(&be[..be_len]).map_err(|_| StoreError::BadValue)?)?;
    be_state.push(keys::STATE)?;
    let s = wait_for_state(client, be_state.as_str(), |s| s >= XenbusState::InitWait)?;
    if s >= XenbusState::Closing {
        return Err(ConnectError::BackendGaveUp(s));
    }
    publish(client, dev_dir)?;
    switch_state(client, dev_dir, XenbusState::Initialised)?;
    let s = wait_for_state(client, be_state.as_str(), |s| s >= XenbusState::Connected)?;
    if s != XenbusState::Connected {
        return Err(ConnectError::BackendGaveUp(s));
    }
    switch_state(client, dev_dir, XenbusState::Connected)?;
    Ok(())
}

/// Why [`connect_frontend`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    /// A store operation failed.
    Store(StoreError),
    /// The back end moved to this state instead of connecting.
    BackendGaveUp(XenbusState),
}

impl From<StoreError> for ConnectError {
    fn from(e: StoreError) -> Self {
        ConnectError::Store(e)
    }
}

/// Store transport over the store event channel: notify through the
/// doorbell, wait by halting until the port's event counter moves (a
/// counter, not an edge, so a reply that lands before the wait is not lost).
#[derive(Debug)]
pub struct EvtchnTransport {
    port: u32,
    seen: u32,
}

impl EvtchnTransport {
    /// A transport on `port` (the store channel from start-info).
    pub fn new(port: u32) -> Self {
        EvtchnTransport { port, seen: crate::evtchn::events(port) }
    }
}

impl StoreTransport for EvtchnTransport {
    fn notify(&mut self) {
        crate::evtchn::notify(self.port);
    }

    fn wait(&mut self) {
        let port = self.port;
        let seen = self.seen;
        crate::evtchn::wait_until(|| crate::evtchn::events(port) != seen);
        self.seen = crate::evtchn::events(port);
    }
}

/// The guest's store client over the start-info store ring.
pub type Store = StoreClient<ring_buffers::RawMemory, EvtchnTransport>;

/// Connects to the store named in start-info (event channels must be up).
pub fn open_store(si: &pv_abi::start_info::StartInfo) -> Result<Store, StoreError> {
    // SAFETY: the store ring page from start-info is assigned to this guest
    // for its whole life and identity mapped.
    let mem = unsafe { crate::arch::shared_page(si.store.gpa) };
    StoreClient::new(mem, EvtchnTransport::new(si.store.evtchn))
}

/// The token of the runtime's watch on `control/shutdown` ([`watch_shutdown`]).
pub const SHUTDOWN_TOKEN: &str = "rt-control-shutdown";

/// What the toolstack wrote into `control/shutdown`
/// (`docs/misc/xenstore-paths.pandoc`: `poweroff`, `reboot`, `suspend`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownRequest {
    /// `poweroff` (also `halt`, which Linux treats alike).
    Poweroff,
    /// `reboot`.
    Reboot,
    /// `suspend`: quiesce, then [`crate::hypercall::suspend`].
    Suspend,
    /// Any other non-empty value.
    Other,
}

/// Watches the guest's `control/shutdown` (relative to its home), as
/// Linux's `xenbus` shutdown handler does; [`shutdown_requested`] then
/// tells whether the VMM asked the guest to stop.
pub fn watch_shutdown<M: RingMemory, T: StoreTransport>(store: &mut StoreClient<M, T>) -> Result<(), StoreError> {
    store.watch("control/shutdown", SHUTDOWN_TOKEN)
}

/// Whether the VMM has asked for a shutdown since the last call: cheap
/// when nothing happened (a look at the response ring, no request). A
/// request is acknowledged by clearing the node, as Linux does.
pub fn shutdown_requested<M: RingMemory, T: StoreTransport>(
    store: &mut StoreClient<M, T>,
) -> Result<Option<ShutdownRequest>, StoreError> {
    let mut path = [0u8; 64];
    if store.poll_watch_token(SHUTDOWN_TOKEN, &mut path)?.is_none() {
        return Ok(None);
    }
    read_shutdown(store)
}

/// Waits for the VMM's shutdown request (the guest idles meanwhile).
pub fn wait_shutdown_request<M: RingMemory, T: StoreTransport>(
    store: &mut StoreClient<M, T>,
) -> Result<ShutdownRequest, StoreError> {
    let mut path = [0u8; 64];
    loop {
        store.wait_watch_token(SHUTDOWN_TOKEN, &mut path)?;
        if let Some(r) = read_shutdown(store)? {
            return Ok(r);
        }
    }
}

/// Reads `control/shutdown`; a non-empty value is a request, cleared here.
fn read_shutdown<M: RingMemory, T: StoreTransport>(
    store: &mut StoreClient<M, T>,
) -> Result<Option<ShutdownRequest>, StoreError> {
    let mut buf = [0u8; 32];
    let n = match store.read("control/shutdown", &mut buf) {
        Ok(n) => n,
        // Too long for any value we know: still a request.
        Err(StoreError::BufferTooSmall(_)) => buf.len(),
        Err(e) => return Err(e),
    };
    let req = match &buf[..n.min(buf.len())] {
        b"" => return Ok(None),
        b"poweroff" | b"halt" => ShutdownRequest::Poweroff,
        b"reboot" => ShutdownRequest::Reboot,
        b"suspend" => ShutdownRequest::Suspend,
        _ => ShutdownRequest::Other,
    };
    store.write("control/shutdown", b"")?;
    Ok(Some(req))
}
