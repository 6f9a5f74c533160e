//! The Xen transport of the block device: a blkif ring page, grant
//! references and an event channel, set up by the xenbus handshake.
//!
//! Per request it copies the slot off the ring (the ring view copies before
//! anything is looked at), validates it against blkif's rules (segment
//! count and sector bounds, indirect pages, ids in flight), maps every
//! grant (writable where the device writes the page), builds a
//! transport-free [`Request`] and hands it to the [`BlockExecutor`], then
//! writes the `blkif_response`. It knows nothing of files.
//!
//! A refusal gets `BLKIF_RSP_ERROR` (or `BLKIF_RSP_EOPNOTSUPP` for an
//! operation not implemented) and a rate-limited warning. A corrupt ring
//! index stops this device only.

use super::executor::{BlockError, BlockExecutor};
use super::metrics::BlockMetrics;
use super::request::{Operation, Request, Status};
use super::Disk;
use crate::ring_page::RingPage;
use crate::serve::RingService as _;
use crate::Notify;
use pv_abi::blkif::*;
use pv_abi::xenbus::{keys as xb, XEN_IO_PROTO_ABI_X86_32, XEN_IO_PROTO_ABI_X86_64};
use pv_util::ratelimit::SharedLogLimiter;
use xen_domain::grant_table::{GrantError, GrantMapping, GrantTable};

pub mod x86_32;
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use ring_buffers::BackRing;
use std::sync::{Arc, Mutex};
use vm_memory::VolatileSlice;
use vmm_sys_util::eventfd::EventFd;

/// Segments an indirect request may carry (`feature-max-indirect-segments`;
/// Linux's blkback allows 256 too).
pub const MAX_INDIRECT_SEGMENTS: usize = 256;

/// Indirect pages needed for [`MAX_INDIRECT_SEGMENTS`].
const MAX_INDIRECT_PAGES: usize = MAX_INDIRECT_SEGMENTS.div_ceil(BLKIF_SEGS_PER_INDIRECT_FRAME);

/// Largest ring order we accept (`max-ring-page-order`): 16 pages, as
/// Linux's blkback (`XENBUS_MAX_RING_GRANT_ORDER`, the default of its
/// `max_ring_page_order` parameter).
pub const MAX_RING_PAGE_ORDER: u32 = 4;

/// Queues a disk offers (`multi-queue-max-queues`): each is served on a
/// thread of its own, so more than the host's CPUs only adds threads.
pub const MAX_QUEUES: u32 = 4;

/// Why a request is refused; logged, then answered with [`Self::status`].
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// An operation this back-end does not implement.
    #[error("operation {0} is not supported")]
    Unsupported(u8),
    /// A request with no segments, or more than allowed.
    #[error("{0} segments (allowed 1..={1})")]
    SegmentCount(usize, usize),
    /// A segment whose sectors are out of order or past the page.
    #[error("segment {index}: sectors {first}..={last} are not within 0..=7 in order")]
    BadSegment {
        /// Index of the segment.
        index: usize,
        /// `first_sect`.
        first: u8,
        /// `last_sect`.
        last: u8,
    },
    /// A request id still in flight.
    #[error("id {0:#x} is already in flight")]
    DuplicateId(u64),
    /// An indirect request whose real operation is not read or write.
    #[error("indirect request for operation {0}")]
    BadIndirectOp(u8),
    /// A grant the guest did not give (or not writable when it must be).
    #[error("grant: {0}")]
    Grant(#[from] GrantError),
    /// The device refused or failed it.
    #[error(transparent)]
    Device(#[from] BlockError),
}

impl RequestError {
    /// The `BLKIF_RSP_*` status for this refusal.
    pub fn status(&self) -> i16 {
        match self {
            RequestError::Unsupported(_) => BLKIF_RSP_EOPNOTSUPP,
            RequestError::Device(e) => blkif_status(e.status()),
            _ => BLKIF_RSP_ERROR,
        }
    }
}

/// The blkif encoding of a device status.
pub fn blkif_status(s: Status) -> i16 {
    match s {
        Status::Ok => BLKIF_RSP_OKAY,
        Status::IoError => BLKIF_RSP_ERROR,
        Status::Unsupported => BLKIF_RSP_EOPNOTSUPP,
    }
}

pub use crate::ring_page::ConnectError;

/// A blkif ring layout: the request and response structures a front
/// end's `protocol` selects, converted to and from the native (x86-64)
/// layout the transport validates. Converting is the transport's job; the
/// device logic never sees a layout.
pub trait RingLayout: Send + 'static {
    /// The request as it lies on the ring.
    type Req: ring_buffers::Pod;
    /// The response as it lies on the ring.
    type Rsp: ring_buffers::Pod;
    /// Calls `f` with the request (already copied off the ring) in the
    /// native layout.
    fn native<R>(req: &Self::Req, f: impl FnOnce(&BlkifRequest) -> R) -> R;
    /// The response in the ring's layout.
    fn response(rsp: BlkifResponse) -> Self::Rsp;
}

