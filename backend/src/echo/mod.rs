//! The `echo` sample device (protocol in `pv_abi::echo`): the smallest
//! complete split device, and the template for a new one. Its folder has
//! the same pieces as every device:
//!
//! * device logic: [`request`] (a transport-free [`Request`]: an operation
//!   and at most one checked, mapped range of guest memory) and
//!   [`executor`] (answers it; knows nothing of rings or grants);
//! * transports: [`xen`] (the echo ring + grants + event channel, and the
//!   [`SplitBackend`](crate::xenbus::SplitBackend) the xenbus handshake
//!   drives) and [`virtio`] (a checked descriptor chain on virtio-mmio),
//!   both building the same [`Request`] for the same executor;
//! * [`metrics`]: shared atomic counters.

pub mod executor;
pub mod metrics;
pub mod request;
pub mod virtio;
pub mod xen;

pub use executor::EchoExecutor;
pub use metrics::EchoMetrics;
pub use request::{EchoError, Operation, Request};
pub use xen::{ConnectError, Echo, EchoBackend};
