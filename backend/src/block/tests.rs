//! blkback driven by the host-side harness over a real ring in real memory.

use super::harness::{Harness, HostFront};
use super::*;
use crate::serve::RingService as _;
use crate::xenbus::{FrontendKeys, SplitBackend};
use crate::Notify;
use pv_abi::blkif::*;
use pv_util::ratelimit::{LogLimiter, SharedLogLimiter};
use std::collections::HashMap;
use std::sync::Arc;

const DISK_SECTORS: u64 = 8192; // 4 MiB

struct Img {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

fn image(fill: u8) -> Img {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    std::fs::write(&path, vec![fill; (DISK_SECTORS * SECTOR_SIZE) as usize]).unwrap();
    Img { _dir: dir, path }
}

fn open(img: &Img, readonly: bool) -> Arc<Disk> {
    Arc::new(Disk::open(&DiskSpec::new(img.path.clone(), readonly)).unwrap())
}

fn harness(img: &Img, readonly: bool) -> Harness {
    Harness::new(open(img, readonly), 300).unwrap()
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn file_bytes(img: &Img, sector: u64, nr: u64) -> Vec<u8> {
    let all = std::fs::read(&img.path).unwrap();
    all[(sector * SECTOR_SIZE) as usize..((sector + nr) * SECTOR_SIZE) as usize].to_vec()
}

#[test]
fn write_then_read_many_offsets_and_lengths() {
    let img = image(0);
    let mut h = harness(&img, false);
    // One sector up to well past 11 segments (indirect), at varied disk
    // offsets and starting sectors within the first page.
    let lengths = [1u64, 2, 7, 8, 9, 15, 16, 63, 88, 89, 100, 256, 511, 1024];
    let mut sector = 3;
    for (i, &nr) in lengths.iter().enumerate() {
        let first = (i % 8) as u8;
        let data = pattern(i as u64 + 1, (nr * SECTOR_SIZE) as usize);
        assert_eq!(h.write(sector, &data, first), Some(BLKIF_RSP_OKAY), "write {nr} sectors at {sector}");
        let back = h.read(sector, nr, (7 - i % 8) as u8).unwrap_or_else(|e| panic!("read {nr} at {sector}: {e:?}"));
        assert!(back == data, "read back {nr} sectors at {sector}");
        assert!(file_bytes(&img, sector, nr) == data, "image bytes {nr} sectors at {sector}");
        sector += nr + 5;
    }
    assert_eq!(h.metrics().errors.get(), 0);
    assert_eq!(h.front.grants().mapped_refs(), 1, "only the ring stays mapped");
    assert!(h.metrics().sectors_written.get() >= 1024, "indirect requests were served");
}

#[test]
fn flush_makes_writes_durable_and_answers_after() {
    let img = image(0);
    let mut h = harness(&img, false);
    let data = pattern(7, 4096);
    assert_eq!(h.write(100, &data, 0), Some(BLKIF_RSP_OKAY));
    assert_eq!(h.flush(), Some(BLKIF_RSP_OKAY));
    assert_eq!(h.metrics().flushes.get(), 1);
    // A flush carrying data writes it, then flushes.
    let data2 = pattern(8, 1024);
    h.front.write_page(0, 0, &data2);
    let mut req = h.front.io_request(BLKIF_OP_WRITE, 99, 200, 2, 0, 0);
    req.operation = BLKIF_OP_FLUSH_DISKCACHE;
    assert_eq!(h.one(req), Some(BLKIF_RSP_OKAY));
    assert_eq!(h.metrics().flushes.get(), 2);
    drop(h);
    assert!(file_bytes(&img, 100, 8) == data);
    assert!(file_bytes(&img, 200, 2) == data2);
}

#[test]
fn discarded_ranges_read_back_as_zeros() {
    let img = image(0x5a);
    let mut h = harness(&img, false);
    assert_eq!(h.discard(10, 100), Some(BLKIF_RSP_OKAY));
    assert_eq!(h.discard(4000, 1), Some(BLKIF_RSP_OKAY));
    assert!(h.read(10, 100, 0).unwrap().iter().all(|&b| b == 0));
    assert!(h.read(4000, 1, 3).unwrap().iter().all(|&b| b == 0));
    assert!(h.read(9, 1, 0).unwrap().iter().all(|&b| b == 0x5a), "before the range");
    assert!(h.read(110, 1, 0).unwrap().iter().all(|&b| b == 0x5a), "after the range");
    assert!(file_bytes(&img, 10, 100).iter().all(|&b| b == 0));
    assert_eq!(h.discard(DISK_SECTORS - 1, 2), Some(BLKIF_RSP_ERROR), "past the end");
    let secure = BlkifRequestDiscard {
        operation: BLKIF_OP_DISCARD,
        flag: BLKIF_DISCARD_SECURE,
        id: 5,
        sector_number: 0,
        nr_sectors: 1,
        ..Default::default()
    };
    assert_eq!(h.one(BlkifRequest::from_discard(&secure)), Some(BLKIF_RSP_EOPNOTSUPP));
}

#[test]
fn requests_are_batched_with_notify_avoidance() {
    let img = image(0);
    let mut h = harness(&img, false);
    let reqs: Vec<_> = (0..BLKIF_RING_SIZE)
        .map(|i| h.front.io_request(BLKIF_OP_READ, u64::from(i), u64::from(i) * 8, 8, i, 0))
        .collect();
    let rsps = h.submit(&reqs);
    assert_eq!(rsps.len(), 32);
    assert!(rsps.iter().enumerate().all(|(i, r)| r.id == i as u64 && r.status == BLKIF_RSP_OKAY));
    assert_eq!(h.front.notifies, 1, "one notification for 32 requests");
    assert_eq!(h.back_notifies(), 1, "one notification for 32 responses");
    assert_eq!(h.metrics().batches.get(), 1);
}

#[test]
fn many_in_flight_on_a_thread() {
    let img = image(0);
    let h = harness(&img, false);
    let mut t = h.into_threaded().unwrap();
    let pages = t.front.pages();
    let failed = t.run(2000, 32, |id, slot| {
        let sector = (id >> 8) * 8 % DISK_SECTORS;
        let op = if id & 0x100 != 0 { BLKIF_OP_WRITE } else { BLKIF_OP_READ };
        let mut r = BlkifRequest { operation: op, nr_segments: 1, id, sector_number: sector, ..Default::default() };
        r.seg[0] = BlkifRequestSegment { gref: 16 + slot % pages, first_sect: 0, last_sect: 7, _pad: 0 };
        r
    });
    assert_eq!(failed, 0);
    let notifies = t.front.notifies;
    let back = t.stop();
    assert_eq!(back.metrics().requests.get(), 2000);
    assert!(notifies <= 2000 && back.metrics().notifies.get() <= 2000);
}

#[test]
fn hostile_requests_get_error_responses() {
    let img = image(0x11);
    let mut h = harness(&img, false);
    let f = &h.front;
    let seg = |gref, first, last| BlkifRequestSegment { gref, first_sect: first, last_sect: last, _pad: 0 };
    let mut cases: Vec<(&str, BlkifRequest, i16)> = Vec::new();
    let mut r = f.request(BLKIF_OP_WRITE, 1, 0, &[(0, 0, 7)]);
    r.seg[0].gref = 5000;
    cases.push(("grant ref beyond the table", r, BLKIF_RSP_ERROR));
    r.seg[0].gref = 1500;
    cases.push(("grant ref never granted", r, BLKIF_RSP_ERROR));
    cases.push(("sectors out of order", f.request(BLKIF_OP_READ, 2, 0, &[(0, 5, 3)]), BLKIF_RSP_ERROR));
    cases.push(("last sector past 7", f.request(BLKIF_OP_READ, 3, 0, &[(0, 0, 8)]), BLKIF_RSP_ERROR));
    cases.push(("first sector past 7", f.request(BLKIF_OP_READ, 4, 0, &[(0, 9, 9)]), BLKIF_RSP_ERROR));
    let mut r = f.request(BLKIF_OP_READ, 5, 0, &[(0, 0, 7); 11]);
    r.nr_segments = 12;
    cases.push(("12 segments without indirect", r, BLKIF_RSP_ERROR));
    r.nr_segments = 255;
    cases.push(("255 segments without indirect", r, BLKIF_RSP_ERROR));
    cases.push(("no segments", f.request(BLKIF_OP_WRITE, 6, 0, &[]), BLKIF_RSP_ERROR));
    cases.push(("sector beyond the end", f.request(BLKIF_OP_READ, 7, DISK_SECTORS, &[(0, 0, 0)]), BLKIF_RSP_ERROR));
    cases.push((
        "range crossing the end",
        f.request(BLKIF_OP_READ, 8, DISK_SECTORS - 4, &[(0, 0, 7)]),
        BLKIF_RSP_ERROR,
    ));
    cases.push(("sector overflow", f.request(BLKIF_OP_WRITE, 9, u64::MAX - 2, &[(0, 0, 7)]), BLKIF_RSP_ERROR));
    for (i, op) in [BLKIF_OP_WRITE_BARRIER, BLKIF_OP_RESERVED_1, 7, 200].into_iter().enumerate() {
        cases.push(("unsupported op", f.request(op, 10 + i as u64, 0, &[(0, 0, 7)]), BLKIF_RSP_EOPNOTSUPP));
    }
    let mut ind =
        BlkifRequestIndirect { operation: BLKIF_OP_INDIRECT, indirect_op: BLKIF_OP_READ, id: 20, ..Default::default() };
    cases.push(("indirect with no segments", BlkifRequest::from_indirect(&ind), BLKIF_RSP_ERROR));
    ind.nr_segments = MAX_INDIRECT_SEGMENTS as u16 + 1;
    ind.id = 21;
    cases.push(("indirect over the limit", BlkifRequest::from_indirect(&ind), BLKIF_RSP_ERROR));
    ind.nr_segments = 20;
    ind.indirect_grefs[0] = 1999;
    ind.id = 22;
    cases.push(("indirect page not granted", BlkifRequest::from_indirect(&ind), BLKIF_RSP_ERROR));
    ind.indirect_op = BLKIF_OP_FLUSH_DISKCACHE;
    ind.indirect_grefs[0] = f.indirect_gref(0);
    ind.id = 23;
    cases.push(("indirect flush", BlkifRequest::from_indirect(&ind), BLKIF_RSP_ERROR));
    // An indirect request whose descriptors are bad.
    let mut bad = vec![seg(f.page_gref(0), 0, 7); 20];
    bad[13] = seg(f.page_gref(13), 6, 2);
    f.write_indirect(1, &bad);
    let ind2 = BlkifRequestIndirect {
        operation: BLKIF_OP_INDIRECT,
        indirect_op: BLKIF_OP_READ,
        nr_segments: 20,
        id: 24,
        indirect_grefs: [f.indirect_gref(1), 0, 0, 0, 0, 0, 0, 0],
        ..Default::default()
    };
    cases.push(("indirect with a bad segment", BlkifRequest::from_indirect(&ind2), BLKIF_RSP_ERROR));

    for (what, req, want) in cases {
        assert_eq!(h.one(req), Some(want), "{what}");
    }
    assert_eq!(h.front.grants().mapped_refs(), 1, "refused requests leave nothing mapped");
    assert!(!h.back.is_broken());
    assert!(file_bytes(&img, 0, DISK_SECTORS).iter().all(|&b| b == 0x11), "nothing was written");
    // Still serving.
    assert_eq!(h.write(0, &[1; 512], 0), Some(BLKIF_RSP_OKAY));
}

#[test]
fn read_into_a_readonly_grant_is_refused_and_writes_nothing_partial() {
    let img = image(0x22);
    let mut h = harness(&img, false);
    h.front.set_page_readonly(1, true);
    let r = h.front.io_request(BLKIF_OP_READ, 1, 0, 16, 0, 0);
    assert_eq!(h.one(r), Some(BLKIF_RSP_ERROR), "reading into a read-only grant");
    // A write whose third page is not granted: nothing reaches the disk.
    h.front.write_page(0, 0, &[0xee; 4096]);
    h.front.write_page(1, 0, &[0xee; 4096]);
    let mut w = h.front.io_request(BLKIF_OP_WRITE, 2, 0, 24, 0, 0);
    w.seg[2].gref = 1900;
    assert_eq!(h.one(w), Some(BLKIF_RSP_ERROR));
    assert!(file_bytes(&img, 0, 24).iter().all(|&b| b == 0x22));
    // Writing from a read-only grant is fine.
    let w = h.front.io_request(BLKIF_OP_WRITE, 3, 0, 8, 1, 0);
    assert_eq!(h.one(w), Some(BLKIF_RSP_OKAY));
}

#[test]
fn readonly_disk_refuses_writes_and_discards() {
    let img = image(0x33);
    let mut h = harness(&img, true);
    assert_eq!(h.write(0, &[1; 512], 0), Some(BLKIF_RSP_ERROR));
    assert_eq!(h.discard(0, 8), Some(BLKIF_RSP_ERROR));
    let mut fw = h.front.io_request(BLKIF_OP_WRITE, 9, 0, 1, 0, 0);
    fw.operation = BLKIF_OP_FLUSH_DISKCACHE;
    assert_eq!(h.one(fw), Some(BLKIF_RSP_ERROR), "flush carrying data");
    assert_eq!(h.flush(), Some(BLKIF_RSP_OKAY), "a bare flush is harmless");
    assert!(h.read(0, 200, 0).unwrap().iter().all(|&b| b == 0x33));
    assert!(file_bytes(&img, 0, DISK_SECTORS).iter().all(|&b| b == 0x33));
}

#[test]
fn duplicate_ids_in_flight_are_refused() {
    let img = image(0);
    let mut h = harness(&img, false);
    let a = h.front.io_request(BLKIF_OP_READ, 7, 0, 8, 0, 0);
    let b = h.front.io_request(BLKIF_OP_READ, 7, 8, 8, 1, 0);
    let c = h.front.io_request(BLKIF_OP_READ, 8, 16, 8, 2, 0);
    let rsps = h.submit(&[a, b, c]);
    let st: Vec<_> = rsps.iter().map(|r| (r.id, r.status)).collect();
    assert_eq!(st, [(7, BLKIF_RSP_OKAY), (7, BLKIF_RSP_ERROR), (8, BLKIF_RSP_OKAY)]);
    // Once answered, an id may be used again.
    assert_eq!(h.one(a), Some(BLKIF_RSP_OKAY));
}

#[test]
fn corrupt_ring_stops_only_this_disk() {
    let img = image(0);
    let img2 = image(0);
    let mut h2 = harness(&img2, false);
    for bad in [u32::MAX / 2, 1000, 34, u32::MAX] {
        let mut h = harness(&img, false);
        assert_eq!(h.write(0, &[1; 512], 0), Some(BLKIF_RSP_OKAY));
        h.front.corrupt_req_prod(bad);
        assert_eq!(h.back.process(), 0);
        assert!(h.back.is_broken(), "req_prod {bad}");
        assert_eq!(h.back.process(), 0, "stays stopped");
    }
    assert_eq!(h2.write(0, &[2; 512], 0), Some(BLKIF_RSP_OKAY), "the other disk keeps working");
    assert_eq!(h2.read(0, 1, 0).unwrap(), vec![2; 512]);
}

#[test]
fn random_requests_never_panic() {
    // Fuzz-style: random requests are answered, one response each.
    let img = image(0);
    let mut h = harness(&img, false);
    let mut answered = 0;
    for round in 0..200u64 {
        let raw = pattern(round, 112 * 4);
        let mut reqs = Vec::new();
        for (i, c) in raw.chunks_exact(112).enumerate() {
            let mut r = BlkifRequest {
                operation: c[0] % 8,
                nr_segments: c[1] % 14,
                id: round * 16 + i as u64,
                sector_number: u64::from_le_bytes(c[16..24].try_into().unwrap()) % (DISK_SECTORS + 16),
                ..Default::default()
            };
            for (s, b) in r.seg.iter_mut().zip(c[24..].chunks_exact(8)) {
                s.gref = u32::from(b[0]) + u32::from(b[1] & 1) * 300;
                s.first_sect = b[4] % 10;
                s.last_sect = b[5] % 10;
            }
            if r.operation == BLKIF_OP_INDIRECT {
                let mut ind = r.as_indirect();
                ind.indirect_grefs[0] = 8 + u32::from(c[40] % 3);
                r = BlkifRequest::from_indirect(&ind);
            }
            reqs.push(r);
        }
        answered += h.submit(&reqs).len();
    }
    assert_eq!(answered, 800);
    assert!(!h.back.is_broken());
    assert_eq!(h.front.grants().mapped_refs(), 1);
}

struct Keys(HashMap<&'static str, &'static str>);
impl FrontendKeys for Keys {
    fn read(&self, key: &str) -> Option<String> {
        self.0.get(key).map(|s| s.to_string())
    }
}

struct NoNotify;
impl Notify for NoNotify {
    fn notify(&self) {}
}

#[test]
fn split_backend_publishes_blkif_keys_and_connects() {
    let img = image(0);
    let mut b = BlockBackend::new(Disk::open(&DiskSpec::new(img.path.clone(), true)).unwrap());
    assert_eq!(b.device_type(), "vbd");
    let keys: HashMap<_, _> = b.features().into_iter().collect();
    assert_eq!(keys["sectors"], DISK_SECTORS.to_string());
    assert_eq!(keys["sector-size"], "512");
    assert_eq!(keys["info"], VDISK_READONLY.to_string());
    assert_eq!(keys["feature-flush-cache"], "1");
    assert_eq!(keys["feature-discard"], "1");
    assert_eq!(keys["feature-max-indirect-segments"], "256");
    assert_eq!(keys["max-ring-page-order"], "4");
    assert_eq!(keys["multi-queue-max-queues"], "4");

    let front = HostFront::new(4).unwrap();
    let grants = front.grants().clone();
    let notify: Arc<dyn Notify> = Arc::new(NoNotify);
    let log = SharedLogLimiter::default();
    let bad = Keys(HashMap::from([("ring-ref", "1"), ("ring-page-order", "5")]));
    assert!(b.connect(&bad, &grants, notify.clone(), &log).unwrap_err().to_string().contains("ring-page-order"));
    let bad = Keys(HashMap::from([("ring-ref", "1"), ("protocol", "arm-abi")]));
    assert!(b.connect(&bad, &grants, notify.clone(), &log).unwrap_err().to_string().contains("protocol"));
    let bad = Keys(HashMap::from([("ring-ref", "1999")]));
    assert!(b.connect(&bad, &grants, notify.clone(), &log).unwrap_err().to_string().contains("ring-ref"));
    let good = Keys(HashMap::from([("ring-ref", "1"), ("protocol", "x86_64-abi")]));
    b.connect(&good, &grants, notify, &log).unwrap();
    b.process();
    assert_eq!(b.metrics().kicks.get(), 1);
    b.disconnect();
    assert_eq!(grants.mapped_refs(), 0);
}

#[test]
fn a_budget_bounds_the_work_per_wake_up() {
    // A front end that keeps the ring full cannot hold the device thread:
    // after `budget` requests the back end yields and says work is left.
    let img = image(0);
    let mut h = harness(&img, false);
    for i in 0..10 {
        let req = h.front.io_request(BLKIF_OP_READ, 100 + i, i, 1, 0, 0);
        h.front.push(&req).unwrap();
    }
    h.front.publish();
    assert_eq!(h.back.process_budget(4), (4, true));
    assert_eq!(h.front.responses().unwrap().len(), 4, "the first batch is answered before yielding");
    assert_eq!(h.back.process_budget(100), (6, false));
    assert_eq!(h.front.responses().unwrap().len(), 6);
}

/// A sparse image of `sectors` sectors (no data written: cheap however large).
fn sparse(sectors: u64) -> Img {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.img");
    std::fs::File::create(&path).unwrap().set_len(sectors * SECTOR_SIZE).unwrap();
    Img { _dir: dir, path }
}

#[test]
fn a_discard_is_capped_per_request_and_weighs_on_the_budget() {
    let img = sparse(4 * MAX_DISCARD_SECTORS);
    let mut h = harness(&img, false);
    assert_eq!(h.discard(0, MAX_DISCARD_SECTORS + 1), Some(BLKIF_RSP_ERROR), "over the cap");
    assert_eq!(h.discard(0, MAX_DISCARD_SECTORS), Some(BLKIF_RSP_OKAY), "at the cap");
    assert_eq!(h.metrics().discards.get(), 1);
    // Four discards at the cap each cost far more than a read: a budget of
    // 100 units answers two of them, then yields with work left.
    for i in 0..4 {
        let d = BlkifRequestDiscard {
            operation: BLKIF_OP_DISCARD,
            id: 50 + i,
            sector_number: i * MAX_DISCARD_SECTORS,
            nr_sectors: MAX_DISCARD_SECTORS,
            ..Default::default()
        };
        h.front.push(&BlkifRequest::from_discard(&d)).unwrap();
    }
    h.front.publish();
    assert_eq!(h.back.process_budget(100), (2, true));
    assert_eq!(h.back.process_budget(1000), (2, false));
    assert_eq!(h.front.responses().unwrap().iter().filter(|r| r.status == BLKIF_RSP_OKAY).count(), 4);
}

/// Counts `WARN` events (a minimal `tracing` subscriber).
struct CountWarns(Arc<std::sync::atomic::AtomicUsize>);

impl tracing::Subscriber for CountWarns {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        if *e.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn refused_requests_do_not_flood_the_log() {
    let img = image(0);
    let mut h = harness(&img, false);
    let warns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tracing::subscriber::with_default(CountWarns(warns.clone()), || {
        for i in 0..1000u64 {
            let r = h.front.request(BLKIF_OP_READ, i, DISK_SECTORS, &[(0, 0, 7)]);
            assert_eq!(h.one(r), Some(BLKIF_RSP_ERROR));
        }
    });
    assert_eq!(h.metrics().errors.get(), 1000, "every refusal is still counted");
    let n = warns.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..50).contains(&n), "{n} warnings for 1000 refusals");
}

#[test]
fn reconnecting_does_not_reset_the_log_limit() {
    // A guest that reconnects between bursts of bad requests still gets
    // one device's worth of log lines, not a fresh allowance each time:
    // every connection logs through the device's one budget, as
    // `XenbusDevice` hands it over.
    let log = SharedLogLimiter::default();
    let img = image(0);
    let mut b = BlockBackend::new(Disk::open(&DiskSpec::new(img.path.clone(), false)).unwrap());
    let mut front = HostFront::new(4).unwrap();
    let grants = front.grants().clone();
    let notify: Arc<dyn Notify> = Arc::new(NoNotify);
    let keys = Keys(HashMap::from([("ring-ref", "1")]));
    let warns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tracing::subscriber::with_default(CountWarns(warns.clone()), || {
        let mut id = 0;
        for _ in 0..5 {
            b.connect(&keys, &grants, notify.clone(), &log).unwrap();
            for _ in 0..20 {
                id += 1;
                front.push(&front.request(BLKIF_OP_READ, id, DISK_SECTORS, &[(0, 0, 7)])).unwrap();
                front.publish();
                b.process();
                assert_eq!(front.responses().unwrap()[0].status, BLKIF_RSP_ERROR);
            }
            b.disconnect();
        }
    });
    assert_eq!(b.metrics().errors.get(), 100);
    let n = warns.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=2 * LogLimiter::BURST as usize + 2).contains(&n), "{n} warnings for 100 refusals");
}
