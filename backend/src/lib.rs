//! Back-end drivers.
//!
//! Each back-end (the console, the `echo` sample device, blkback, and the
//! net driver to come) is an `event-manager` subscriber run on a device
//! thread, woken by the eventfd its event channel signals, and reaching
//! guest memory only through [`grant::GrantTable`] mappings. Device logic is
//! transport-agnostic; the Xen shared ring is the first transport.

pub mod block;
pub mod console;
pub mod echo;
pub mod grant;
pub mod net;
pub mod ring_page;
pub mod serve;
pub mod xenbus;

/// How a back-end notifies its front end: the VMM implements it by raising
/// the event channel the device is bound to.
pub trait Notify: Send + Sync {
    /// Sends one notification.
    fn notify(&self);
}
