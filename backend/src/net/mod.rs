//! netback: the network back end (protocol in `pv_abi::netif`), between a
//! guest's netfront and a host-side port (a TAP device or an in-process
//! peer).
//!
//! Three pieces, as for every device:
//!
//! * device logic ([`Netback`]): takes whole packets off the transmit ring
//!   (a first slot, extra-info slots, then `NETTXF_more_data` fragments),
//!   checks every slot, copies the fragments out of the granted pages into
//!   one frame, fills in a blank checksum ([`csum`]) and hands the frame to
//!   the port; copies each frame from the port into the receive buffers
//!   the guest posted (Xen's rx-copy), one page per slot chained with
//!   `NETRXF_more_data` (`feature-sg`), with the checksum state as
//!   `NETRXF_*` flags.
//! * transport: the xenbus handshake ([`NetBackend`], a
//!   [`SplitBackend`](crate::xenbus::SplitBackend)) and the device thread's
//!   event handling ([`NetDevice`]: the event channel and the port's
//!   descriptor are both subscribers' events on one thread).
//! * metrics: [`NetMetrics`], atomic counters shared with the VMM.
//!
//! Notifications follow Xen's rules: responses are published once per
//! batch and the front end notified only if its `rsp_event` asks; before
//! sleeping netback re-arms `req_event` on the transmit ring, and on the
//! receive ring when it runs out of buffers (`feature-rx-notify`). Each
//! wake-up handles at most [`PROCESS_BUDGET`](crate::xenbus::PROCESS_BUDGET)
//! transmit slots and [`RX_BUDGET`] received frames.
//!
//! The guest is untrusted. A transmit packet with a bad grant, a slot of
//! size 0, a fragment past its page, fragment sizes that do not add up, a
//! first size below an Ethernet header, more than [`MAX_TX_SLOTS`] slots, a
//! GSO extra (not offered) or a blank checksum on something that is not
//! IPv4 TCP/UDP gets `NETIF_RSP_ERROR` on each of its slots; the packet
//! is dropped and counted. A packet whose fragments run past the published
//! requests (never ended) or a corrupt ring index stops this device only,
//! as Xen's `xenvif_fatal_tx_err` does. A frame for a guest that posted no
//! (or too few) receive buffers is dropped and counted: nothing is queued.
//! Guest-caused log lines are rate limited.

pub mod csum;
pub mod executor;
pub mod harness;
pub mod metrics;
pub mod peer;
pub mod port;
pub mod request;
pub mod tap;
#[cfg(test)]
mod tests;
pub mod xen;

pub use metrics::{NetMetrics, NetMetricsSnapshot};
pub use port::{NetPort, RxMeta};
pub use request::{TxError, TxPacket};
pub use xen::{NetBackend, NetDevice, Netback, Vif};

use pv_abi::netif::*;

pub use pv_abi::netif::DEVICE_TYPE;

/// Data slots a transmit packet may use (Linux's netback: the same).
pub const MAX_TX_SLOTS: usize = XEN_NETIF_NR_SLOTS_MIN;
/// Largest frame either way.
pub const MAX_FRAME: usize = XEN_NETIF_MAX_TX_SIZE;
/// Frames taken from the port per wake-up.
pub const RX_BUDGET: usize = 64;

/// `--net tap=<ifname>[,mac=<mac>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSpec {
    /// The TAP device.
    pub tap: String,
    /// The guest's MAC address (default: `02:00:00:00:00:<n+1>`).
    pub mac: Option<[u8; 6]>,
}

/// Why a `--net` value is unusable.
#[derive(Debug, thiserror::Error)]
pub enum NetSpecError {
    /// No `tap=`.
    #[error("--net {0:?}: say which TAP device, e.g. --net tap=tap0[,mac=02:00:00:00:00:01]")]
    NoTap(String),
    /// An unknown key.
    #[error("--net {0:?}: unknown option '{1}' (known: tap=<ifname>, mac=<mac>)")]
    UnknownKey(String, String),
    /// A bad MAC.
    #[error(
        "--net: bad MAC '{0}': give six hex pairs such as 02:00:00:00:00:01, unicast (lowest bit of the first byte 0)"
    )]
    BadMac(String),
    /// A bad interface name.
    #[error("--net: {0}")]
    BadName(tap::TapError),
}

impl std::str::FromStr for NetSpec {
    type Err = NetSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (mut tap, mut mac) = (None, None);
        for part in s.split(',').filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("tap", v)) => tap = Some(v.to_string()),
                Some(("mac", v)) => {
                    let m = parse_mac(v.as_bytes()).filter(|m| m[0] & 1 == 0);
                    mac = Some(m.ok_or_else(|| NetSpecError::BadMac(v.to_string()))?);
                }
                _ => return Err(NetSpecError::UnknownKey(s.to_string(), part.to_string())),
            }
        }
        let tap = tap.ok_or_else(|| NetSpecError::NoTap(s.to_string()))?;
        tap::check_name(&tap).map_err(NetSpecError::BadName)?;
        Ok(NetSpec { tap, mac })
    }
}

impl NetSpec {
    /// The MAC of interface `index`.
    pub fn mac_for(&self, index: u32) -> [u8; 6] {
        self.mac.unwrap_or(Self::default_mac(index))
    }

    /// The MAC interface `index` gets when none is given:
    /// `02:00:00:00:<hi>:<lo + 1>` (locally administered).
    pub fn default_mac(index: u32) -> [u8; 6] {
        let n = index.wrapping_add(1);
        [0x02, 0, 0, 0, (n >> 8) as u8, n as u8]
    }
}

/// Formats a MAC as Xen's store does.
pub fn format_mac(m: &[u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}
