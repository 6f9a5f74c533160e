//! Back-end devices.
//!
//! Each device (the console, the `echo` sample, block, net) runs as
//! an `event-manager` subscriber on a device thread, woken by the eventfd
//! its event channel signals. A device folder holds three separate pieces,
//! as in rust-vmm's virtio-blk and Firecracker's device folders:
//!
//! * device logic — `request.rs` (a transport-free request: operation and
//!   guest-memory ranges the transport already checked and mapped) and
//!   `executor.rs` (runs it; knows nothing of rings, grants or descriptors);
//! * transports — `xen.rs` (a Xen ring page + grant references + an event
//!   channel, set up by the xenbus handshake; a virtio transport sits
//!   beside it and builds the same request);
//! * `metrics.rs` — shared atomic counters (`pv_util::metrics`).
//!
//! Shared by every Xen transport: the grant table of
//! `xen_domain::grant_table` (the only way to reach guest pages; the
//! hypervisor owns it), [`ring_page`] (a granted page as ring memory), [`serve`] (the one
//! request loop, with its per-wake budget) and [`xenbus`] (the handshake,
//! and the one constructor the VMM's device table wires every device
//! through). `pv_util::ratelimit` bounds guest-caused log lines: one
//! budget per device for its whole life, handed to each connection by
//! [`xenbus::XenbusDevice`]. [`DEVICE_TYPES`]
//! lists every device type the VMM can offer.

mod bind_error;
pub mod block;
pub mod console;
pub mod echo;
pub mod guest_side;
pub mod net;
pub mod ring_page;
pub mod serve;
#[cfg(test)]
mod test_log;
pub mod virtio;
pub mod xenbus;

/// Every device type the VMM can offer a guest, one line each (see
/// docs/adding-a-device.md).
pub const DEVICE_TYPES: &[xenbus::DeviceType] = &[echo::xen::DEVICE, block::xen::DEVICE, net::xen::DEVICE];

/// How a back-end notifies its front end: the VMM implements it by raising
/// the event channel the device is bound to.
pub trait Notify: Send + Sync {
    /// Sends one notification.
    fn notify(&self);
}
