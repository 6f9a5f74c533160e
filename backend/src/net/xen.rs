//! The Xen transport of the network device: two netif rings (transmit and
//! receive), grant references and one event channel, set up by the xenbus
//! handshake; and the device-thread subscriber that also watches the
//! port's descriptor.
//!
//! Transmit: it copies each slot off the ring, assembles whole packets (a
//! first slot, extra-info slots, `NETTXF_more_data` fragments), validates
//! them (sizes, offsets, slot count), maps every grant read-only, builds a
//! transport-free [`TxPacket`] and hands it to the [`NetExecutor`]; each
//! slot gets a `netif_tx_response`. Receive: it copies each frame the
//! executor takes from the port into the buffers the guest posted (Xen's
//! rx-copy), one page per slot chained with `NETRXF_more_data`.

use super::executor::NetExecutor;
use super::metrics::NetMetrics;
use super::request::{TxError, TxPacket};
use super::{format_mac, NetSpec, RxMeta, MAX_FRAME, MAX_TX_SLOTS, RX_BUDGET};
use crate::ring_page::{ConnectError, RingPage};
use crate::xenbus::{token, DevicePaths, WiredDevice, XenbusBackend, XenbusDevice, XenbusHost};
use crate::Notify;
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use pv_abi::layout::PAGE_SIZE;
use pv_abi::netif::*;
use pv_util::metrics::DeviceMetrics;
use ring_buffers::{BackRing, RingError};
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vmm_sys_util::timerfd::TimerFd;
use xen_domain::grant_table::GrantTable;

