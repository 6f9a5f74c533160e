//! blkback: the block back-end (protocol in `pv_abi::blkif`) over a
//! file-backed raw image.
//!
//! Per wake-up it takes every request on the shared ring (each copied out
//! of shared memory before it is looked at), checks it against the disk and
//! the grant table, does the I/O synchronously — `preadv`/`pwritev` straight between
//! the image and the granted pages (no bounce buffer), `fdatasync` for a flush, a punched hole
//! for a discard — and answers each request; responses are published once
//! per batch and the front end is notified only when Xen's rule says it is
//! waiting (`rsp_event`). Then `req_event` is re-armed and the ring checked
//! once more before sleeping.
//!
//! The guest is untrusted. A request that is malformed (segment sectors out
//! of order or past 7, too many segments, a range past the end of the
//! disk), that names a grant the guest did not give, that writes a readonly
//! disk, or that reuses the id of a request still in flight gets
//! `BLKIF_RSP_ERROR`; an operation we do not implement gets
//! `BLKIF_RSP_EOPNOTSUPP`; both are logged. A corrupt ring index stops this
//! device only.

mod disk;
pub mod harness;
#[cfg(test)]
mod tests;
pub mod x86_32;

pub use disk::{Disk, DiskError, DiskSpec};

use crate::grant::{GrantError, GrantMapping, GrantTable};
use crate::ring_page::RingPage;
use crate::serve::RingService as _;
use crate::Notify;
use pv_abi::blkif::*;
use pv_abi::layout::PAGE_SIZE;
use ring_buffers::BackRing;
use std::sync::Arc;

/// Device type in the store (Xen's virtual block device).
pub const DEVICE_TYPE: &str = "vbd";

/// Segments an indirect request may carry (`feature-max-indirect-segments`;
/// Linux's blkback allows 256 too).
pub const MAX_INDIRECT_SEGMENTS: usize = 256;

/// Indirect pages needed for [`MAX_INDIRECT_SEGMENTS`].
const MAX_INDIRECT_PAGES: usize = MAX_INDIRECT_SEGMENTS.div_ceil(BLKIF_SEGS_PER_INDIRECT_FRAME);

/// `info` bit: the disk is read-only (Xen's `VDISK_READONLY`).
pub const VDISK_READONLY: u32 = 4;

/// Largest ring order we accept (`max-ring-page-order`): one page.
pub const MAX_RING_PAGE_ORDER: u32 = 0;

/// Traffic counters, for tests and benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlkCounters {
    /// Wake-ups from the front end (event-channel notifications).
    pub kicks: u64,
    /// Requests answered.
    pub requests: u64,
    /// Requests answered with `BLKIF_RSP_ERROR`.
    pub errors: u64,
    /// Requests answered with `BLKIF_RSP_EOPNOTSUPP`.
    pub unsupported: u64,
    /// Notifications sent to the front end.
    pub notifies: u64,
    /// Batches of responses published.
    pub batches: u64,
    /// Sectors read.
    pub sectors_read: u64,
    /// Sectors written.
    pub sectors_written: u64,
    /// Flushes (`fdatasync`) completed.
    pub flushes: u64,
    /// Discard requests completed.
    pub discards: u64,
}

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
    /// Sectors beyond the end of the disk.
    #[error("sectors {sector}+{nr} are beyond the end of the disk ({size} sectors)")]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Number of sectors.
        nr: u64,
        /// Disk size.
        size: u64,
    },
    /// A write or discard on a readonly disk.
    #[error("the disk is read-only")]
    ReadOnly,
    /// A request id still in flight.
    #[error("id {0:#x} is already in flight")]
    DuplicateId(u64),
    /// An indirect request whose real operation is not read or write.
    #[error("indirect request for operation {0}")]
    BadIndirectOp(u8),
    /// A grant the guest did not give (or not writable when it must be).
    #[error("grant: {0}")]
    Grant(#[from] GrantError),
    /// The image I/O failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl RequestError {
    /// The `BLKIF_RSP_*` status for this refusal.
    pub fn status(&self) -> i16 {
        match self {
            RequestError::Unsupported(_) => BLKIF_RSP_EOPNOTSUPP,
            _ => BLKIF_RSP_ERROR,
        }
    }
}

pub use crate::ring_page::ConnectError;

/// One data segment: a granted page and the byte range of it in use; the
/// I/O goes straight between the image and these ranges.
struct Segment {
    page: GrantMapping,
    offset: u64,
    len: usize,
}

