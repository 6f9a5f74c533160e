//! netfront: the network front end (protocol in `pv_abi::netif`), and the
//! `smoltcp` device over it.
//!
//! Interfaces are found in the store under `device/vif/<id>` ([`list`]).
//! [`connect`] reads the MAC from the front-end directory, runs the xenbus
//! handshake (two ring pages granted to domain 0, one unbound event
//! channel; `tx-ring-ref`, `rx-ring-ref`, `event-channel`,
//! `request-rx-copy`, `feature-rx-notify`, `feature-sg`) and posts
//! [`RX_BUFS`] receive buffers: whole pages granted writable to domain 0.
//! The grants of receive buffers stay in place while the buffer is
//! re-posted after each use (the page is only ever lent to the back end);
//! transmit pages are granted per packet and the grants ended when the
//! back end answers.
//!
//! Receive: the back end copies each frame into posted buffers (Xen's
//! rx-copy); a frame longer than a page spans several buffers chained
//! with `NETRXF_more_data` (feature-sg). A frame the back end did not mark
//! `NETRXF_data_validated`/`NETRXF_csum_blank` has its TCP/UDP checksum
//! checked here and is dropped if wrong, so the stack above can skip it.
//! Transmit: a frame is built in place in a buffer of [`TX_BUF_PAGES`]
//! contiguous pages and sent as one slot per page (`NETTXF_more_data`);
//! IPv4 TCP/UDP frames leave with a blank checksum
//! (`NETTXF_csum_blank | NETTXF_data_validated`), which the back end fills in.
//!
//! Notifications follow Xen's rules both ways: the back end is notified
//! only when `req_event` says it sleeps, and [`NetFront::wait`] re-arms
//! `rsp_event` (receive always, transmit only when buffers run low) before
//! halting.

use crate::evtchn;
use crate::grant;
use crate::hypercall::Errno;
use crate::store::StoreError;
use crate::xenbus::{NodePath, Store};
use pv_abi::event_channel::DOMID_VMM;
use pv_abi::grant_table::GrantRef;
use pv_abi::layout::PAGE_SIZE;
use pv_abi::netif::*;
use pv_abi::xenbus::keys as xbkeys;
use ring_buffers::{FrontRing, RawMemory, RingError};

/// Receive buffers posted (one page each).
pub const RX_BUFS: usize = 128;
/// Transmit buffers.
pub const TX_BUFS: usize = 32;
/// Pages per transmit buffer: the largest frame this front end sends.
pub const TX_BUF_PAGES: usize = 3;
/// Largest frame sent or received (with `feature-sg`).
pub const MAX_FRAME: usize = TX_BUF_PAGES * PAGE_SIZE as usize;
/// Most slots a received frame may span.
pub const MAX_RX_SLOTS: usize = XEN_NETIF_NR_SLOTS_MIN;
/// Ethernet payload size without `feature-sg`.
pub const MTU_NO_SG: usize = 1500;
const RING: usize = NET_TX_RING_SIZE as usize;
const PAGE: usize = PAGE_SIZE as usize;

/// Why an operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetError {
    /// No free page or grant reference.
    NoMemory,
    /// A hypercall failed.
    Hypercall(Errno),
    /// A ring is corrupt.
    Ring(RingError),
    /// A store operation failed.
    Store(StoreError),
    /// The handshake failed.
    Connect(crate::xenbus::ConnectError),
    /// The back end does not offer `feature-rx-copy`.
    NoRxCopy,
    /// No usable `mac` in the front-end directory.
    BadMac,
}

impl From<Errno> for NetError {
    fn from(e: Errno) -> Self {
        NetError::Hypercall(e)
    }
}
impl From<RingError> for NetError {
    fn from(e: RingError) -> Self {
        NetError::Ring(e)
    }
}
impl From<StoreError> for NetError {
    fn from(e: StoreError) -> Self {
        NetError::Store(e)
    }
}

/// Traffic counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetMetrics {
    /// Frames handed to the stack.
    pub rx_packets: u64,
    /// Bytes handed to the stack.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Received frames dropped: error status, bad offset/size, or a chain
    /// longer than [`MAX_RX_SLOTS`].
    pub rx_errors: u64,
    /// Received frames whose checksum this front end verified.
    pub rx_csum_checked: u64,
    /// Received frames dropped for a wrong checksum.
    pub rx_csum_bad: u64,
    /// Received frames that spanned more than one buffer.
    pub rx_multi_slot: u64,
    /// Sent frames that spanned more than one slot.
    pub tx_multi_slot: u64,
    /// Transmit slots the back end answered with an error.
    pub tx_errors: u64,
    /// Frames dropped because no transmit buffer or grant was free.
    pub tx_dropped: u64,
    /// Notifications sent to the back end (doorbell `out`s).
    pub notifies: u64,
    /// Transmit grants still in use by the back end at completion (leaked).
    pub leaked_grants: u64,
}

