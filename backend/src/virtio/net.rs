//! virtio-net (virtio 1.x section 5.1) over the same [`NetExecutor`] and
//! port (TAP device or in-process peer) as netback: only the framing
//! differs.
//!
//! Queues: receive (0) and transmit (1). Every buffer begins with a
//! `virtio_net_hdr_v1` (12 bytes). Transmit: a checked [`Chain`] of
//! device-readable buffers; the header is copied out and stripped, the
//! rest is the frame, handed to the executor as a transport-free
//! [`TxPacket`] (`VIRTIO_NET_HDR_F_NEEDS_CSUM` takes netback's
//! `NETTXF_csum_blank` path). Receive: the device fills the buffers the
//! driver posted when the port has frames ([`VirtioDevice::event`]), one
//! chain per frame (no `MRG_RXBUF`: `num_buffers` = 1) behind a zeroed
//! header; a frame with no buffer posted is dropped and counted, nothing
//! is queued.
//!
//! `VIRTIO_NET_F_MTU` is offered when the port has an MTU (a TAP's): the
//! config's `mtu` tells the driver the largest packet the host side takes
//! (virtio 1.x 5.1.4, as `mtu` in a Xen vif's directories).
//!
//! Checksum offload is not offered: the executor fills only IPv4 TCP/UDP
//! checksums, and a driver given `VIRTIO_NET_F_CSUM` may leave any
//! protocol's blank. A partial checksum from the host side (the TAP has
//! `TUN_F_CSUM`) is filled in before the frame reaches the guest.

use super::blk::{read_bytes, skip, slices, write_bytes, BufError};
use super::{Buf, Chain, ChainSource, VirtioDevice};
use crate::net::executor::NetExecutor;
use crate::net::request::{TxError, TxPacket};
use crate::net::{csum, NetMetrics, NetPort, RxMeta, MAX_FRAME, RX_BUDGET};
use pv_abi::netif::ETH_HLEN;
use pv_util::ratelimit::LogLimiter;
use std::os::fd::RawFd;
use std::sync::Arc;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::*;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::GuestMemoryMmap;

/// Queue size offered for each queue.
pub const QUEUE_SIZE: u16 = 256;
/// The receive queue.
pub const RX_QUEUE: u16 = 0;
/// The transmit queue.
pub const TX_QUEUE: u16 = 1;
/// `virtio_net_hdr_v1`.
pub const HDR_LEN: usize = size_of::<virtio_net_hdr_v1>();
const _: () = assert!(HDR_LEN == 12);
/// Offset of `num_buffers` in the header.
const NUM_BUFFERS: usize = 10;
/// The `virtio_net_config` fields this device has: up to `mtu`.
const CONFIG_LEN: usize = 12;
/// Offset of `mtu` in `virtio_net_config`.
const MTU_OFFSET: usize = 10;
const _: () = assert!(std::mem::offset_of!(virtio_net_config, mtu) == MTU_OFFSET);

/// The virtio network device: framing around the [`NetExecutor`].
pub struct VirtioNet {
    exec: NetExecutor,
    metrics: Arc<NetMetrics>,
    mac: [u8; 6],
    /// A frame whose partial checksum is filled in before delivery.
    scratch: Vec<u8>,
    log: LogLimiter,
}

impl std::fmt::Debug for VirtioNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioNet").field("exec", &self.exec).field("mac", &self.mac).finish_non_exhaustive()
    }
}

/// Why a transmit chain or receive buffer is refused.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error(transparent)]
    Tx(#[from] TxError),
    #[error(transparent)]
    Buf(#[from] BufError),
    #[error("device-writable buffer in a transmit chain")]
    WritableInTx,
    #[error("{0} bytes: shorter than the {hdr}-byte header", hdr = HDR_LEN)]
    ShortTx(u64),
    #[error("device-readable buffer in a receive chain")]
    ReadableInRx,
    #[error("{room} bytes of buffer for {need}")]
    RxTooSmall { room: u64, need: u64 },
}

impl VirtioNet {
    /// A device on `port` with `mac`.
    pub fn new(port: Box<dyn NetPort>, mac: [u8; 6]) -> Self {
        let metrics = Arc::<NetMetrics>::default();
        VirtioNet {
            exec: NetExecutor::new(port, metrics.clone()),
            metrics,
            mac,
            scratch: Vec::new(),
            log: LogLimiter::default(),
        }
    }

    /// The shared counters (the same set netback keeps).
    pub fn metrics(&self) -> &Arc<NetMetrics> {
        &self.metrics
    }

    /// The MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn transmit(&mut self, chain: &Chain, mem: &GuestMemoryMmap) -> Result<(), Refused> {
        if chain.writable().next().is_some() {
            return Err(Refused::WritableInTx);
        }
        let total: u64 = chain.bufs.iter().map(|b| u64::from(b.len)).sum();
        if total < HDR_LEN as u64 {
            return Err(Refused::ShortTx(total));
        }
        let len = (total - HDR_LEN as u64) as usize;
        if len > MAX_FRAME {
            return Err(TxError::TooLong(len).into());
        }
        if len < ETH_HLEN {
            return Err(TxError::TooShort(len).into());
        }
        let hdr = read_bytes(mem, &chain.bufs, HDR_LEN)?;
        if u32::from(hdr[1]) != VIRTIO_NET_HDR_GSO_NONE {
            return Err(TxError::Gso.into());
        }
        let frame = skip(&chain.bufs, HDR_LEN);
        let segments = slices(mem, &frame)?;
        if segments.len() > 1 {
            self.metrics.tx_multi_slot.inc();
        }
        let csum_blank = u32::from(hdr[0]) & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0;
        self.exec.transmit(&TxPacket { segments: &segments, csum_blank, data_validated: false })?;
        Ok(())
    }
}