/// blkback device logic for one connected front end.
pub struct Blkback {
    ring: BackRing<RingPage, BlkifRequest, BlkifResponse>,
    grants: Arc<GrantTable>,
    notify: Arc<dyn Notify>,
    disk: Arc<Disk>,
    broken: bool,
    /// Ids taken from the ring whose responses are not yet published.
    in_flight: Vec<u64>,
    /// Responses written but not yet published.
    unpublished: u32,
    /// Segment descriptors of the request being handled.
    descs: Vec<BlkifRequestSegment>,
    /// Counters.
    pub counters: BlkCounters,
}

impl std::fmt::Debug for Blkback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blkback").field("disk", &self.disk.path()).field("counters", &self.counters).finish()
    }
}

impl Blkback {
    /// Maps the front end's ring (grant `ring_ref`, writable) and attaches.
    pub fn connect(
        grants: Arc<GrantTable>,
        ring_ref: u32,
        notify: Arc<dyn Notify>,
        disk: Arc<Disk>,
    ) -> Result<Self, ConnectError> {
        let ring = crate::ring_page::attach_back_ring(&grants, ring_ref)?;
        Ok(Blkback {
            ring,
            grants,
            notify,
            disk,
            broken: false,
            in_flight: Vec::with_capacity(BLKIF_RING_SIZE as usize),
            unpublished: 0,
            descs: Vec::with_capacity(MAX_INDIRECT_SEGMENTS),
            counters: BlkCounters::default(),
        })
    }

    /// The disk.
    pub fn disk(&self) -> &Arc<Disk> {
        &self.disk
    }

    /// Whether a corrupt ring stopped the device.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    fn flush_responses(&mut self) {
        if self.unpublished == 0 {
            return;
        }
        self.unpublished = 0;
        self.in_flight.clear();
        self.counters.batches += 1;
        if self.ring.push_responses_and_check_notify() {
            self.counters.notifies += 1;
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
        self.counters.requests += 1;
        let status = match result {
            Ok(()) => BLKIF_RSP_OKAY,
            Err(e) => {
                tracing::warn!(
                    "blkback {}: request id {:#x} op {} refused: {e}",
                    self.disk.path().display(),
                    req.id,
                    req.operation
                );
                let status = e.status();
                if status == BLKIF_RSP_EOPNOTSUPP {
                    self.counters.unsupported += 1;
                } else {
                    self.counters.errors += 1;
                }
                status
            }
        };
        BlkifResponse { id: req.id, operation, status, ..Default::default() }
    }

    fn dispatch(&mut self, req: &BlkifRequest) -> Result<(), RequestError> {
        match req.operation {
            BLKIF_OP_READ | BLKIF_OP_WRITE => {
                self.direct_segments(req)?;
                self.transfer(req.operation, req.sector_number)
            }
            BLKIF_OP_FLUSH_DISKCACHE => {
                // A flush may carry data: write it, then flush.
                if req.nr_segments > 0 {
                    self.direct_segments(req)?;
                    self.transfer(BLKIF_OP_WRITE, req.sector_number)?;
                }
                self.disk.flush()?;
                self.counters.flushes += 1;
                Ok(())
            }
            BLKIF_OP_DISCARD => self.discard(&req.as_discard()),
            BLKIF_OP_INDIRECT => {
                let ind = req.as_indirect();
                if ind.indirect_op != BLKIF_OP_READ && ind.indirect_op != BLKIF_OP_WRITE {
                    return Err(RequestError::BadIndirectOp(ind.indirect_op));
                }
                self.indirect_segments(&ind)?;
                self.transfer(ind.indirect_op, ind.sector_number)
            }
            op => Err(RequestError::Unsupported(op)),
        }
    }

    fn direct_segments(&mut self, req: &BlkifRequest) -> Result<(), RequestError> {
        let n = req.nr_segments as usize;
        if n == 0 || n > BLKIF_MAX_SEGMENTS_PER_REQUEST {
            return Err(RequestError::SegmentCount(n, BLKIF_MAX_SEGMENTS_PER_REQUEST));
        }
        self.descs.clear();
        self.descs.extend_from_slice(&req.seg[..n]);
        Ok(())
    }

    /// Copies the segment descriptors out of the indirect pages.
    fn indirect_segments(&mut self, ind: &BlkifRequestIndirect) -> Result<(), RequestError> {
        let n = ind.nr_segments as usize;
        if n == 0 || n > MAX_INDIRECT_SEGMENTS {
            return Err(RequestError::SegmentCount(n, MAX_INDIRECT_SEGMENTS));
        }
        self.descs.clear();
        let pages = n.div_ceil(BLKIF_SEGS_PER_INDIRECT_FRAME);
        debug_assert!(pages <= MAX_INDIRECT_PAGES);
        let mut raw = [0u8; PAGE_SIZE as usize];
        for (p, &gref) in ind.indirect_grefs[..pages].iter().enumerate() {
            let in_page = (n - p * BLKIF_SEGS_PER_INDIRECT_FRAME).min(BLKIF_SEGS_PER_INDIRECT_FRAME);
            let bytes = &mut raw[..in_page * 8];
            self.grants.map(gref, false)?.read(0, bytes)?;
            self.descs.extend(bytes.chunks_exact(8).map(|c| BlkifRequestSegment {
                gref: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                first_sect: c[4],
                last_sect: c[5],
                _pad: 0,
            }));
        }
        Ok(())
    }