#[derive(Clone, Copy, Default)]
struct RxSlot {
    id: u16,
    offset: u16,
    len: u16,
}

struct RxSide {
    ring: FrontRing<RawMemory, NetifRxRequest, NetifRxResponse>,
    pages: [u64; RX_BUFS],
    grefs: [GrantRef; RX_BUFS],
    /// The frame being collected (or ready): its slots and flags.
    chain: [RxSlot; MAX_RX_SLOTS],
    chain_len: usize,
    chain_flags: u16,
    chain_bad: bool,
    ready: bool,
    /// Contiguous room for a multi-slot frame.
    scratch: &'static mut [u8],
    c: NetMetrics,
}

#[derive(Clone, Copy, Default)]
struct TxId {
    gref: GrantRef,
    buf: u8,
    busy: bool,
}

struct TxSide {
    ring: FrontRing<RawMemory, NetifTxRequest, NetifTxResponse>,
    bufs: [u64; TX_BUFS],
    /// Slots in flight per buffer.
    in_flight: [u8; TX_BUFS],
    /// Free buffers (bit set = free).
    free: u32,
    ids: [TxId; RING],
    next_id: usize,
    /// Where a frame that cannot be sent is built, then dropped.
    sink: &'static mut [u8],
    c: NetMetrics,
}

/// A connected network front end.
pub struct NetFront {
    rx: RxSide,
    tx: TxSide,
    /// `device/vif/<id>`.
    pub id: u32,
    /// The interface's MAC address (from the store).
    pub mac: [u8; 6],
    /// The back end offers `feature-sg`.
    pub sg: bool,
    /// The event channel (both rings).
    pub port: u32,
    /// The MTU the toolstack set, `mtu` in `device/vif/<id>` (netif.h
    /// "MTU"; absent means 1500).
    pub store_mtu: Option<usize>,
    notifies: u64,
    mtu: usize,
    /// The transmit and receive rings' grants.
    ring_refs: [GrantRef; 2],
}

impl core::fmt::Debug for NetFront {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NetFront").field("id", &self.id).field("mac", &self.mac).finish_non_exhaustive()
    }
}

/// Calls `f` with each interface id under `device/vif`, in store order.
pub fn list(store: &mut Store, mut f: impl FnMut(u32)) -> Result<(), NetError> {
    let mut buf = [0u8; 256];
    let n = match store.directory("device/vif", &mut buf) {
        Ok(n) => n,
        Err(StoreError::Xs(e)) if e == pv_abi::errno::ENOENT => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for name in crate::store::names(&buf[..n]) {
        if let Some(v) = crate::store::parse_u32(name) {
            f(v);
        }
    }
    Ok(())
}

/// The token of [`wait_for_vif`]'s watch on `device/vif`.
pub const VIF_WATCH_TOKEN: &str = "rt-device-vif";

/// Waits until an interface appears under `device/vif` and returns its
/// id: one hot-plugged while the guest runs (`xl network-attach`, `vmm
/// ctl add-net`), noticed through a watch on the directory as Linux's
/// xenbus front end notices it (`xenbus_probe_frontend.c` watches
/// `device`). The watch is removed before returning.
pub fn wait_for_vif(store: &mut Store) -> Result<u32, NetError> {
    store.watch("device/vif", VIF_WATCH_TOKEN)?;
    let r = (|| loop {
        let mut first = None;
        list(store, |v| {
            first.get_or_insert(v);
        })?;
        if let Some(v) = first {
            return Ok(v);
        }
        let mut path = [0u8; 128];
        match store.wait_watch_token(VIF_WATCH_TOKEN, &mut path) {
            Ok(_) | Err(StoreError::BufferTooSmall(_)) => {}
            Err(e) => return Err(NetError::Store(e)),
        }
    })();
    let u = store.unwatch("device/vif", VIF_WATCH_TOKEN);
    let v = r?;
    u?;
    Ok(v)
}

/// `<back end>/state` of `device/vif/<id>`.
pub fn backend_state_path(store: &mut Store, id: u32) -> Result<NodePath<160>, NetError> {
    let mut dir = NodePath::<64>::new("device/vif")?;
    dir.push_u32(id)?;
    let mut be = [0u8; 128];
    let be = crate::xenbus::read_backend_path(store, dir.as_str(), &mut be)?;
    let mut p = NodePath::<160>::new(be)?;
    p.push(pv_abi::xenbus::keys::STATE)?;
    Ok(p)
}

fn read_key<'b>(store: &mut Store, dir: &str, key: &str, buf: &'b mut [u8]) -> Result<Option<&'b [u8]>, NetError> {
    let mut p = NodePath::<160>::new(dir)?;
    p.push(key)?;
    match store.read(p.as_str(), buf) {
        Ok(n) => Ok(Some(buf[..n].trim_ascii())),
        Err(StoreError::Xs(e)) if e == pv_abi::errno::ENOENT => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn shared_ring_page() -> Result<(u64, RawMemory), NetError> {
    let page = crate::pages::alloc(1).ok_or(NetError::NoMemory)?;
    // SAFETY: a page just allocated for this ring and kept for the guest's
    // life (the bump allocator never reuses pages).
    Ok((page, unsafe { crate::arch::shared_page(page) }))
}

/// `bytes` of fresh zeroed memory for the guest's life (there is no heap).
pub fn static_buf(bytes: usize) -> Result<&'static mut [u8], NetError> {
    let gpa = crate::pages::alloc(bytes.div_ceil(PAGE) as u64).ok_or(NetError::NoMemory)?;
    // SAFETY: fresh zeroed pages from the bump allocator, identity mapped,
    // never handed out again; only this slice refers to them.
    Ok(unsafe { core::slice::from_raw_parts_mut(gpa as *mut u8, bytes) })
}

