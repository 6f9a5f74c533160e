//! virtio-blk (virtio 1.x section 5.2) over a [`Disk`]: `IN`, `OUT`,
//! `FLUSH`, `GET_ID` and `DISCARD`, with the same durability rule as
//! blkback (a flush is answered only after `fdatasync` returns).
//!
//! A request is a checked [`Chain`]: a 16-byte header (type, priority,
//! sector) in the device-readable part, then the data, then one status byte
//! at the end of the device-writable part. The header is copied out of
//! guest memory before it is looked at; the data moves straight between
//! the image and guest memory (`preadv`/`pwritev`), through the shared
//! [`BlockExecutor`]: the block logic is the Xen transport's, only the
//! framing differs.

use super::{Buf, Chain, VirtioDevice};
use crate::block::{BlockError, BlockExecutor, BlockMetrics, Disk, Operation, Request, Status, MAX_DISCARD_SECTORS};
use pv_abi::blkif::SECTOR_SIZE;
use pv_util::ratelimit::LogLimiter;
use std::mem::offset_of;
use std::sync::Arc;
use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

/// Queue size offered (the driver may choose a smaller power of two).
pub const QUEUE_SIZE: u16 = 256;
/// Request queues offered with `VIRTIO_BLK_F_MQ` (`num_queues`), as many
/// as blkback offers (`multi-queue-max-queues`). A driver that does not
/// negotiate `VIRTIO_BLK_F_MQ` uses queue 0 only (virtio 1.x 5.2.6.2).
pub const NUM_QUEUES: u16 = 4;
/// Data segments per request (`seg_max`): the queue size less header and status.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Discard segments per request (`max_discard_seg`).
pub const MAX_DISCARD_SEG: u32 = 16;
/// Size of the device configuration space we serve.
const CONFIG_LEN: usize = 64;
/// Header bytes (`virtio_blk_outhdr`).
const HDR_LEN: usize = 16;

/// The virtio block device: the transport side (parsing a checked
/// [`Chain`] into a block [`Request`] and writing the status byte) around
/// the same [`BlockExecutor`] the Xen transport uses.
pub struct VirtioBlk {
    exec: BlockExecutor,
    config: [u8; CONFIG_LEN],
    id: [u8; VIRTIO_BLK_ID_BYTES as usize],
    log: LogLimiter,
    /// Each queue's largest size (`NUM_QUEUES` of them).
    sizes: [u16; NUM_QUEUES as usize],
}

impl std::fmt::Debug for VirtioBlk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioBlk").field("disk", &self.exec.disk().path()).finish()
    }
}

/// Why a request chain is refused or its guest buffers cannot be reached.
#[derive(Debug, thiserror::Error)]
pub(super) enum BufError {
    /// A buffer is outside guest memory.
    #[error(transparent)]
    Memory(#[from] vm_memory::GuestMemoryError),
    /// A buffer at `addr` is outside guest memory.
    #[error("{addr:#x}: {source}")]
    Slice {
        /// The buffer's guest address.
        addr: u64,
        /// Why guest memory refused it.
        source: vm_memory::GuestMemoryError,
    },
    /// The chain has nowhere to put the status byte.
    #[error("no device-writable status byte")]
    NoStatus,
    /// The request header is short.
    #[error("header is {0} bytes, not {hdr}", hdr = HDR_LEN)]
    ShortHeader(usize),
}

/// A refused request: status and why.
type Refusal = (Status, String);

fn ioerr(why: impl Into<String>) -> Refusal {
    (Status::IoError, why.into())
}

impl From<BlockError> for Refusal {
    fn from(e: BlockError) -> Refusal {
        (e.status(), e.to_string())
    }
}

/// The `VIRTIO_BLK_S_*` byte for a status.
fn status_byte(s: Status) -> u8 {
    match s {
        Status::Ok => VIRTIO_BLK_S_OK as u8,
        Status::IoError => VIRTIO_BLK_S_IOERR as u8,
        Status::Unsupported => VIRTIO_BLK_S_UNSUPP as u8,
    }
}

impl VirtioBlk {
    /// A device over `disk`, reporting `serial` (up to 20 bytes) for
    /// `GET_ID`, counting into `metrics`.
    pub fn new(disk: Arc<Disk>, serial: &str, metrics: Arc<BlockMetrics>) -> Self {
        let mut config = [0u8; CONFIG_LEN];
        let mut put = |off: usize, bytes: &[u8]| config[off..off + bytes.len()].copy_from_slice(bytes);
        put(offset_of!(virtio_blk_config, capacity), &disk.sectors().to_le_bytes());
        put(offset_of!(virtio_blk_config, seg_max), &SEG_MAX.to_le_bytes());
        put(offset_of!(virtio_blk_config, blk_size), &(SECTOR_SIZE as u32).to_le_bytes());
        put(offset_of!(virtio_blk_config, num_queues), &NUM_QUEUES.to_le_bytes());
        put(offset_of!(virtio_blk_config, max_discard_sectors), &(MAX_DISCARD_SECTORS as u32).to_le_bytes());
        put(offset_of!(virtio_blk_config, max_discard_seg), &MAX_DISCARD_SEG.to_le_bytes());
        put(offset_of!(virtio_blk_config, discard_sector_alignment), &1u32.to_le_bytes());
        let mut id = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let n = serial.len().min(id.len());
        id[..n].copy_from_slice(&serial.as_bytes()[..n]);
        let sizes = [QUEUE_SIZE; NUM_QUEUES as usize];
        VirtioBlk { exec: BlockExecutor::new(disk, metrics), config, id, log: LogLimiter::default(), sizes }
    }