    /// Reads or writes the sectors from `sector` into or out of the
    /// segments in `self.descs`: everything is checked and every grant
    /// mapped before any I/O, so a refused request changes nothing.
    fn transfer(&mut self, op: u8, sector: u64) -> Result<(), RequestError> {
        let write = op == BLKIF_OP_WRITE;
        if write && self.disk.readonly() {
            return Err(RequestError::ReadOnly);
        }
        let mut nr = 0u64;
        for (index, s) in self.descs.iter().enumerate() {
            if s.first_sect > s.last_sect || u64::from(s.last_sect) >= SECTORS_PER_PAGE {
                return Err(RequestError::BadSegment { index, first: s.first_sect, last: s.last_sect });
            }
            nr += u64::from(s.last_sect - s.first_sect) + 1;
        }
        if !self.disk.in_range(sector, nr) {
            return Err(RequestError::OutOfRange { sector, nr, size: self.disk.sectors() });
        }
        if let [s] = self.descs[..] {
            // One segment (the common 4 KiB case): no allocation.
            let page = self.grants.map(s.gref, !write)?;
            let len = (usize::from(s.last_sect - s.first_sect) + 1) * SECTOR_SIZE as usize;
            let slice = page.slice(u64::from(s.first_sect) * SECTOR_SIZE, len, !write)?;
            return self.io(write, sector, nr, &[slice]);
        }
        let segs = self
            .descs
            .iter()
            .map(|s| {
                Ok(Segment {
                    // Reading the disk writes the guest's page.
                    page: self.grants.map(s.gref, !write)?,
                    offset: u64::from(s.first_sect) * SECTOR_SIZE,
                    len: (usize::from(s.last_sect - s.first_sect) + 1) * SECTOR_SIZE as usize,
                })
            })
            .collect::<Result<Vec<_>, GrantError>>()?;
        let slices =
            segs.iter().map(|s| s.page.slice(s.offset, s.len, !write)).collect::<Result<Vec<_>, GrantError>>()?;
        self.io(write, sector, nr, &slices)
    }

    fn io(
        &mut self,
        write: bool,
        sector: u64,
        nr: u64,
        slices: &[vm_memory::VolatileSlice<'_>],
    ) -> Result<(), RequestError> {
        if write {
            self.disk.write_vectored(sector, slices)?;
            self.counters.sectors_written += nr;
        } else {
            self.disk.read_vectored(sector, slices)?;
            self.counters.sectors_read += nr;
        }
        Ok(())
    }

    fn discard(&mut self, d: &BlkifRequestDiscard) -> Result<(), RequestError> {
        if d.flag & BLKIF_DISCARD_SECURE != 0 {
            // We do not advertise `discard-secure`.
            return Err(RequestError::Unsupported(BLKIF_OP_DISCARD));
        }
        if self.disk.readonly() {
            return Err(RequestError::ReadOnly);
        }
        if !self.disk.in_range(d.sector_number, d.nr_sectors) {
            return Err(RequestError::OutOfRange {
                sector: d.sector_number,
                nr: d.nr_sectors,
                size: self.disk.sectors(),
            });
        }
        self.disk.discard(d.sector_number, d.nr_sectors)?;
        self.counters.discards += 1;
        Ok(())
    }
}

impl crate::serve::RingService for Blkback {
    type Req = BlkifRequest;
    type Rsp = BlkifResponse;

    fn ring(&mut self) -> &mut BackRing<RingPage, BlkifRequest, BlkifResponse> {
        &mut self.ring
    }

    fn answer(&mut self, req: &BlkifRequest) -> BlkifResponse {
        self.reply(req)
    }

    fn publish(&mut self) {
        self.flush_responses();
    }

    fn stopped(&self) -> bool {
        self.broken
    }