/// One queue before the handshake: its rings (granted), buffers and
/// unbound event channel.
struct NewQueue {
    rx: RxSide,
    tx: TxSide,
    tx_ref: GrantRef,
    rx_ref: GrantRef,
    port: u32,
}

impl NewQueue {
    fn new() -> Result<Self, NetError> {
        let (tx_page, tx_mem) = shared_ring_page()?;
        let (rx_page, rx_mem) = shared_ring_page()?;
        let tx_ring = FrontRing::init(tx_mem)?;
        let rx_ring = FrontRing::init(rx_mem)?;
        let tx_ref = grant::grant_page(DOMID_VMM, tx_page, false).ok_or(NetError::NoMemory)?;
        let rx_ref = grant::grant_page(DOMID_VMM, rx_page, false).ok_or(NetError::NoMemory)?;
        let port = evtchn::alloc_unbound(DOMID_VMM)?;
        let mut rx = RxSide {
            ring: rx_ring,
            pages: [0; RX_BUFS],
            grefs: [0; RX_BUFS],
            chain: [RxSlot::default(); MAX_RX_SLOTS],
            chain_len: 0,
            chain_flags: 0,
            chain_bad: false,
            ready: false,
            scratch: static_buf(MAX_RX_SLOTS * PAGE)?,
            c: NetMetrics::default(),
        };
        let first = crate::pages::alloc(RX_BUFS as u64).ok_or(NetError::NoMemory)?;
        for i in 0..RX_BUFS {
            rx.pages[i] = first + (i * PAGE) as u64;
            rx.grefs[i] = grant::grant_page(DOMID_VMM, rx.pages[i], false).ok_or(NetError::NoMemory)?;
        }
        let first = crate::pages::alloc((TX_BUFS * TX_BUF_PAGES) as u64).ok_or(NetError::NoMemory)?;
        let tx = TxSide {
            ring: tx_ring,
            bufs: core::array::from_fn(|i| first + (i * TX_BUF_PAGES * PAGE) as u64),
            in_flight: [0; TX_BUFS],
            free: u32::MAX,
            ids: [TxId::default(); RING],
            next_id: 0,
            sink: static_buf(MAX_FRAME)?,
            c: NetMetrics::default(),
        };
        Ok(NewQueue { rx, tx, tx_ref, rx_ref, port })
    }

    /// Writes this queue's `tx-ring-ref`, `rx-ring-ref` and `event-channel`
    /// under `dir`.
    fn publish(&self, c: &mut Store, dir: &str) -> Result<(), StoreError> {
        for (key, v) in
            [(keys::TX_RING_REF, self.tx_ref), (keys::RX_RING_REF, self.rx_ref), (keys::EVENT_CHANNEL, self.port)]
        {
            let mut p = NodePath::<128>::new(dir)?;
            p.push(key)?;
            c.write_u32(p.as_str(), v)?;
        }
        Ok(())
    }
}

/// Most queues [`connect_queues`] sets up for one interface.
pub const MAX_QUEUES: usize = 4;

/// Sets up `device/vif/<id>` with one queue, runs the xenbus handshake and
/// posts the receive buffers.
pub fn connect(store: &mut Store, id: u32) -> Result<NetFront, NetError> {
    let mut out = [None];
    connect_queues(store, id, &mut out)?;
    out[0].take().ok_or(NetError::NoMemory)
}

