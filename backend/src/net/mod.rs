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
pub mod harness;
pub mod peer;
pub mod port;
pub mod tap;
#[cfg(test)]
mod tests;

pub use port::{NetPort, RxMeta};

use crate::grant::GrantTable;
use crate::ring_page::{ConnectError, RingPage};
use crate::Notify;
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use pv_abi::layout::PAGE_SIZE;
use pv_abi::netif::*;
use ring_buffers::{BackRing, RingError};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

pub use pv_abi::netif::DEVICE_TYPE;

/// Data slots a transmit packet may use (Linux's netback: the same).
pub const MAX_TX_SLOTS: usize = XEN_NETIF_NR_SLOTS_MIN;
/// Largest frame either way.
pub const MAX_FRAME: usize = XEN_NETIF_MAX_TX_SIZE;
/// Frames taken from the port per wake-up.
pub const RX_BUDGET: usize = 64;
const PAGE: usize = PAGE_SIZE as usize;

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $f:ident,)*) => {
        /// A snapshot of a device's counters.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct NetCounters {
            $($(#[doc = $doc])* pub $f: u64,)*
        }

        /// A device's counters, shared (atomic) with whoever reads them.
        #[derive(Debug, Default)]
        pub struct NetMetrics {
            $($f: AtomicU64,)*
        }

        impl NetMetrics {
            /// The counters now.
            pub fn snapshot(&self) -> NetCounters {
                NetCounters { $($f: self.$f.load(Relaxed),)* }
            }
        }
    };
}

