//! Net device metrics (shared atomic counters, see `pv_util::metrics`).

pv_util::device_metrics!(
    /// Traffic counters of one network device, whatever its transport.
    pub struct NetMetrics {
        /// Wake-ups by the front end (event-channel notifications).
        kicks,
        /// Wake-ups by the port (frames for the guest).
        port_wakes,
        /// Packets the guest sent that reached the port.
        tx_packets,
        /// Their bytes.
        tx_bytes,
        /// Transmit slots answered.
        tx_slots,
        /// Transmit packets that used more than one data slot.
        tx_multi_slot,
        /// Transmit packets refused with `NETIF_RSP_ERROR`.
        tx_errors,
        /// Blank checksums filled in.
        tx_csum_filled,
        /// Frames the port refused (host queue full or gone).
        tx_port_errors,
        /// Frames copied to the guest.
        rx_packets,
        /// Their bytes.
        rx_bytes,
        /// Receive slots used.
        rx_slots,
        /// Received frames that used more than one buffer.
        rx_multi_slot,
        /// Frames dropped: the guest had not posted enough buffers.
        rx_dropped_no_buffer,
        /// Frames dropped: too large for the guest (no `feature-sg`) or empty.
        rx_dropped_bad_size,
        /// Frames dropped: not connected, or the device is stopped.
        rx_dropped_not_connected,
        /// Frames whose copy into a buffer failed (bad grant: `NETIF_RSP_ERROR`).
        rx_errors,
        /// Notifications sent to the front end.
        notifies,
        /// Times a corrupt ring or protocol violation stopped the device.
        stopped,
    }
);

/// A snapshot of [`NetMetrics`] (for tests and benchmarks).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetMetricsSnapshot {
    /// Wake-ups by the front end (event-channel notifications).
    pub kicks: u64,
    /// Wake-ups by the port (frames for the guest).
    pub port_wakes: u64,
    /// Packets the guest sent that reached the port.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Transmit slots answered.
    pub tx_slots: u64,
    /// Transmit packets that used more than one data slot.
    pub tx_multi_slot: u64,
    /// Transmit packets refused with `NETIF_RSP_ERROR`.
    pub tx_errors: u64,
    /// Blank checksums filled in.
    pub tx_csum_filled: u64,
    /// Frames the port refused (host queue full or gone).
    pub tx_port_errors: u64,
    /// Frames copied to the guest.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Receive slots used.
    pub rx_slots: u64,
    /// Received frames that used more than one buffer.
    pub rx_multi_slot: u64,
    /// Frames dropped: the guest had not posted enough buffers.
    pub rx_dropped_no_buffer: u64,
    /// Frames dropped: too large for the guest (no `feature-sg`) or empty.
    pub rx_dropped_bad_size: u64,
    /// Frames dropped: not connected, or the device is stopped.
    pub rx_dropped_not_connected: u64,
    /// Frames whose copy into a buffer failed (bad grant: `NETIF_RSP_ERROR`).
    pub rx_errors: u64,
    /// Notifications sent to the front end.
    pub notifies: u64,
    /// Times a corrupt ring or protocol violation stopped the device.
    pub stopped: u64,
}

impl NetMetrics {
    /// The counters now.
    pub fn snapshot(&self) -> NetMetricsSnapshot {
        NetMetricsSnapshot {
            kicks: self.kicks.get(),
            port_wakes: self.port_wakes.get(),
            tx_packets: self.tx_packets.get(),
            tx_bytes: self.tx_bytes.get(),
            tx_slots: self.tx_slots.get(),
            tx_multi_slot: self.tx_multi_slot.get(),
            tx_errors: self.tx_errors.get(),
            tx_csum_filled: self.tx_csum_filled.get(),
            tx_port_errors: self.tx_port_errors.get(),
            rx_packets: self.rx_packets.get(),
            rx_bytes: self.rx_bytes.get(),
            rx_slots: self.rx_slots.get(),
            rx_multi_slot: self.rx_multi_slot.get(),
            rx_dropped_no_buffer: self.rx_dropped_no_buffer.get(),
            rx_dropped_bad_size: self.rx_dropped_bad_size.get(),
            rx_dropped_not_connected: self.rx_dropped_not_connected.get(),
            rx_errors: self.rx_errors.get(),
            notifies: self.notifies.get(),
            stopped: self.stopped.get(),
        }
    }
}