/// Sets up `device/vif/<id>` with up to `out.len()` queues (at most
/// [`MAX_QUEUES`], and no more than the back end's
/// `multi-queue-max-queues`, as Linux's netfront takes the smaller), runs
/// the handshake (`multi-queue-num-queues` and `queue-<N>/tx-ring-ref`,
/// `rx-ring-ref`, `event-channel` with several, `netif.h` "Multi-queue"),
/// posts every queue's receive buffers and fills `out[..n]`; returns `n`.
/// Each queue is a [`NetFront`] of its own; frames for a flow arrive on
/// the queue the back end's hash picks.
pub fn connect_queues(store: &mut Store, id: u32, out: &mut [Option<NetFront>]) -> Result<usize, NetError> {
    let mut dir = NodePath::<64>::new("device/vif")?;
    dir.push_u32(id)?;
    let mut buf = [0u8; 64];
    let mac = read_key(store, dir.as_str(), keys::MAC, &mut buf)?.and_then(parse_mac).ok_or(NetError::BadMac)?;
    let mut be = [0u8; 128];
    let be_len = crate::xenbus::read_backend_path(store, dir.as_str(), &mut be)?.len();
    let be = core::str::from_utf8(&be[..be_len]).map_err(|_| StoreError::BadValue)?;
    let mut be_state = NodePath::<160>::new(be)?;
    be_state.push(xbkeys::STATE)?;
    // The back end's limits are written before it goes InitWait.
    crate::xenbus::wait_for_state(store, be_state.as_str(), |s| s >= pv_abi::xenbus::XenbusState::InitWait)?;
    let max = read_key(store, be, xbkeys::MULTI_QUEUE_MAX_QUEUES, &mut buf)?
        .and_then(crate::cmdline::parse_u64)
        .unwrap_or(1)
        .max(1);
    let queues = (out.len().min(MAX_QUEUES) as u64).min(max) as usize;
    if queues == 0 {
        return Err(NetError::NoMemory);
    }
    let mut new: [Option<NewQueue>; MAX_QUEUES] = [const { None }; MAX_QUEUES];
    for q in new.iter_mut().take(queues) {
        *q = Some(NewQueue::new()?);
    }
    crate::xenbus::connect_frontend(store, dir.as_str(), |c, d| {
        for (key, v) in [(keys::REQUEST_RX_COPY, 1), (keys::FEATURE_RX_NOTIFY, 1), (keys::FEATURE_SG, 1)] {
            let mut p = NodePath::<96>::new(d)?;
            p.push(key)?;
            c.write_u32(p.as_str(), v)?;
        }
        if let [Some(q)] = &new[..queues] {
            return q.publish(c, d);
        }
        let mut p = NodePath::<96>::new(d)?;
        p.push(xbkeys::MULTI_QUEUE_NUM_QUEUES)?;
        c.write_u32(p.as_str(), queues as u32)?;
        for (n, q) in new[..queues].iter().enumerate() {
            let Some(q) = q else { continue };
            let mut name = [0u8; 16];
            let mut digits = [0u8; 10];
            let digits = crate::store::fmt_u32(n as u32, &mut digits);
            let prefix = xbkeys::QUEUE_PREFIX.as_bytes();
            name[..prefix.len()].copy_from_slice(prefix);
            name[prefix.len()..prefix.len() + digits.len()].copy_from_slice(digits);
            let name = core::str::from_utf8(&name[..prefix.len() + digits.len()]).map_err(|_| StoreError::BadValue)?;
            let mut qdir = NodePath::<96>::new(d)?;
            qdir.push(name)?;
            q.publish(c, qdir.as_str())?;
        }
        Ok(())
    })
    .map_err(NetError::Connect)?;
    if read_key(store, be, keys::FEATURE_RX_COPY, &mut buf)? != Some(b"1") {
        return Err(NetError::NoRxCopy);
    }
    let sg = read_key(store, be, keys::FEATURE_SG, &mut buf)? == Some(b"1");
    let store_mtu = read_key(store, dir.as_str(), keys::MTU, &mut buf)?
        .and_then(crate::cmdline::parse_u64)
        .and_then(|m| usize::try_from(m).ok());
    for (slot, q) in out.iter_mut().zip(new.iter_mut().take(queues)) {
        let Some(q) = q.take() else { continue };
        let mut f = NetFront {
            rx: q.rx,
            tx: q.tx,
            id,
            mac,
            sg,
            port: q.port,
            store_mtu,
            notifies: 0,
            mtu: MTU_NO_SG,
            ring_refs: [q.tx_ref, q.rx_ref],
        };
        for i in 0..RX_BUFS {
            f.rx.post(i as u16)?;
        }
        f.flush();
        *slot = Some(f);
    }
    Ok(queues)
}

