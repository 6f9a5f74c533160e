//! A host-side blkfront that drives [`Blkback`] over a real ring in real
//! memory, without KVM: for fast protocol tests, the throughput benchmark
//! and fuzzing.
//!
//! The "guest" is a [`GuestMemoryMmap`] laid out like a small guest: a
//! grant table the harness fills (as the guest would), a ring page granted
//! to domain 0, and data pages each permanently granted read-write under
//! its own reference ([`HostFront::page_gref`]), plus
//! [`BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`] indirect pages. Blkback reaches
//! all of them only through the [`GrantTable`], exactly as in the VMM.
//!
//! Two ways to run the back end:
//!
//! * [`Harness`]: single-threaded; [`Harness::kick`] runs the back end
//!   whenever the front end would notify it. Deterministic, for tests and
//!   fuzzing; hostile front ends write anything into the ring and grants
//!   through [`HostFront`]'s raw methods.
//! * [`Threaded`]: the back end on its own thread woken by an eventfd, the
//!   front end waiting on another, as with a real event channel: for
//!   measuring throughput and requests per notification under load.

use super::{Blkback, BlockExecutor, BlockMetrics, Disk};
use crate::guest_side::{GuestSide, AFTER_TABLE};
use crate::ring_page::RingPage;
use crate::serve::RingService as _;
use crate::Notify;
use pv_abi::blkif::*;
use pv_abi::grant_table::{GrantRef, GTF_PERMIT_ACCESS, GTF_READONLY};
use pv_abi::layout::PAGE_SIZE;
use ring_buffers::{FrontRing, RingError, RingMemory};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;
use xen_domain::grant_table::GrantTable;

/// Guest-physical address of the ring page.
pub const RING: u64 = AFTER_TABLE;
/// The ring page's grant reference.
pub const RING_REF: GrantRef = 1;
/// First indirect page's grant reference.
const FIRST_INDIRECT_GREF: GrantRef = 8;
/// Guest-physical address of the first indirect page.
const INDIRECT: u64 = RING + PAGE_SIZE;
/// Guest-physical address of the first data page.
const DATA: u64 = INDIRECT + BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST as u64 * PAGE_SIZE;
pub use crate::guest_side::MAX_DATA_PAGES;

/// Counts the back end's notifications and signals an eventfd.
#[derive(Debug)]
pub struct EventNotify {
    fd: EventFd,
    count: AtomicU64,
}

impl EventNotify {
    fn new() -> std::io::Result<Self> {
        Ok(EventNotify { fd: EventFd::new(0)?, count: AtomicU64::new(0) })
    }

    /// Notifications so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Notify for EventNotify {
    fn notify(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let _ = self.fd.write(1);
    }
}

/// The front-end half: memory, grant table, front ring and data pages.
pub struct HostFront {
    side: GuestSide,
    ring: FrontRing<RingPage, BlkifRequest, BlkifResponse>,
    /// Notifications the front end sent (Xen's rule said the back end
    /// was waiting).
    pub notifies: u64,
    /// Requests published.
    pub requests: u64,
}

impl std::fmt::Debug for HostFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostFront").field("pages", &self.side.pages()).field("notifies", &self.notifies).finish()
    }
}

impl HostFront {
    /// A front end with `pages` data pages (at most [`MAX_DATA_PAGES`]) and
    /// an initialised ring.
    pub fn new(pages: u32) -> std::io::Result<Self> {
        let side = GuestSide::new(DATA, pages)?;
        let page = RingPage::assigned(side.mem(), RING).map_err(std::io::Error::other)?;
        let ring = FrontRing::init(page).map_err(|e| std::io::Error::other(e.to_string()))?;
        side.set_grant(RING_REF, RING, GTF_PERMIT_ACCESS);
        for i in 0..BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST as u32 {
            side.set_grant(FIRST_INDIRECT_GREF + i, INDIRECT + u64::from(i) * PAGE_SIZE, GTF_PERMIT_ACCESS);
        }
        let f = HostFront { side, ring, notifies: 0, requests: 0 };
        Ok(f)
    }

    /// The grant table blkback uses.
    pub fn grants(&self) -> &Arc<GrantTable> {
        self.side.grants()
    }

