//! The network-device ring protocol (Xen's `io/netif.h`).
//!
//! Two rings per device: transmit (front end to back end) and receive.

use crate::grant_table::GrantRef;

/// Transmit flag: the checksum is blank (to be computed).
pub const NETTXF_CSUM_BLANK: u16 = 1 << 0;
/// Transmit flag: the data has been validated.
pub const NETTXF_DATA_VALIDATED: u16 = 1 << 1;
/// Transmit flag: more fragments of this packet follow.
pub const NETTXF_MORE_DATA: u16 = 1 << 2;
/// Transmit flag: an extra-info slot follows.
pub const NETTXF_EXTRA_INFO: u16 = 1 << 3;

/// Receive flag: the data has been validated.
pub const NETRXF_DATA_VALIDATED: u16 = 1 << 0;
/// Receive flag: the checksum is blank.
pub const NETRXF_CSUM_BLANK: u16 = 1 << 1;
/// Receive flag: more fragments of this packet follow.
pub const NETRXF_MORE_DATA: u16 = 1 << 2;
/// Receive flag: an extra-info slot follows.
pub const NETRXF_EXTRA_INFO: u16 = 1 << 3;
/// Receive flag: a GSO prefix slot precedes the packet.
pub const NETRXF_GSO_PREFIX: u16 = 1 << 4;

/// Response status: dropped.
pub const NETIF_RSP_DROPPED: i16 = -2;
/// Response status: error.
pub const NETIF_RSP_ERROR: i16 = -1;
/// Response status: success.
pub const NETIF_RSP_OKAY: i16 = 0;
/// Response status: a null response (an extra-info slot's placeholder).
pub const NETIF_RSP_NULL: i16 = 1;

/// Extra-info type: none (invalid).
pub const XEN_NETIF_EXTRA_TYPE_NONE: u8 = 0;
/// Extra-info type: GSO.
pub const XEN_NETIF_EXTRA_TYPE_GSO: u8 = 1;
/// Extra-info type: add a multicast address.
pub const XEN_NETIF_EXTRA_TYPE_MCAST_ADD: u8 = 2;
/// Extra-info type: delete a multicast address.
pub const XEN_NETIF_EXTRA_TYPE_MCAST_DEL: u8 = 3;
/// Extra-info type: hash.
pub const XEN_NETIF_EXTRA_TYPE_HASH: u8 = 4;
/// Extra-info flag: another extra-info slot follows.
pub const XEN_NETIF_EXTRA_FLAG_MORE: u8 = 1 << 0;

/// A transmit request (Xen's `netif_tx_request`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifTxRequest {
    /// Grant reference of the page holding the data.
    pub gref: GrantRef,
    /// Offset of the data within the page.
    pub offset: u16,
    /// `NETTXF_*` flags.
    pub flags: u16,
    /// Echoed in the response.
    pub id: u16,
    /// Bytes in this fragment; in the first fragment, the whole packet.
    pub size: u16,
}
crate::assert_layout!(NetifTxRequest, size = 12, gref = 0, offset = 4, flags = 6, id = 8, size = 10);

/// A transmit response (Xen's `netif_tx_response`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifTxResponse {
    /// The request's `id`.
    pub id: u16,
    /// `NETIF_RSP_*`.
    pub status: i16,
}
crate::assert_layout!(NetifTxResponse, size = 4, id = 0, status = 2);

/// A receive request: a granted empty buffer (Xen's `netif_rx_request`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifRxRequest {
    /// Echoed in the response.
    pub id: u16,
    /// Zero.
    pub pad: u16,
    /// Grant reference of the buffer page.
    pub gref: GrantRef,
}
crate::assert_layout!(NetifRxRequest, size = 8, id = 0, pad = 2, gref = 4);

/// A receive response (Xen's `netif_rx_response`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifRxResponse {
    /// The request's `id`.
    pub id: u16,
    /// Offset of the data within the buffer page.
    pub offset: u16,
    /// `NETRXF_*` flags.
    pub flags: u16,
    /// Bytes received if positive, else a `NETIF_RSP_*` error.
    pub status: i16,
}
crate::assert_layout!(NetifRxResponse, size = 8, id = 0, offset = 2, flags = 4, status = 6);