impl RxSide {
    fn post(&mut self, id: u16) -> Result<(), RingError> {
        let gref = self.grefs[id as usize];
        self.ring.push_request(&NetifRxRequest { id, pad: 0, gref })
    }

    /// Collects responses until a whole frame is there. A bad frame is
    /// dropped here (its buffers re-posted, counted).
    fn collect(&mut self) -> Result<bool, RingError> {
        while !self.ready {
            let Some(r) = self.ring.pop_response()? else { return Ok(false) };
            let id = r.id as usize;
            if id >= RX_BUFS {
                // Not a buffer we posted: nothing to re-post.
                self.chain_bad = true;
            } else if self.chain_len == MAX_RX_SLOTS {
                self.chain_bad = true;
                self.post(r.id)?;
            } else {
                let end = r.offset as usize + r.status.max(0) as usize;
                if r.status < 0 || end > PAGE {
                    self.chain_bad = true;
                }
                let len = if self.chain_bad { 0 } else { r.status as u16 };
                self.chain[self.chain_len] = RxSlot { id: r.id, offset: r.offset, len };
                self.chain_len += 1;
            }
            if self.chain_len == 1 {
                self.chain_flags = r.flags;
            }
            // Extra-info slots are never asked for (no GSO): a frame
            // announcing one is dropped.
            if r.flags & NETRXF_EXTRA_INFO != 0 {
                self.chain_bad = true;
            }
            if r.flags & NETRXF_MORE_DATA == 0 {
                if self.chain_bad {
                    self.c.rx_errors += 1;
                    self.recycle()?;
                } else {
                    self.ready = true;
                }
            }
        }
        Ok(true)
    }

    /// Re-posts the frame's buffers and starts a new one.
    fn recycle(&mut self) -> Result<(), RingError> {
        for i in 0..self.chain_len {
            let id = self.chain[i].id;
            self.post(id)?;
        }
        self.chain_len = 0;
        self.chain_bad = false;
        self.ready = false;
        Ok(())
    }

    /// The ready frame, copied into the scratch buffer when it spans
    /// several buffers.
    fn frame(&mut self) -> &[u8] {
        let chain = &self.chain[..self.chain_len];
        if let [s] = chain {
            let base = self.pages[s.id as usize] + s.offset as u64;
            // SAFETY: a posted receive page (identity mapped, ours for the
            // guest's life); offset+len was checked against the page. The
            // back end answered it and does not write it until re-posted.
            return unsafe { core::slice::from_raw_parts(base as *const u8, s.len as usize) };
        }
        self.c.rx_multi_slot += 1;
        let mut at = 0;
        for s in chain {
            let base = self.pages[s.id as usize] + s.offset as u64;
            // SAFETY: as above, for each buffer of the chain.
            let src = unsafe { core::slice::from_raw_parts(base as *const u8, s.len as usize) };
            self.scratch[at..at + src.len()].copy_from_slice(src);
            at += src.len();
        }
        &self.scratch[..at]
    }
}

impl TxSide {
    /// Takes the back end's answers: ends grants, frees buffers.
    fn reap(&mut self) -> Result<(), RingError> {
        while let Some(r) = self.ring.pop_response()? {
            if r.status == NETIF_RSP_NULL {
                continue;
            }
            let Some(t) = self.ids.get_mut(r.id as usize).filter(|t| t.busy) else { continue };
            t.busy = false;
            let (gref, b) = (t.gref, t.buf as usize);
            if grant::end_access(gref).is_err() {
                self.c.leaked_grants += 1;
            }
            if r.status != NETIF_RSP_OKAY {
                self.c.tx_errors += 1;
            }
            self.in_flight[b] = self.in_flight[b].saturating_sub(1);
            if self.in_flight[b] == 0 {
                self.free |= 1 << b;
            }
        }
        Ok(())
    }

    fn can_send(&self) -> bool {
        self.free != 0 && self.ring.free_requests() as usize >= TX_BUF_PAGES
    }

    fn take_id(&mut self) -> Option<u16> {
        for _ in 0..RING {
            let id = self.next_id;
            self.next_id = (self.next_id + 1) % RING;
            if !self.ids[id].busy {
                return Some(id as u16);
            }
        }
        None
    }