/// The native x86-64 layout (`protocol` [`XEN_IO_PROTO_ABI_X86_64`], or
/// no `protocol` at all).
#[derive(Debug)]
pub struct X86_64;

impl RingLayout for X86_64 {
    type Req = BlkifRequest;
    type Rsp = BlkifResponse;

    fn native<R>(req: &BlkifRequest, f: impl FnOnce(&BlkifRequest) -> R) -> R {
        f(req)
    }

    fn response(rsp: BlkifResponse) -> BlkifResponse {
        rsp
    }
}

/// The Xen transport of one connected block front end whose ring has
/// layout `L`.
pub struct Blkback<L: RingLayout = X86_64> {
    ring: BackRing<RingPage, L::Req, L::Rsp>,
    grants: Arc<GrantTable>,
    notify: Arc<dyn Notify>,
    device: BlockExecutor,
    broken: bool,
    /// Ids taken from the ring whose responses are not yet published.
    in_flight: Vec<u64>,
    /// Responses written but not yet published.
    unpublished: u32,
    /// Requests answered and not yet added to the metrics (they are added
    /// once per batch: one atomic add instead of one per request).
    answered: u64,
    /// Segment descriptors of the request being handled.
    descs: Vec<BlkifRequestSegment>,
    /// Guest-caused log lines: the device's budget, shared by its
    /// connections.
    pub(crate) log: SharedLogLimiter,
}

impl<L: RingLayout> std::fmt::Debug for Blkback<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blkback").field("device", &self.device).finish_non_exhaustive()
    }
}

impl<L: RingLayout> Blkback<L> {
    /// Maps the front end's ring (grants `ring_refs`: one page, or the
    /// 2^order pages of a multi-page ring, writable) and attaches the
    /// transport to `device`.
    pub fn connect(
        grants: Arc<GrantTable>,
        ring_refs: &[u32],
        notify: Arc<dyn Notify>,
        device: BlockExecutor,
        log: SharedLogLimiter,
    ) -> Result<Self, ConnectError> {
        let ring: BackRing<RingPage, L::Req, L::Rsp> = crate::ring_page::attach_back_ring_pages(&grants, ring_refs)?;
        let slots = ring.size() as usize;
        Ok(Blkback {
            ring,
            grants,
            notify,
            device,
            broken: false,
            in_flight: Vec::with_capacity(slots),
            unpublished: 0,
            answered: 0,
            descs: Vec::with_capacity(MAX_INDIRECT_SEGMENTS),
            log,
        })
    }

