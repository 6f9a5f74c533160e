//! A block request as the device logic sees it, whatever transport carried
//! it (a Xen blkif ring with grants, a virtio queue with descriptors).
//!
//! The transport copies the guest's request out of shared memory,
//! validates it against its own rules (segment bounds, descriptor flags,
//! grant permissions), maps every data range, and only then builds a
//! [`Request`]: the ranges are already checked guest memory, writable
//! where the operation writes them ([`Operation::writes_guest_memory`]).

use vm_memory::VolatileSlice;

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Read sectors into the data ranges (the device writes guest memory).
    Read,
    /// Write the data ranges' bytes to the disk.
    Write,
    /// Write the data ranges, if any, then make every completed write
    /// durable (`fdatasync`) before answering.
    Flush,
    /// Discard `sectors` sectors: they read back as zeros. No data ranges.
    Discard {
        /// Number of sectors.
        sectors: u64,
    },
}

impl Operation {
    /// Whether the device writes into the data ranges, so the transport
    /// must have mapped them writable.
    pub fn writes_guest_memory(self) -> bool {
        matches!(self, Operation::Read)
    }
}

/// One request: an operation at a 512-byte sector, and the guest memory it
/// moves data through, in order.
#[derive(Debug)]
pub struct Request<'a, 'm> {
    /// The operation.
    pub op: Operation,
    /// First sector on the disk.
    pub sector: u64,
    /// The data ranges (empty for a bare flush and for a discard); their
    /// lengths add up to whole sectors.
    pub data: &'a [VolatileSlice<'m>],
}

/// The outcome a transport reports to the guest, in its own encoding
/// (`BLKIF_RSP_*`, `VIRTIO_BLK_S_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Done.
    Ok,
    /// Refused or failed.
    IoError,
    /// An operation the device does not implement.
    Unsupported,
}