    /// Builds a `len`-byte frame with `fill` in a free buffer and queues it.
    fn send<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let len = len.min(MAX_FRAME);
        let b = self.free.trailing_zeros() as usize;
        if b >= TX_BUFS || !self.can_send() {
            // Only a reply built while receiving gets here (`transmit`
            // checks first): it is built in the sink and dropped.
            self.c.tx_dropped += 1;
            return fill(&mut self.sink[..len]);
        }
        let gpa = self.bufs[b];
        // SAFETY: buffer `b` is free (no slot in flight, so the back end has
        // no grant to it) and identity mapped for the guest's life; `len`
        // is at most the buffer's size.
        let frame = unsafe { core::slice::from_raw_parts_mut(gpa as *mut u8, len) };
        let r = fill(frame);
        let flags = if needs_csum(frame) { NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED } else { 0 };
        let n = len.div_ceil(PAGE).max(1);
        let mut slots = [(0u16, 0 as GrantRef); TX_BUF_PAGES];
        for i in 0..n {
            let gref = grant::grant_page(DOMID_VMM, gpa + (i * PAGE) as u64, true);
            let id = self.take_id();
            let (Some(gref), Some(id)) = (gref, id) else {
                if let Some(g) = gref {
                    let _ = grant::end_access(g);
                }
                for &(id, g) in &slots[..i] {
                    self.ids[id as usize].busy = false;
                    let _ = grant::end_access(g);
                }
                self.c.tx_dropped += 1;
                return r;
            };
            self.ids[id as usize] = TxId { gref, buf: b as u8, busy: true };
            slots[i] = (id, gref);
        }
        for (i, &(id, gref)) in slots[..n].iter().enumerate() {
            let size = if i == 0 { len } else { (len - i * PAGE).min(PAGE) };
            let more = if i + 1 < n { NETTXF_MORE_DATA } else { 0 };
            let f = if i == 0 { flags } else { 0 } | more;
            // Room was checked (`can_send`): a push cannot fail.
            let _ = self.ring.push_request(&NetifTxRequest { gref, offset: 0, flags: f, id, size: size as u16 });
        }
        self.free &= !(1 << b);
        self.in_flight[b] = n as u8;
        self.c.tx_packets += 1;
        self.c.tx_bytes += len as u64;
        self.c.tx_multi_slot += (n > 1) as u64;
        r
    }
}

impl NetFront {
    /// Publishes queued transmit requests and re-posted receive buffers,
    /// notifying the back end only if Xen's rule says it waits.
    pub fn flush(&mut self) {
        let tx = self.tx.ring.push_requests_and_check_notify();
        let rx = self.rx.ring.push_requests_and_check_notify();
        if tx || rx {
            self.notifies += 1;
            evtchn::notify(self.port);
        }
    }

    /// Largest Ethernet payload (MTU) this interface can carry.
    pub fn max_mtu(&self) -> usize {
        if self.sg {
            MAX_FRAME - 14
        } else {
            MTU_NO_SG
        }
    }

    /// Sets the MTU the stack sees (clamped to 576..=[`Self::max_mtu`]);
    /// returns it.
    pub fn set_mtu(&mut self, mtu: usize) -> usize {
        self.mtu = mtu.clamp(576, self.max_mtu());
        self.mtu
    }

    /// Whether a received frame is waiting (collects responses).
    pub fn rx_ready(&mut self) -> bool {
        self.rx.collect().unwrap_or(false)
    }

    /// Takes transmit completions.
    pub fn reap_tx(&mut self) {
        let _ = self.tx.reap();
    }

    /// The counters of both rings.
    pub fn counters(&self) -> NetMetrics {
        let (r, t) = (&self.rx.c, &self.tx.c);
        NetMetrics {
            rx_packets: r.rx_packets,
            rx_bytes: r.rx_bytes,
            rx_errors: r.rx_errors,
            rx_csum_checked: r.rx_csum_checked,
            rx_csum_bad: r.rx_csum_bad,
            rx_multi_slot: r.rx_multi_slot,
            tx_packets: t.tx_packets,
            tx_bytes: t.tx_bytes,
            tx_multi_slot: t.tx_multi_slot,
            tx_errors: t.tx_errors,
            tx_dropped: t.tx_dropped,
            leaked_grants: t.leaked_grants,
            notifies: self.notifies,
        }
    }

    /// Halts until the back end answers on either ring or `deadline_us`
    /// ([`crate::clock::now_us`]) passes. Re-arms `rsp_event` on the
    /// receive ring, and on the transmit ring when buffers run low, first.
    pub fn wait(&mut self, deadline_us: Option<u64>) {
        let seen = evtchn::events(self.port);
        if self.rx_ready() || !matches!(self.rx.ring.final_check_for_responses(), Ok(false)) {
            return;
        }
        if self.tx.free.count_ones() < TX_BUFS as u32 / 2
            && !matches!(self.tx.ring.final_check_for_responses(), Ok(false))
        {
            return;
        }
        let port = self.port;
        // The one-shot timer is re-armed for what is left whenever the
        // guest wakes before the deadline: the TSC scale is calibrated
        // against the APIC timer only roughly, so the timer may fire a
        // little before `now_us` reaches the deadline, and a timer that is
        // not armed again would leave the guest halted for good.
        evtchn::wait_until(|| {
            if evtchn::events(port) != seen {
                return true;
            }
            let Some(d) = deadline_us else { return false };
            let now = crate::clock::now_us();
            if now >= d {
                return true;
            }
            crate::clock::arm_wakeup(d - now);
            false
        });
    }
}

