//! A host-side netfront that drives netback over real rings in real
//! memory, without KVM: for protocol tests (hostile front ends included)
//! and the benchmark.
//!
//! The "guest" is a [`GuestMemoryMmap`] laid out like a small guest: a
//! grant table the harness fills as the guest would, the transmit and
//! receive ring pages granted to domain 0, and data pages each granted
//! read-write under its own reference ([`HostNetFront::page_gref`]).
//! Netback reaches all of them only through the [`GrantTable`], exactly as
//! in the VMM, and is connected through the same
//! [`SplitBackend::connect`](crate::xenbus::SplitBackend::connect) the
//! xenbus device calls.

use super::{NetBackend, NetMetricsSnapshot, NetPort};
use crate::guest_side::{GuestSide, AFTER_TABLE};
use crate::ring_page::RingPage;
use crate::xenbus::{FrontendKeys, SplitBackend as _};
use crate::Notify;
use pv_abi::grant_table::{GrantRef, GTF_PERMIT_ACCESS};
use pv_abi::layout::PAGE_SIZE;
use pv_abi::netif::*;
use ring_buffers::{FrontRing, RingError, RingMemory};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use vm_memory::{Bytes, GuestAddress};
use xen_domain::grant_table::GrantTable;

/// Guest-physical address of the transmit ring page.
const TX_RING: u64 = AFTER_TABLE;
/// Guest-physical address of the receive ring page.
const RX_RING: u64 = TX_RING + PAGE_SIZE;
/// Guest-physical address of the first data page.
const DATA: u64 = RX_RING + PAGE_SIZE;
/// The transmit ring's grant reference.
pub const TX_RING_REF: GrantRef = 1;
/// The receive ring's grant reference.
pub const RX_RING_REF: GrantRef = 2;
pub use crate::guest_side::MAX_DATA_PAGES;
const PAGE: usize = PAGE_SIZE as usize;

/// Counts the back end's notifications.
#[derive(Debug, Default)]
pub struct CountNotify(AtomicU64);

impl CountNotify {
    /// Notifications so far.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Notify for CountNotify {
    fn notify(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The front-end half: memory, grant table, both rings and data pages.
pub struct HostNetFront {
    side: GuestSide,
    tx: FrontRing<RingPage, NetifTxRequest, NetifTxResponse>,
    rx: FrontRing<RingPage, NetifRxRequest, NetifRxResponse>,
    /// Notifications the front end sent (Xen's rule said netback waited).
    pub notifies: u64,
}

impl std::fmt::Debug for HostNetFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostNetFront").field("pages", &self.side.pages()).finish_non_exhaustive()
    }
}