/// Copies one frame into the next receive chain; counts what happened.
fn deliver(frame: &[u8], meta: RxMeta, q: &mut dyn ChainSource, mem: &GuestMemoryMmap, d: &mut Delivery<'_>) {
    let m = d.metrics;
    if frame.is_empty() || frame.len() > MAX_FRAME {
        return m.rx_dropped_bad_size.inc();
    }
    if !q.running(RX_QUEUE) {
        return m.rx_dropped_not_connected.inc();
    }
    // The guest was not offered GUEST_CSUM: it gets complete checksums.
    let frame = if meta.csum_blank {
        d.scratch.clear();
        d.scratch.extend_from_slice(frame);
        if let Err(e) = csum::fill(d.scratch) {
            pv_util::limited_warn!(d.log, "virtio-net: received frame dropped: {e}");
            return m.rx_dropped_bad_size.inc();
        }
        &d.scratch[..]
    } else {
        frame
    };
    let Some(chain) = q.pop(RX_QUEUE) else {
        return m.rx_dropped_no_buffer.inc();
    };
    m.rx_slots.inc();
    match fill(&chain, frame, mem) {
        Ok(n) => {
            q.push_used(RX_QUEUE, chain.head, n);
            m.rx_packets.inc();
            m.rx_bytes.add(frame.len() as u64);
            if chain.bufs.len() > 1 {
                m.rx_multi_slot.inc();
            }
        }
        Err(why) => {
            pv_util::limited_warn!(d.log, head = chain.head, "virtio-net: receive buffer refused: {why}");
            q.push_used(RX_QUEUE, chain.head, 0);
            m.rx_errors.inc();
        }
    }
}

/// What [`deliver`] borrows from the device.
struct Delivery<'a> {
    metrics: &'a NetMetrics,
    scratch: &'a mut Vec<u8>,
    log: &'a mut LogLimiter,
}

/// Writes the header and `frame` into a receive chain; returns the used length.
fn fill(chain: &Chain, frame: &[u8], mem: &GuestMemoryMmap) -> Result<u32, Refused> {
    if chain.readable().next().is_some() {
        return Err(Refused::ReadableInRx);
    }
    let bufs: Vec<Buf> = chain.bufs.clone();
    let room: u64 = bufs.iter().map(|b| u64::from(b.len)).sum();
    let need = (HDR_LEN + frame.len()) as u64;
    if room < need {
        return Err(Refused::RxTooSmall { room, need });
    }
    let mut hdr = [0u8; HDR_LEN];
    hdr[NUM_BUFFERS..].copy_from_slice(&1u16.to_le_bytes());
    write_bytes(mem, &bufs, &hdr)?;
    write_bytes(mem, &skip(&bufs, HDR_LEN), frame)?;
    Ok(need as u32)
}

impl VirtioDevice for VirtioNet {
    fn device_id(&self) -> u32 {
        pv_abi::virtio::device_id::NET
    }

    fn features(&self) -> u64 {
        let mtu = if self.exec.port_mtu().is_some() { 1 << VIRTIO_NET_F_MTU } else { 0 };
        1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_EVENT_IDX | 1 << VIRTIO_NET_F_MAC | mtu
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // `virtio_net_config`: mac, then status (offered without
        // VIRTIO_NET_F_STATUS, so only informative: link up),
        // max_virtqueue_pairs (no VIRTIO_NET_F_MQ: 0), mtu (with
        // VIRTIO_NET_F_MTU).
        let mut config = [0u8; CONFIG_LEN];
        config[..6].copy_from_slice(&self.mac);
        config[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        let mtu = self.exec.port_mtu().map_or(0, |m| m.min(u32::from(u16::MAX)) as u16);
        config[MTU_OFFSET..MTU_OFFSET + 2].copy_from_slice(&mtu.to_le_bytes());
        let off = offset as usize;
        if let Some(src) = config.get(off..off.saturating_add(data.len())) {
            data.copy_from_slice(src);
        }
    }

    fn process(&mut self, queue: u16, chain: &Chain, mem: &GuestMemoryMmap) -> u32 {
        if queue != TX_QUEUE {
            return 0;
        }
        self.metrics.tx_slots.add(chain.bufs.len() as u64);
        if let Err(e) = self.transmit(chain, mem) {
            self.metrics.tx_errors.inc();
            pv_util::limited_warn!(self.log, head = chain.head, "virtio-net: transmit chain refused: {e}");
        }
        // The device writes nothing into a transmit chain.
        0
    }

    fn event_fd(&self) -> Option<RawFd> {
        Some(self.exec.port_fd())
    }

    fn device_filled(&self, queue: u16) -> bool {
        queue == RX_QUEUE
    }

    fn event(&mut self, queues: &mut dyn ChainSource, mem: &GuestMemoryMmap) -> bool {
        self.metrics.port_wakes.inc();
        let VirtioNet { exec, metrics, scratch, log, .. } = self;
        let mut d = Delivery { metrics, scratch, log };
        for _ in 0..RX_BUDGET {
            let Some((frame, meta)) = exec.receive() else { return false };
            deliver(frame, meta, queues, mem, &mut d);
        }
        true
    }
}
