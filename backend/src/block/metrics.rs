//! Block device metrics (shared atomic counters, see `pv_util::metrics`).

pv_util::device_metrics!(
    /// Traffic counters of one block device, whatever its transport.
    pub struct BlockMetrics {
        /// Wake-ups from the front end (notifications).
        kicks,
        /// Requests answered.
        requests,
        /// Requests refused or failed (`BLKIF_RSP_ERROR`).
        errors,
        /// Requests for an operation not implemented (`BLKIF_RSP_EOPNOTSUPP`).
        unsupported,
        /// Notifications sent to the front end.
        notifies,
        /// Batches of responses published.
        batches,
        /// Sectors read.
        sectors_read,
        /// Sectors written.
        sectors_written,
        /// Flushes (`fdatasync`) completed.
        flushes,
        /// Discard requests completed.
        discards,
        /// Rings the guest corrupted (each stops the device).
        ring_errors,
    }
);