fn other<E: std::fmt::Display>(e: E) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl HostNetFront {
    /// A front end with `pages` data pages (at most [`MAX_DATA_PAGES`]) and
    /// both rings initialised.
    pub fn new(pages: u32) -> std::io::Result<Self> {
        let side = GuestSide::new(DATA, pages)?;
        let tx = FrontRing::init(RingPage::assigned(side.mem(), TX_RING).map_err(other)?).map_err(other)?;
        let rx = FrontRing::init(RingPage::assigned(side.mem(), RX_RING).map_err(other)?).map_err(other)?;
        side.set_grant(TX_RING_REF, TX_RING, GTF_PERMIT_ACCESS);
        side.set_grant(RX_RING_REF, RX_RING, GTF_PERMIT_ACCESS);
        Ok(HostNetFront { side, tx, rx, notifies: 0 })
    }

    /// The grant table netback uses.
    pub fn grants(&self) -> &Arc<GrantTable> {
        self.side.grants()
    }

    /// Number of data pages.
    pub fn pages(&self) -> u32 {
        self.side.pages()
    }

    /// The grant reference of data page `i`.
    pub fn page_gref(&self, i: u32) -> GrantRef {
        self.side.page_gref(i)
    }

    /// Writes a grant entry as the guest would (any values: hostile tests
    /// forge entries with this).
    pub fn set_grant(&mut self, gref: GrantRef, gpa: u64, flags: u16) {
        self.side.set_grant(gref, gpa, flags);
    }

    /// Writes `data` into data page `i` at `offset`.
    pub fn write_page(&self, i: u32, offset: usize, data: &[u8]) {
        self.side.write_page(i, offset as u64, data);
    }

    /// Reads data page `i` at `offset`.
    pub fn read_page(&self, i: u32, offset: usize, buf: &mut [u8]) {
        self.side.read_page(i, offset as u64, buf);
    }

    /// Queues a transmit request as is (not yet published).
    pub fn push_tx(&mut self, req: &NetifTxRequest) -> Result<(), RingError> {
        self.tx.push_request(req)
    }

    /// Writes `frame` into data pages from `first_page` (at `offset` in the
    /// first) and queues it as one slot per page piece (`NETTXF_more_data`),
    /// ids from `id`. Returns the number of slots.
    pub fn queue_frame(&mut self, frame: &[u8], first_page: u32, offset: usize, flags: u16, id: u16) -> usize {
        let mut pieces = Vec::new();
        let (mut at, mut page, mut off) = (0, first_page, offset);
        while at < frame.len() {
            let n = (frame.len() - at).min(PAGE - off);
            self.write_page(page, off, &frame[at..at + n]);
            pieces.push((page, off, n));
            at += n;
            page += 1;
            off = 0;
        }
        let count = pieces.len();
        for (i, &(page, off, n)) in pieces.iter().enumerate() {
            let size = if i == 0 { frame.len() } else { n };
            let mut f = if i == 0 { flags } else { 0 };
            if i + 1 < count {
                f |= NETTXF_MORE_DATA;
            }
            let req = NetifTxRequest {
                gref: self.page_gref(page),
                offset: off as u16,
                flags: f,
                id: id.wrapping_add(i as u16),
                size: size as u16,
            };
            self.tx.push_request(&req).expect("room on the transmit ring");
        }
        count
    }

    /// Publishes queued transmit requests; returns whether netback must be
    /// notified (and counts it).
    pub fn publish_tx(&mut self) -> bool {
        let n = self.tx.push_requests_and_check_notify();
        self.notifies += n as u64;
        n
    }

    /// Takes one transmit response.
    pub fn pop_tx(&mut self) -> Result<Option<NetifTxResponse>, RingError> {
        self.tx.pop_response()
    }

    /// Re-arms `rsp_event` on the transmit ring; whether responses wait.
    pub fn final_check_tx(&mut self) -> Result<bool, RingError> {
        self.tx.final_check_for_responses()
    }

    /// Posts a receive buffer (not yet published).
    pub fn post_rx(&mut self, id: u16, gref: GrantRef) -> Result<(), RingError> {
        self.rx.push_request(&NetifRxRequest { id, pad: 0, gref })
    }

    /// Posts data pages `first..first+n` as receive buffers, ids = page numbers.
    pub fn post_rx_pages(&mut self, first: u32, n: u32) {
        for p in first..first + n {
            self.post_rx(p as u16, self.page_gref(p)).expect("room on the receive ring");
        }
    }

    /// Publishes posted receive buffers; whether netback must be notified.
    pub fn publish_rx(&mut self) -> bool {
        let n = self.rx.push_requests_and_check_notify();
        self.notifies += n as u64;
        n
    }

    /// Takes one receive response.
    pub fn pop_rx(&mut self) -> Result<Option<NetifRxResponse>, RingError> {
        self.rx.pop_response()
    }

    /// Writes raw bytes into transmit ring slot `i` (a hostile front end;
    /// at most one slot's worth, 12 bytes, is used).
    pub fn write_raw_tx_slot(&self, i: u32, bytes: &[u8]) {
        let slot = std::mem::size_of::<NetifTxRequest>();
        let at = TX_RING + 64 + u64::from(i % NET_TX_RING_SIZE) * slot as u64;
        let _ = self.side.mem().write_slice(&bytes[..bytes.len().min(slot)], GuestAddress(at));
    }

    /// Writes raw bytes into receive ring slot `i` (at most 8 bytes).
    pub fn write_raw_rx_slot(&self, i: u32, bytes: &[u8]) {
        let slot = std::mem::size_of::<NetifRxRequest>();
        let at = RX_RING + 64 + u64::from(i % NET_RX_RING_SIZE) * slot as u64;
        let _ = self.side.mem().write_slice(&bytes[..bytes.len().min(slot)], GuestAddress(at));
    }

    /// Overwrites the shared transmit `req_prod` (a hostile front end).
    pub fn corrupt_tx_req_prod(&self, value: u32) {
        self.tx.memory().store_u32(0, value, Ordering::Release);
    }

    /// Overwrites the shared receive `req_prod` (a hostile front end).
    pub fn corrupt_rx_req_prod(&self, value: u32) {
        self.rx.memory().store_u32(0, value, Ordering::Release);
    }
}

