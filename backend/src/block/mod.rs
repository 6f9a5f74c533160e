//! The block device (protocol in `pv_abi::blkif`) over a file-backed raw
//! image, in three pieces as in rust-vmm's virtio-blk and Firecracker's
//! device folders:
//!
//! * device logic: [`request`] (a transport-free [`Request`]: operation,
//!   sector, data as checked and mapped guest-memory ranges) and
//!   [`executor`] (runs it against the [`Disk`]: `preadv`/`pwritev`
//!   straight between the image and guest memory, `fdatasync` for a flush,
//!   a punched hole for a discard);
//! * transports: [`xen`] (blkif ring + grants + event channel: copies each
//!   request off the ring, validates it, maps its grants, answers with a
//!   `blkif_response`); a virtio transport builds the same [`Request`]
//!   from descriptor chains;
//! * [`metrics`]: shared atomic counters.
//!
//! The guest is untrusted: every refusal is an error status and a
//! rate-limited log line; a corrupt ring index stops this device only.

mod disk;
pub mod executor;
pub mod harness;
pub mod lock_handover;
pub mod metrics;
#[cfg(test)]
mod mq_tests;
pub mod request;
#[cfg(test)]
mod tests;
pub mod xen;

pub use disk::{Disk, DiskError, DiskSpec};
pub use executor::{BlockError, BlockExecutor, MAX_DISCARD_SECTORS};
pub use metrics::BlockMetrics;
pub use pv_abi::blkif::{DEVICE_TYPE, VDISK_READONLY};
pub use request::{Operation, Request, Status};
pub use xen::{
    vbd_vdev, BlkQueue, Blkback, BlockBackend, ConnectError, QueueRing, RequestError, RingLayout,
    MAX_INDIRECT_SEGMENTS, MAX_QUEUES, MAX_RING_PAGE_ORDER, X86_64,
};
