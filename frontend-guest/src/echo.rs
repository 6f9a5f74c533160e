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
            if self.ring.final_check_for_responses()? {
                continue;
            }
            let seen = evtchn::events(self.port);
            let mut err = None;
            evtchn::wait_until(|| {
                evtchn::events(self.port) != seen
                    || match self.ring.unconsumed_responses() {
                        Ok(n) => n > 0,
                        Err(e) => {
                            err = Some(e);
                            true
                        }
                    }
            });
            if let Some(e) = err {
                return Err(e);
            }
        }
    }

    /// Requests sent but not yet answered.
    pub fn outstanding(&self) -> u32 {
        self.ring.outstanding_requests()
    }
}