counters! {
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

impl NetMetrics {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
}

/// Limits the log lines one guest can cause: the first ten, then one at
/// each power of two.
#[derive(Debug, Default)]
pub struct LogLimit(u64);

impl LogLimit {
    /// Whether this event may be logged.
    pub fn allow(&mut self) -> bool {
        self.0 += 1;
        self.0 <= 10 || self.0.is_power_of_two()
    }
}

/// Why a transmit packet is refused (answered `NETIF_RSP_ERROR`).
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// First size below an Ethernet header.
    #[error("packet of {0} bytes is shorter than an Ethernet header")]
    TooShort(usize),
    /// Too many data slots.
    #[error("{0} slots (allowed {MAX_TX_SLOTS})")]
    TooManySlots(usize),
    /// A slot of size 0.
    #[error("slot {0} has size 0")]
    EmptySlot(usize),
    /// The fragments do not fit the first slot's total.
    #[error("fragments of {0} bytes do not fit the packet size {1}")]
    SizeMismatch(usize, usize),
    /// A fragment past its page.
    #[error("slot {slot}: offset {offset} + size {size} is past the page")]
    PastPage {
        /// Slot index.
        slot: usize,
        /// Offset.
        offset: usize,
        /// Size.
        size: usize,
    },
    /// A GSO extra, which is not offered.
    #[error("GSO extra-info slot, but no GSO feature was offered")]
    Gso,
    /// A blank checksum netback cannot fill in.
    #[error(transparent)]
    Csum(#[from] csum::CsumError),
    /// A bad grant.
    #[error("grant: {0}")]
    Grant(#[from] crate::grant::GrantError),
}

/// Why the device stopped.
#[derive(Debug, thiserror::Error)]
enum Fatal {
    #[error("corrupt ring: {0}")]
    Ring(#[from] RingError),
    #[error("packet not ended within the published requests")]
    Unended,
}

/// netback device logic for one connected front end.
pub struct Netback {
    tx: BackRing<RingPage, NetifTxRequest, NetifTxResponse>,
    rx: BackRing<RingPage, NetifRxRequest, NetifRxResponse>,
    grants: Arc<GrantTable>,
    notify: Arc<dyn Notify>,
    sg: bool,
    broken: bool,
    m: Arc<NetMetrics>,
    frame: Vec<u8>,
    chain: Vec<NetifTxRequest>,
    rx_unpublished: u32,
    log: LogLimit,
}

impl std::fmt::Debug for Netback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netback").field("sg", &self.sg).field("broken", &self.broken).finish_non_exhaustive()
    }
}

impl Netback {
    /// Maps the front end's two rings and attaches.
    pub fn connect(
        grants: Arc<GrantTable>,
        tx_ref: u32,
        rx_ref: u32,
        notify: Arc<dyn Notify>,
        sg: bool,
        m: Arc<NetMetrics>,
    ) -> Result<Self, ConnectError> {
        let tx = crate::ring_page::attach_back_ring(&grants, tx_ref)?;
        let rx = crate::ring_page::attach_back_ring(&grants, rx_ref)?;
        Ok(Netback {
            tx,
            rx,
            grants,
            notify,
            sg,
            broken: false,
            m,
            frame: vec![0; MAX_FRAME],
            chain: Vec::with_capacity(NET_TX_RING_SIZE as usize),
            rx_unpublished: 0,
            log: LogLimit::default(),
        })
    }

    /// Whether a protocol violation stopped the device.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    fn stop(&mut self, why: &Fatal) {
        tracing::warn!("netback: {why} from the guest; device stopped");
        NetMetrics::add(&self.m.stopped, 1);
        self.broken = true;
    }

    fn publish_tx(&mut self) {
        if self.tx.push_responses_and_check_notify() {
            NetMetrics::add(&self.m.notifies, 1);
            self.notify.notify();
        }
    }

    /// Publishes the receive responses written so far.
    pub fn publish_rx(&mut self) {
        if self.rx_unpublished == 0 {
            return;
        }
        self.rx_unpublished = 0;
        if self.rx.push_responses_and_check_notify() {
            NetMetrics::add(&self.m.notifies, 1);
            self.notify.notify();
        }
    }

    /// Guest to host: sends the packets on the transmit ring to `port`,
    /// at most `budget` slots. Returns whether requests were left.
    pub fn process_tx(&mut self, port: &mut dyn NetPort, budget: usize) -> bool {
        if self.broken {
            return false;
        }
        match self.tx_loop(port, budget) {
            Ok(more) => more,
            Err(e) => {
                self.publish_tx();
                self.stop(&e);
                false
            }
        }
    }

    fn tx_loop(&mut self, port: &mut dyn NetPort, budget: usize) -> Result<bool, Fatal> {
        let mut done = 0;
        loop {
            if done >= budget {
                self.publish_tx();
                return Ok(self.tx.unconsumed_requests()? > 0);
            }
            if self.tx.unconsumed_requests()? == 0 {
                self.publish_tx();
                if !self.tx.final_check_for_requests()? {
                    return Ok(false);
                }
                continue;
            }
            done += self.take_packet(port)?;
        }
    }

    fn pop(&mut self) -> Result<NetifTxRequest, Fatal> {
        self.tx.pop_request()?.ok_or(Fatal::Unended)
    }

    /// Takes one packet (there is at least one request), answers each of
    /// its slots. Returns the number of slots.
    fn take_packet(&mut self, port: &mut dyn NetPort) -> Result<usize, Fatal> {
        self.chain.clear();
        let first = self.pop()?;
        self.chain.push(first);
        let mut gso = false;
        let mut extra = first.flags & NETTXF_EXTRA_INFO != 0;
        while extra {
            let r = self.pop()?;
            self.chain.push(r);
            let ex = as_extra(&r);
            gso |= ex.type_ == XEN_NETIF_EXTRA_TYPE_GSO;
            extra = ex.flags & XEN_NETIF_EXTRA_FLAG_MORE != 0;
        }
        let extras = self.chain.len() - 1;
        let mut more = first.flags & NETTXF_MORE_DATA != 0;
        while more {
            let r = self.pop()?;
            self.chain.push(r);
            more = r.flags & NETTXF_MORE_DATA != 0;
        }
        let status = match self.build(extras, gso).and_then(|len| self.send(port, len)) {
            Ok(()) => NETIF_RSP_OKAY,
            Err(e) => {
                NetMetrics::add(&self.m.tx_errors, 1);
                if self.log.allow() {
                    tracing::warn!(id = first.id, "netback: transmit packet refused: {e}");
                }
                NETIF_RSP_ERROR
            }
        };
        for (i, r) in self.chain.iter().enumerate() {
            let st = if i >= 1 && i <= extras { NETIF_RSP_NULL } else { status };
            // Every slot was consumed above, so there is room.
            self.tx.push_response(&NetifTxResponse { id: r.id, status: st })?;
        }
        NetMetrics::add(&self.m.tx_slots, self.chain.len() as u64);
        Ok(self.chain.len())
    }

    /// Checks the packet in `self.chain` and copies it into `self.frame`.
    /// Data slots are the first slot and those after the extras.
    fn build(&mut self, extras: usize, gso: bool) -> Result<usize, TxError> {
        if gso {
            return Err(TxError::Gso);
        }
        let first = self.chain[0];
        let frags = &self.chain[1 + extras..];
        let total = usize::from(first.size);
        if frags.len() + 1 > MAX_TX_SLOTS {
            return Err(TxError::TooManySlots(frags.len() + 1));
        }
        if total < ETH_HLEN {
            return Err(TxError::TooShort(total));
        }
        let rest: usize = frags.iter().map(|r| usize::from(r.size)).sum();
        if rest >= total {
            return Err(TxError::SizeMismatch(rest, total));
        }
        let mut pos = 0;
        for slot in 0..=frags.len() {
            let (r, size) =
                if slot == 0 { (first, total - rest) } else { (frags[slot - 1], usize::from(frags[slot - 1].size)) };
            let offset = usize::from(r.offset);
            if size == 0 {
                return Err(TxError::EmptySlot(slot));
            }
            if offset + size > PAGE {
                return Err(TxError::PastPage { slot, offset, size });
            }
            self.grants.map(r.gref, false)?.read(offset as u64, &mut self.frame[pos..pos + size])?;
            pos += size;
        }
        if !frags.is_empty() {
            NetMetrics::add(&self.m.tx_multi_slot, 1);
        }
        Ok(total)
    }

    fn send(&mut self, port: &mut dyn NetPort, len: usize) -> Result<(), TxError> {
        let flags = self.chain[0].flags;
        let frame = &mut self.frame[..len];
        if flags & NETTXF_CSUM_BLANK != 0 {
            csum::fill(frame)?;
            NetMetrics::add(&self.m.tx_csum_filled, 1);
        }
        let validated = flags & (NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED) != 0;
        match port.send(frame, validated) {
            Ok(()) => {
                NetMetrics::add(&self.m.tx_packets, 1);
                NetMetrics::add(&self.m.tx_bytes, len as u64);
            }
            // The packet was fine; the host side dropped it, as a full
            // queue on a NIC would.
            Err(e) => {
                NetMetrics::add(&self.m.tx_port_errors, 1);
                if self.log.allow() {
                    tracing::debug!("netback: {}: send failed: {e}", port.name());
                }
            }
        }
        Ok(())
    }

    /// Host to guest: copies `frame` into the guest's posted buffers (not
    /// published until [`publish_rx`](Self::publish_rx)). Returns whether
    /// it was delivered; a frame that is not is counted as dropped.
    pub fn deliver(&mut self, frame: &[u8], meta: RxMeta) -> bool {
        if self.broken {
            NetMetrics::add(&self.m.rx_dropped_not_connected, 1);
            return false;
        }
        let need = frame.len().div_ceil(PAGE);
        if frame.is_empty() || frame.len() > MAX_FRAME || (need > 1 && !self.sg) {
            NetMetrics::add(&self.m.rx_dropped_bad_size, 1);
            return false;
        }
        match self.rx_buffers(need) {
            Ok(true) => {}
            Ok(false) => {
                NetMetrics::add(&self.m.rx_dropped_no_buffer, 1);
                return false;
            }
            Err(e) => {
                self.publish_rx();
                self.stop(&e);
                return false;
            }
        }
        let mut csum_flags = 0;
        if meta.csum_blank {
            csum_flags |= NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED;
        } else if meta.data_validated {
            csum_flags |= NETRXF_DATA_VALIDATED;
        }
        let mut ok = true;
        for (i, chunk) in frame.chunks(PAGE).enumerate() {
            let Ok(Some(req)) = self.rx.pop_request() else { break };
            let status = match self.grants.map(req.gref, true).and_then(|m| m.write(0, chunk)) {
                Ok(()) => chunk.len() as i16,
                Err(e) => {
                    ok = false;
                    if self.log.allow() {
                        tracing::warn!(id = req.id, "netback: receive buffer refused: {e}");
                    }
                    NETIF_RSP_ERROR
                }
            };
            let mut flags = if i == 0 { csum_flags } else { 0 };
            if i + 1 < need {
                flags |= NETRXF_MORE_DATA;
            }
            // A request was consumed for this response: there is room.
            let _ = self.rx.push_response(&NetifRxResponse { id: req.id, offset: 0, flags, status });
            self.rx_unpublished += 1;
        }
        NetMetrics::add(&self.m.rx_slots, need as u64);
        if !ok {
            NetMetrics::add(&self.m.rx_errors, 1);
            return false;
        }
        NetMetrics::add(&self.m.rx_packets, 1);
        NetMetrics::add(&self.m.rx_bytes, frame.len() as u64);
        if need > 1 {
            NetMetrics::add(&self.m.rx_multi_slot, 1);
        }
        true
    }

    /// Whether `need` receive requests are posted; if not, asks the front
    /// end to notify when it posts more (`feature-rx-notify`).
    fn rx_buffers(&mut self, need: usize) -> Result<bool, Fatal> {
        if self.rx.unconsumed_requests()? as usize >= need {
            return Ok(true);
        }
        self.publish_rx();
        self.rx.final_check_for_requests()?;
        Ok(self.rx.unconsumed_requests()? as usize >= need)
    }
}

