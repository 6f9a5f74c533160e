//! Request/response rings: Xen `io/ring.h` semantics.
//!
//! The front end produces requests and consumes responses ([`FrontRing`]);
//! the back end consumes requests and produces responses ([`BackRing`]).
//! Both run over one shared region of 1 or 2^n pages: the 64-byte
//! [`SringHeader`](pv_abi::ring::SringHeader) and a power-of-two array of
//! slots, each large enough for a request or a response.
//!
//! # Protocol
//!
//! * Indices are free-running `u32`s, reduced modulo the ring size only to
//!   address a slot.
//! * A producer writes entries into slots, then publishes its producer index
//!   with a release store (Xen's `wmb()`), then issues a full barrier
//!   (`mb()`) and reads the peer's event index: it must notify iff the event
//!   index lies in `(old, new]` (`RING_PUSH_*_AND_CHECK_NOTIFY`).
//! * A consumer about to sleep sets its event index to `cons + 1`, issues a
//!   full barrier and checks once more for work
//!   (`RING_FINAL_CHECK_FOR_*`): together with the producer's barrier this
//!   guarantees no lost wake-up when the two run on different CPUs.
//! * Entries are copied out of shared memory once, before the caller sees
//!   them (`RING_COPY_REQUEST`), so a peer rewriting a slot after we read it
//!   cannot change what we validated.
//! * The peer's producer index is never trusted: a request producer more
//!   than the ring size ahead of the oldest unanswered request, or a
//!   response producer beyond the requests we published, is reported as a
//!   [`RingError`] and no entry is returned.

use core::marker::PhantomData;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use pv_abi::layout::PAGE_SIZE;
use pv_abi::ring::{ring_size, slot_size, SringHeader, SRING_HEADER_SIZE};

use crate::memory::{Pod, RingMemory, RING_ALIGN};
use crate::RingError;

const REQ_PROD: usize = core::mem::offset_of!(SringHeader, req_prod);
const REQ_EVENT: usize = core::mem::offset_of!(SringHeader, req_event);
const RSP_PROD: usize = core::mem::offset_of!(SringHeader, rsp_prod);
const RSP_EVENT: usize = core::mem::offset_of!(SringHeader, rsp_event);

/// Xen's notify rule: with the producer index moving from `old` to `new`,
/// the peer asked to be woken iff its event index lies in `(old, new]`
/// (modulo 2^32).
#[inline(always)]
pub const fn need_notify(old: u32, new: u32, event: u32) -> bool {
    new.wrapping_sub(event) < new.wrapping_sub(old)
}

/// The geometry of a ring over a region of `bytes` bytes: checks the region
/// is 1 or 2^n pages and the entry types fit, and returns
/// `(number of slots, slot size)`.
pub fn geometry<Req: Pod, Rsp: Pod>(bytes: usize) -> Result<(u32, usize), RingError> {
    let slot = slot_size::<Req, Rsp>();
    let align = core::mem::align_of::<Req>().max(core::mem::align_of::<Rsp>());
    let pages = bytes / PAGE_SIZE as usize;
    if slot == 0 || align > RING_ALIGN || bytes % PAGE_SIZE as usize != 0 || !pages.is_power_of_two() {
        return Err(RingError::BadLayout);
    }
    let n = ring_size(bytes, slot);
    if n == 0 {
        return Err(RingError::BadLayout);
    }
    Ok((n, slot))
}

/// Shared state of both views: the memory and the slot geometry.
#[derive(Clone, Debug)]
struct Geometry<M> {
    mem: M,
    /// Number of slots (a power of two).
    nr_ents: u32,
    /// Bytes per slot.
    slot: usize,
}

impl<M: RingMemory> Geometry<M> {
    fn new<Req: Pod, Rsp: Pod>(mem: M) -> Result<Self, RingError> {
        let (nr_ents, slot) = geometry::<Req, Rsp>(mem.len())?;
        Ok(Geometry { mem, nr_ents, slot })
    }

