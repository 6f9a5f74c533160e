//! Host-side tests of virtio-net over real memory, without KVM: a test
//! driver sets up the receive and transmit queues as a guest would, the
//! in-process peer is the host side.

mod hostile;

use super::mmio::{Action, MmioTransport};
use super::net::{VirtioNet, HDR_LEN, RX_QUEUE, TX_QUEUE};
use crate::net::peer::{pair, PeerHandle};
use crate::net::RxMeta;
use crate::Notify;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use virtio_bindings::virtio_config::*;
use virtio_bindings::virtio_mmio::*;
use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

const MEM: u64 = 2 << 20;
const USABLE_LO: u64 = 0x10000;
const QSIZE: u16 = 16;
/// Ring areas of queue q: descriptors, available, used.
const fn rings(q: u16) -> (u64, u64, u64) {
    let base = 0x20000 + 0x10000 * q as u64;
    (base, base + 0x1000, base + 0x2000)
}
const BUF: u64 = 0x80000;
const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x42];

#[derive(Default)]
struct Irq(AtomicU32);
impl Notify for Irq {
    fn notify(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

struct NetDriver {
    t: MmioTransport<VirtioNet>,
    mem: GuestMemoryMmap,
    peer: PeerHandle,
    avail_idx: [u16; 2],
    next_desc: [u16; 2],
}

impl NetDriver {
    fn new(features: u64) -> Self {
        Self::with_mtu(features, None)
    }

    /// A driver for a device whose port has MTU `mtu` (a TAP's).
    fn with_mtu(features: u64, mtu: Option<u32>) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
        let (mut port, peer) = pair(true).unwrap();
        if let Some(m) = mtu {
            port = port.with_mtu(m);
        }
        let dev = VirtioNet::new(Box::new(port), MAC);
        let t = MmioTransport::new(dev, mem.clone(), USABLE_LO..MEM, Arc::new(Irq::default()));
        let mut d = NetDriver { t, mem, peer, avail_idx: [0; 2], next_desc: [0; 2] };
        d.wr(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        d.wr(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        for sel in 0..2 {
            d.wr(VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
            d.wr(VIRTIO_MMIO_DRIVER_FEATURES, (features >> (32 * sel)) as u32);
        }
        let s = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
        d.wr(VIRTIO_MMIO_STATUS, s);
        assert_eq!(d.rd(VIRTIO_MMIO_STATUS), s, "features accepted");
        for q in [RX_QUEUE, TX_QUEUE] {
            let (desc, avail, used) = rings(q);
            d.wr(VIRTIO_MMIO_QUEUE_SEL, q as u32);
            d.wr(VIRTIO_MMIO_QUEUE_NUM, QSIZE as u32);
            for (reg, a) in [
                (VIRTIO_MMIO_QUEUE_DESC_LOW, desc),
                (VIRTIO_MMIO_QUEUE_AVAIL_LOW, avail),
                (VIRTIO_MMIO_QUEUE_USED_LOW, used),
            ] {
                d.wr(reg, a as u32);
            }
            d.wr(VIRTIO_MMIO_QUEUE_READY, 1);
        }
        d.wr(VIRTIO_MMIO_STATUS, s | VIRTIO_CONFIG_S_DRIVER_OK);
        assert!(!d.needs_reset());
        d
    }

    fn rd(&mut self, reg: u32) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(reg as u64, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(&mut self, reg: u32, v: u32) -> Action {
        self.t.write(reg as u64, &v.to_le_bytes())
    }

    fn needs_reset(&mut self) -> bool {
        self.rd(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET != 0
    }

    /// Adds a chain of (addr, len, device-writable) buffers to queue `q`.
    fn add_chain(&mut self, q: u16, bufs: &[(u64, u32, bool)]) -> u16 {
        let (desc, avail, _) = rings(q);
        let qi = q as usize;
        let head = self.next_desc[qi];
        for (k, &(addr, len, w)) in bufs.iter().enumerate() {
            let i = (head + k as u16) % QSIZE;
            let last = k + 1 == bufs.len();
            let flags = if w { VRING_DESC_F_WRITE as u16 } else { 0 } | if last { 0 } else { VRING_DESC_F_NEXT as u16 };
            let at = GuestAddress(desc + 16 * i as u64);
            self.mem.write_obj(addr, at).unwrap();
            self.mem.write_obj(len, at.unchecked_add(8)).unwrap();
            self.mem.write_obj(flags, at.unchecked_add(12)).unwrap();
            self.mem.write_obj((i + 1) % QSIZE, at.unchecked_add(14)).unwrap();
        }
        self.next_desc[qi] = (head + bufs.len() as u16) % QSIZE;
        let slot = avail + 4 + 2 * (self.avail_idx[qi] % QSIZE) as u64;
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx[qi] = self.avail_idx[qi].wrapping_add(1);
        self.mem.write_obj(self.avail_idx[qi], GuestAddress(avail + 2)).unwrap();
        head
    }

    fn kick(&mut self, q: u16) {
        assert_eq!(self.wr(VIRTIO_MMIO_QUEUE_NOTIFY, q as u32), Action::Notify(q));
        self.t.process_queue(q);
    }

    fn used_idx(&self, q: u16) -> u16 {
        self.mem.read_obj(GuestAddress(rings(q).2 + 2)).unwrap()
    }

    /// (head, len) of used element `n` of queue `q`.
    fn used(&self, q: u16, n: u16) -> (u32, u32) {
        let at = GuestAddress(rings(q).2 + 4 + 8 * (n % QSIZE) as u64);
        (self.mem.read_obj(at).unwrap(), self.mem.read_obj(at.unchecked_add(4)).unwrap())
    }

    /// Sends `frame` (header at BUF, frame split at `split` bytes over two
    /// buffers when given); returns the used length.
    fn send(&mut self, frame: &[u8], split: Option<usize>) -> u32 {
        self.mem.write_slice(&[0u8; HDR_LEN], GuestAddress(BUF)).unwrap();
        let data = BUF + 0x1000;
        self.mem.write_slice(frame, GuestAddress(data)).unwrap();
        let mut bufs = vec![(BUF, HDR_LEN as u32, false)];
        match split {
            Some(s) => {
                bufs.push((data, s as u32, false));
                bufs.push((data + s as u64, (frame.len() - s) as u32, false));
            }
            None => bufs.push((data, frame.len() as u32, false)),
        }
        let before = self.used_idx(TX_QUEUE);
        self.add_chain(TX_QUEUE, &bufs);
        self.kick(TX_QUEUE);
        assert_eq!(self.used_idx(TX_QUEUE), before.wrapping_add(1), "transmit chain returned");
        self.used(TX_QUEUE, before).1
    }
}

const V1: u64 = 1 << VIRTIO_F_VERSION_1;

fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect();
    f[12..14].copy_from_slice(&[0x88, 0xb5]); // an experimental ethertype: no checksum
    f
}

#[test]
fn identity_and_mac_in_config() {
    let mut d = NetDriver::new(V1 | 1 << VIRTIO_NET_F_MAC | 1 << VIRTIO_RING_F_EVENT_IDX);
    assert_eq!(d.rd(VIRTIO_MMIO_DEVICE_ID), 1);
    d.wr(VIRTIO_MMIO_QUEUE_SEL, 1);
    assert_eq!(d.rd(VIRTIO_MMIO_QUEUE_NUM_MAX), 256);
    let mut mac = [0u8; 6];
    d.t.read(VIRTIO_MMIO_CONFIG as u64, &mut mac);
    assert_eq!(mac, MAC);
    assert!(super::MmioDevice::event_fd(&d.t).is_some());
}

/// The device's feature bits (both words).
fn device_features(d: &mut NetDriver) -> u64 {
    (0..2).fold(0, |f, sel| {
        d.wr(VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel);
        f | u64::from(d.rd(VIRTIO_MMIO_DEVICE_FEATURES)) << (32 * sel)
    })
}

/// A port with an MTU (a TAP's) offers VIRTIO_NET_F_MTU and puts it in the
/// config's `mtu` at offset 10 (virtio 1.x 5.1.3/5.1.4, `struct
/// virtio_net_config`); a port without one offers no such feature.
#[test]
fn mtu_of_the_port_is_offered_in_the_config() {
    let mut d = NetDriver::with_mtu(V1 | 1 << VIRTIO_NET_F_MAC | 1 << VIRTIO_NET_F_MTU, Some(1280));
    assert_ne!(device_features(&mut d) & 1 << VIRTIO_NET_F_MTU, 0, "VIRTIO_NET_F_MTU offered");
    let mut mtu = [0u8; 2];
    d.t.read(VIRTIO_MMIO_CONFIG as u64 + 10, &mut mtu);
    assert_eq!(u16::from_le_bytes(mtu), 1280);
    let mut d = NetDriver::new(V1 | 1 << VIRTIO_NET_F_MAC);
    assert_eq!(device_features(&mut d) & 1 << VIRTIO_NET_F_MTU, 0, "no MTU, no VIRTIO_NET_F_MTU");
}

#[test]
fn tx_frames_reach_the_peer_intact() {
    for features in [V1, V1 | 1 << VIRTIO_RING_F_EVENT_IDX] {
        let mut d = NetDriver::new(features);
        let a = frame(60, 1);
        let b = frame(1514, 2);
        assert_eq!(d.send(&a, None), 0);
        assert_eq!(d.send(&b, Some(100)), 0, "a multi-descriptor chain");
        assert_eq!(d.peer.take_sent(), vec![a, b]);
        let m = d.t.device().metrics().snapshot();
        assert_eq!((m.tx_packets, m.tx_multi_slot, m.tx_errors), (2, 1, 0));
    }
}

#[test]
fn tx_needs_csum_is_filled_like_netback() {
    let mut d = NetDriver::new(V1);
    let mut f = vec![0u8; 14 + 20 + 8];
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&28u16.to_be_bytes());
    f[23] = 17;
    f[38..40].copy_from_slice(&8u16.to_be_bytes());
    d.mem.write_slice(&f, GuestAddress(BUF + 0x1000)).unwrap();
    d.mem.write_slice(&[1u8; 1], GuestAddress(BUF)).unwrap(); // NEEDS_CSUM
    d.mem.write_slice(&[0u8; HDR_LEN - 1], GuestAddress(BUF + 1)).unwrap();
    d.add_chain(TX_QUEUE, &[(BUF, HDR_LEN as u32, false), (BUF + 0x1000, f.len() as u32, false)]);
    d.kick(TX_QUEUE);
    let sent = d.peer.take_sent();
    assert_eq!(sent.len(), 1);
    assert!(crate::net::csum::verify(&sent[0]) && sent[0][40..42] != [0, 0], "checksum filled in");
    assert_eq!(d.t.device().metrics().tx_csum_filled.get(), 1);
}

#[test]
fn rx_frame_lands_in_the_guest_buffer_with_a_header() {
    let mut d = NetDriver::new(V1 | 1 << VIRTIO_RING_F_EVENT_IDX);
    d.mem.write_slice(&[0xeeu8; 2048], GuestAddress(BUF)).unwrap();
    // Header and frame in two buffers, as some drivers post them.
    d.add_chain(RX_QUEUE, &[(BUF, HDR_LEN as u32, true), (BUF + 0x100, 1600, true)]);
    d.kick(RX_QUEUE);
    assert_eq!(d.used_idx(RX_QUEUE), 0, "a notification does not consume receive buffers");
    let f = frame(98, 3);
    assert!(d.peer.inject(&f, RxMeta::default()));
    assert!(!d.t.process_event());
    assert_eq!(d.used_idx(RX_QUEUE), 1);
    assert_eq!(d.used(RX_QUEUE, 0).1 as usize, HDR_LEN + f.len());
    let mut hdr = [0u8; HDR_LEN];
    d.mem.read_slice(&mut hdr, GuestAddress(BUF)).unwrap();
    assert_eq!(hdr, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], "zeroed header, num_buffers 1");
    let mut got = vec![0u8; f.len()];
    d.mem.read_slice(&mut got, GuestAddress(BUF + 0x100)).unwrap();
    assert_eq!(got, f);
    assert_eq!(d.t.device().metrics().rx_packets.get(), 1);
}

#[test]
fn rx_without_buffers_drops_and_counts() {
    let mut d = NetDriver::new(V1);
    for i in 0..5 {
        assert!(d.peer.inject(&frame(60, i), RxMeta::default()));
    }
    assert!(!d.t.process_event());
    assert_eq!(d.peer.queued(), 0, "the port is drained: nothing is kept");
    assert_eq!(d.t.device().metrics().rx_dropped_no_buffer.get(), 5);
    // A buffer posted later gets the next frame.
    d.add_chain(RX_QUEUE, &[(BUF, 2048, true)]);
    d.peer.inject(&frame(60, 9), RxMeta::default());
    d.t.process_event();
    assert_eq!(d.used_idx(RX_QUEUE), 1);
    assert!(!d.needs_reset());
}

#[test]
fn hostile_chains_are_refused_and_the_device_keeps_working() {
    let mut d = NetDriver::new(V1);
    let data = BUF + 0x1000;
    d.mem.write_slice(&frame(60, 5), GuestAddress(data)).unwrap();
    type Case = (&'static str, Vec<(u64, u32, bool)>);
    let cases: Vec<Case> = vec![
        ("outside RAM", vec![(BUF, 12, false), (MEM - 0x10, 60, false)]),
        ("zero length", vec![(BUF, 12, false), (data, 0, false)]),
        ("header shorter than 12 bytes", vec![(BUF, 8, false)]),
        ("frame over 64 KiB", vec![(BUF, 12, false), (data, 0x10000, false), (data, 0x10000, false)]),
        ("frame shorter than an Ethernet header", vec![(BUF, 12, false), (data, 6, false)]),
        ("device-writable buffer", vec![(BUF, 12, false), (data, 60, true)]),
    ];
    for (n, (what, bufs)) in cases.into_iter().enumerate() {
        d.add_chain(TX_QUEUE, &bufs);
        d.kick(TX_QUEUE);
        assert_eq!(d.used_idx(TX_QUEUE), n as u16 + 1, "{what}: returned");
        assert!(d.peer.take_sent().is_empty(), "{what}: nothing sent");
    }
    // Too long: more descriptors than the queue holds (a loop).
    let (desc, avail, _) = rings(TX_QUEUE);
    for i in 0..2u16 {
        let at = GuestAddress(desc + 16 * i as u64);
        d.mem.write_obj(data, at).unwrap();
        d.mem.write_obj(60u32, at.unchecked_add(8)).unwrap();
        d.mem.write_obj(VRING_DESC_F_NEXT as u16, at.unchecked_add(12)).unwrap();
        d.mem.write_obj(1 - i, at.unchecked_add(14)).unwrap();
    }
    d.mem.write_obj(0u16, GuestAddress(avail + 4 + 2 * (d.avail_idx[1] % QSIZE) as u64)).unwrap();
    d.avail_idx[1] += 1;
    d.mem.write_obj(d.avail_idx[1], GuestAddress(avail + 2)).unwrap();
    d.kick(TX_QUEUE);
    assert_eq!(d.used_idx(TX_QUEUE), 7, "loop returned");
    // A receive chain outside RAM or too small: refused, frame not delivered.
    d.next_desc[0] = 0;
    d.add_chain(RX_QUEUE, &[(MEM - 0x10, 2048, true)]);
    d.add_chain(RX_QUEUE, &[(BUF, 20, true)]);
    d.peer.inject(&frame(60, 6), RxMeta::default());
    d.t.process_event();
    assert_eq!((d.used_idx(RX_QUEUE), d.used(RX_QUEUE, 0).1, d.used(RX_QUEUE, 1).1), (2, 0, 0));
    // Still working both ways.
    d.next_desc[1] = 0;
    let f = frame(60, 7);
    d.send(&f, None);
    assert_eq!(d.peer.take_sent(), vec![f]);
    d.add_chain(RX_QUEUE, &[(BUF, 2048, true)]);
    d.peer.inject(&frame(60, 8), RxMeta::default());
    d.t.process_event();
    assert_eq!(d.used(RX_QUEUE, 2).1 as usize, HDR_LEN + 60);
    assert!(!d.needs_reset());
    let m = d.t.device().metrics().snapshot();
    assert_eq!((m.tx_errors, m.rx_errors, m.tx_packets, m.rx_packets), (4, 1, 1, 1));
    assert_eq!(d.t.counters().bad_chains.get(), 4, "outside RAM, zero length, loop, rx outside RAM");
}

#[test]
fn rx_partial_checksum_is_filled_before_the_guest_sees_it() {
    let mut d = NetDriver::new(V1);
    // IPv4 UDP, checksum field garbage, marked partial by the host side.
    let mut f = vec![0u8; 14 + 20 + 8 + 5];
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&33u16.to_be_bytes());
    f[23] = 17;
    f[38..40].copy_from_slice(&13u16.to_be_bytes());
    f[40..42].copy_from_slice(&[0xde, 0xad]);
    f[42..].copy_from_slice(b"hello");
    d.add_chain(RX_QUEUE, &[(BUF, 2048, true)]);
    d.add_chain(RX_QUEUE, &[(BUF + 0x1000, 2048, true)]);
    d.peer.inject(&f, RxMeta { csum_blank: true, data_validated: true });
    // A partial checksum on something that is not IPv4 TCP/UDP: dropped.
    d.peer.inject(&frame(60, 1), RxMeta { csum_blank: true, data_validated: true });
    d.t.process_event();
    assert_eq!(d.used_idx(RX_QUEUE), 1);
    let mut got = vec![0u8; f.len()];
    d.mem.read_slice(&mut got, GuestAddress(BUF + HDR_LEN as u64)).unwrap();
    assert!(crate::net::csum::verify(&got), "checksum complete");
    assert_eq!(got[42..], *b"hello");
    assert_eq!(d.t.device().metrics().rx_dropped_bad_size.get(), 1);
}

#[test]
fn rx_before_driver_ok_is_dropped_and_the_budget_bounds_a_wake() {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
    let (port, peer) = pair(true).unwrap();
    let mut t = MmioTransport::new(VirtioNet::new(Box::new(port), MAC), mem, USABLE_LO..MEM, Arc::new(Irq::default()));
    peer.inject(&frame(60, 1), RxMeta::default());
    assert!(!t.process_event());
    assert_eq!(peer.queued(), 0, "drained even with no driver");
    assert_eq!(t.device().metrics().rx_dropped_not_connected.get(), 1);
    // More frames than one wake-up handles: the rest wait for the next.
    let mut d = NetDriver::new(V1);
    let n = crate::net::RX_BUDGET + 3;
    for i in 0..n {
        assert!(d.peer.inject(&frame(60, i as u8), RxMeta::default()));
    }
    assert!(d.t.process_event(), "work left after the budget");
    assert_eq!(d.peer.queued(), 3);
    assert!(!d.t.process_event());
    assert_eq!(d.t.device().metrics().rx_dropped_no_buffer.get(), n as u64);
}

#[test]
fn rx_queue_notified_before_ready_needs_reset() {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
    let (port, _peer) = pair(true).unwrap();
    let mut t = MmioTransport::new(VirtioNet::new(Box::new(port), MAC), mem, USABLE_LO..MEM, Arc::new(Irq::default()));
    for s in [1, 3, 11] {
        t.write(VIRTIO_MMIO_STATUS as u64, &(s as u32).to_le_bytes());
    }
    for sel in 0..2u32 {
        t.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL as u64, &sel.to_le_bytes());
        t.write(VIRTIO_MMIO_DRIVER_FEATURES as u64, &((V1 >> (32 * sel)) as u32).to_le_bytes());
    }
    t.write(VIRTIO_MMIO_STATUS as u64, &11u32.to_le_bytes());
    t.process_queue(RX_QUEUE);
    assert_ne!(t.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
}