/// An extra-info slot read from a transmit slot's bytes.
fn as_extra(r: &NetifTxRequest) -> NetifExtraInfo {
    let g = r.gref.to_le_bytes();
    NetifExtraInfo { type_: g[0], flags: g[1], u: [u16::from_le_bytes([g[2], g[3]]), r.offset, r.flags] }
}

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
        self.mac.unwrap_or([0x02, 0, 0, 0, (index >> 8) as u8, (index as u8).wrapping_add(1)])
    }
}

/// Formats a MAC as Xen's store does.
pub fn format_mac(m: &[u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

/// netback as a [`SplitBackend`](crate::xenbus::SplitBackend) over a port.
pub struct NetBackend {
    port: Box<dyn NetPort>,
    mac: [u8; 6],
    /// The connected device, if any.
    pub dev: Option<Netback>,
    metrics: Arc<NetMetrics>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for NetBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetBackend").field("port", &self.port.name()).field("dev", &self.dev).finish()
    }
}

impl NetBackend {
    /// A back end on `port` for a guest interface with `mac`.
    pub fn new(port: Box<dyn NetPort>, mac: [u8; 6]) -> Self {
        NetBackend { port, mac, dev: None, metrics: Arc::default(), buf: vec![0; MAX_FRAME] }
    }

    /// The shared counters.
    pub fn metrics(&self) -> &Arc<NetMetrics> {
        &self.metrics
    }

    /// The port's descriptor (polled by the device thread).
    pub fn port_fd(&self) -> RawFd {
        self.port.wake_fd()
    }

    /// The port has frames: copy up to [`RX_BUDGET`] of them to the guest
    /// (dropping them if it is not connected), then publish.
    pub fn port_ready(&mut self) {
        NetMetrics::add(&self.metrics.port_wakes, 1);
        for _ in 0..RX_BUDGET {
            let (n, meta) = match self.port.recv(&mut self.buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("netback: {}: receive failed: {e}", self.port.name());
                    break;
                }
            };
            match &mut self.dev {
                Some(dev) => {
                    dev.deliver(&self.buf[..n], meta);
                }
                None => NetMetrics::add(&self.metrics.rx_dropped_not_connected, 1),
            }
        }
        if let Some(dev) = &mut self.dev {
            dev.publish_rx();
        }
    }

    /// The keys published in the back-end directory.
    pub fn keys(mac: &[u8; 6]) -> Vec<(String, String)> {
        [
            (keys::FEATURE_RX_COPY, "1".to_string()),
            (keys::FEATURE_SG, "1".to_string()),
            (keys::FEATURE_RX_NOTIFY, "1".to_string()),
            ("feature-gso-tcpv4", "0".to_string()),
            (keys::FEATURE_SPLIT_EVENT_CHANNELS, "0".to_string()),
            (keys::MAC, format_mac(mac)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl crate::xenbus::SplitBackend for NetBackend {
    fn device_type(&self) -> &'static str {
        DEVICE_TYPE
    }

    fn features(&self) -> Vec<(String, String)> {
        Self::keys(&self.mac)
    }

    fn connect(
        &mut self,
        front: &dyn crate::xenbus::FrontendKeys,
        grants: &Arc<GrantTable>,
        notify: Arc<dyn Notify>,
    ) -> Result<(), String> {
        if front.read(keys::REQUEST_RX_COPY).is_none_or(|v| v.trim() != "1") {
            return Err("front end does not request rx-copy (the only receive mode offered)".into());
        }
        if front.read(keys::FEATURE_RX_NOTIFY).is_none_or(|v| v.trim() != "1") {
            return Err("front end lacks feature-rx-notify (required)".into());
        }
        let tx_ref = front.read_u32(keys::TX_RING_REF)?;
        let rx_ref = front.read_u32(keys::RX_RING_REF)?;
        let sg = front.read(keys::FEATURE_SG).is_some_and(|v| v.trim() == "1");
        let dev = Netback::connect(grants.clone(), tx_ref, rx_ref, notify, sg, self.metrics.clone())
            .map_err(|e| e.to_string())?;
        self.dev = Some(dev);
        Ok(())
    }

    fn disconnect(&mut self) {
        self.dev = None;
    }

    fn process(&mut self) -> bool {
        NetMetrics::add(&self.metrics.kicks, 1);
        match &mut self.dev {
            Some(dev) => dev.process_tx(&mut *self.port, crate::xenbus::PROCESS_BUDGET),
            None => false,
        }
    }
}

/// The device-thread subscriber for one interface: the xenbus device (its
/// store watch and event channel) plus the port's descriptor.
pub struct NetDevice {
    /// The handshake driver around the back end.
    pub xenbus: crate::xenbus::XenbusDevice<NetBackend>,
    port_fd: RawFd,
}

impl NetDevice {
    /// Wraps a xenbus device.
    pub fn new(xenbus: crate::xenbus::XenbusDevice<NetBackend>) -> Self {
        let port_fd = xenbus.backend.port_fd();
        NetDevice { xenbus, port_fd }
    }
}

impl MutEventSubscriber for NetDevice {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == self.port_fd {
            if events.event_set().contains(EventSet::IN) {
                self.xenbus.backend.port_ready();
            }
        } else {
            self.xenbus.process(events, ops);
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        self.xenbus.init(ops);
        if let Err(e) = ops.add(Events::new_raw(self.port_fd, EventSet::IN)) {
            tracing::error!("netback: cannot watch the port: {e}");
        }
    }
}