    #[inline(always)]
    fn slot_offset(&self, idx: u32) -> usize {
        SRING_HEADER_SIZE + (idx & (self.nr_ents - 1)) as usize * self.slot
    }
}

/// The front end's view: produces requests, consumes responses (Xen's
/// `*_front_ring`).
#[derive(Debug)]
pub struct FrontRing<M, Req, Rsp> {
    g: Geometry<M>,
    /// Requests written but maybe not yet published.
    req_prod_pvt: u32,
    /// The request producer we last published.
    req_prod_pub: u32,
    /// Responses consumed.
    rsp_cons: u32,
    /// The last validated response producer.
    rsp_prod_seen: u32,
    _t: PhantomData<fn(Req) -> Rsp>,
}

impl<M: RingMemory, Req: Pod, Rsp: Pod> FrontRing<M, Req, Rsp> {
    /// Initialises the shared header (Xen's `SHARED_RING_INIT`: producers 0,
    /// event indices 1) and returns a front view at index 0
    /// (`FRONT_RING_INIT`). The slots are left as they are.
    pub fn init(mem: M) -> Result<Self, RingError> {
        let g = Geometry::new::<Req, Rsp>(mem)?;
        g.mem.write(0, &SringHeader::new());
        g.mem.fence();
        Ok(Self::at(g, 0, 0))
    }

    /// Attaches to an already initialised ring, continuing from the indices
    /// in shared memory (Xen's `FRONT_RING_ATTACH`). Fails if they are
    /// inconsistent.
    pub fn attach(mem: M) -> Result<Self, RingError> {
        let g = Geometry::new::<Req, Rsp>(mem)?;
        let req_prod = g.mem.load_u32(REQ_PROD, Acquire);
        let rsp_prod = g.mem.load_u32(RSP_PROD, Acquire);
        if req_prod.wrapping_sub(rsp_prod) > g.nr_ents {
            return Err(RingError::ResponsesBeyondRequests { rsp_prod, req_prod });
        }
        Ok(Self::at(g, req_prod, rsp_prod))
    }

    fn at(g: Geometry<M>, req_prod: u32, rsp_prod: u32) -> Self {
        FrontRing {
            g,
            req_prod_pvt: req_prod,
            req_prod_pub: req_prod,
            rsp_cons: rsp_prod,
            rsp_prod_seen: rsp_prod,
            _t: PhantomData,
        }
    }

    /// Number of slots (Xen's `RING_SIZE`).
    pub fn size(&self) -> u32 {
        self.g.nr_ents
    }

    /// The shared memory.
    pub fn memory(&self) -> &M {
        &self.g.mem
    }