    /// The guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        self.side.mem()
    }

    /// Number of data pages.
    pub fn pages(&self) -> u32 {
        self.side.pages()
    }

    /// The grant reference of data page `i`.
    pub fn page_gref(&self, i: u32) -> GrantRef {
        self.side.page_gref(i)
    }

    /// Writes a grant entry as the guest would (any values: hostile tests
    /// forge entries with this).
    pub fn set_grant(&mut self, gref: GrantRef, gpa: u64, flags: u16) {
        self.side.set_grant(gref, gpa, flags);
    }

    /// Makes data page `i` read-only to the back end (or writable again).
    pub fn set_page_readonly(&mut self, i: u32, readonly: bool) {
        let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
        self.side.set_grant(self.side.page_gref(i), self.side.page_gpa(i), flags);
    }

    /// Writes `data` into data page `i` at `offset`.
    pub fn write_page(&self, i: u32, offset: u64, data: &[u8]) {
        self.side.write_page(i, offset, data);
    }

    /// Reads data page `i` at `offset`.
    pub fn read_page(&self, i: u32, offset: u64, buf: &mut [u8]) {
        self.side.read_page(i, offset, buf);
    }

    /// Writes segment descriptors into indirect page `p` (its reference is
    /// [`Self::indirect_gref`]).
    pub fn write_indirect(&self, p: usize, segs: &[BlkifRequestSegment]) {
        let at = INDIRECT + p as u64 * PAGE_SIZE;
        let page = RingPage::assigned(self.side.mem(), at).expect("inside the indirect area");
        for (i, s) in segs.iter().enumerate() {
            page.write(i * std::mem::size_of::<BlkifRequestSegment>(), s);
        }
    }

    /// The grant reference of indirect page `p`.
    pub fn indirect_gref(&self, p: usize) -> GrantRef {
        FIRST_INDIRECT_GREF + p as u32
    }

    /// Overwrites the shared `req_prod` (a hostile front end).
    pub fn corrupt_req_prod(&self, value: u32) {
        self.ring.memory().store_u32(0, value, Ordering::Release);
    }

    /// Writes `req` into the next slot without publishing it.
    pub fn push(&mut self, req: &BlkifRequest) -> Result<(), RingError> {
        self.ring.push_request(req)
    }

    /// Free request slots.
    pub fn free_requests(&self) -> u32 {
        self.ring.free_requests()
    }

    /// Publishes pushed requests; returns whether the back end must be
    /// notified (and counts it).
    pub fn publish(&mut self) -> bool {
        self.requests += u64::from(self.ring.unpublished_requests());
        let notify = self.ring.push_requests_and_check_notify();
        if notify {
            self.notifies += 1;
        }
        notify
    }

    /// Takes every response available now, then re-arms `rsp_event`
    /// (Xen's final check) and takes any that raced in.
    pub fn responses(&mut self) -> Result<Vec<BlkifResponse>, RingError> {
        let mut out = Vec::new();
        loop {
            while let Some(r) = self.ring.pop_response()? {
                out.push(r);
            }
            if !self.ring.final_check_for_responses()? {
                return Ok(out);
            }
        }
    }

    /// Requests published and not yet answered.
    pub fn outstanding(&self) -> u32 {
        self.ring.outstanding_requests()
    }

    /// Builds a direct request from `(page, first_sect, last_sect)`
    /// triples.
    pub fn request(&self, op: u8, id: u64, sector: u64, segs: &[(u32, u8, u8)]) -> BlkifRequest {
        let segs: Vec<_> = segs
            .iter()
            .map(|&(page, first, last)| BlkifRequestSegment::new(self.page_gref(page), first, last))
            .collect();
        BlkifRequest::direct(op, id, sector, &segs)
    }

    /// Builds the request(s) for `nr` sectors from `sector` into or out of
    /// data pages starting at `page`, the first transfer starting at sector
    /// `first` of that page: a direct request up to
    /// [`BLKIF_MAX_SEGMENTS_PER_REQUEST`] segments, an indirect one beyond
    /// (descriptors written to the indirect pages).
    pub fn io_request(&self, op: u8, id: u64, sector: u64, nr: u64, page: u32, first: u8) -> BlkifRequest {
        let mut segs = Vec::new();
        let (mut left, mut p, mut f) = (nr, page, u64::from(first));
        while left > 0 {
            let n = left.min(SECTORS_PER_PAGE - f);
            segs.push(BlkifRequestSegment::new(self.page_gref(p), f as u8, (f + n - 1) as u8));
            left -= n;
            p += 1;
            f = 0;
        }
        if segs.len() <= BLKIF_MAX_SEGMENTS_PER_REQUEST {
            return BlkifRequest::direct(op, id, sector, &segs);
        }
        let mut ind = BlkifRequestIndirect {
            operation: BLKIF_OP_INDIRECT,
            indirect_op: op,
            nr_segments: segs.len() as u16,
            id,
            sector_number: sector,
            ..Default::default()
        };
        for (p, chunk) in segs.chunks(BLKIF_SEGS_PER_INDIRECT_FRAME).enumerate() {
            self.write_indirect(p, chunk);
            ind.indirect_grefs[p] = self.indirect_gref(p);
        }
        BlkifRequest::from_indirect(&ind)
    }
}

