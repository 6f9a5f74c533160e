//! Echo device metrics (shared atomic counters, see `pv_util::metrics`).

pv_util::device_metrics!(
    /// Traffic counters of one echo device, whatever its transport.
    pub struct EchoMetrics {
        /// Notifications received from the guest.
        kicks,
        /// Requests answered.
        requests,
        /// Requests answered with an error status.
        errors,
        /// Notifications sent to the guest.
        notifies,
        /// Rings the guest corrupted (each stops the device).
        ring_errors,
    }
);