/// The front end's store keys, as the harness publishes them.
struct Keys(HashMap<&'static str, String>);

impl FrontendKeys for Keys {
    fn read(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
}

/// A front end and a connected netback on `port`.
pub struct Harness {
    /// The front end.
    pub front: HostNetFront,
    /// The back end.
    pub be: NetBackend,
    /// netback's notifications to the front end.
    pub notify: Arc<CountNotify>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness").field("front", &self.front).finish_non_exhaustive()
    }
}

impl Harness {
    /// Connects netback on `port` to a front end with `pages` data pages;
    /// `sg`: the front end offers `feature-sg`.
    pub fn new(port: Box<dyn NetPort>, pages: u32, sg: bool) -> std::io::Result<Self> {
        Self::with_rx_notify(port, pages, sg, true)
    }

    /// As [`new`](Self::new); `rx_notify`: the front end offers
    /// `feature-rx-notify` (without it netback polls its receive ring).
    pub fn with_rx_notify(port: Box<dyn NetPort>, pages: u32, sg: bool, rx_notify: bool) -> std::io::Result<Self> {
        let front = HostNetFront::new(pages)?;
        let mut be = NetBackend::new(port, [2, 0, 0, 0, 0, 1]);
        let keys = Keys(HashMap::from([
            (keys::TX_RING_REF, TX_RING_REF.to_string()),
            (keys::RX_RING_REF, RX_RING_REF.to_string()),
            (keys::REQUEST_RX_COPY, "1".to_string()),
            (keys::FEATURE_RX_NOTIFY, if rx_notify { "1" } else { "0" }.to_string()),
            (keys::FEATURE_SG, if sg { "1" } else { "0" }.to_string()),
        ]));
        let notify = Arc::new(CountNotify::default());
        let log = pv_util::ratelimit::SharedLogLimiter::default();
        be.connect(&keys, front.grants(), notify.clone(), &log).map_err(std::io::Error::other)?;
        Ok(Harness { front, be, notify })
    }

    /// Runs netback's transmit side (as on an event-channel wake-up).
    /// Returns whether work was left.
    pub fn kick(&mut self) -> bool {
        self.be.process()
    }

    /// Runs netback's receive side (as when the port is readable).
    pub fn port_ready(&mut self) {
        self.be.port_ready();
    }

    /// netback's counters.
    pub fn counters(&self) -> NetMetricsSnapshot {
        self.be.net_metrics().snapshot()
    }

    /// Whether netback stopped the device.
    pub fn stopped(&self) -> bool {
        self.be.dev.as_ref().is_none_or(|d| d.is_broken())
    }

    /// Takes every receive response: `(id, offset, flags, status)`.
    pub fn rx_responses(&mut self) -> Vec<NetifRxResponse> {
        std::iter::from_fn(|| self.front.pop_rx().ok().flatten()).collect()
    }

    /// Takes every transmit response.
    pub fn tx_responses(&mut self) -> Vec<NetifTxResponse> {
        std::iter::from_fn(|| self.front.pop_tx().ok().flatten()).collect()
    }
}