    /// Slots free for new requests (Xen's `RING_FREE_REQUESTS`).
    #[inline]
    pub fn free_requests(&self) -> u32 {
        self.g.nr_ents - self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Whether no request slot is free (Xen's `RING_FULL`).
    #[inline]
    pub fn is_full(&self) -> bool {
        self.free_requests() == 0
    }

    /// Requests written by [`push_request`](Self::push_request) but not yet
    /// published.
    pub fn unpublished_requests(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.req_prod_pub)
    }

    /// Requests published but not yet answered by a consumed response.
    pub fn outstanding_requests(&self) -> u32 {
        self.req_prod_pub.wrapping_sub(self.rsp_cons)
    }

    /// Writes `req` into the next free slot without publishing it
    /// ([`RingError::Full`] if none is free).
    #[inline]
    pub fn push_request(&mut self, req: &Req) -> Result<(), RingError> {
        if self.is_full() {
            return Err(RingError::Full);
        }
        let off = self.g.slot_offset(self.req_prod_pvt);
        self.g.mem.write(off, req);
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Publishes the written requests without checking whether to notify
    /// (Xen's `RING_PUSH_REQUESTS`).
    pub fn push_requests(&mut self) {
        self.g.mem.store_u32(REQ_PROD, self.req_prod_pvt, Release);
        self.req_prod_pub = self.req_prod_pvt;
    }

    /// Publishes the written requests and returns whether the back end must
    /// be notified (Xen's `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`): release
    /// store of `req_prod`, full barrier, then `req_event` in `(old, new]`.
    #[inline]
    pub fn push_requests_and_check_notify(&mut self) -> bool {
        let old = self.req_prod_pub;
        let new = self.req_prod_pvt;
        self.g.mem.store_u32(REQ_PROD, new, Release);
        self.req_prod_pub = new;
        self.g.mem.fence();
        let event = self.g.mem.load_u32(REQ_EVENT, Relaxed);
        need_notify(old, new, event)
    }

    /// Reads and validates the response producer; returns the number of
    /// unconsumed responses (Xen's `RING_HAS_UNCONSUMED_RESPONSES`).
    #[inline]
    pub fn unconsumed_responses(&mut self) -> Result<u32, RingError> {
        let prod = self.g.mem.load_u32(RSP_PROD, Acquire);
        let avail = prod.wrapping_sub(self.rsp_cons);
        if avail > self.req_prod_pub.wrapping_sub(self.rsp_cons) {
            return Err(RingError::ResponsesBeyondRequests { rsp_prod: prod, req_prod: self.req_prod_pub });
        }
        self.rsp_prod_seen = prod;
        Ok(avail)
    }

    /// Copies the next response out of the ring, or `None` if there is none.
    /// An invalid response producer is an error, and then nothing is
    /// consumed.
    #[inline]
    pub fn pop_response(&mut self) -> Result<Option<Rsp>, RingError> {
        if self.rsp_cons == self.rsp_prod_seen && self.unconsumed_responses()? == 0 {
            return Ok(None);
        }
        let rsp = self.g.mem.read::<Rsp>(self.g.slot_offset(self.rsp_cons));
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Ok(Some(rsp))
    }

    /// Before sleeping: returns whether responses are waiting; if none, first
    /// asks for a notification on the next one (`rsp_event = rsp_cons + 1`,
    /// full barrier, check again). Xen's `RING_FINAL_CHECK_FOR_RESPONSES`.
    pub fn final_check_for_responses(&mut self) -> Result<bool, RingError> {
        if self.unconsumed_responses()? > 0 {
            return Ok(true);
        }
        self.g.mem.store_u32(RSP_EVENT, self.rsp_cons.wrapping_add(1), Relaxed);
        self.g.mem.fence();
        Ok(self.unconsumed_responses()? > 0)
    }
}

/// The back end's view: consumes requests, produces responses (Xen's
/// `*_back_ring`).
#[derive(Debug)]
pub struct BackRing<M, Req, Rsp> {
    g: Geometry<M>,
    /// Responses written but maybe not yet published.
    rsp_prod_pvt: u32,
    /// The response producer we last published.
    rsp_prod_pub: u32,
    /// Requests consumed.
    req_cons: u32,
    /// The last validated request producer.
    req_prod_seen: u32,
    _t: PhantomData<fn(Req) -> Rsp>,
}

impl<M: RingMemory, Req: Pod, Rsp: Pod> BackRing<M, Req, Rsp> {
    /// Attaches to a ring the front end initialised, starting at the
    /// published response producer (Xen's `BACK_RING_ATTACH` with
    /// `rsp_prod`; 0 on a fresh ring). The request producer is validated
    /// on every read, not here.
    pub fn attach(mem: M) -> Result<Self, RingError> {
        let g = Geometry::new::<Req, Rsp>(mem)?;
        let start = g.mem.load_u32(RSP_PROD, Acquire);
        Ok(BackRing {
            g,
            rsp_prod_pvt: start,
            rsp_prod_pub: start,
            req_cons: start,
            req_prod_seen: start,
            _t: PhantomData,
        })
    }

    /// Number of slots (Xen's `RING_SIZE`).
    pub fn size(&self) -> u32 {
        self.g.nr_ents
    }

    /// The shared memory.
    pub fn memory(&self) -> &M {
        &self.g.mem
    }

    /// Requests consumed but not yet answered.
    pub fn pending_responses(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
    }

    /// Reads and validates the request producer; returns the number of
    /// unconsumed requests (Xen's `RING_HAS_UNCONSUMED_REQUESTS` together
    /// with `RING_REQUEST_PROD_OVERFLOW`).
    #[inline]
    pub fn unconsumed_requests(&mut self) -> Result<u32, RingError> {
        let prod = self.g.mem.load_u32(REQ_PROD, Acquire);
        // The front end may have at most `size` requests unanswered: a
        // producer further ahead (or behind us) is corrupt.
        if prod.wrapping_sub(self.rsp_prod_pvt) > self.g.nr_ents || prod.wrapping_sub(self.req_cons) > self.g.nr_ents {
            return Err(RingError::PeerOverrun { prod, cons: self.req_cons });
        }
        self.req_prod_seen = prod;
        Ok(prod.wrapping_sub(self.req_cons))
    }

    /// Copies the next request out of the ring (Xen's `RING_COPY_REQUEST`),
    /// or `None` if there is none. Validate the returned copy; the slot
    /// itself may change under you. An invalid request producer is an
    /// error, and then nothing is consumed.
    #[inline]
    pub fn pop_request(&mut self) -> Result<Option<Req>, RingError> {
        if self.req_cons == self.req_prod_seen && self.unconsumed_requests()? == 0 {
            return Ok(None);
        }
        let req = self.g.mem.read::<Req>(self.g.slot_offset(self.req_cons));
        self.req_cons = self.req_cons.wrapping_add(1);
        Ok(Some(req))
    }

    /// Writes `rsp` into the slot of the oldest unanswered request without
    /// publishing it ([`RingError::Full`] if every consumed request has been
    /// answered).
    #[inline]
    pub fn push_response(&mut self, rsp: &Rsp) -> Result<(), RingError> {
        if self.rsp_prod_pvt == self.req_cons {
            return Err(RingError::Full);
        }
        let off = self.g.slot_offset(self.rsp_prod_pvt);
        self.g.mem.write(off, rsp);
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Publishes the written responses without checking whether to notify
    /// (Xen's `RING_PUSH_RESPONSES`).
    pub fn push_responses(&mut self) {
        self.g.mem.store_u32(RSP_PROD, self.rsp_prod_pvt, Release);
        self.rsp_prod_pub = self.rsp_prod_pvt;
    }

    /// Publishes the written responses and returns whether the front end
    /// must be notified (Xen's `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`).
    #[inline]
    pub fn push_responses_and_check_notify(&mut self) -> bool {
        let old = self.rsp_prod_pub;
        let new = self.rsp_prod_pvt;
        self.g.mem.store_u32(RSP_PROD, new, Release);
        self.rsp_prod_pub = new;
        self.g.mem.fence();
        let event = self.g.mem.load_u32(RSP_EVENT, Relaxed);
        need_notify(old, new, event)
    }

    /// Before sleeping: returns whether requests are waiting; if none, first
    /// asks for a notification on the next one (`req_event = req_cons + 1`,
    /// full barrier, check again). Xen's `RING_FINAL_CHECK_FOR_REQUESTS`.
    pub fn final_check_for_requests(&mut self) -> Result<bool, RingError> {
        if self.unconsumed_requests()? > 0 {
            return Ok(true);
        }
        self.g.mem.store_u32(REQ_EVENT, self.req_cons.wrapping_add(1), Relaxed);
        self.g.mem.fence();
        Ok(self.unconsumed_requests()? > 0)
    }
}
