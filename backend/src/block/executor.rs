//! The block device logic: runs a transport-free [`Request`] against the
//! [`Disk`]. It checks what only the disk knows (read-only, size, whole
//! sectors, the discard cap) before any I/O and knows nothing of rings,
//! grants or descriptors.

use super::metrics::BlockMetrics;
use super::request::{Operation, Request, Status};
use super::Disk;
use pv_abi::blkif::SECTOR_SIZE;
use std::sync::Arc;

/// Most sectors one discard may cover (64 MiB): the zero-fill fallback
/// writes them on the device thread, so the work per request is capped.
/// Virtio transports advertise it as `max_discard_sectors`.
pub const MAX_DISCARD_SECTORS: u64 = 64 << 11;

/// Discarded sectors that cost one unit of the per-wake budget, so a wake
/// full of discards does bounded work before the device yields.
pub const DISCARD_SECTORS_PER_UNIT: u64 = 1 << 11;

/// Why the device refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// A write, discard or flush carrying data on a read-only disk.
    #[error("the disk is read-only")]
    ReadOnly,
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
    /// Data ranges that are empty or not whole sectors.
    #[error("{0} bytes of data is not a positive number of whole sectors")]
    BadLength(u64),
    /// A discard over [`MAX_DISCARD_SECTORS`].
    #[error("discard of {0} sectors is over the {MAX_DISCARD_SECTORS}-sector limit")]
    DiscardTooLarge(u64),
    /// The image I/O failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl BlockError {
    /// The status a transport reports.
    pub fn status(&self) -> Status {
        Status::IoError
    }
}

/// Block device logic for one disk.
#[derive(Debug)]
pub struct BlockExecutor {
    disk: Arc<Disk>,
    metrics: Arc<BlockMetrics>,
}

impl BlockExecutor {
    /// Device logic for `disk`, counting into `metrics`.
    pub fn new(disk: Arc<Disk>, metrics: Arc<BlockMetrics>) -> Self {
        BlockExecutor { disk, metrics }
    }

