//! Back-end drivers.
//!
//! Each back-end (file-backed block, TAP and in-process net, sample devices)
//! is an `event-manager` subscriber on its own thread, woken by eventfds,
//! reaching guest memory only through grant references. Device logic is
//! transport-agnostic; the Xen-ring transport is the first one.