/// Front end and back end in one thread.
pub struct Harness {
    /// The front end.
    pub front: HostFront,
    /// The back end.
    pub back: Blkback,
    notify: Arc<EventNotify>,
    next_id: u64,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness").field("front", &self.front).field("back", &self.back).finish()
    }
}

impl Harness {
    /// A harness serving `disk` with `pages` data pages.
    pub fn new(disk: Arc<Disk>, pages: u32) -> std::io::Result<Self> {
        let front = HostFront::new(pages)?;
        let notify = Arc::new(EventNotify::new()?);
        let device = BlockExecutor::new(disk, Arc::default());
        let log = pv_util::ratelimit::SharedLogLimiter::default();
        let back = Blkback::connect(front.grants().clone(), &[RING_REF], notify.clone(), device, log)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Harness { front, back, notify, next_id: 1 })
    }

    /// Notifications the back end sent.
    pub fn back_notifies(&self) -> u64 {
        self.notify.count()
    }

    /// The back end's metrics.
    pub fn metrics(&self) -> &BlockMetrics {
        self.back.metrics()
    }

    /// Publishes the pushed requests and runs the back end (it runs when
    /// notified, and an inline back end that is not waiting is busy, so it
    /// always runs). Returns the requests it handled.
    pub fn kick(&mut self) -> usize {
        if self.front.publish() {
            self.back.metrics().kicks.inc();
        }
        self.back.process()
    }

    /// Pushes `reqs`, kicks, and returns the responses (fewer than asked if
    /// the back end stopped).
    pub fn submit(&mut self, reqs: &[BlkifRequest]) -> Vec<BlkifResponse> {
        let mut out = Vec::new();
        for chunk in reqs.chunks(self.front.free_requests().max(1) as usize) {
            for r in chunk {
                if self.front.push(r).is_err() {
                    break;
                }
            }
            self.kick();
            match self.front.responses() {
                Ok(r) => out.extend(r),
                Err(_) => break,
            }
        }
        out
    }

    /// Sends one request and returns its status (`None` if no response).
    pub fn one(&mut self, req: BlkifRequest) -> Option<i16> {
        let rsp = self.submit(&[req]);
        match rsp.as_slice() {
            [r] if r.id == req.id => Some(r.status),
            _ => None,
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Writes `data` (whole sectors) at `sector` through data pages from 0,
    /// the first segment starting at sector `first` of page 0.
    pub fn write(&mut self, sector: u64, data: &[u8], first: u8) -> Option<i16> {
        assert!(data.len() as u64 % SECTOR_SIZE == 0 && first < 8);
        let start = u64::from(first) * SECTOR_SIZE;
        let mut pos = 0;
        let mut page = 0;
        let mut off = start;
        while pos < data.len() {
            let n = ((PAGE_SIZE - off) as usize).min(data.len() - pos);
            self.front.write_page(page, off, &data[pos..pos + n]);
            pos += n;
            page += 1;
            off = 0;
        }
        let id = self.id();
        let req = self.front.io_request(BLKIF_OP_WRITE, id, sector, data.len() as u64 / SECTOR_SIZE, 0, first);
        self.one(req)
    }

    /// Reads `nr` sectors at `sector` through data pages from 0 (first
    /// segment at sector `first` of page 0).
    pub fn read(&mut self, sector: u64, nr: u64, first: u8) -> Result<Vec<u8>, Option<i16>> {
        let id = self.id();
        let req = self.front.io_request(BLKIF_OP_READ, id, sector, nr, 0, first);
        match self.one(req) {
            Some(BLKIF_RSP_OKAY) => {}
            other => return Err(other),
        }
        let mut out = vec![0u8; (nr * SECTOR_SIZE) as usize];
        let (mut pos, mut page, mut off) = (0, 0, u64::from(first) * SECTOR_SIZE);
        while pos < out.len() {
            let n = ((PAGE_SIZE - off) as usize).min(out.len() - pos);
            self.front.read_page(page, off, &mut out[pos..pos + n]);
            pos += n;
            page += 1;
            off = 0;
        }
        Ok(out)
    }

    /// Flushes; returns the status.
    pub fn flush(&mut self) -> Option<i16> {
        let id = self.id();
        self.one(BlkifRequest { operation: BLKIF_OP_FLUSH_DISKCACHE, id, ..Default::default() })
    }

    /// Discards `nr` sectors at `sector`; returns the status.
    pub fn discard(&mut self, sector: u64, nr: u64) -> Option<i16> {
        let id = self.id();
        let d = BlkifRequestDiscard {
            operation: BLKIF_OP_DISCARD,
            id,
            sector_number: sector,
            nr_sectors: nr,
            ..Default::default()
        };
        self.one(BlkifRequest::from_discard(&d))
    }

    /// Moves the back end to its own thread.
    pub fn into_threaded(self) -> std::io::Result<Threaded> {
        Threaded::start(self)
    }
}

/// The back end on its own thread, woken through an eventfd, as in the VMM.
pub struct Threaded {
    /// The front end.
    pub front: HostFront,
    kick: Arc<EventFd>,
    notify: Arc<EventNotify>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Blkback>>,
}

impl std::fmt::Debug for Threaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Threaded").field("front", &self.front).finish_non_exhaustive()
    }
}