    /// The disk.
    pub fn disk(&self) -> &Arc<Disk> {
        self.exec.disk()
    }

    /// The metrics (shared with whoever reads them).
    pub fn metrics(&self) -> &Arc<BlockMetrics> {
        self.exec.metrics()
    }

    fn run(&mut self, req: &VirtioRequest, mem: &GuestMemoryMmap) -> Result<u32, Refusal> {
        match req.kind {
            VIRTIO_BLK_T_IN | VIRTIO_BLK_T_OUT => self.rw(req, mem),
            VIRTIO_BLK_T_FLUSH => {
                let no_data: [VolatileSlice<'_>; 0] = [];
                self.exec.execute(&Request { op: Operation::Flush, sector: 0, data: &no_data })?;
                Ok(0)
            }
            VIRTIO_BLK_T_GET_ID => {
                let n = write_bytes(mem, &req.data_in, &self.id).map_err(|e| ioerr(e.to_string()))?;
                Ok(n as u32)
            }
            VIRTIO_BLK_T_DISCARD => self.discard(req, mem).map(|()| 0),
            other => Err((Status::Unsupported, format!("request type {other} is not supported"))),
        }
    }

    fn rw(&mut self, req: &VirtioRequest, mem: &GuestMemoryMmap) -> Result<u32, Refusal> {
        let write = req.kind == VIRTIO_BLK_T_OUT;
        // A device-readable buffer is never written: data for IN must be
        // device-writable, data for OUT device-readable.
        let (data, stray) = if write { (&req.data_out, &req.data_in) } else { (&req.data_in, &req.data_out) };
        if !stray.is_empty() {
            return Err(ioerr("data buffers in the wrong direction"));
        }
        let slices = slices(mem, data).map_err(|e| ioerr(e.to_string()))?;
        let op = if write { Operation::Write } else { Operation::Read };
        self.exec.execute(&Request { op, sector: req.sector, data: &slices })?;
        let bytes: u64 = data.iter().map(|b| b.len as u64).sum();
        Ok(if write { 0 } else { bytes as u32 })
    }

    fn discard(&mut self, req: &VirtioRequest, mem: &GuestMemoryMmap) -> Result<(), Refusal> {
        if !req.data_in.is_empty() {
            return Err(ioerr("discard with device-writable data"));
        }
        let bytes =
            read_bytes(mem, &req.data_out, 16 * MAX_DISCARD_SEG as usize + 1).map_err(|e| ioerr(e.to_string()))?;
        if bytes.is_empty() || bytes.len() % 16 != 0 || bytes.len() / 16 > MAX_DISCARD_SEG as usize {
            return Err(ioerr(format!("{} bytes of discard segments", bytes.len())));
        }
        let segs: Vec<(u64, u64, u32)> = bytes
            .chunks_exact(16)
            .map(|s| {
                let w = |r: std::ops::Range<usize>| s[r].iter().rev().fold(0u64, |a, &b| a << 8 | b as u64);
                (w(0..8), w(8..12), w(12..16) as u32)
            })
            .collect();
        // Check every segment before discarding any.
        for &(sector, nr, flags) in &segs {
            if flags != 0 {
                return Err((Status::Unsupported, format!("discard flags {flags:#x}")));
            }
            if !self.disk().in_range(sector, nr) {
                return Err(ioerr(format!("discard {sector}+{nr} past the end")));
            }
        }
        let no_data: [VolatileSlice<'_>; 0] = [];
        for &(sector, sectors, _) in &segs {
            self.exec.execute(&Request { op: Operation::Discard { sectors }, sector, data: &no_data })?;
        }
        Ok(())
    }
}

/// A request split out of a chain: header fields and data buffers.
struct VirtioRequest {
    kind: u32,
    sector: u64,
    /// Device-readable data after the header.
    data_out: Vec<Buf>,
    /// Device-writable data before the status byte.
    data_in: Vec<Buf>,
    /// Where the status byte goes.
    status: u64,
}

impl VirtioRequest {
    fn parse(chain: &Chain, mem: &GuestMemoryMmap) -> Result<VirtioRequest, BufError> {
        let readable: Vec<Buf> = chain.readable().copied().collect();
        let mut writable: Vec<Buf> = chain.writable().copied().collect();
        // The status byte: the last byte of the last writable buffer.
        let last = writable.last_mut().ok_or(BufError::NoStatus)?;
        let status = last.addr + last.len as u64 - 1;
        last.len -= 1;
        if last.len == 0 {
            writable.pop();
        }
        let hdr = read_bytes(mem, &readable, HDR_LEN)?;
        if hdr.len() < HDR_LEN {
            return Err(BufError::ShortHeader(hdr.len()));
        }
        let kind = u32::from_le_bytes(hdr[0..4].try_into().unwrap_or_default());
        let sector = u64::from_le_bytes(hdr[8..16].try_into().unwrap_or_default());
        Ok(VirtioRequest { kind, sector, data_out: skip(&readable, HDR_LEN), data_in: writable, status })
    }
}

/// `bufs` without their first `n` bytes.
pub(super) fn skip(bufs: &[Buf], mut n: usize) -> Vec<Buf> {
    let mut out = Vec::new();
    for b in bufs {
        if n >= b.len as usize {
            n -= b.len as usize;
            continue;
        }
        out.push(Buf { addr: b.addr + n as u64, len: b.len - n as u32, writable: b.writable });
        n = 0;
    }
    out
}

/// Copies up to `max` bytes out of `bufs` (guest memory, checked).
pub(super) fn read_bytes(mem: &GuestMemoryMmap, bufs: &[Buf], max: usize) -> Result<Vec<u8>, BufError> {
    let total = bufs.iter().map(|b| b.len as usize).sum::<usize>().min(max).min(64 << 10);
    let mut out = vec![0u8; total];
    let mut at = 0;
    for b in bufs {
        let n = (b.len as usize).min(total - at);
        if n == 0 {
            break;
        }
        mem.read_slice(&mut out[at..at + n], GuestAddress(b.addr))?;
        at += n;
    }
    Ok(out)
}

/// Copies `data` into `bufs` (as much as fits); returns the bytes written.
pub(super) fn write_bytes(mem: &GuestMemoryMmap, bufs: &[Buf], data: &[u8]) -> Result<usize, BufError> {
    let mut at = 0;
    for b in bufs {
        let n = (b.len as usize).min(data.len() - at);
        if n == 0 {
            break;
        }
        mem.write_slice(&data[at..at + n], GuestAddress(b.addr))?;
        at += n;
    }
    Ok(at)
}

pub(super) fn slices<'m>(mem: &'m GuestMemoryMmap, bufs: &[Buf]) -> Result<Vec<VolatileSlice<'m>>, BufError> {
    bufs.iter()
        .map(|b| {
            mem.get_slice(GuestAddress(b.addr), b.len as usize)
                .map_err(|source| BufError::Slice { addr: b.addr, source })
        })
        .collect()
}

impl VirtioDevice for VirtioBlk {
    fn device_id(&self) -> u32 {
        pv_abi::virtio::device_id::BLOCK
    }