const PAGE: usize = PAGE_SIZE as usize;

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
    chain: Vec<NetifTxRequest>,
    rx_unpublished: u32,
    /// The front end asked to be notified of receive responses only
    /// through `rsp_event` and to notify us when it posts buffers
    /// (`feature-rx-notify`); without it netback polls ([`NetDevice`]).
    rx_notify: bool,
    log: pv_util::ratelimit::SharedLogLimiter,
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
        log: pv_util::ratelimit::SharedLogLimiter,
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
            chain: Vec::with_capacity(NET_TX_RING_SIZE as usize),
            rx_unpublished: 0,
            rx_notify: true,
            log,
        })
    }

    /// Whether a frame of `len` bytes can be handed to
    /// [`deliver`](Self::deliver) now: its receive buffers are posted, or
    /// it would be dropped anyway (bad size, stopped device, corrupt ring).
    pub fn rx_ready(&mut self, len: usize) -> bool {
        let need = len.div_ceil(PAGE);
        if self.broken || len == 0 || len > MAX_FRAME || (need > 1 && !self.sg) {
            return true;
        }
        self.rx.unconsumed_requests().map_or(true, |n| n as usize >= need)
    }

    /// Whether a protocol violation stopped the device.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    fn stop(&mut self, why: &Fatal) {
        pv_util::limited_warn!(self.log, "netback: {why} from the guest; device stopped");
        self.m.stopped.add(1);
        self.broken = true;
    }

    fn publish_tx(&mut self) {
        if self.tx.push_responses_and_check_notify() {
            self.m.notifies.add(1);
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
            self.m.notifies.add(1);
            self.notify.notify();
        }
    }

    /// Guest to host: sends the packets on the transmit ring to `port`,
    /// at most `budget` slots. Returns whether requests were left.
    pub fn process_tx(&mut self, exec: &mut NetExecutor, budget: usize) -> bool {
        if self.broken {
            return false;
        }
        match self.tx_loop(exec, budget) {
            Ok(more) => more,
            Err(e) => {
                self.publish_tx();
                self.stop(&e);
                false
            }
        }
    }

    fn tx_loop(&mut self, exec: &mut NetExecutor, budget: usize) -> Result<bool, Fatal> {
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
            done += self.take_packet(exec)?;
        }
    }

    fn pop(&mut self) -> Result<NetifTxRequest, Fatal> {
        self.tx.pop_request()?.ok_or(Fatal::Unended)
    }

    /// Takes one packet (there is at least one request), answers each of
    /// its slots. Returns the number of slots.
    fn take_packet(&mut self, exec: &mut NetExecutor) -> Result<usize, Fatal> {
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
        let status = match self.check_and_send(exec, extras, gso) {
            Ok(()) => NETIF_RSP_OKAY,
            Err(e) => {
                self.m.tx_errors.add(1);
                pv_util::limited_warn!(self.log, id = first.id, "netback: transmit packet refused: {e}");
                NETIF_RSP_ERROR
            }
        };
        for (i, r) in self.chain.iter().enumerate() {
            let st = if i >= 1 && i <= extras { NETIF_RSP_NULL } else { status };
            // Every slot was consumed above, so there is room.
            self.tx.push_response(&NetifTxResponse { id: r.id, status: st })?;
        }
        self.m.tx_slots.add(self.chain.len() as u64);
        Ok(self.chain.len())
    }

    /// Checks the packet in `self.chain`, maps its pages and hands it to
    /// the executor. Data slots are the first slot and those after the
    /// extras.
    fn check_and_send(&mut self, exec: &mut NetExecutor, extras: usize, gso: bool) -> Result<(), TxError> {
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
        let mut pieces = [(0u32, 0usize, 0usize); MAX_TX_SLOTS];
        for slot in 0..=frags.len() {
            let r = if slot == 0 { first } else { frags[slot - 1] };
            let size = if slot == 0 { total - rest } else { usize::from(r.size) };
            let offset = usize::from(r.offset);
            if size == 0 {
                return Err(TxError::EmptySlot(slot));
            }
            if offset + size > PAGE {
                return Err(TxError::PastPage { slot, offset, size });
            }
            pieces[slot] = (r.gref, offset, size);
        }
        let pieces = &pieces[..=frags.len()];
        let (csum_blank, data_validated) =
            (first.flags & NETTXF_CSUM_BLANK != 0, first.flags & NETTXF_DATA_VALIDATED != 0);
        if let [(gref, offset, size)] = *pieces {
            // One slot (the common case): no allocation.
            let page = self.grants.map_scoped(gref, false)?;
            let segments = [page.slice(offset as u64, size, false)?];
            return exec.transmit(&TxPacket { segments: &segments, csum_blank, data_validated });
        }
        let pages = pieces.iter().map(|&(g, _, _)| self.grants.map_scoped(g, false)).collect::<Result<Vec<_>, _>>()?;
        let segments = pages
            .iter()
            .zip(pieces)
            .map(|(p, &(_, offset, size))| p.slice(offset as u64, size, false))
            .collect::<Result<Vec<_>, _>>()?;
        self.m.tx_multi_slot.inc();
        exec.transmit(&TxPacket { segments: &segments, csum_blank, data_validated })
    }

    /// Host to guest: copies `frame` into the guest's posted buffers (not
    /// published until [`publish_rx`](Self::publish_rx)). Returns whether
    /// it was delivered; a frame that is not is counted as dropped.
    pub fn deliver(&mut self, frame: &[u8], meta: RxMeta) -> bool {
        if self.broken {
            self.m.rx_dropped_not_connected.add(1);
            return false;
        }
        let need = frame.len().div_ceil(PAGE);
        if frame.is_empty() || frame.len() > MAX_FRAME || (need > 1 && !self.sg) {
            self.m.rx_dropped_bad_size.add(1);
            return false;
        }
        match self.rx_buffers(need) {
            Ok(true) => {}
            Ok(false) => {
                self.m.rx_dropped_no_buffer.add(1);
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
            let status = match self.grants.map_scoped(req.gref, true).and_then(|m| m.write(0, chunk)) {
                Ok(()) => chunk.len() as i16,
                Err(e) => {
                    ok = false;
                    pv_util::limited_warn!(self.log, id = req.id, "netback: receive buffer refused: {e}");
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
        self.m.rx_slots.add(need as u64);
        if !ok {
            self.m.rx_errors.add(1);
            return false;
        }
        self.m.rx_packets.add(1);
        self.m.rx_bytes.add(frame.len() as u64);
        if need > 1 {
            self.m.rx_multi_slot.add(1);
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

/// netback as a [`SplitBackend`](crate::xenbus::SplitBackend) over a port.
pub struct NetBackend {
    exec: NetExecutor,
    mac: [u8; 6],
    /// The connected device, if any.
    pub dev: Option<Netback>,
    metrics: Arc<NetMetrics>,
    /// A frame waiting for receive buffers from a front end without
    /// `feature-rx-notify` (the port is not read meanwhile).
    held: Option<(Vec<u8>, RxMeta)>,
}

impl std::fmt::Debug for NetBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetBackend").field("exec", &self.exec).field("dev", &self.dev).finish()
    }
}

impl NetBackend {
    /// A back end on `port` for a guest interface with `mac`.
    pub fn new(port: Box<dyn super::NetPort>, mac: [u8; 6]) -> Self {
        let metrics = Arc::<NetMetrics>::default();
        NetBackend { exec: NetExecutor::new(port, metrics.clone()), mac, dev: None, metrics, held: None }
    }

    /// The shared counters.
    pub fn net_metrics(&self) -> &Arc<NetMetrics> {
        &self.metrics
    }

    /// The port's descriptor (polled by the device thread).
    pub fn port_fd(&self) -> RawFd {
        self.exec.port_fd()
    }

    /// The port has frames: copy up to [`RX_BUDGET`] of them to the guest
    /// (dropping them if it is not connected), then publish.
    pub fn port_ready(&mut self) {
        self.metrics.port_wakes.inc();
        self.receive_frames();
    }

    /// The poll of a front end without `feature-rx-notify` (as older
    /// netbacks polled such front ends): retries the frame waiting for
    /// receive buffers and, once it is delivered, reads the port on.
    pub fn poll_rx(&mut self) {
        self.receive_frames();
    }

    /// Whether a frame waits for receive buffers: the port is not to be
    /// read, and the front end (which does not notify) is to be polled.
    pub fn rx_stalled(&self) -> bool {
        self.held.is_some()
    }

    fn receive_frames(&mut self) {
        if let Some((frame, meta)) = self.held.take() {
            match &mut self.dev {
                Some(dev) => {
                    if !dev.rx_ready(frame.len()) {
                        self.held = Some((frame, meta));
                        return;
                    }
                    dev.deliver(&frame, meta);
                }
                None => self.metrics.rx_dropped_not_connected.inc(),
            }
        }
        for _ in 0..RX_BUDGET {
            let Some((frame, meta)) = self.exec.receive() else { break };
            match &mut self.dev {
                Some(dev) => {
                    // A front end that would not tell us when it posts
                    // buffers keeps the frame rather than losing it.
                    if !dev.rx_notify && !dev.rx_ready(frame.len()) {
                        self.held = Some((frame.to_vec(), meta));
                        break;
                    }
                    dev.deliver(frame, meta);
                }
                None => self.metrics.rx_dropped_not_connected.inc(),
            }
        }
        if let Some(dev) = &mut self.dev {
            dev.publish_rx();
        }
    }

    /// The keys published in the back-end directory (`mtu` as libxl_nic.c
    /// writes it, when the port has one).
    pub fn keys(mac: &[u8; 6], mtu: Option<u32>) -> Vec<(String, String)> {
        let mtu = mtu.map(|m| (keys::MTU, m.to_string()));
        [
            (keys::FEATURE_RX_COPY, "1".to_string()),
            (keys::FEATURE_SG, "1".to_string()),
            (keys::FEATURE_RX_NOTIFY, "1".to_string()),
            ("feature-gso-tcpv4", "0".to_string()),
            (keys::FEATURE_SPLIT_EVENT_CHANNELS, "0".to_string()),
            (keys::MAC, format_mac(mac)),
        ]
        .into_iter()
        .chain(mtu)
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl crate::xenbus::SplitBackend for NetBackend {
    fn device_type(&self) -> &'static str {
        DEVICE_TYPE
    }

    fn metrics(&self) -> Arc<dyn DeviceMetrics> {
        self.metrics.clone()
    }

    fn features(&self) -> Vec<(String, String)> {
        Self::keys(&self.mac, self.exec.port_mtu())
    }

    fn connect(
        &mut self,
        front: &dyn crate::xenbus::FrontendKeys,
        grants: &Arc<GrantTable>,
        notify: Arc<dyn Notify>,
        log: &pv_util::ratelimit::SharedLogLimiter,
    ) -> Result<(), ConnectError> {
        if front.read(keys::REQUEST_RX_COPY).is_none_or(|v| v.trim() != "1") {
            return Err(ConnectError::NoRxCopy);
        }
        let rx_notify = front.read(keys::FEATURE_RX_NOTIFY).is_some_and(|v| v.trim() == "1");
        let tx_ref = front.read_u32(keys::TX_RING_REF).map_err(ConnectError::FrontendKey)?;
        let rx_ref = front.read_u32(keys::RX_RING_REF).map_err(ConnectError::FrontendKey)?;
        let sg = front.read(keys::FEATURE_SG).is_some_and(|v| v.trim() == "1");
        let mut dev = Netback::connect(grants.clone(), tx_ref, rx_ref, notify, sg, self.metrics.clone(), log.clone())?;
        dev.rx_notify = rx_notify;
        self.dev = Some(dev);
        Ok(())
    }

    fn disconnect(&mut self) {
        self.dev = None;
        if self.held.take().is_some() {
            self.metrics.rx_dropped_not_connected.inc();
        }
    }

    fn process(&mut self) -> bool {
        self.metrics.kicks.inc();
        match &mut self.dev {
            Some(dev) => dev.process_tx(&mut self.exec, crate::xenbus::PROCESS_BUDGET),
            None => false,
        }
    }
}

/// The device-thread subscriber for one interface: the xenbus device (its
/// store watch and event channel) plus the port's descriptor.
pub struct NetDevice {
    /// The handshake driver around the back end.
    pub xenbus: XenbusDevice<NetBackend>,
    port_fd: RawFd,
    /// Polls a front end without `feature-rx-notify` while a frame waits
    /// for its receive buffers (armed only then).
    poll: TimerFd,
    /// The port is unwatched and the poll armed.
    polling: bool,
}

/// Poll period for a front end without `feature-rx-notify`.
const RX_POLL: Duration = Duration::from_millis(1);

impl NetDevice {
    /// Wraps a xenbus device (creating the poll timer here, before the
    /// device thread's seccomp filter applies).
    pub fn new(xenbus: XenbusDevice<NetBackend>) -> std::io::Result<Self> {
        let port_fd = xenbus.backend.port_fd();
        let poll = TimerFd::new().map_err(std::io::Error::from)?;
        Ok(NetDevice { xenbus, port_fd, poll, polling: false })
    }

    /// Stops reading the port and polls while a frame waits for buffers
    /// (frames queue on the host side meanwhile); back to the port once
    /// it is delivered.
    fn update_poll(&mut self, ops: &mut EventOps) {
        let stalled = self.xenbus.backend.rx_stalled();
        if stalled == self.polling {
            return;
        }
        self.polling = stalled;
        let port = Events::with_data_raw(self.port_fd, token::NET_PORT, EventSet::IN);
        let r = if stalled {
            ops.remove(port)
                .map_err(|e| e.to_string())
                .and_then(|()| self.poll.reset(RX_POLL, Some(RX_POLL)).map_err(|e| e.to_string()))
        } else {
            let _ = self.poll.clear();
            ops.add(port).map_err(|e| e.to_string())
        };
        if let Err(e) = r {
            tracing::error!(stalled, "netback: cannot switch receive polling: {e}");
        }
    }
}

impl MutEventSubscriber for NetDevice {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.data() == token::NET_PORT {
            if events.event_set().contains(EventSet::IN) {
                self.xenbus.backend.port_ready();
            }
        } else if events.data() == token::NET_RX_POLL {
            let _ = self.poll.wait();
            self.xenbus.backend.poll_rx();
        } else {
            self.xenbus.process(events, ops);
        }
        self.update_poll(ops);
    }

    fn init(&mut self, ops: &mut EventOps) {
        self.xenbus.init(ops);
        if let Err(e) = ops.add(Events::with_data_raw(self.port_fd, token::NET_PORT, EventSet::IN)) {
            tracing::error!("netback: cannot watch the port: {e}");
        }
        if let Err(e) = ops.add(Events::with_data(&self.poll, token::NET_RX_POLL, EventSet::IN)) {
            tracing::error!("netback: cannot watch the receive poll timer: {e}");
        }
    }
}

/// A network interface as the device table holds it before wiring: the
/// back end on its (already opened) port, and the MAC if one was given.
pub struct Vif {
    backend: NetBackend,
    mac: Option<[u8; 6]>,
}

impl Vif {
    /// An interface on `port`.
    pub fn new(port: Box<dyn super::NetPort>, mac: Option<[u8; 6]>) -> Self {
        Vif { backend: NetBackend::new(port, [0; 6]), mac }
    }
}

impl XenbusBackend for Vif {
    fn device_type(&self) -> &'static str {
        DEVICE_TYPE
    }

    /// Writes the MAC and the MTU into the front-end directory too (as
    /// Xen's toolstack does, libxl_nic.c: netfront reads them there), then wires the xenbus device and
    /// the port's descriptor to one subscriber.
    fn wire(self: Box<Self>, paths: DevicePaths, host: &XenbusHost) -> std::io::Result<WiredDevice> {
        let Vif { mut backend, mac } = *self;
        let id = paths.front.rsplit('/').next().and_then(|s| s.parse::<u32>().ok()).unwrap_or(0);
        backend.mac = mac.unwrap_or_else(|| NetSpec::default_mac(id));
        host.store.write(&format!("{}/{}", paths.front, keys::MAC), &format_mac(&backend.mac));
        if let Some(mtu) = backend.exec.port_mtu() {
            host.store.write(&format!("{}/{}", paths.front, keys::MTU), &mtu.to_string());
        }
        let metrics: Arc<dyn DeviceMetrics> = backend.metrics.clone();
        let dev = XenbusDevice::new(backend, paths, host)?;
        let paths = dev.paths().clone();
        let subscriber = Arc::new(Mutex::new(NetDevice::new(dev)?));
        Ok(WiredDevice { device_type: DEVICE_TYPE, paths, metrics, subscriber, queue_subscribers: Vec::new() })
    }
}

/// The device table's line for network interfaces: `--device
/// vif,tap=<ifname>[,mac=<mac>]` (or `--net tap=...`), ids 0, 1, ...,
/// each on a device thread of its own. The TAP device is opened here, so
/// a bad one fails before the VM is built.
pub const DEVICE: crate::xenbus::DeviceType =
    crate::xenbus::DeviceType { name: DEVICE_TYPE, id: |i| i as u32, own_thread: true, build };

fn build(options: &str) -> Result<Box<dyn XenbusBackend>, crate::xenbus::BuildError> {
    let spec: NetSpec = options.parse()?;
    let tap = super::tap::Tap::open(&spec.tap)?;
    Ok(Box::new(Vif::new(Box::new(tap), spec.mac)))
}