impl Threaded {
    fn start(h: Harness) -> std::io::Result<Self> {
        let Harness { front, mut back, notify, .. } = h;
        let kick = Arc::new(EventFd::new(0)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (k, s) = (kick.clone(), stop.clone());
        let thread = std::thread::Builder::new().name("blkback".into()).spawn(move || {
            while k.read().is_ok() && !s.load(Ordering::SeqCst) {
                back.metrics().kicks.inc();
                back.process();
            }
            back
        })?;
        Ok(Threaded { front, kick, notify, stop, thread: Some(thread) })
    }

    /// Runs `n` requests made by `make(id, slot)` (slot in `0..depth`, so
    /// a request can use pages of its own) keeping up to `depth` in flight;
    /// returns how many failed.
    pub fn run(&mut self, n: u64, depth: u32, mut make: impl FnMut(u64, u32) -> BlkifRequest) -> u64 {
        let depth = depth.clamp(1, BLKIF_RING_SIZE);
        let mut free: Vec<u32> = (0..depth).rev().collect();
        let (mut sent, mut done, mut failed) = (0u64, 0u64, 0u64);
        while done < n {
            while sent < n {
                let Some(slot) = free.pop() else { break };
                // The id carries the slot so it can be freed on completion.
                let req = make(sent << 8 | u64::from(slot), slot);
                if self.front.push(&req).is_err() {
                    free.push(slot);
                    break;
                }
                sent += 1;
            }
            if self.front.publish() {
                let _ = self.kick.write(1);
            }
            let got = match self.front.responses() {
                Ok(r) => r,
                Err(_) => return n - done,
            };
            if got.is_empty() {
                // Sleep until the back end notifies.
                let _ = self.notify.fd.read();
                continue;
            }
            for r in got {
                done += 1;
                failed += u64::from(r.status != BLKIF_RSP_OKAY);
                free.push((r.id & 0xff) as u32);
            }
        }
        failed
    }

    /// Notifications the back end sent.
    pub fn back_notifies(&self) -> u64 {
        self.notify.count()
    }

    /// Stops the back-end thread and returns the back end.
    pub fn stop(mut self) -> Blkback {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.kick.write(1);
        self.thread.take().expect("running").join().expect("blkback thread panicked")
    }
}

impl Drop for Threaded {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            let _ = self.kick.write(1);
            let _ = t.join();
        }
    }
}
