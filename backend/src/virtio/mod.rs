//! The virtio transport: virtio-mmio register blocks (virtio 1.x, MMIO
//! layout version 2) over split virtqueues kept with rust-vmm
//! `virtio-queue`, and the devices behind them.
//!
//! The pieces, as for the Xen transport:
//!
//! - [`mmio::MmioTransport`]: one device's register block and status
//!   machine (register reads and writes come from the vCPU thread's MMIO
//!   exits), its queues, and the queue processing the device thread runs
//!   when the guest's `QueueNotify` write signals an ioeventfd.
//! - [`chain`]: every descriptor chain is copied and checked (addresses in
//!   guest RAM, lengths, direction, termination) before a device sees it.
//! - [`VirtioDevice`]: what a device supplies (id, features, config space,
//!   and the handling of one checked chain); [`blk::VirtioBlk`] is the
//!   block device.
//!
//! The guest is untrusted. A bad chain fails that request only (used length
//! 0); a bad queue setup or ring state (size not a power of two, rings
//! outside RAM, notify before the queue is ready, the available index
//! jumping past the queue) sets `DEVICE_NEEDS_RESET` and raises a
//! configuration interrupt, and the device does nothing more until the
//! driver resets it. Either is logged, rate-limited per device
//! (`pv_util::ratelimit`); other devices are unaffected.

pub mod blk;
pub mod chain;
pub mod mmio;
pub mod net;
#[cfg(test)]
mod net_tests;
#[cfg(test)]
mod tests;

pub use chain::{Buf, Chain, ChainError};
pub use mmio::{Action, MmioDevice, MmioTransport, VirtioMetrics};

use std::os::fd::RawFd;
use vm_memory::GuestMemoryMmap;

/// The queues of a device, as its own work ([`VirtioDevice::event`]) sees
/// them: checked chains of the queues it fills itself (a receive queue).
pub trait ChainSource {
    /// Whether queue `q` is running: the driver set `DRIVER_OK`, the queue
    /// is ready, and the device does not need a reset.
    fn running(&self, q: u16) -> bool;
    /// The next checked chain the driver posted on queue `q`, if any (and
    /// if the queue is running). A chain that fails the checks is returned
    /// to the driver at once (used length 0), counted, logged and skipped.
    fn pop(&mut self, q: u16) -> Option<Chain>;
    /// Returns a chain taken by [`pop`](Self::pop) with `len` bytes written.
    fn push_used(&mut self, q: u16, head: u16, len: u32);
}

/// What a virtio device supplies to the transport.
pub trait VirtioDevice: Send {
    /// The virtio device id (`DeviceID` register).
    fn device_id(&self) -> u32;
    /// Feature bits the device offers (transport bits such as
    /// `VIRTIO_F_VERSION_1` and `VIRTIO_RING_F_EVENT_IDX` included).
    fn features(&self) -> u64;
    /// Largest size of each queue; the number of queues is the length.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads the device configuration space at `offset`.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space (ignored by default).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver set `DRIVER_OK` with these negotiated features.
    fn activate(&mut self, _features: u64) {}
    /// The driver reset the device.
    fn reset(&mut self) {}
    /// Handles one checked chain from queue `queue`; returns the number of
    /// bytes written into its device-writable buffers (the used length).
    fn process(&mut self, queue: u16, chain: &Chain, mem: &GuestMemoryMmap) -> u32;
    /// A descriptor the device thread polls for work of the device's own
    /// (a network port with frames for the guest); `None` (the default)
    /// for a device driven by its queues only.
    fn event_fd(&self) -> Option<RawFd> {
        None
    }
    /// Whether the device fills queue `queue` on its own (a receive
    /// queue): its chains are taken by [`event`](Self::event), and a
    /// notification of it only says that buffers were posted.
    fn device_filled(&self, _queue: u16) -> bool {
        false
    }
    /// [`event_fd`](Self::event_fd) is readable: do a bounded amount of
    /// the device's own work, taking chains from `queues`. Returns whether
    /// work was left.
    fn event(&mut self, _queues: &mut dyn ChainSource, _mem: &GuestMemoryMmap) -> bool {
        false
    }
}