    /// The disk.
    pub fn disk(&self) -> &Arc<Disk> {
        &self.disk
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<BlockMetrics> {
        &self.metrics
    }

    /// Budget units a request of `op` costs (see
    /// [`DISCARD_SECTORS_PER_UNIT`]).
    pub fn cost(op: Operation) -> usize {
        match op {
            Operation::Discard { sectors } => {
                1 + (sectors.min(MAX_DISCARD_SECTORS) / DISCARD_SECTORS_PER_UNIT) as usize
            }
            _ => 1,
        }
    }

    /// Runs `req`. Everything is checked before any I/O, so a refused
    /// request changes nothing on disk.
    pub fn execute(&self, req: &Request<'_, '_>) -> Result<(), BlockError> {
        match req.op {
            Operation::Read => self.transfer(false, req),
            Operation::Write => self.transfer(true, req),
            Operation::Flush => {
                if !req.data.is_empty() {
                    self.transfer(true, req)?;
                }
                self.disk.flush()?;
                self.metrics.flushes.inc();
                Ok(())
            }
            Operation::Discard { sectors } => self.discard(req.sector, sectors),
        }
    }

    fn check_range(&self, sector: u64, nr: u64) -> Result<(), BlockError> {
        if self.disk.in_range(sector, nr) {
            Ok(())
        } else {
            Err(BlockError::OutOfRange { sector, nr, size: self.disk.sectors() })
        }
    }

    fn transfer(&self, write: bool, req: &Request<'_, '_>) -> Result<(), BlockError> {
        if write && self.disk.readonly() {
            return Err(BlockError::ReadOnly);
        }
        let bytes: u64 = req.data.iter().map(|s| s.len() as u64).sum();
        if bytes == 0 || bytes % SECTOR_SIZE != 0 {
            return Err(BlockError::BadLength(bytes));
        }
        let nr = bytes / SECTOR_SIZE;
        self.check_range(req.sector, nr)?;
        if write {
            self.disk.write_vectored(req.sector, req.data)?;
            self.metrics.sectors_written.add(nr);
        } else {
            self.disk.read_vectored(req.sector, req.data)?;
            self.metrics.sectors_read.add(nr);
        }
        Ok(())
    }

    fn discard(&self, sector: u64, nr: u64) -> Result<(), BlockError> {
        if self.disk.readonly() {
            return Err(BlockError::ReadOnly);
        }
        self.check_range(sector, nr)?;
        if nr > MAX_DISCARD_SECTORS {
            return Err(BlockError::DiscardTooLarge(nr));
        }
        self.disk.discard(sector, nr)?;
        self.metrics.discards.inc();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::DiskSpec;
    use vm_memory::VolatileSlice;

    fn disk(readonly: bool) -> (tempfile::TempDir, Arc<Disk>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.img");
        std::fs::write(&path, vec![0x77u8; 64 * 512]).unwrap();
        let d = Disk::open(&DiskSpec::new(path, readonly)).unwrap();
        (dir, Arc::new(d))
    }

    #[test]
    fn runs_requests_on_plain_memory_with_no_transport() {
        // What a virtio transport does: ranges of mapped memory, no grants.
        let (_dir, d) = disk(false);
        let dev = BlockExecutor::new(d, Arc::default());
        let (mut a, mut b) = (vec![1u8; 512], vec![2u8; 1024]);
        let data = [VolatileSlice::from(a.as_mut_slice()), VolatileSlice::from(b.as_mut_slice())];
        dev.execute(&Request { op: Operation::Write, sector: 4, data: &data }).unwrap();
        dev.execute(&Request { op: Operation::Flush, sector: 0, data: &[] }).unwrap();
        let read = |sector| {
            let mut back = vec![0u8; 3 * 512];
            let into = [VolatileSlice::from(back.as_mut_slice())];
            dev.execute(&Request { op: Operation::Read, sector, data: &into }).unwrap();
            back
        };
        let back = read(4);
        assert!(back[..512].iter().all(|&x| x == 1) && back[512..].iter().all(|&x| x == 2));
        dev.execute(&Request { op: Operation::Discard { sectors: 1 }, sector: 5, data: &[] }).unwrap();
        assert!(read(4)[512..1024].iter().all(|&x| x == 0), "discarded");
        let m = dev.metrics();
        assert_eq!((m.sectors_written.get(), m.sectors_read.get(), m.flushes.get(), m.discards.get()), (3, 6, 1, 1));
    }

    #[test]
    fn refuses_before_any_io() {
        let (_dir, d) = disk(true);
        let dev = BlockExecutor::new(d.clone(), Arc::default());
        let mut buf = vec![9u8; 512];
        let data = [VolatileSlice::from(buf.as_mut_slice())];
        let w = |op, sector| dev.execute(&Request { op, sector, data: &data }).unwrap_err();
        assert!(matches!(w(Operation::Write, 0), BlockError::ReadOnly));
        assert!(matches!(w(Operation::Flush, 0), BlockError::ReadOnly), "a flush carrying data writes");
        assert!(matches!(w(Operation::Read, 64), BlockError::OutOfRange { .. }));
        assert!(matches!(w(Operation::Read, u64::MAX), BlockError::OutOfRange { .. }));
        let mut odd = vec![0u8; 100];
        let odd = [VolatileSlice::from(odd.as_mut_slice())];
        let e = dev.execute(&Request { op: Operation::Read, sector: 0, data: &odd }).unwrap_err();
        assert!(matches!(e, BlockError::BadLength(100)));
        let e = dev.execute(&Request { op: Operation::Read, sector: 0, data: &[] }).unwrap_err();
        assert!(matches!(e, BlockError::BadLength(0)));
        assert_eq!(std::fs::read(d.path()).unwrap(), vec![0x77u8; 64 * 512], "nothing written");
        assert_eq!(e.status(), Status::IoError);
    }
}