    fn stop(&mut self, e: ring_buffers::RingError) {
        tracing::warn!("blkback {}: corrupt ring from the guest ({e}); device stopped", self.disk.path().display());
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

/// blkback as a [`SplitBackend`](crate::xenbus::SplitBackend): publishes
/// the disk's size and features, and is disconnected until the front end
/// publishes its `ring-ref`.
#[derive(Debug)]
pub struct BlockBackend {
    disk: Arc<Disk>,
    /// The connected device, if any.
    pub dev: Option<Blkback>,
    /// The connected device of a front end using the 32-bit ring layout.
    pub dev32: Option<x86_32::Blkback32>,
    /// Counters of earlier connections plus the live one.
    pub counters: BlkCounters,
}

impl BlockBackend {
    /// A back-end serving `disk`.
    pub fn new(disk: Disk) -> Self {
        BlockBackend { disk: Arc::new(disk), dev: None, dev32: None, counters: BlkCounters::default() }
    }

    /// The disk.
    pub fn disk(&self) -> &Arc<Disk> {
        &self.disk
    }

    /// The blkif keys published in the back-end directory.
    pub fn keys(disk: &Disk) -> Vec<(String, String)> {
        let info = if disk.readonly() { VDISK_READONLY } else { 0 };
        [
            ("sectors", disk.sectors().to_string()),
            ("sector-size", SECTOR_SIZE.to_string()),
            ("physical-sector-size", SECTOR_SIZE.to_string()),
            ("info", info.to_string()),
            ("mode", if disk.readonly() { "r" } else { "w" }.to_string()),
            ("feature-flush-cache", "1".to_string()),
            ("feature-discard", "1".to_string()),
            ("discard-granularity", SECTOR_SIZE.to_string()),
            ("discard-alignment", "0".to_string()),
            ("feature-max-indirect-segments", MAX_INDIRECT_SEGMENTS.to_string()),
            ("max-ring-page-order", MAX_RING_PAGE_ORDER.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn fold_counters(&mut self, before: BlkCounters) {
        let a = match (&self.dev, &self.dev32) {
            (Some(dev), _) => dev.counters,
            (None, Some(dev)) => dev.inner.counters,
            (None, None) => return,
        };
        let c = &mut self.counters;
        c.requests += a.requests - before.requests;
        c.errors += a.errors - before.errors;
        c.unsupported += a.unsupported - before.unsupported;
        c.notifies += a.notifies - before.notifies;
        c.batches += a.batches - before.batches;
        c.sectors_read += a.sectors_read - before.sectors_read;
        c.sectors_written += a.sectors_written - before.sectors_written;
        c.flushes += a.flushes - before.flushes;
        c.discards += a.discards - before.discards;
    }
}

impl crate::xenbus::SplitBackend for BlockBackend {
    fn device_type(&self) -> &'static str {
        DEVICE_TYPE
    }

    fn features(&self) -> Vec<(String, String)> {
        Self::keys(&self.disk)
    }

    fn connect(
        &mut self,
        front: &dyn crate::xenbus::FrontendKeys,
        grants: &Arc<GrantTable>,
        notify: Arc<dyn Notify>,
    ) -> Result<(), String> {
        let abi32 = match front.read("protocol") {
            None => false,
            Some(p) if p.trim_end_matches('\0') == "x86_64-abi" => false,
            Some(p) if p.trim_end_matches('\0') == x86_32::PROTOCOL_NAME => true,
            Some(p) => return Err(format!("front end's protocol {p:?} is neither x86_64-abi nor x86_32-abi")),
        };
        let ring_ref = match front.read("ring-page-order") {
            Some(_) if front.read_u32("ring-page-order")? > MAX_RING_PAGE_ORDER => {
                return Err(format!("ring-page-order above max-ring-page-order {MAX_RING_PAGE_ORDER}"));
            }
            Some(_) if front.read("ring-ref").is_none() => front.read_u32("ring-ref0")?,
            _ => front.read_u32("ring-ref")?,
        };
        if abi32 {
            let dev = x86_32::Blkback32::connect(grants.clone(), ring_ref, notify, self.disk.clone())
                .map_err(|e| e.to_string())?;
            self.dev32 = Some(dev);
            return Ok(());
        }
        let dev = Blkback::connect(grants.clone(), ring_ref, notify, self.disk.clone()).map_err(|e| e.to_string())?;
        self.dev = Some(dev);
        Ok(())
    }

    fn disconnect(&mut self) {
        self.dev = None;
        self.dev32 = None;
    }

    fn process(&mut self) -> bool {
        self.counters.kicks += 1;
        let mut more = false;
        if let Some(dev) = &mut self.dev {
            let before = dev.counters;
            dev.counters.kicks += 1;
            more = dev.process_budget(crate::xenbus::PROCESS_BUDGET).1;
            self.fold_counters(before);
        } else if let Some(dev) = &mut self.dev32 {
            let before = dev.inner.counters;
            dev.inner.counters.kicks += 1;
            more = dev.process_budget(crate::xenbus::PROCESS_BUDGET).1;
            self.fold_counters(before);
        }
        more
    }
}