/// An extra-info slot (Xen's `netif_extra_info`). The 6-byte union `u` is
/// kept raw (as Xen's `pad[3]` member); its meaning depends on `type_`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifExtraInfo {
    /// `XEN_NETIF_EXTRA_TYPE_*`.
    pub type_: u8,
    /// `XEN_NETIF_EXTRA_FLAG_*`.
    pub flags: u8,
    /// The type-specific payload (GSO, multicast address, hash).
    pub u: [u16; 3],
}
crate::assert_layout!(NetifExtraInfo, size = 8, type_ = 0, flags = 1, u = 2);

/// Slots in a one-page transmit ring.
pub const NET_TX_RING_SIZE: u32 = crate::ring::ring_size(
    crate::layout::PAGE_SIZE as usize,
    crate::ring::slot_size::<NetifTxRequest, NetifTxResponse>(),
);
/// Slots in a one-page receive ring.
pub const NET_RX_RING_SIZE: u32 = crate::ring::ring_size(
    crate::layout::PAGE_SIZE as usize,
    crate::ring::slot_size::<NetifRxRequest, NetifRxResponse>(),
);
const _: () = assert!(NET_TX_RING_SIZE == 256 && NET_RX_RING_SIZE == 256);

/// Device type in the store (Xen's virtual network interface).
pub const DEVICE_TYPE: &str = "vif";

/// Slots a transmit packet may use at least (Xen's
/// `XEN_NETIF_NR_SLOTS_MIN`; Linux's netback accepts exactly this many).
pub const XEN_NETIF_NR_SLOTS_MIN: usize = 18;
/// Largest transmit packet (Xen's `XEN_NETIF_MAX_TX_SIZE`).
pub const XEN_NETIF_MAX_TX_SIZE: usize = 0xffff;
/// Smallest frame a front end may send (an Ethernet header).
pub const ETH_HLEN: usize = 14;

/// Store keys of the netif handshake (`io/netif.h`), written once for both
/// sides.
pub mod keys {
    /// Front end: grant reference of the transmit ring page.
    pub const TX_RING_REF: &str = "tx-ring-ref";
    /// Front end: grant reference of the receive ring page.
    pub const RX_RING_REF: &str = "rx-ring-ref";
    /// Front end: one event channel for both rings.
    pub const EVENT_CHANNEL: &str = "event-channel";
    /// Front end: split event channel for the transmit ring.
    pub const EVENT_CHANNEL_TX: &str = "event-channel-tx";
    /// Front end: split event channel for the receive ring.
    pub const EVENT_CHANNEL_RX: &str = "event-channel-rx";
    /// Front end: asks for receive-copy mode (must be 1 here).
    pub const REQUEST_RX_COPY: &str = "request-rx-copy";
    /// Both: the front end re-arms `rsp_event`/`req_event` on the rx ring.
    pub const FEATURE_RX_NOTIFY: &str = "feature-rx-notify";
    /// Both: multi-slot packets (`NETTXF_more_data`/`NETRXF_more_data`).
    pub const FEATURE_SG: &str = "feature-sg";
    /// Back end: receive-copy supported.
    pub const FEATURE_RX_COPY: &str = "feature-rx-copy";
    /// Back end: split event channels supported.
    pub const FEATURE_SPLIT_EVENT_CHANNELS: &str = "feature-split-event-channels";
    /// Front end: the front end does not verify received checksums
    /// (Xen's `feature-no-csum-offload` = 0 means it may get blank ones).
    pub const FEATURE_NO_CSUM_OFFLOAD: &str = "feature-no-csum-offload";
    /// Both directories: the interface's MAC address, `xx:xx:xx:xx:xx:xx`.
    pub const MAC: &str = "mac";
    /// Both directories (libxl_nic.c writes it in the back end and,
    /// read-only, in the front end; netif.h "MTU"): the interface's MTU in
    /// octets; absent means 1500.
    pub const MTU: &str = "mtu";
}

/// Parses a MAC address written as six hex pairs separated by `:`.
pub fn parse_mac(s: &[u8]) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(|&b| b == b':');
    for byte in mac.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        *byte = hex(p[0])? << 4 | hex(p[1])?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(mac)
}

#[cfg(test)]
mod tests {
    use super::parse_mac;

    #[test]
    fn mac_parsing() {
        assert_eq!(parse_mac(b"02:00:0a:0B:ff:01"), Some([2, 0, 10, 11, 255, 1]));
        assert_eq!(parse_mac(b"02:00:0a:0b:ff"), None);
        assert_eq!(parse_mac(b"02:00:0a:0b:ff:01:02"), None);
        assert_eq!(parse_mac(b"02:00:0a:0b:ff:1"), None);
        assert_eq!(parse_mac(b"02:00:0a:0b:fg:01"), None);
    }
}
