//! Small host utilities shared by the store, the back ends and the VMM.
//!
//! * [`ratelimit`]: a guest controls how often its requests fail, so every
//!   guest-caused log line goes through a [`LogLimiter`](ratelimit::LogLimiter)
//!   ([`limited_warn!`]); a device keeps one budget for its whole life
//!   ([`SharedLogLimiter`](ratelimit::SharedLogLimiter)), however often its
//!   guest reconnects.
//! * [`metrics`]: per-device shared atomic counters ([`device_metrics!`]).

pub mod metrics;
pub mod ratelimit;

/// The `tracing` crate the macros expand to, so their users need not name
/// it themselves.
#[doc(hidden)]
pub use tracing as __tracing;