impl NetFront {
    /// Closes the interface as Linux's netfront does when its back end
    /// goes `Closing` (`netback_changed()` -> `xenbus_frontend_closed()`):
    /// switches to `Closed`, waits for the back end to be `Closed` (or
    /// gone), then ends the rings' grants and closes the event channel.
    /// A grant the back end still maps is leaked, never reused.
    pub fn close(&mut self, store: &mut Store) -> Result<(), NetError> {
        let be_state = backend_state_path(store, self.id);
        let mut dir = NodePath::<64>::new("device/vif")?;
        dir.push_u32(self.id)?;
        crate::xenbus::switch_state(store, dir.as_str(), crate::xenbus::XenbusState::Closed)?;
        if let Ok(be_state) = be_state {
            crate::xenbus::wait_for_state(store, be_state.as_str(), |s| {
                s == crate::xenbus::XenbusState::Unknown || s == crate::xenbus::XenbusState::Closed
            })?;
        }
        for r in self.ring_refs {
            let _ = grant::end_access(r);
        }
        evtchn::close(self.port)?;
        Ok(())
    }

    /// Connects again after the guest resumed as a new domain
    /// ([`crate::hypercall::Resumed::NewDomain`]), as Linux's
    /// `netfront_resume()` does: the old rings' grants and event channel
    /// are given up (the back end unmapped and closed them while it reset
    /// to `InitWait`) and the handshake runs on fresh rings and receive
    /// buffers (the old pages are not reused). The MTU in use is kept;
    /// frames in flight on the old rings are lost.
    pub fn reconnect(&mut self, store: &mut Store) -> Result<(), NetError> {
        for r in self.ring_refs {
            let _ = grant::end_access(r);
        }
        let _ = evtchn::close(self.port);
        let mtu = self.mtu;
        *self = connect(store, self.id)?;
        self.set_mtu(mtu);
        Ok(())
    }
}

/// Raw access for tests and hostile-guest scenarios.
impl NetFront {
    /// Sends one frame outside the stack (copied into a transmit buffer);
    /// `false` if no buffer is free.
    pub fn send_frame(&mut self, frame: &[u8]) -> bool {
        self.tx.reap().ok();
        if !self.tx.can_send() || frame.len() > MAX_FRAME {
            return false;
        }
        self.tx.send(frame.len(), |b| b.copy_from_slice(frame));
        self.flush();
        true
    }

    /// Calls `f` with the next received frame, if one is there.
    pub fn recv_frame(&mut self, f: impl FnOnce(&[u8])) -> bool {
        if !self.rx_ready() {
            return false;
        }
        f(self.rx.frame());
        let _ = self.rx.recycle();
        true
    }

    /// Queues a transmit request as is (the caller owns whatever grant it
    /// names); answered like any other, see [`Self::raw_tx_responses`].
    pub fn queue_raw_tx(&mut self, req: &NetifTxRequest) -> Result<(), NetError> {
        Ok(self.tx.ring.push_request(req)?)
    }

    /// Takes transmit responses straight off the ring (for raw requests,
    /// before any stack traffic): fills `out`, returns how many.
    pub fn raw_tx_responses(&mut self, out: &mut [NetifTxResponse]) -> Result<usize, NetError> {
        let mut n = 0;
        while n < out.len() {
            let Some(r) = self.tx.ring.pop_response()? else { break };
            out[n] = r;
            n += 1;
        }
        Ok(n)
    }

    /// Overwrites the shared transmit `req_prod` (a hostile guest).
    pub fn poke_tx_req_prod(&self, value: u32) {
        ring_buffers::RingMemory::store_u32(self.tx.ring.memory(), 0, value, core::sync::atomic::Ordering::Release);
    }

    /// Notifies the back end unconditionally.
    pub fn kick(&mut self) {
        self.notifies += 1;
        evtchn::notify(self.port);
    }
}

/// Whether a frame is IPv4 TCP or UDP (its checksum can be left blank).
fn needs_csum(frame: &[u8]) -> bool {
    l4(frame).is_some_and(|(proto, _, _)| proto == 6 || proto == 17)
}