    /// The disk.
    pub fn disk(&self) -> &Arc<Disk> {
        self.device.disk()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<BlockMetrics> {
        self.device.metrics()
    }

    /// Whether a corrupt ring stopped the device.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Adds the requests answered since the last call to the metrics.
    pub(super) fn count_answered(&mut self) {
        if self.answered != 0 {
            self.device.metrics().requests.add(std::mem::take(&mut self.answered));
        }
    }

    fn flush_responses(&mut self) {
        self.count_answered();
        if self.unpublished == 0 {
            return;
        }
        self.unpublished = 0;
        self.in_flight.clear();
        self.metrics().batches.inc();
        if self.ring.push_responses_and_check_notify() {
            self.metrics().notifies.inc();
            self.notify.notify();
        }
    }

    /// Handles one request (already copied out of the ring).
    fn reply(&mut self, req: &BlkifRequest) -> BlkifResponse {
        let operation = if req.operation == BLKIF_OP_INDIRECT { req.as_indirect().indirect_op } else { req.operation };
        let result = if self.in_flight.contains(&req.id) {
            Err(RequestError::DuplicateId(req.id))
        } else {
            self.in_flight.push(req.id);
            self.dispatch(req)
        };
        self.answered += 1;
        let status = match result {
            Ok(()) => BLKIF_RSP_OKAY,
            Err(e) => self.refused(req, &e),
        };
        BlkifResponse { id: req.id, operation, status, ..Default::default() }
    }

    fn refused(&mut self, req: &BlkifRequest, e: &RequestError) -> i16 {
        let disk = self.device.disk().path().display();
        pv_util::limited_warn!(self.log, %disk, id = req.id, op = req.operation, "blkback: request refused: {e}");
        let status = e.status();
        if status == BLKIF_RSP_EOPNOTSUPP {
            self.metrics().unsupported.inc();
        } else {
            self.metrics().errors.inc();
        }
        status
    }

    fn dispatch(&mut self, req: &BlkifRequest) -> Result<(), RequestError> {
        match req.operation {
            BLKIF_OP_READ | BLKIF_OP_WRITE => {
                let op = if req.operation == BLKIF_OP_READ { Operation::Read } else { Operation::Write };
                self.run(Self::direct_segments(req)?, op, req.sector_number)
            }
            BLKIF_OP_FLUSH_DISKCACHE => {
                // A flush may carry data: the device writes it, then flushes.
                let descs = if req.nr_segments > 0 { Self::direct_segments(req)? } else { &[] };
                self.run(descs, Operation::Flush, req.sector_number)
            }
            BLKIF_OP_DISCARD => {
                let d = req.as_discard();
                if d.flag & BLKIF_DISCARD_SECURE != 0 {
                    // We do not advertise `discard-secure`.
                    return Err(RequestError::Unsupported(BLKIF_OP_DISCARD));
                }
                let op = Operation::Discard { sectors: d.nr_sectors };
                Ok(self.device.execute(&Request { op, sector: d.sector_number, data: &[] })?)
            }
            BLKIF_OP_INDIRECT => {
                let ind = req.as_indirect();
                let op = match ind.indirect_op {
                    BLKIF_OP_READ => Operation::Read,
                    BLKIF_OP_WRITE => Operation::Write,
                    other => return Err(RequestError::BadIndirectOp(other)),
                };
                self.indirect_segments(&ind)?;
                self.run(&self.descs, op, ind.sector_number)
            }
            op => Err(RequestError::Unsupported(op)),
        }
    }

    /// The segment descriptors of a direct request (already copied off
    /// the ring with it), after checking their number.
    fn direct_segments(req: &BlkifRequest) -> Result<&[BlkifRequestSegment], RequestError> {
        let n = req.nr_segments as usize;
        if n == 0 || n > BLKIF_MAX_SEGMENTS_PER_REQUEST {
            return Err(RequestError::SegmentCount(n, BLKIF_MAX_SEGMENTS_PER_REQUEST));
        }
        Ok(&req.seg[..n])
    }

    /// Copies the segment descriptors out of the indirect pages.
    fn indirect_segments(&mut self, ind: &BlkifRequestIndirect) -> Result<(), RequestError> {
        let n = ind.nr_segments as usize;
        if n == 0 || n > MAX_INDIRECT_SEGMENTS {
            return Err(RequestError::SegmentCount(n, MAX_INDIRECT_SEGMENTS));
        }
        let pages = n.div_ceil(BLKIF_SEGS_PER_INDIRECT_FRAME);
        debug_assert!(pages <= MAX_INDIRECT_PAGES);
        self.descs.clear();
        self.descs.resize(n, BlkifRequestSegment::default());
        let chunks = self.descs.chunks_mut(BLKIF_SEGS_PER_INDIRECT_FRAME);
        for (&gref, descs) in ind.indirect_grefs[..pages].iter().zip(chunks) {
            self.grants.map(gref, false)?.read_pod(0, descs)?;
        }
        Ok(())
    }

    /// Checks the segments `descs` (copied out of guest memory), maps
    /// their grants and runs the request: everything is checked and every
    /// grant mapped before any I/O, so a refused request changes nothing.
    fn run(&self, descs: &[BlkifRequestSegment], op: Operation, sector: u64) -> Result<(), RequestError> {
        for (index, s) in descs.iter().enumerate() {
            if s.first_sect > s.last_sect || u64::from(s.last_sect) >= SECTORS_PER_PAGE {
                return Err(RequestError::BadSegment { index, first: s.first_sect, last: s.last_sect });
            }
        }
        let writable = op.writes_guest_memory();
        let range = |s: &BlkifRequestSegment| {
            (
                u64::from(s.first_sect) * SECTOR_SIZE,
                (usize::from(s.last_sect - s.first_sect) + 1) * SECTOR_SIZE as usize,
            )
        };
        match *descs {
            [] => Ok(self.device.execute(&Request { op, sector, data: &[] })?),
            [s] => {
                // One segment (the common 4 KiB case): no allocation.
                let page = self.grants.map_scoped(s.gref, writable)?;
                let (offset, len) = range(&s);
                let data = [page.slice(offset, len, writable)?];
                Ok(self.device.execute(&Request { op, sector, data: &data })?)
            }
            _ if descs.len() <= BLKIF_MAX_SEGMENTS_PER_REQUEST => {
                // A direct request: inline storage, no allocation.
                let mut pages: [Option<GrantMapping<&GrantTable>>; BLKIF_MAX_SEGMENTS_PER_REQUEST] = Default::default();
                for (page, s) in pages.iter_mut().zip(descs) {
                    *page = Some(self.grants.map_scoped(s.gref, writable)?);
                }
                let mut data: [VolatileSlice<'_>; BLKIF_MAX_SEGMENTS_PER_REQUEST] =
                    std::array::from_fn(|_| VolatileSlice::from(&mut [][..]));
                for ((d, page), s) in data.iter_mut().zip(pages.iter().flatten()).zip(descs) {
                    let (offset, len) = range(s);
                    *d = page.slice(offset, len, writable)?;
                }
                Ok(self.device.execute(&Request { op, sector, data: &data[..descs.len()] })?)
            }
            _ => {
                // Indirect: up to MAX_INDIRECT_SEGMENTS.
                let pages = descs
                    .iter()
                    .map(|s| self.grants.map_scoped(s.gref, writable))
                    .collect::<Result<Vec<_>, GrantError>>()?;
                let data = pages
                    .iter()
                    .zip(descs)
                    .map(|(page, s)| {
                        let (offset, len) = range(s);
                        page.slice(offset, len, writable)
                    })
                    .collect::<Result<Vec<_>, GrantError>>()?;
                Ok(self.device.execute(&Request { op, sector, data: &data })?)
            }
        }
    }
}

impl<L: RingLayout> crate::serve::RingService for Blkback<L> {
    type Req = L::Req;
    type Rsp = L::Rsp;

    fn ring(&mut self) -> &mut BackRing<RingPage, L::Req, L::Rsp> {
        &mut self.ring
    }

    fn answer(&mut self, req: &L::Req) -> L::Rsp {
        L::response(L::native(req, |req| self.reply(req)))
    }

    fn cost(&self, req: &L::Req) -> usize {
        L::native(req, |req| {
            if req.operation == BLKIF_OP_DISCARD {
                BlockExecutor::cost(Operation::Discard { sectors: req.as_discard().nr_sectors })
            } else {
                1
            }
        })
    }

    fn publish(&mut self) {
        self.flush_responses();
    }

    fn stopped(&self) -> bool {
        self.broken
    }

    fn stop(&mut self, e: ring_buffers::RingError) {
        let disk = self.device.disk().path().display();
        pv_util::limited_warn!(self.log, %disk, "blkback: corrupt ring from the guest ({e}); device stopped");
        self.metrics().ring_errors.inc();
        self.broken = true;
    }

    fn pushed(&mut self) {
        self.unpublished += 1;
        if self.unpublished >= self.ring.size() {
            // A batch never outgrows the ring, however fast the front end
            // (or a hostile one) produces.
            self.flush_responses();
        }
    }
}

/// The block device type: `--device vbd,<path>[,readonly]` (as `--disk`);
/// ids follow Xen's `xvd` numbering ([`vbd_vdev`]); each disk has a device
/// thread of its own.
pub const DEVICE: crate::xenbus::DeviceType =
    crate::xenbus::DeviceType { name: DEVICE_TYPE, id: vbd_vdev, own_thread: true, build };

/// The virtual device number of the `i`-th disk: Xen's `xvd` numbering
/// (major 202, 16 minors per disk), so disk 0 is `xvda` = 51712.
pub fn vbd_vdev(i: usize) -> u32 {
    (202 << 8) + 16 * i as u32
}

fn build(options: &str) -> Result<Box<dyn crate::xenbus::XenbusBackend>, crate::xenbus::BuildError> {
    let spec: super::DiskSpec = options.parse()?;
    let disk = Disk::open(&spec)?;
    Ok(Box::new(BlockBackend::new(disk)))
}

/// One queue's connected transport, in the ring layout its front end
/// chose (`protocol`).
#[derive(Debug)]
pub enum QueueRing {
    /// The native x86-64 layout.
    X86_64(Blkback),
    /// The 32-bit layout.
    X86_32(Blkback<x86_32::X86_32>),
}

impl QueueRing {
    /// Maps the ring `ring_refs` in the layout `abi32` says.
    fn connect(
        abi32: bool,
        grants: &Arc<GrantTable>,
        ring_refs: &[u32],
        notify: Arc<dyn Notify>,
        device: BlockExecutor,
        log: &SharedLogLimiter,
    ) -> Result<Self, ConnectError> {
        Ok(if abi32 {
            QueueRing::X86_32(Blkback::connect(grants.clone(), ring_refs, notify, device, log.clone())?)
        } else {
            QueueRing::X86_64(Blkback::connect(grants.clone(), ring_refs, notify, device, log.clone())?)
        })
    }

    /// Serves the ring, at most [`PROCESS_BUDGET`](crate::xenbus::PROCESS_BUDGET)
    /// requests; `true` if work is left.
    pub fn process(&mut self) -> bool {
        match self {
            QueueRing::X86_64(d) => d.process_budget(crate::xenbus::PROCESS_BUDGET).1,
            QueueRing::X86_32(d) => d.process_budget(crate::xenbus::PROCESS_BUDGET).1,
        }
    }

    /// Whether a corrupt ring stopped the queue.
    pub fn is_broken(&self) -> bool {
        match self {
            QueueRing::X86_64(d) => d.is_broken(),
            QueueRing::X86_32(d) => d.is_broken(),
        }
    }
}

/// Queue `N >= 1` of a disk, served by its own subscriber on a thread of
/// its own: its ring and the eventfd its event channel signals, behind a
/// lock no other queue takes (the device thread takes it only to connect
/// and disconnect).
#[derive(Debug)]
pub struct BlkQueue {
    wake: Arc<EventFd>,
    ring: Option<QueueRing>,
    metrics: Arc<BlockMetrics>,
}

impl BlkQueue {
    /// The connected ring, if any.
    pub fn ring(&self) -> Option<&QueueRing> {
        self.ring.as_ref()
    }

    /// Serves the ring once (what a wake-up does); `true` if work is left.
    pub fn process(&mut self) -> bool {
        let Some(ring) = &mut self.ring else { return false };
        self.metrics.kicks.inc();
        ring.process()
    }
}

impl MutEventSubscriber for BlkQueue {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.event_set().contains(EventSet::IN) {
            let _ = self.wake.read();
            if BlkQueue::process(self) {
                // Work left: come back after the other ready sources.
                let _ = self.wake.write(1);
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(&*self.wake, crate::xenbus::token::EVTCHN_WAKE, EventSet::IN)) {
            tracing::error!("blkback: cannot watch a queue's eventfd: {e}");
        }
    }
}

fn lock_queue(q: &Mutex<BlkQueue>) -> std::sync::MutexGuard<'_, BlkQueue> {
    // A queue's state stays consistent if its thread panicked mid-wake:
    // the ring view checks every index it reads.
    q.lock().unwrap_or_else(|p| p.into_inner())
}

/// The block device as a [`SplitBackend`](crate::xenbus::SplitBackend):
/// publishes the disk's size and features, and is disconnected until the
/// front end publishes its rings. Multi-queue as Linux's blkback
/// (`multi-queue-max-queues`; the front end's `multi-queue-num-queues`
/// and `queue-<N>/ring-ref`, `queue-<N>/event-channel`): queue 0 is served
/// on the device thread, queue N on the thread of `queue_subscribers()[N-1]`.
#[derive(Debug)]
pub struct BlockBackend {
    disk: Arc<Disk>,
    metrics: Arc<BlockMetrics>,
    /// Queue 0's connected transport, if any.
    pub queue0: Option<QueueRing>,
    /// Queues 1.. (made at once, connected when the front end asks).
    queues: Vec<Arc<Mutex<BlkQueue>>>,
}

impl BlockBackend {
    /// A back-end serving `disk` on up to [`MAX_QUEUES`] queues.
    pub fn new(disk: Disk) -> Self {
        Self::with_queues(disk, MAX_QUEUES)
    }

