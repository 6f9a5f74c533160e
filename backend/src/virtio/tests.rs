//! Host-side tests of the virtio-mmio transport and virtio-blk over real
//! memory, without KVM: a test driver writes registers, descriptors and
//! rings the way a guest would (and the way a hostile guest might).

mod hostile;

use super::blk::VirtioBlk;
use super::mmio::{Action, MmioTransport, MMIO_MAGIC, VENDOR_ID};
use super::VirtioDevice;
use crate::block::{Disk, DiskSpec};
use crate::Notify;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_config::*;
use virtio_bindings::virtio_mmio::*;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

const MEM: u64 = 2 << 20;
const USABLE_LO: u64 = 0x10000;
const DESC: u64 = 0x20000;
const AVAIL: u64 = 0x21000;
const USED: u64 = 0x22000;
const QSIZE: u16 = 16;
const BUF: u64 = 0x40000;
const SECTORS: u64 = 256;

#[derive(Default)]
struct Irq(AtomicU32);
impl Notify for Irq {
    fn notify(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

struct Driver<D = VirtioBlk> {
    t: MmioTransport<D>,
    mem: GuestMemoryMmap,
    irq: Arc<Irq>,
    _dir: Option<tempfile::TempDir>,
    avail_idx: u16,
    next_desc: u16,
}

fn disk(readonly: bool) -> (tempfile::TempDir, Arc<Disk>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.img");
    std::fs::write(&path, vec![0x11u8; (SECTORS * 512) as usize]).unwrap();
    let d = Disk::open(&DiskSpec::new(path, readonly)).unwrap();
    (dir, Arc::new(d))
}

impl Driver<VirtioBlk> {
    fn new(readonly: bool) -> Self {
        let (dir, d) = disk(readonly);
        let mut drv = Driver::with(VirtioBlk::new(d, "serial-1", Arc::default()));
        drv._dir = Some(dir);
        drv
    }

    /// A fully set-up device with `features` (default: VERSION_1 only).
    fn ready(readonly: bool, features: u64) -> Self {
        let mut d = Driver::new(readonly);
        d.set_up(features);
        d
    }
}

impl<D: VirtioDevice> Driver<D> {
    fn with(dev: D) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
        let irq = Arc::new(Irq::default());
        let t = MmioTransport::new(dev, mem.clone(), USABLE_LO..MEM, irq.clone());
        Driver { t, mem, irq, _dir: None, avail_idx: 0, next_desc: 0 }
    }

    fn set_up(&mut self, features: u64) {
        assert!(self.negotiate(features));
        self.setup_queue(QSIZE as u32, DESC, AVAIL, USED);
        self.driver_ok();
        assert_eq!(self.rd(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    }

    fn rd(&mut self, reg: u32) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(reg as u64, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(&mut self, reg: u32, v: u32) -> Action {
        self.t.write(reg as u64, &v.to_le_bytes())
    }

    fn features(&mut self) -> u64 {
        self.wr(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
        let lo = self.rd(VIRTIO_MMIO_DEVICE_FEATURES) as u64;
        self.wr(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
        lo | (self.rd(VIRTIO_MMIO_DEVICE_FEATURES) as u64) << 32
    }

    fn negotiate(&mut self, want: u64) -> bool {
        self.wr(VIRTIO_MMIO_STATUS, 0);
        self.wr(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        self.wr(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        for sel in 0..2 {
            self.wr(VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
            self.wr(VIRTIO_MMIO_DRIVER_FEATURES, (want >> (32 * sel)) as u32);
        }
        let s = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
        self.wr(VIRTIO_MMIO_STATUS, s);
        self.rd(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK != 0
    }

    fn setup_queue(&mut self, size: u32, desc: u64, avail: u64, used: u64) {
        self.wr(VIRTIO_MMIO_QUEUE_SEL, 0);
        self.wr(VIRTIO_MMIO_QUEUE_NUM, size);
        for (lo, hi, a) in [
            (VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_DESC_HIGH, desc),
            (VIRTIO_MMIO_QUEUE_AVAIL_LOW, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, avail),
            (VIRTIO_MMIO_QUEUE_USED_LOW, VIRTIO_MMIO_QUEUE_USED_HIGH, used),
        ] {
            self.wr(lo, a as u32);
            self.wr(hi, (a >> 32) as u32);
        }
        self.wr(VIRTIO_MMIO_QUEUE_READY, 1);
    }

    fn driver_ok(&mut self) {
        let s = self.rd(VIRTIO_MMIO_STATUS);
        self.wr(VIRTIO_MMIO_STATUS, s | VIRTIO_CONFIG_S_DRIVER_OK);
    }

    fn put_desc(&mut self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(DESC + 16 * i as u64);
        self.mem.write_obj(addr, at).unwrap();
        self.mem.write_obj(len, at.unchecked_add(8)).unwrap();
        self.mem.write_obj(flags, at.unchecked_add(12)).unwrap();
        self.mem.write_obj(next, at.unchecked_add(14)).unwrap();
    }

    /// Adds a chain of (addr, len, device-writable) buffers; returns its head.
    fn add_chain(&mut self, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (k, &(addr, len, w)) in bufs.iter().enumerate() {
            let i = (head + k as u16) % QSIZE;
            let last = k + 1 == bufs.len();
            let flags = if w { VRING_DESC_F_WRITE as u16 } else { 0 } | if last { 0 } else { VRING_DESC_F_NEXT as u16 };
            self.put_desc(i, addr, len, flags, (i + 1) % QSIZE);
        }
        self.next_desc = (head + bufs.len() as u16) % QSIZE;
        self.publish(head);
        head
    }

    fn publish(&mut self, head: u16) {
        let slot = AVAIL + 4 + 2 * (self.avail_idx % QSIZE) as u64;
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem.write_obj(self.avail_idx, GuestAddress(AVAIL + 2)).unwrap();
    }

    fn kick(&mut self) {
        assert_eq!(self.wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0), Action::Notify(0));
        self.t.process_queue(0);
    }

    fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }

    /// (head, len) of used element `n`.
    fn used(&self, n: u16) -> (u32, u32) {
        let at = GuestAddress(USED + 4 + 8 * (n % QSIZE) as u64);
        (self.mem.read_obj(at).unwrap(), self.mem.read_obj(at.unchecked_add(4)).unwrap())
    }

    fn header(&self, at: u64, kind: u32, sector: u64) {
        self.mem.write_obj(kind, GuestAddress(at)).unwrap();
        self.mem.write_obj(0u32, GuestAddress(at + 4)).unwrap();
        self.mem.write_obj(sector, GuestAddress(at + 8)).unwrap();
    }

    /// One request: header at BUF, data at BUF+0x1000 (`len` bytes, in the
    /// given direction), status at BUF+0x10; returns (status, used len).
    fn request(&mut self, kind: u32, sector: u64, len: u32, data_writable: bool) -> (u8, u32) {
        self.header(BUF, kind, sector);
        self.mem.write_obj(0xffu8, GuestAddress(BUF + 0x10)).unwrap();
        let mut bufs = vec![(BUF, 16, false)];
        if len > 0 {
            bufs.push((BUF + 0x1000, len, data_writable));
        }
        bufs.push((BUF + 0x10, 1, true));
        let before = self.used_idx();
        self.add_chain(&bufs);
        self.kick();
        assert_eq!(self.used_idx(), before.wrapping_add(1), "one chain used");
        let (_, used_len) = self.used(before);
        (self.mem.read_obj(GuestAddress(BUF + 0x10)).unwrap(), used_len)
    }

    fn needs_reset(&mut self) -> bool {
        self.rd(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET != 0
    }
}

const V1: u64 = 1 << VIRTIO_F_VERSION_1;

#[test]
fn identity_registers_in_every_state() {
    let mut d = Driver::new(false);
    let states = [
        0,
        VIRTIO_CONFIG_S_ACKNOWLEDGE,
        VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER,
        VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK,
    ];
    for (i, &s) in states.iter().enumerate() {
        if i == 3 {
            assert!(d.negotiate(V1));
        } else {
            d.wr(VIRTIO_MMIO_STATUS, s);
        }
        assert_eq!(d.rd(VIRTIO_MMIO_STATUS), s, "state {i}");
        assert_eq!(d.rd(VIRTIO_MMIO_MAGIC_VALUE), MMIO_MAGIC);
        assert_eq!(d.rd(VIRTIO_MMIO_VERSION), 2);
        assert_eq!(d.rd(VIRTIO_MMIO_DEVICE_ID), 2);
        assert_eq!(d.rd(VIRTIO_MMIO_VENDOR_ID), VENDOR_ID);
        assert_eq!(d.rd(VIRTIO_MMIO_QUEUE_NUM_MAX), 256);
        assert_eq!(d.rd(VIRTIO_MMIO_CONFIG_GENERATION), 0);
        // Capacity in the config space, in sectors, at any width.
        let mut cap = [0u8; 8];
        d.t.read(VIRTIO_MMIO_CONFIG as u64, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), SECTORS);
    }
    d.driver_ok();
    assert_ne!(d.rd(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_DRIVER_OK, 0);
    assert_eq!(d.rd(VIRTIO_MMIO_MAGIC_VALUE), MMIO_MAGIC);
}

#[test]
fn status_machine_refuses_skipped_steps_and_cleared_bits() {
    let mut d = Driver::new(false);
    // DRIVER without ACKNOWLEDGE, FEATURES_OK without DRIVER, DRIVER_OK first.
    for bad in [VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_DRIVER_OK, 0x20] {
        d.wr(VIRTIO_MMIO_STATUS, bad);
        assert_eq!(d.rd(VIRTIO_MMIO_STATUS), 0, "status {bad:#x} from reset");
    }
    assert!(d.negotiate(V1));
    // Clearing a bit without a reset is refused.
    d.wr(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    assert_ne!(d.rd(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK, 0);
    // Feature writes after FEATURES_OK do not change the negotiated set.
    d.wr(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    d.wr(VIRTIO_MMIO_DRIVER_FEATURES, 1 << VIRTIO_BLK_F_FLUSH);
    assert_eq!(d.t.driver_features(), V1);
    // Wrong-width and unaligned register accesses are refused.
    let mut two = [0u8; 2];
    d.t.read(VIRTIO_MMIO_MAGIC_VALUE as u64, &mut two);
    assert_eq!(two, [0, 0]);
    d.t.write(VIRTIO_MMIO_STATUS as u64, &[0u8]);
    assert_ne!(d.rd(VIRTIO_MMIO_STATUS), 0, "a 1-byte write is not a reset");
    // Reset clears everything.
    d.wr(VIRTIO_MMIO_STATUS, 0);
    assert_eq!(d.rd(VIRTIO_MMIO_STATUS), 0);
    assert_eq!(d.t.driver_features(), 0);
    assert_eq!(d.rd(VIRTIO_MMIO_QUEUE_READY), 0);
}

#[test]
fn queue_registers_only_during_setup() {
    let mut d = Driver::new(false);
    // Before FEATURES_OK a queue cannot be made ready.
    d.setup_queue(QSIZE as u32, DESC, AVAIL, USED);
    assert_eq!(d.rd(VIRTIO_MMIO_QUEUE_READY), 0);
    assert!(d.negotiate(V1));
    d.setup_queue(QSIZE as u32, DESC, AVAIL, USED);
    assert_eq!(d.rd(VIRTIO_MMIO_QUEUE_READY), 1);
    d.driver_ok();
    // After DRIVER_OK the queue's address is fixed.
    d.wr(VIRTIO_MMIO_QUEUE_DESC_LOW, 0x30000);
    let (st, _) = d.request(VIRTIO_BLK_T_FLUSH, 0, 0, false);
    assert_eq!(st as u32, VIRTIO_BLK_S_OK);
    // A queue that does not exist.
    d.wr(VIRTIO_MMIO_QUEUE_SEL, 5);
    assert_eq!(d.rd(VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
    assert_eq!(d.wr(VIRTIO_MMIO_QUEUE_NOTIFY, 5), Action::None);
    assert!(!d.needs_reset());
    // Releasing the queue as drivers do on teardown: not ready, size 0.
    d.wr(VIRTIO_MMIO_QUEUE_SEL, 0);
    d.wr(VIRTIO_MMIO_QUEUE_READY, 0);
    for reg in [VIRTIO_MMIO_QUEUE_NUM, VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_USED_LOW] {
        d.wr(reg, 0);
    }
    assert!(!d.needs_reset());
    assert_eq!(d.rd(VIRTIO_MMIO_QUEUE_READY), 0);
}

#[test]
fn feature_negotiation() {
    let mut d = Driver::new(false);
    let f = d.features();
    for bit in [
        VIRTIO_F_VERSION_1,
        VIRTIO_RING_F_EVENT_IDX,
        VIRTIO_BLK_F_SEG_MAX,
        VIRTIO_BLK_F_BLK_SIZE,
        VIRTIO_BLK_F_FLUSH,
        VIRTIO_BLK_F_DISCARD,
    ] {
        assert_ne!(f & (1 << bit), 0, "feature {bit} offered");
    }
    assert_eq!(f & (1 << VIRTIO_BLK_F_RO), 0);
    // Without VERSION_1 (a legacy driver) FEATURES_OK does not stick.
    assert!(!d.negotiate(1 << VIRTIO_BLK_F_FLUSH));
    // A feature not offered is refused.
    assert!(!d.negotiate(V1 | 1 << VIRTIO_BLK_F_SCSI));
    assert!(d.negotiate(f));
    assert_eq!(d.t.driver_features(), f);
    let mut ro = Driver::new(true);
    let f = ro.features();
    assert_ne!(f & (1 << VIRTIO_BLK_F_RO), 0);
    assert_eq!(f & (1 << VIRTIO_BLK_F_DISCARD), 0);
}

#[test]
fn blk_requests_round_trip() {
    for features in [V1, V1 | 1 << VIRTIO_RING_F_EVENT_IDX] {
        let mut d = Driver::ready(false, features);
        d.mem.write_slice(&[0xabu8; 4096], GuestAddress(BUF + 0x1000)).unwrap();
        assert_eq!(d.request(VIRTIO_BLK_T_OUT, 8, 4096, false), (VIRTIO_BLK_S_OK as u8, 1));
        assert_eq!(d.request(VIRTIO_BLK_T_FLUSH, 0, 0, false), (VIRTIO_BLK_S_OK as u8, 1));
        d.mem.write_slice(&[0u8; 4096], GuestAddress(BUF + 0x1000)).unwrap();
        assert_eq!(d.request(VIRTIO_BLK_T_IN, 8, 4096, true), (VIRTIO_BLK_S_OK as u8, 4097));
        let mut back = [0u8; 4096];
        d.mem.read_slice(&mut back, GuestAddress(BUF + 0x1000)).unwrap();
        assert!(back.iter().all(|&b| b == 0xab));
        let img = std::fs::read(d.t.device().disk().path()).unwrap();
        assert!(img[8 * 512..16 * 512].iter().all(|&b| b == 0xab) && img[7 * 512] == 0x11);
        assert_eq!(d.request(VIRTIO_BLK_T_GET_ID, 0, 20, true), (VIRTIO_BLK_S_OK as u8, 20 + 1));
        let mut id = [0u8; 8];
        d.mem.read_slice(&mut id, GuestAddress(BUF + 0x1000)).unwrap();
        assert_eq!(&id, b"serial-1");
        // Discard: one segment (sector 8, 4 sectors).
        d.mem.write_obj(8u64, GuestAddress(BUF + 0x1000)).unwrap();
        d.mem.write_obj(4u32, GuestAddress(BUF + 0x1008)).unwrap();
        d.mem.write_obj(0u32, GuestAddress(BUF + 0x100c)).unwrap();
        assert_eq!(d.request(VIRTIO_BLK_T_DISCARD, 0, 16, false).0 as u32, VIRTIO_BLK_S_OK);
        let img = std::fs::read(d.t.device().disk().path()).unwrap();
        assert!(img[8 * 512..12 * 512].iter().all(|&b| b == 0) && img[12 * 512] == 0xab);
        // Unknown type, past the end, partial sector.
        assert_eq!(d.request(VIRTIO_BLK_T_SCSI_CMD, 0, 0, false).0 as u32, VIRTIO_BLK_S_UNSUPP);
        assert_eq!(d.request(VIRTIO_BLK_T_IN, SECTORS - 1, 1024, true).0 as u32, VIRTIO_BLK_S_IOERR);
        assert_eq!(d.request(VIRTIO_BLK_T_IN, 0, 100, true).0 as u32, VIRTIO_BLK_S_IOERR);
        assert!(d.irq.0.load(Ordering::SeqCst) > 0, "interrupts raised");
        assert!(!d.needs_reset());
    }
}

#[test]
fn readonly_disk_refuses_writes_and_discards() {
    let mut d = Driver::ready(true, V1);
    d.mem.write_slice(&[0xcdu8; 512], GuestAddress(BUF + 0x1000)).unwrap();
    assert_eq!(d.request(VIRTIO_BLK_T_OUT, 0, 512, false).0 as u32, VIRTIO_BLK_S_IOERR);
    // A well-formed discard segment (sector 0, one sector): refused by the
    // shared block logic because the disk is read-only.
    d.mem.write_slice(&[0u8; 16], GuestAddress(BUF + 0x1000)).unwrap();
    d.mem.write_obj(1u32, GuestAddress(BUF + 0x1008)).unwrap();
    assert_eq!(d.request(VIRTIO_BLK_T_DISCARD, 0, 16, false).0 as u32, VIRTIO_BLK_S_IOERR);
    assert_eq!(d.request(VIRTIO_BLK_T_IN, 0, 512, true).0 as u32, VIRTIO_BLK_S_OK);
    assert_eq!(d.t.device().metrics().errors.get(), 2);
    let img = std::fs::read(d.t.device().disk().path()).unwrap();
    assert!(img.iter().all(|&b| b == 0x11), "image untouched");
}

#[test]
fn hostile_chains_fail_only_that_request() {
    let mut d = Driver::ready(false, V1);
    let status = BUF + 0x10;
    d.header(BUF, VIRTIO_BLK_T_IN, 0);
    type Case = (&'static str, Vec<(u64, u32, bool)>);
    let cases: Vec<Case> = vec![
        ("data outside RAM", vec![(BUF, 16, false), (MEM - 0x800, 0x1000, true), (status, 1, true)]),
        ("data in the reserved low range", vec![(BUF, 16, false), (0x1000, 512, true), (status, 1, true)]),
        ("address wraps", vec![(BUF, 16, false), (u64::MAX - 10, 512, true), (status, 1, true)]),
        ("zero length", vec![(BUF, 16, false), (BUF + 0x1000, 0, true), (status, 1, true)]),
        ("readable after writable", vec![(BUF, 16, false), (status, 1, true), (BUF + 0x1000, 512, false)]),
    ];
    let mut used = 0;
    for (what, bufs) in cases {
        d.mem.write_obj(0x77u8, GuestAddress(status)).unwrap();
        d.add_chain(&bufs);
        d.kick();
        used += 1;
        assert_eq!(d.used_idx(), used, "{what}: returned on the used ring");
        assert_eq!(d.used(used - 1).1, 0, "{what}: nothing written");
        assert_eq!(d.mem.read_obj::<u8>(GuestAddress(status)).unwrap(), 0x77, "{what}: status untouched");
    }
    // A loop (0 -> 1 -> 0) and a chain longer than the queue: both cut off.
    d.put_desc(0, BUF, 16, VRING_DESC_F_NEXT as u16, 1);
    d.put_desc(1, status, 1, (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16, 0);
    d.publish(0);
    d.kick();
    used += 1;
    assert_eq!((d.used_idx(), d.used(used - 1).1), (used, 0), "loop");
    for i in 0..QSIZE {
        d.put_desc(i, BUF + 0x1000, 512, (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16, (i + 1) % QSIZE);
    }
    d.publish(3);
    d.kick();
    used += 1;
    assert_eq!((d.used_idx(), d.used(used - 1).1), (used, 0), "longer than the queue");
    // Data for IN in a device-readable buffer: the device must not write it.
    d.next_desc = 0;
    d.mem.write_slice(&[0x5au8; 512], GuestAddress(BUF + 0x1000)).unwrap();
    assert_eq!(d.request(VIRTIO_BLK_T_IN, 0, 512, false).0 as u32, VIRTIO_BLK_S_IOERR);
    let mut b = [0u8; 512];
    d.mem.read_slice(&mut b, GuestAddress(BUF + 0x1000)).unwrap();
    assert!(b.iter().all(|&x| x == 0x5a), "device-readable buffer not written");
    // The queue still works.
    assert_eq!(d.request(VIRTIO_BLK_T_IN, 0, 512, true).0 as u32, VIRTIO_BLK_S_OK);
    assert!(!d.needs_reset());
    let c = d.t.counters();
    assert_eq!(c.bad_chains.get(), 7);
    assert_eq!(d.t.device().metrics().errors.get(), 1, "the wrong-direction IN");
}

#[test]
fn avail_index_jump_needs_reset_and_reset_recovers() {
    let mut d = Driver::ready(false, V1);
    let irqs = d.irq.0.load(Ordering::SeqCst);
    d.mem.write_obj(QSIZE + 5, GuestAddress(AVAIL + 2)).unwrap();
    d.kick();
    assert!(d.needs_reset());
    assert_eq!(d.used_idx(), 0, "nothing consumed");
    assert_eq!(d.rd(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_CONFIG);
    assert_eq!(d.irq.0.load(Ordering::SeqCst), irqs + 1);
    d.wr(VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_CONFIG);
    assert_eq!(d.rd(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    // Broken until reset: more kicks do nothing.
    d.kick();
    assert_eq!(d.used_idx(), 0);
    // Reset and set up again: works.
    d.mem.write_slice(&[0u8; 0x3000], GuestAddress(DESC)).unwrap();
    (d.avail_idx, d.next_desc) = (0, 0);
    assert!(d.negotiate(V1));
    assert!(!d.needs_reset());
    d.setup_queue(QSIZE as u32, DESC, AVAIL, USED);
    d.driver_ok();
    assert_eq!(d.request(VIRTIO_BLK_T_FLUSH, 0, 0, false).0 as u32, VIRTIO_BLK_S_OK);
}

#[test]
fn bad_queue_setup_needs_reset() {
    let cases: [(&str, u32, u64, u64, u64); 5] = [
        ("size not a power of two", 12, DESC, AVAIL, USED),
        ("size above the maximum", 512, DESC, AVAIL, USED),
        ("descriptor table outside RAM", QSIZE as u32, MEM - 0x40, AVAIL, USED),
        ("used ring in the reserved low range", QSIZE as u32, DESC, AVAIL, 0x2000),
        ("misaligned descriptor table", QSIZE as u32, DESC + 4, AVAIL, USED),
    ];
    for (what, size, desc, avail, used) in cases {
        let mut d = Driver::new(false);
        assert!(d.negotiate(V1));
        d.setup_queue(size, desc, avail, used);
        assert!(d.needs_reset(), "{what}");
        assert_eq!(d.rd(VIRTIO_MMIO_QUEUE_READY), 0, "{what}: not ready");
    }
}

#[test]
fn notify_before_ready_needs_reset_other_devices_unaffected() {
    let mut a = Driver::new(false);
    let mut b = Driver::ready(false, V1);
    // In reset, a notification may be stale: dropped, not held against the
    // driver's next initialisation.
    a.kick();
    assert!(!a.needs_reset());
    assert!(a.negotiate(V1));
    a.kick();
    assert!(a.needs_reset());
    assert_eq!(b.request(VIRTIO_BLK_T_FLUSH, 0, 0, false).0 as u32, VIRTIO_BLK_S_OK);
    assert!(!b.needs_reset());
}

/// The echo sample over virtio: the same executor as its Xen ring.
#[test]
fn echo_logic_written_once_runs_over_virtio() {
    use crate::echo::virtio::VirtioEcho;
    use pv_abi::echo::*;
    let mut d = Driver::with(VirtioEcho::default());
    d.set_up(V1);
    let (hdr, data, out, rsp) = (BUF, BUF + 0x1000, BUF + 0x2000, BUF + 0x3000);
    let call = |d: &mut Driver<VirtioEcho>, op: u8, key: u8, bufs: &[(u64, u32, bool)]| {
        d.mem.write_slice(&[op, key, 0, 0, 0, 0, 0, 0], GuestAddress(hdr)).unwrap();
        let mut chain = vec![(hdr, 8, false)];
        chain.extend_from_slice(bufs);
        chain.push((rsp, 8, true));
        d.add_chain(&chain);
        d.kick();
        let status: i16 = d.mem.read_obj(GuestAddress(rsp)).unwrap();
        let value: u32 = d.mem.read_obj(GuestAddress(rsp + 4)).unwrap();
        (status, value)
    };
    d.mem.write_slice(&[1u8, 2, 3, 250], GuestAddress(data)).unwrap();
    assert_eq!(call(&mut d, ECHO_OP_PING, 0, &[]), (ECHO_RSP_OKAY, 0));
    assert_eq!(call(&mut d, ECHO_OP_SUM, 0, &[(data, 4, false)]), (ECHO_RSP_OKAY, 256));
    assert_eq!(
        call(&mut d, ECHO_OP_XOR, 0xff, &[(data, 4, false), (out, 4, true)]),
        (ECHO_RSP_OKAY, 254 + 253 + 252 + 5)
    );
    let mut x = [0u8; 4];
    d.mem.read_slice(&mut x, GuestAddress(out)).unwrap();
    assert_eq!(x, [254, 253, 252, 5], "XOR result in the device-writable buffer");
    d.mem.read_slice(&mut x, GuestAddress(data)).unwrap();
    assert_eq!(x, [1, 2, 3, 250], "the device-readable input is not written");
    // XOR with no output buffer, an unknown op, more than a page: refused.
    assert_eq!(call(&mut d, ECHO_OP_XOR, 1, &[(data, 4, false)]).0, ECHO_RSP_EINVAL);
    assert_eq!(call(&mut d, 9, 0, &[]).0, ECHO_RSP_EINVAL);
    assert_eq!(call(&mut d, ECHO_OP_SUM, 0, &[(data, 4097, false)]).0, ECHO_RSP_EINVAL);
    let m = d.t.device().metrics();
    assert_eq!((m.requests.get(), m.errors.get()), (6, 3));
}

#[test]
fn a_batch_of_requests_is_answered_in_one_wake() {
    // Eight flushes (header + status each: the 16-entry table is full)
    // queued before one notification: all answered by one wake-up, which
    // reports no work left (under the per-wake budget).
    let mut d = Driver::ready(false, V1);
    d.header(BUF, VIRTIO_BLK_T_FLUSH, 0);
    for _ in 0..8 {
        d.add_chain(&[(BUF, 16, false), (BUF + 0x10, 1, true)]);
    }
    assert_eq!(d.wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0), Action::Notify(0));
    assert!(!d.t.process_queue(0), "nothing left for another round");
    assert_eq!(d.used_idx(), 8);
    assert_eq!(d.t.device().metrics().flushes.get(), 8);
}

#[test]
fn bad_descriptor_heads_do_not_flood_the_log() {
    // A hostile driver: 1000 times, set the queue up again and publish a
    // head outside it. Each is refused (device needs reset), and the log
    // sees at most the limiter's burst plus its suppressed-count lines:
    // nothing from virtio-queue, which logs an error for every such head
    // handed to `add_used`.
    let mut d = Driver::ready(false, V1);
    let ((), lines) = crate::test_log::capture(|| {
        for i in 0..1000u16 {
            if i > 0 {
                assert!(d.negotiate(V1));
                d.setup_queue(QSIZE as u32, DESC, AVAIL, USED);
                d.driver_ok();
                d.avail_idx = 0;
            }
            d.publish(QSIZE + i % 100);
            d.kick();
            assert!(d.needs_reset(), "bad head {} refused", QSIZE + i % 100);
            assert_eq!(d.used_idx(), 0, "nothing returned for it");
        }
    });
    let budget = 2 * pv_util::ratelimit::LogLimiter::BURST as usize + 2;
    assert!(!lines.iter().any(|l| l.contains("virtio_queue")), "no dependency log line for a refused head: {lines:?}");
    assert!((1..=budget).contains(&lines.len()), "{} log lines for 1000 bad heads (budget {budget})", lines.len());
    // The device still works after a proper reset.
    assert!(d.negotiate(V1));
    d.mem.write_slice(&[0u8; 0x3000], GuestAddress(DESC)).unwrap();
    (d.avail_idx, d.next_desc) = (0, 0);
    d.setup_queue(QSIZE as u32, DESC, AVAIL, USED);
    d.driver_ok();
    assert_eq!(d.request(VIRTIO_BLK_T_FLUSH, 0, 0, false).0 as u32, VIRTIO_BLK_S_OK);
}

#[test]
fn blk_multi_queue_serves_a_request_on_queue_3() {
    // virtio 1.x 5.2.3/5.2.4: VIRTIO_BLK_F_MQ (bit 12) offered with
    // num_queues = 4 in the config space; each queue is set up and
    // notified on its own (5.2.6.2: without F_MQ only queue 0 is used).
    const F_MQ: u64 = 1 << 12;
    let mut d = Driver::new(false);
    assert_ne!(d.features() & F_MQ, 0, "VIRTIO_BLK_F_MQ offered");
    let mut nq = [0u8; 2];
    d.t.read(VIRTIO_MMIO_CONFIG as u64 + std::mem::offset_of!(virtio_blk_config, num_queues) as u64, &mut nq);
    assert_eq!(u16::from_le_bytes(nq), 4, "num_queues");
    assert!(d.negotiate(V1 | F_MQ));
    for q in 0..4 {
        d.wr(VIRTIO_MMIO_QUEUE_SEL, q);
        assert_eq!(d.rd(VIRTIO_MMIO_QUEUE_NUM_MAX), 256, "queue {q} offered");
    }
    d.wr(VIRTIO_MMIO_QUEUE_SEL, 4);
    assert_eq!(d.rd(VIRTIO_MMIO_QUEUE_NUM_MAX), 0, "no queue 4");
    // Only queue 3 is set up (at the rings the helpers use).
    d.wr(VIRTIO_MMIO_QUEUE_SEL, 3);
    d.wr(VIRTIO_MMIO_QUEUE_NUM, QSIZE as u32);
    for (lo, hi, a) in [
        (VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_DESC_HIGH, DESC),
        (VIRTIO_MMIO_QUEUE_AVAIL_LOW, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, AVAIL),
        (VIRTIO_MMIO_QUEUE_USED_LOW, VIRTIO_MMIO_QUEUE_USED_HIGH, USED),
    ] {
        d.wr(lo, a as u32);
        d.wr(hi, (a >> 32) as u32);
    }
    d.wr(VIRTIO_MMIO_QUEUE_READY, 1);
    d.driver_ok();
    d.mem.write_slice(&[0xcdu8; 4096], GuestAddress(BUF + 0x1000)).unwrap();
    d.header(BUF, VIRTIO_BLK_T_OUT, 16);
    d.add_chain(&[(BUF, 16, false), (BUF + 0x1000, 4096, false), (BUF + 0x10, 1, true)]);
    assert_eq!(d.wr(VIRTIO_MMIO_QUEUE_NOTIFY, 3), Action::Notify(3));
    d.t.process_queue(3);
    assert_eq!(d.used_idx(), 1, "queue 3's chain used");
    assert_eq!(d.mem.read_obj::<u8>(GuestAddress(BUF + 0x10)).unwrap() as u32, VIRTIO_BLK_S_OK);
    let img = std::fs::read(d.t.device().disk().path()).unwrap();
    assert!(img[16 * 512..24 * 512].iter().all(|&b| b == 0xcd), "the write reached the image");
    assert!(!d.needs_reset());
}