/// (protocol, IPv4 header, L4 segment) of an unfragmented IPv4 frame.
fn l4(frame: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = (ip[0] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
    if ip[0] >> 4 != 4 || ihl < 20 || total < ihl || total > ip.len() || frag != 0 {
        return None;
    }
    Some((ip[9], &ip[..ihl], &ip[ihl..total]))
}

/// The ones'-complement sum of `data` added to `sum`.
pub fn csum_add(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_be_bytes([c[0], c[1]]) as u32;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let [b] = chunks.remainder() {
        sum += (*b as u32) << 8;
    }
    sum
}

/// Folds a ones'-complement sum to 16 bits.
pub fn csum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Whether an IPv4 TCP/UDP frame's checksum is right (frames of other
/// kinds, and UDP without a checksum, pass).
pub fn l4_csum_ok(frame: &[u8]) -> bool {
    let Some((proto, ip, seg)) = l4(frame) else { return true };
    if proto != 6 && proto != 17 || (proto == 17 && seg.len() >= 8 && seg[6..8] == [0, 0]) {
        return true;
    }
    let mut sum = csum_add(0, &ip[12..20]);
    sum += proto as u32 + seg.len() as u32;
    csum_fold(csum_add(sum, seg)) == 0xffff
}

/// smoltcp's receive token: one whole frame.
pub struct RxToken<'a> {
    rx: &'a mut RxSide,
}

/// smoltcp's transmit token.
pub struct TxToken<'a> {
    tx: &'a mut TxSide,
}

impl smoltcp::phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let validated = self.rx.chain_flags & (NETRXF_DATA_VALIDATED | NETRXF_CSUM_BLANK) != 0;
        let mut c = self.rx.c;
        let frame = self.rx.frame();
        let good = validated || {
            c.rx_csum_checked += 1;
            l4_csum_ok(frame)
        };
        let r = if good {
            c.rx_packets += 1;
            c.rx_bytes += frame.len() as u64;
            f(frame)
        } else {
            c.rx_csum_bad += 1;
            // The stack sees an empty frame, which it ignores.
            f(&[])
        };
        c.rx_multi_slot = self.rx.c.rx_multi_slot;
        self.rx.c = c;
        let _ = self.rx.recycle();
        r
    }
}

impl smoltcp::phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.tx.send(len, f)
    }
}

impl smoltcp::phy::Device for NetFront {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: smoltcp::time::Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        if !self.rx_ready() {
            return None;
        }
        let _ = self.tx.reap();
        Some((RxToken { rx: &mut self.rx }, TxToken { tx: &mut self.tx }))
    }

    fn transmit(&mut self, _now: smoltcp::time::Instant) -> Option<TxToken<'_>> {
        let _ = self.tx.reap();
        if !self.tx.can_send() {
            return None;
        }
        Some(TxToken { tx: &mut self.tx })
    }

    fn capabilities(&self) -> smoltcp::phy::DeviceCapabilities {
        let mut caps = smoltcp::phy::DeviceCapabilities::default();
        caps.medium = smoltcp::phy::Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + 14;
        caps.max_burst_size = Some(TX_BUFS);
        // TCP/UDP checksums: left blank on transmit (the back end fills
        // them in), checked here on receive when the back end did not.
        caps.checksum.tcp = smoltcp::phy::Checksum::None;
        caps.checksum.udp = smoltcp::phy::Checksum::None;
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_frame(payload: &[u8]) -> std::vec::Vec<u8> {
        let mut f = std::vec![0u8; 54];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 2]);
        f[30..34].copy_from_slice(&[10, 0, 0, 1]);
        f[46] = 0x50;
        f.extend_from_slice(payload);
        f
    }

    fn fill_tcp_csum(f: &mut [u8]) {
        let seg_len = f.len() - 34;
        let mut sum = csum_add(0, &f[26..34]);
        sum += 6 + seg_len as u32;
        let c = !csum_fold(csum_add(sum, &f[34..]));
        f[50..52].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn checksums_are_verified_and_blank_ones_marked() {
        let mut f = tcp_frame(b"odd-length payload");
        assert!(needs_csum(&f));
        fill_tcp_csum(&mut f);
        assert!(l4_csum_ok(&f));
        f[60] ^= 0x40;
        assert!(!l4_csum_ok(&f), "a flipped bit is caught");
        let mut arp = std::vec![0u8; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(!needs_csum(&arp) && l4_csum_ok(&arp));
        let mut bad = tcp_frame(b"x");
        bad[16..18].copy_from_slice(&1000u16.to_be_bytes()); // total past the frame
        assert!(!needs_csum(&bad));
    }
}
