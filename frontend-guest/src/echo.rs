//! The `echo` sample front end (protocol in `pv_abi::echo`).
//!
//! Set-up is the usual split-driver recipe: allocate and grant a ring page,
//! allocate an unbound event channel for domain 0, publish `ring-ref` and
//! `event-channel` in the store and go `Initialised` (see
//! [`crate::xenbus`]); then push requests, notify when Xen's rule says so,
//! and collect responses.

use crate::evtchn;
use crate::hypercall::Errno;
use pv_abi::echo::{EchoRequest, EchoResponse};
use pv_abi::event_channel::DOMID_VMM;
use ring_buffers::{FrontRing, RawMemory, RingError};

/// How notifications are sent to the back end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyVia {
    /// The doorbell port (ioeventfd, no userspace exit).
    Doorbell,
    /// `EVTCHNOP_send` (one hypercall exit).
    Hypercall,
}

/// A set-up echo front end.
pub struct EchoFront {
    ring: FrontRing<RawMemory, EchoRequest, EchoResponse>,
    /// Grant reference of the ring page.
    pub ring_ref: u32,
    /// The event channel.
    pub port: u32,
    /// How to notify.
    pub via: NotifyVia,
    /// Notifications sent.
    pub notifies: u64,
}

/// Why set-up failed.
#[derive(Debug)]
pub enum EchoError {
    /// No free page or grant.
    NoMemory,
    /// A hypercall failed.
    Hypercall(Errno),
    /// The ring refused (corrupt indices from the back end).
    Ring(RingError),
    /// A store operation failed.
    Store(crate::store::StoreError),
    /// The handshake failed.
    Connect(crate::xenbus::ConnectError),
}

impl From<Errno> for EchoError {
    fn from(e: Errno) -> Self {
        EchoError::Hypercall(e)
    }
}

impl From<RingError> for EchoError {
    fn from(e: RingError) -> Self {
        EchoError::Ring(e)
    }
}

impl EchoFront {
    /// Allocates and grants the ring page and an unbound port for domain 0.
    pub fn new() -> Result<Self, EchoError> {
        let page = crate::pages::alloc(1).ok_or(EchoError::NoMemory)?;
        // SAFETY: a page just allocated for this ring, kept for the
        // guest's life (the bump allocator never reuses pages).
        let mem = unsafe { crate::arch::shared_page(page) };
        let ring = FrontRing::init(mem)?;
        let ring_ref = crate::grant::grant_page(DOMID_VMM, page, false).ok_or(EchoError::NoMemory)?;
        let port = evtchn::alloc_unbound(DOMID_VMM)?;
        Ok(EchoFront { ring, ring_ref, port, via: NotifyVia::Doorbell, notifies: 0 })
    }

    /// Free request slots.
    pub fn free_slots(&self) -> u32 {
        self.ring.free_requests()
    }

    /// Queues a request (not yet visible to the back end).
    pub fn queue(&mut self, req: &EchoRequest) -> Result<(), RingError> {
        self.ring.push_request(req)
    }

    /// Publishes queued requests and notifies the back end if it asked
    /// to be (Xen's `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`).
    pub fn push(&mut self) {
        if self.ring.push_requests_and_check_notify() {
            self.kick();
        }
    }

    /// Notifies the back end unconditionally.
    pub fn kick(&mut self) {
        self.notifies += 1;
        match self.via {
            NotifyVia::Doorbell => evtchn::notify(self.port),
            NotifyVia::Hypercall => {
                let _ = evtchn::send(self.port);
            }
        }
    }

    /// Takes one response if there is one.
    pub fn poll(&mut self) -> Result<Option<EchoResponse>, RingError> {
        self.ring.pop_response()
    }

    /// Waits (halting between upcalls) for the next response, re-arming
    /// `rsp_event` before sleeping so the back end notifies us.
    pub fn wait_response(&mut self) -> Result<EchoResponse, RingError> {
        loop {
            if let Some(r) = self.ring.pop_response()? {
                return Ok(r);
            }
            evtchn::wait_for_responses(&mut self.ring, self.port)?;
        }
    }

    /// Arms `rsp_event` so that the next response is notified even if it is
    /// produced before we go to sleep (returns whether responses are
    /// already waiting).
    pub fn arm_response_event(&mut self) -> Result<bool, RingError> {
        self.ring.final_check_for_responses()
    }

    /// Requests sent but not yet answered.
    pub fn outstanding(&self) -> u32 {
        self.ring.outstanding_requests()
    }
}

/// Sets up echo device `id` and runs the xenbus handshake with its back end.
pub fn connect(store: &mut crate::xenbus::Store, id: u32) -> Result<EchoFront, EchoError> {
    let front = EchoFront::new()?;
    let mut dir = crate::xenbus::NodePath::<64>::new("device").map_err(EchoError::Store)?;
    dir.push(pv_abi::echo::DEVICE_TYPE).map_err(EchoError::Store)?;
    dir.push_u32(id).map_err(EchoError::Store)?;
    let (ring_ref, port) = (front.ring_ref, front.port);
    crate::xenbus::connect_frontend(store, dir.as_str(), |c, d| {
        let mut p = crate::xenbus::NodePath::<96>::new(d)?;
        p.push(pv_abi::xenbus::keys::RING_REF)?;
        c.write_u32(p.as_str(), ring_ref)?;
        let mut p = crate::xenbus::NodePath::<96>::new(d)?;
        p.push(pv_abi::xenbus::keys::EVENT_CHANNEL)?;
        c.write_u32(p.as_str(), port)
    })
    .map_err(EchoError::Connect)?;
    Ok(front)
}

impl EchoFront {
    /// Notifies the back end once, whatever the ring says.
    pub fn kick_once(&self) {
        evtchn::notify(self.port);
    }

    /// Whether the back end has gone idle: it consumed every request and
    /// armed `req_event` for the next one (its final check), so the next
    /// push is sure to need a notification. Tests that count
    /// notifications wait for this; drivers never need to.
    pub fn back_end_idle(&self) -> bool {
        use core::sync::atomic::Ordering::SeqCst;
        use ring_buffers::RingMemory;
        let mem = self.ring.memory();
        mem.load_u32(4, SeqCst) == mem.load_u32(0, SeqCst).wrapping_add(1)
    }

    /// Overwrites the shared `req_prod` (for hostile-guest tests: the back
    /// end must detect the corruption and stop the device, nothing else).
    pub fn poke_req_prod(&self, value: u32) {
        use ring_buffers::RingMemory;
        self.ring.memory().store_u32(0, value, core::sync::atomic::Ordering::SeqCst);
    }
}
