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
//! (`crate::ratelimit`); other devices are unaffected.

pub mod blk;
pub mod chain;
pub mod mmio;
#[cfg(test)]
mod tests;

pub use chain::{Buf, Chain, ChainError};
pub use mmio::{Action, MmioDevice, MmioTransport, VirtioCounters};

use vm_memory::GuestMemoryMmap;

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
}