    /// A back-end serving `disk` on up to `max_queues` (at least 1) queues.
    pub fn with_queues(disk: Disk, max_queues: u32) -> Self {
        let metrics: Arc<BlockMetrics> = Arc::default();
        let queues = (1..max_queues.max(1))
            .map_while(|_| {
                // An eventfd cannot fail but for fd exhaustion: then offer
                // fewer queues rather than none.
                let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).ok()?);
                Some(Arc::new(Mutex::new(BlkQueue { wake, ring: None, metrics: metrics.clone() })))
            })
            .collect();
        BlockBackend { disk: Arc::new(disk), metrics, queue0: None, queues }
    }

    /// The disk.
    pub fn disk(&self) -> &Arc<Disk> {
        &self.disk
    }

    /// The metrics (shared with every connection).
    pub fn metrics(&self) -> &Arc<BlockMetrics> {
        &self.metrics
    }

    /// Queue `n >= 1` (tests: serve it without a thread).
    pub fn queue(&self, n: u32) -> Option<&Arc<Mutex<BlkQueue>>> {
        self.queues.get((n as usize).checked_sub(1)?)
    }

    /// Queues connected now (0 while disconnected).
    pub fn connected_queues(&self) -> u32 {
        let more = self.queues.iter().filter(|q| lock_queue(q).ring.is_some()).count() as u32;
        u32::from(self.queue0.is_some()) + more
    }

    /// The blkif keys published in the back-end directory.
    pub fn keys(disk: &Disk) -> Vec<(String, String)> {
        Self::keys_with(disk, MAX_QUEUES)
    }

    fn keys_with(disk: &Disk, max_queues: u32) -> Vec<(String, String)> {
        use pv_abi::blkif::keys::*;
        let info = if disk.readonly() { VDISK_READONLY } else { 0 };
        [
            (SECTORS, disk.sectors().to_string()),
            (keys::SECTOR_SIZE, pv_abi::blkif::SECTOR_SIZE.to_string()),
            (PHYSICAL_SECTOR_SIZE, pv_abi::blkif::SECTOR_SIZE.to_string()),
            (INFO, info.to_string()),
            (MODE, if disk.readonly() { "r" } else { "w" }.to_string()),
            (FEATURE_FLUSH_CACHE, "1".to_string()),
            (FEATURE_DISCARD, "1".to_string()),
            (DISCARD_GRANULARITY, pv_abi::blkif::SECTOR_SIZE.to_string()),
            (DISCARD_ALIGNMENT, "0".to_string()),
            (FEATURE_MAX_INDIRECT_SEGMENTS, MAX_INDIRECT_SEGMENTS.to_string()),
            (xb::MAX_RING_PAGE_ORDER, MAX_RING_PAGE_ORDER.to_string()),
            (xb::MULTI_QUEUE_MAX_QUEUES, max_queues.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Whether the front end uses the 32-bit ring layout (`protocol`
    /// absent means the native x86-64 one).
    fn abi32(front: &dyn crate::xenbus::FrontendKeys) -> Result<bool, ConnectError> {
        match front.read(xb::PROTOCOL) {
            None => Ok(false),
            Some(p) if p.trim_end_matches('\0') == XEN_IO_PROTO_ABI_X86_64 => Ok(false),
            Some(p) if p.trim_end_matches('\0') == XEN_IO_PROTO_ABI_X86_32 => Ok(true),
            Some(p) => Err(ConnectError::Protocol(p)),
        }
    }

    /// The ring references of the queue whose keys are under `dir` (""
    /// with one queue, `queue-<N>/` with several), as Linux's blkback
    /// reads them (`read_per_ring_refs()` in
    /// `drivers/block/xen-blkback/xenbus.c`): `ring-page-order` (one for
    /// all queues, at the top) above [`MAX_RING_PAGE_ORDER`] is refused;
    /// with it, `ring-ref0`..`ring-ref<2^order - 1>`, else `ring-ref`
    /// (a front end giving order 0 may still write `ring-ref`).
    fn ring_refs(front: &dyn crate::xenbus::FrontendKeys, dir: &str) -> Result<Vec<u32>, ConnectError> {
        let key = |k: &str| front.read_u32(&format!("{dir}{k}")).map_err(ConnectError::FrontendKey);
        if front.read(xb::RING_PAGE_ORDER).is_none() {
            return Ok(vec![key(xb::RING_REF)?]);
        }
        let order = front.read_u32(xb::RING_PAGE_ORDER).map_err(ConnectError::FrontendKey)?;
        if order > MAX_RING_PAGE_ORDER {
            return Err(ConnectError::RingOrder(MAX_RING_PAGE_ORDER));
        }
        if order == 0 && front.read(&format!("{dir}{}", xb::RING_REF)).is_some() {
            return Ok(vec![key(xb::RING_REF)?]);
        }
        (0..1u32 << order).map(|i| key(&format!("{}{i}", xb::RING_REF))).collect()
    }

    /// Maps queue `n`'s ring (keys under `dir`).
    fn connect_ring(
        &self,
        front: &dyn crate::xenbus::FrontendKeys,
        dir: &str,
        grants: &Arc<GrantTable>,
        notify: Arc<dyn Notify>,
        log: &SharedLogLimiter,
    ) -> Result<QueueRing, ConnectError> {
        let abi32 = Self::abi32(front)?;
        let ring_refs = Self::ring_refs(front, dir)?;
        let device = BlockExecutor::new(self.disk.clone(), self.metrics.clone());
        QueueRing::connect(abi32, grants, &ring_refs, notify, device, log)
    }
}

impl crate::xenbus::SplitBackend for BlockBackend {
    fn device_type(&self) -> &'static str {
        DEVICE_TYPE
    }

    fn metrics(&self) -> Arc<dyn pv_util::metrics::DeviceMetrics> {
        self.metrics.clone()
    }

    fn features(&self) -> Vec<(String, String)> {
        Self::keys_with(&self.disk, self.max_queues())
    }

    fn connect(
        &mut self,
        front: &dyn crate::xenbus::FrontendKeys,
        grants: &Arc<GrantTable>,
        notify: Arc<dyn Notify>,
        log: &SharedLogLimiter,
    ) -> Result<(), ConnectError> {
        self.queue0 = Some(self.connect_ring(front, "", grants, notify, log)?);
        Ok(())
    }

    fn max_queues(&self) -> u32 {
        1 + self.queues.len() as u32
    }

    fn queue_wake(&self, q: u32) -> Option<Arc<EventFd>> {
        Some(lock_queue(self.queue(q)?).wake.clone())
    }

    fn queue_subscribers(&self) -> Vec<Arc<Mutex<dyn MutEventSubscriber + Send>>> {
        self.queues.iter().map(|q| q.clone() as Arc<Mutex<dyn MutEventSubscriber + Send>>).collect()
    }

    fn connect_queues(
        &mut self,
        front: &dyn crate::xenbus::FrontendKeys,
        grants: &Arc<GrantTable>,
        notifies: Vec<Arc<dyn Notify>>,
        log: &SharedLogLimiter,
    ) -> Result<(), ConnectError> {
        // Every ring is mapped before any queue is served: a refused one
        // leaves the device disconnected (all mappings dropped).
        let rings = notifies
            .into_iter()
            .enumerate()
            .map(|(n, notify)| {
                let dir = format!("{}{n}/", xb::QUEUE_PREFIX);
                self.connect_ring(front, &dir, grants, notify, log)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut rings = rings.into_iter();
        self.queue0 = rings.next();
        for (q, ring) in self.queues.iter().zip(rings) {
            let mut q = lock_queue(q);
            q.ring = Some(ring);
            // A notification that came before the ring did is not lost.
            let _ = q.wake.write(1);
        }
        Ok(())
    }

    fn disconnect(&mut self) {
        self.queue0 = None;
        for q in &self.queues {
            lock_queue(q).ring = None;
        }
    }

    fn process(&mut self) -> bool {
        self.metrics.kicks.inc();
        self.queue0.as_mut().is_some_and(QueueRing::process)
    }
}
