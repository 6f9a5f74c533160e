//! A hostile virtio driver against virtio-blk over real guest memory,
//! without KVM. Every case checks that the VMM does not panic, answers as
//! the virtio 1.x specification says (or sets `DEVICE_NEEDS_RESET`, 2.1.2),
//! logs a bounded number of lines, leaves the disk image alone where the
//! case must not write, recovers after a reset, and that a second device
//! still serves.

use super::*;
use crate::test_log::{capture, DEVICE_BUDGET};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_INDIRECT_DESC, VRING_DESC_F_INDIRECT};

const OK: u32 = VIRTIO_BLK_S_OK;
const RW: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;

impl Driver<VirtioBlk> {
    /// The image's bytes (compared before and after a case that must not write).
    fn image(&self) -> Vec<u8> {
        std::fs::read(self.t.device().disk().path()).unwrap()
    }

    /// Resets, clears the rings and sets the device up again (virtio 1.x
    /// 3.1.1); then a write and a read back must work.
    fn recover(&mut self) {
        self.wr(VIRTIO_MMIO_STATUS, 0);
        assert_eq!(self.rd(VIRTIO_MMIO_STATUS), 0, "a reset clears NEEDS_RESET too");
        self.mem.write_slice(&[0u8; 0x3000], GuestAddress(DESC)).unwrap();
        (self.avail_idx, self.next_desc) = (0, 0);
        self.set_up(V1);
        self.works();
    }

    /// A flush and a read of sector 0 both succeed.
    fn works(&mut self) {
        assert_eq!(self.request(VIRTIO_BLK_T_FLUSH, 0, 0, false).0 as u32, OK);
        assert_eq!(self.request(VIRTIO_BLK_T_IN, 0, 512, true).0 as u32, OK);
        assert!(!self.needs_reset());
    }

    /// Publishes descriptor `head` (already written) and kicks; returns the
    /// used length if the chain came back, `None` if it did not.
    fn submit_raw(&mut self, head: u16) -> Option<u32> {
        let before = self.used_idx();
        self.publish(head);
        self.kick();
        (self.used_idx() != before).then(|| self.used(before).1)
    }
}

/// A second, fresh device serves (nothing the hostile one did is shared).
fn second_device_works() {
    Driver::ready(false, V1).works();
}

fn assert_bounded(lines: &[String], what: &str) {
    assert!(lines.len() <= DEVICE_BUDGET, "{what}: {} log lines:\n{}", lines.len(), lines.join("\n"));
}