    fn features(&self) -> u64 {
        let mut f = 1 << VIRTIO_F_VERSION_1
            | 1 << VIRTIO_RING_F_EVENT_IDX
            | 1 << VIRTIO_RING_F_INDIRECT_DESC
            | 1 << VIRTIO_BLK_F_SEG_MAX
            | 1 << VIRTIO_BLK_F_BLK_SIZE
            | 1 << VIRTIO_BLK_F_FLUSH
            | 1 << VIRTIO_BLK_F_MQ;
        if self.disk().readonly() {
            f |= 1 << VIRTIO_BLK_F_RO;
        } else {
            f |= 1 << VIRTIO_BLK_F_DISCARD;
        }
        f
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let off = offset as usize;
        if let Some(src) = self.config.get(off..off.saturating_add(data.len())) {
            data.copy_from_slice(src);
        }
    }

    fn process(&mut self, _queue: u16, chain: &Chain, mem: &GuestMemoryMmap) -> u32 {
        let metrics = self.exec.metrics().clone();
        metrics.requests.inc();
        let disk = self.exec.disk().path().display().to_string();
        let req = match VirtioRequest::parse(chain, mem) {
            Ok(r) => r,
            Err(why) => {
                pv_util::limited_warn!(self.log, %disk, "virtio-blk: request refused: {why}");
                metrics.errors.inc();
                // Without a device-writable buffer there is no status byte.
                return match chain.writable().last() {
                    Some(b) => set_status(mem, b.addr + b.len as u64 - 1, Status::IoError, 0),
                    None => 0,
                };
            }
        };
        let (status, written) = match self.run(&req, mem) {
            Ok(n) => (Status::Ok, n),
            Err((status, why)) => {
                pv_util::limited_warn!(self.log, %disk, kind = req.kind, "virtio-blk: request refused: {why}");
                match status {
                    Status::Unsupported => metrics.unsupported.inc(),
                    _ => metrics.errors.inc(),
                }
                (status, 0)
            }
        };
        set_status(mem, req.status, status, written)
    }
}

/// Writes the status byte; returns the used length (data written + 1).
fn set_status(mem: &GuestMemoryMmap, at: u64, status: Status, written: u32) -> u32 {
    match mem.write_obj(status_byte(status), GuestAddress(at)) {
        Ok(()) => written + 1,
        Err(_) => written,
    }
}