/// Register writes out of the order of virtio 1.x 3.1.1 (initialisation)
/// and 4.2.3.2 (virtqueue configuration), after `DRIVER_OK`, and at the
/// wrong width or alignment (4.2.2.2: the driver MUST use 32-bit aligned
/// accesses to the control registers), repeated 2000 times.
#[test]
fn out_of_order_and_odd_width_register_writes() {
    let mut d = Driver::new(false);
    let image = d.image();
    let ((), lines) = capture(|| {
        for _ in 0..2000 {
            // QueueReady before the size and addresses: rings at 0 lie in
            // the reserved low range.
            assert!(d.negotiate(V1));
            d.wr(VIRTIO_MMIO_QUEUE_READY, 1);
            assert_eq!(d.rd(VIRTIO_MMIO_QUEUE_READY), 0, "not made ready");
            assert!(d.needs_reset());
            // Notifications of a broken device do nothing.
            assert_eq!(d.wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0), Action::Notify(0));
            assert!(!d.t.process_queue(0));
            // DRIVER_OK before FEATURES_OK is refused (3.1.1 order).
            d.wr(VIRTIO_MMIO_STATUS, 0);
            d.wr(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
            d.wr(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_DRIVER_OK);
            assert_eq!(d.rd(VIRTIO_MMIO_STATUS), VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
            // FEATURES_OK and DRIVER_OK in one store with features refused
            // (no VERSION_1): neither is set.
            d.wr(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
            d.wr(VIRTIO_MMIO_DRIVER_FEATURES, 0);
            d.wr(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
            d.wr(VIRTIO_MMIO_STATUS, RW | VIRTIO_CONFIG_S_DRIVER_OK);
            assert_eq!(d.rd(VIRTIO_MMIO_STATUS), VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
            // Odd widths and unaligned offsets: ignored.
            d.t.write(VIRTIO_MMIO_STATUS as u64, &[0u8; 2]);
            d.t.write(VIRTIO_MMIO_STATUS as u64, &[0u8; 8]);
            d.t.write(VIRTIO_MMIO_QUEUE_NOTIFY as u64, &[0u8]);
            d.t.write(VIRTIO_MMIO_STATUS as u64 + 1, &[0u8; 4]);
            d.t.write(0xfe, &[0u8; 4]);
            d.t.write(VIRTIO_MMIO_STATUS as u64, &[]);
            assert_eq!(d.rd(VIRTIO_MMIO_STATUS), VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
            let mut wide = [0xa5u8; 8];
            d.t.read(VIRTIO_MMIO_MAGIC_VALUE as u64, &mut wide);
            assert_eq!(wide, [0; 8], "a refused read returns zeros, not the caller's bytes");
            let mut odd = [0xa5u8; 4];
            d.t.read(VIRTIO_MMIO_MAGIC_VALUE as u64 + 2, &mut odd);
            assert_eq!(odd, [0; 4]);
            // Read-only and unknown registers written.
            for reg in [VIRTIO_MMIO_MAGIC_VALUE, VIRTIO_MMIO_VERSION, VIRTIO_MMIO_DEVICE_ID, 0xfc] {
                d.wr(reg, 0xdead_beef);
            }
            assert_eq!(d.rd(VIRTIO_MMIO_MAGIC_VALUE), MMIO_MAGIC);
            assert_eq!(d.rd(VIRTIO_MMIO_DEVICE_ID), 2);
            // A queue register with a queue selected that does not exist.
            d.wr(VIRTIO_MMIO_QUEUE_SEL, u32::MAX);
            d.wr(VIRTIO_MMIO_QUEUE_READY, 1);
            d.wr(VIRTIO_MMIO_QUEUE_NUM, 8);
            d.wr(VIRTIO_MMIO_QUEUE_SEL, 0);
        }
        // Writes after DRIVER_OK: features, queue size and addresses are
        // fixed (4.2.3.2), status bits cannot be cleared without a reset.
        d.set_up(V1);
        d.wr(VIRTIO_MMIO_DRIVER_FEATURES, u32::MAX);
        d.wr(VIRTIO_MMIO_QUEUE_NUM, 2);
        d.wr(VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1000);
        d.wr(VIRTIO_MMIO_QUEUE_USED_HIGH, 1);
        d.wr(VIRTIO_MMIO_STATUS, RW);
        d.wr(VIRTIO_MMIO_STATUS, u32::MAX);
        assert_eq!(d.t.driver_features(), V1);
        assert_eq!(d.rd(VIRTIO_MMIO_STATUS), RW | VIRTIO_CONFIG_S_DRIVER_OK);
        d.works();
    });
    assert_bounded(&lines, "2000 rounds of bad register writes");
    assert!(!lines.is_empty(), "the refusals are logged");
    d.recover();
    second_device_works();
    // Only the reads of sector 0 happened: the image is unchanged.
    assert!(d.image() == image, "image unchanged");
}

/// Rings outside guest RAM, wrapping the address space, or over the
/// VMM's reserved pages below the usable range: the queue is not made
/// ready and the device needs a reset (2.1.2); nothing is written there.
#[test]
fn queues_outside_ram_or_over_reserved_pages() {
    let cases: [(&str, u64, u64, u64); 8] = [
        ("descriptor table across the end of RAM", MEM - 0x80, AVAIL, USED),
        ("available ring at the end of RAM", DESC, MEM, USED),
        ("used ring wrapping the address space", DESC, AVAIL, u64::MAX - 7),
        ("descriptor table far above RAM", 1 << 40, AVAIL, USED),
        ("descriptor table across the reserved boundary", USABLE_LO - 0x80, AVAIL, USED),
        ("used ring just below the usable range", DESC, AVAIL, USABLE_LO - 0x100),
        ("avail ring on the VMM's first page", DESC, 0, USED),
        ("used ring over the reserved range, ending inside", DESC, AVAIL, USABLE_LO - 8),
    ];
    let (mut d, lines) = capture(|| {
        let mut d = Driver::new(false);
        for (what, desc, avail, used) in cases {
            let low = [0x3cu8; 0x100];
            d.mem.write_slice(&low, GuestAddress(USABLE_LO - 0x100)).unwrap();
            assert!(d.negotiate(V1), "{what}");
            d.setup_queue(QSIZE as u32, desc, avail, used);
            assert!(d.needs_reset(), "{what}: needs reset");
            assert_eq!(d.rd(VIRTIO_MMIO_QUEUE_READY), 0, "{what}: not ready");
            d.driver_ok();
            d.kick();
            let mut after = [0u8; 0x100];
            d.mem.read_slice(&mut after, GuestAddress(USABLE_LO - 0x100)).unwrap();
            assert_eq!(after, low, "{what}: the reserved page is not written");
        }
        d
    });
    assert_bounded(&lines, "bad ring addresses");
    d.recover();
    second_device_works();
}

/// Bad chains on an `OUT` (write) request: each fails that request only
/// (used length 0, 2.7.8), the image keeps its bytes, the queue goes on.
#[test]
fn hostile_write_chains_leave_the_image_alone() {
    let mut d = Driver::ready(false, V1 | 1 << VIRTIO_RING_F_INDIRECT_DESC);
    let image = d.image();
    let data = BUF + 0x1000;
    let status = BUF + 0x10;
    let table = BUF + 0x2000;
    d.mem.write_slice(&[0xeeu8; 0x1000], GuestAddress(data)).unwrap();
    d.header(BUF, VIRTIO_BLK_T_OUT, 0);
    let (n, w, i) = (VRING_DESC_F_NEXT as u16, VRING_DESC_F_WRITE as u16, VRING_DESC_F_INDIRECT as u16);
    // Writes an indirect table of (addr, len, flags, next) at `table`.
    let put_table = |d: &Driver, at: u64, descs: &[(u64, u32, u16, u16)]| {
        for (k, &(addr, len, flags, next)) in descs.iter().enumerate() {
            let e = GuestAddress(at + 16 * k as u64);
            d.mem.write_obj(addr, e).unwrap();
            d.mem.write_obj(len, e.unchecked_add(8)).unwrap();
            d.mem.write_obj(flags, e.unchecked_add(12)).unwrap();
            d.mem.write_obj(next, e.unchecked_add(14)).unwrap();
        }
    };
    let good = [(BUF, 16, n, 1), (data, 512, n, 2), (status, 1, w, 0)];
    type Case = (&'static str, Vec<(u64, u32, u16, u16)>, Vec<(u64, u32, u16, u16)>);
    let cases: Vec<Case> = vec![
        ("a descriptor looping on itself", vec![(BUF, 16, n, 0)], vec![]),
        ("a loop through the data", vec![(BUF, 16, n, 1), (data, 512, n, 0)], vec![]),
        ("next past the table", vec![(BUF, 16, n, 1), (data, 512, n, 1000)], vec![]),
        ("zero-length data", vec![(BUF, 16, n, 1), (data, 0, n, 2), (status, 1, w, 0)], vec![]),
        ("u32::MAX-length data", vec![(BUF, 16, n, 1), (data, u32::MAX, n, 2), (status, 1, w, 0)], vec![]),
        (
            "two halves of 4 GiB",
            vec![(BUF, 16, n, 1), (data, 0x8000_0000, n, 2), (data, 0x8000_0000, n, 3), (status, 1, w, 0)],
            vec![],
        ),
        (
            "data across the reserved boundary",
            vec![(BUF, 16, n, 1), (USABLE_LO - 8, 512, n, 2), (status, 1, w, 0)],
            vec![],
        ),
        ("indirect table of zero length", vec![(table, 0, i, 0)], good.to_vec()),
        ("indirect table length not a multiple of 16", vec![(table, 40, i, 0)], good.to_vec()),
        ("indirect table of u32::MAX bytes", vec![(table, 0xffff_fff0, i, 0)], good.to_vec()),
        ("indirect table outside RAM", vec![(MEM - 16, 48, i, 0)], vec![]),
        (
            "indirect within indirect (2.7.5.3.1)",
            vec![(table, 48, i, 0)],
            vec![(BUF, 16, n, 1), (table + 0x100, 48, i | n, 2), (status, 1, w, 0)],
        ),
        (
            "an indirect table looping",
            vec![(table, 48, i, 0)],
            vec![(BUF, 16, n, 1), (data, 512, n, 0), (status, 1, w, 0)],
        ),
        ("an indirect table with next past its end", vec![(table, 32, i, 0)], vec![(BUF, 16, n, 1), (data, 512, n, 2)]),
        (
            "an indirect table longer than the queue",
            vec![(table, 16 * 40, i, 0)],
            (0..40u16).map(|k| (data, 512, n, k + 1)).collect(),
        ),
    ];
    // The nested table `indirect within indirect` points at: a valid write.
    put_table(&d, table + 0x100, &good);
    let ((), lines) = capture(|| {
        for round in 0..50 {
            for (what, main, ind) in &cases {
                put_table(&d, table, ind);
                for (k, &(addr, len, flags, next)) in main.iter().enumerate() {
                    d.put_desc(k as u16, addr, len, flags, next);
                }
                d.mem.write_obj(0x77u8, GuestAddress(status)).unwrap();
                let used = d.submit_raw(0);
                assert!(!d.needs_reset(), "{what}: the queue goes on");
                assert_eq!(used, Some(0), "{what} (round {round}): returned with nothing written");
                assert_eq!(d.mem.read_obj::<u8>(GuestAddress(status)).unwrap(), 0x77, "{what}: no status");
            }
        }
    });
    assert_bounded(&lines, "750 hostile chains");
    assert!(d.image() == image, "image unchanged by refused writes");
    assert_eq!(d.t.counters().bad_chains.get(), 50 * cases.len() as u64);
    d.next_desc = 0;
    d.works();
    second_device_works();
}

/// The available index running backwards or far ahead (2.7.6: at most the
/// queue size of chains can be outstanding), a head outside the queue, and
/// the driver overwriting the used index the device owns (2.7.8).
#[test]
fn index_jumps() {
    let (mut d, lines) = capture(|| {
        let mut d = Driver::ready(false, V1);
        d.works();
        // Backwards: 65535 chains "available".
        d.mem.write_obj(d.avail_idx.wrapping_sub(1), GuestAddress(AVAIL + 2)).unwrap();
        d.kick();
        assert!(d.needs_reset(), "avail index behind the device's");
        d.recover();
        // Exactly a full ring is legal; one more is not.
        d.header(BUF, VIRTIO_BLK_T_FLUSH, 0);
        for k in 0..QSIZE {
            d.put_desc(k, BUF, 16, 0, 0);
            d.publish(k);
        }
        d.kick();
        assert!(!d.needs_reset());
        assert_eq!(d.used_idx(), 2 + QSIZE, "a full ring of (refused, header-only) chains used");
        d.avail_idx = d.avail_idx.wrapping_add(QSIZE + 1);
        d.mem.write_obj(d.avail_idx, GuestAddress(AVAIL + 2)).unwrap();
        d.kick();
        assert!(d.needs_reset(), "more than the queue size outstanding");
        d.recover();
        // The driver scribbles over the used index: the device keeps its own.
        let mine = d.used_idx();
        d.mem.write_obj(0x1234u16, GuestAddress(USED + 2)).unwrap();
        d.header(BUF, VIRTIO_BLK_T_FLUSH, 0);
        d.add_chain(&[(BUF, 16, false), (BUF + 0x10, 1, true)]);
        d.kick();
        assert_eq!(d.used_idx(), mine + 1, "the device writes its own used index");
        assert_eq!(d.used(mine), (u32::from(d.next_desc) - 2, 1));
        d
    });
    assert_bounded(&lines, "index jumps");
    d.recover();
    second_device_works();
}

/// A notification storm with nothing new on the queue: no work, no used
/// buffer notification (2.7.7: the device notifies after using buffers),
/// no log line; notifications of a queue that does not exist are logged
/// within the budget.
#[test]
fn notify_storm_with_nothing_new() {
    let mut d = Driver::ready(false, V1);
    d.works();
    let irqs = d.irq.0.load(Ordering::SeqCst);
    let used = d.used_idx();
    let ((), lines) = capture(|| {
        for _ in 0..100_000 {
            d.kick();
        }
    });
    assert!(lines.is_empty(), "{lines:?}");
    assert_eq!(d.used_idx(), used, "nothing used");
    assert_eq!(d.irq.0.load(Ordering::SeqCst), irqs, "no interrupt without used buffers");
    assert_eq!(d.rd(VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_VRING, VIRTIO_MMIO_INT_VRING, "only the old one");
    let ((), lines) = capture(|| {
        for q in 0..100_000u32 {
            // Queues 0..NUM_QUEUES exist (VIRTIO_BLK_F_MQ); these do not.
            let missing = u32::from(crate::virtio::blk::NUM_QUEUES) + q % 7;
            assert_eq!(d.wr(VIRTIO_MMIO_QUEUE_NOTIFY, missing), Action::None);
        }
    });
    assert_bounded(&lines, "notifications of missing queues");
    d.works();
    second_device_works();
}

/// Configuration-space accesses past the 64 bytes served, at the far end
/// of the address space and straddling the end: writes change nothing
/// (virtio-blk's configuration is read-only but for `writeback`, which is
/// not offered: 5.2.4), reads past the end return zeros.
#[test]
fn config_space_writes_outside_config() {
    let mut d = Driver::ready(false, V1);
    let image = d.image();
    let base = VIRTIO_MMIO_CONFIG as u64;
    let ((), lines) = capture(|| {
        for off in [0, 8, 60, 63, 64, 4096, u64::MAX - base, u64::MAX - base - 3] {
            for len in [1, 2, 4, 8] {
                d.t.write(base.wrapping_add(off), &vec![0xffu8; len]);
                let mut r = vec![0xa5u8; len];
                d.t.read(base.wrapping_add(off), &mut r);
                if off + len as u64 > 64 {
                    assert!(r.iter().all(|&b| b == 0), "read at {off}+{len}: {r:?}");
                }
            }
        }
    });
    assert_bounded(&lines, "config writes");
    let mut cap = [0u8; 8];
    d.t.read(base, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), SECTORS, "capacity unchanged");
    assert_eq!(d.rd(VIRTIO_MMIO_STATUS), RW | VIRTIO_CONFIG_S_DRIVER_OK);
    d.works();
    assert!(d.image() == image);
    second_device_works();
}

/// Reset with a request published but not yet notified, in every state,
/// and with the rings moved: the stale request is never run, the device
/// serves again after re-initialisation (2.1.2, 3.1.1; 4.2.3.1: reading
/// Status 0 back means the reset is done).
#[test]
fn recovery_after_reset() {
    let mut d = Driver::ready(false, V1);
    let image = d.image();
    let ((), lines) = capture(|| {
        for round in 0..200u32 {
            // A write request published, then a reset before the notify.
            d.header(BUF, VIRTIO_BLK_T_OUT, 1);
            d.mem.write_slice(&[0xeeu8; 512], GuestAddress(BUF + 0x1000)).unwrap();
            d.add_chain(&[(BUF, 16, false), (BUF + 0x1000, 512, false), (BUF + 0x10, 1, true)]);
            d.wr(VIRTIO_MMIO_STATUS, 0);
            assert_eq!(d.wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0), Action::Notify(0));
            assert!(!d.t.process_queue(0), "a notify in reset is dropped");
            assert!(!d.needs_reset());
            // Half-initialised, then reset again.
            if round % 2 == 0 {
                assert!(d.negotiate(V1));
                d.wr(VIRTIO_MMIO_STATUS, 0);
            }
            d.recover();
        }
    });
    assert_bounded(&lines, "200 resets");
    assert!(d.image() == image, "no stale write reached the image");
    second_device_works();
}

/// Read requests whose data buffers are the queue's own descriptor table
/// and rings: the disk's bytes land on them (the guest asked for it; the
/// rings are its memory). Whatever the garbage then says, the device
/// refuses it or needs a reset, never panics, hangs or floods the log.
#[test]
fn reads_over_the_queues_own_rings() {
    let mut d = Driver::ready(false, V1);
    // Sector 1..: descriptors that loop, point outside RAM and at the
    // reserved pages, with INDIRECT and NEXT mixed, and a far avail index.
    let mut nasty = vec![0u8; 0x3000];
    for (k, e) in nasty.chunks_exact_mut(16).enumerate() {
        let addr: u64 = [MEM - 8, 0x1000, u64::MAX - 3, BUF][k % 4];
        e[0..8].copy_from_slice(&addr.to_le_bytes());
        e[8..12].copy_from_slice(&[0xffu32, 0, 16, 48][k % 4].to_le_bytes());
        e[12..14].copy_from_slice(&[1u16, 5, 7, 3][k % 4].to_le_bytes());
        e[14..16].copy_from_slice(&((k as u16 + 1) % QSIZE).to_le_bytes());
    }
    d.mem.write_slice(&nasty, GuestAddress(BUF + 0x4000)).unwrap();
    d.header(BUF, VIRTIO_BLK_T_OUT, 8);
    d.add_chain(&[(BUF, 16, false), (BUF + 0x4000, 0x3000, false), (BUF + 0x10, 1, true)]);
    d.kick();
    assert_eq!(d.mem.read_obj::<u8>(GuestAddress(BUF + 0x10)).unwrap() as u32, OK);
    let ((), lines) = capture(|| {
        for round in 0..100 {
            // The descriptor table, then all three areas, from the disk.
            let len = if round % 2 == 0 { 0x1000 } else { 0x3000 };
            d.header(BUF, VIRTIO_BLK_T_IN, 8);
            d.add_chain(&[(BUF, 16, false), (DESC, len, true), (BUF + 0x10, 1, true)]);
            d.kick();
            for _ in 0..10 {
                d.kick();
            }
            if d.needs_reset() || round % 10 == 9 {
                d.recover();
            }
        }
    });
    assert_bounded(&lines, "100 reads over the rings");
    d.recover();
    second_device_works();
}

/// Writes and discards at sectors past the end, wrapping `u64`, or whose
/// byte offset overflows: `VIRTIO_BLK_S_IOERR` (5.2.6.1: the device MUST
/// NOT process a request past the capacity), nothing written.
#[test]
fn boundary_sectors_are_refused_and_the_image_is_intact() {
    let mut d = Driver::ready(false, V1);
    let image = d.image();
    d.mem.write_slice(&[0xeeu8; 1024], GuestAddress(BUF + 0x1000)).unwrap();
    let ((), lines) = capture(|| {
        for sector in [SECTORS, SECTORS - 1, u64::MAX, u64::MAX - 1, u64::MAX / 512 + 1, 1 << 63] {
            assert_eq!(d.request(VIRTIO_BLK_T_OUT, sector, 1024, false).0 as u32, VIRTIO_BLK_S_IOERR, "{sector}");
            assert_eq!(d.request(VIRTIO_BLK_T_IN, sector, 1024, true).0 as u32, VIRTIO_BLK_S_IOERR, "{sector}");
            d.mem.write_obj(sector, GuestAddress(BUF + 0x1000)).unwrap();
            d.mem.write_obj(2u32, GuestAddress(BUF + 0x1008)).unwrap();
            d.mem.write_obj(0u32, GuestAddress(BUF + 0x100c)).unwrap();
            assert_eq!(d.request(VIRTIO_BLK_T_DISCARD, 0, 16, false).0 as u32, VIRTIO_BLK_S_IOERR, "{sector}");
            d.mem.write_slice(&[0xeeu8; 16], GuestAddress(BUF + 0x1000)).unwrap();
        }
    });
    assert_bounded(&lines, "boundary sectors");
    assert!(d.image() == image, "image unchanged");
    d.works();
    second_device_works();
}
