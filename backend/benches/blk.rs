//! blkback throughput through the host-side harness against raw
//! `pread`/`pwrite` on the same file, in the same run: 4 KiB random reads
//! and writes, 32 requests in flight (raw I/O cycles through 32 page
//! buffers, as the harness's requests use 32 data pages). Also prints requests per
//! notification (both directions) with the back end on its own thread.
//!
//! `cargo bench -p backend --bench blk`
#![allow(missing_docs)] // criterion's macros generate undocumented items

use backend::block::harness::{Harness, Threaded};
use backend::block::{Disk, DiskSpec};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pv_abi::blkif::*;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DISK_BYTES: u64 = 64 << 20;
const BLOCKS: u64 = DISK_BYTES / 4096;
const DEPTH: u32 = 32;
/// Guest-physical address of the harness's first data page.
const DATA_PAGE0: u64 = backend::block::harness::RING + 9 * 4096;

struct Rng(u64);
impl Rng {
    fn block(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % BLOCKS
    }
}

fn disk(dir: &tempfile::TempDir) -> Arc<Disk> {
    let path = dir.path().join("bench.img");
    // Real data (not a sparse file) so reads copy bytes from the page cache.
    std::fs::write(&path, vec![0x5au8; DISK_BYTES as usize]).unwrap();
    Arc::new(Disk::open(&DiskSpec::new(path, false)).unwrap())
}

fn request(op: u8, id: u64, slot: u32, block: u64) -> BlkifRequest {
    let mut r = BlkifRequest { operation: op, nr_segments: 1, id, sector_number: block * 8, ..Default::default() };
    // Data page `slot` has grant reference 16 + slot in the harness.
    r.seg[0] = BlkifRequestSegment { gref: 16 + slot, first_sect: 0, last_sect: 7, _pad: 0 };
    r
}

/// Raw I/O into (or out of) `DEPTH` page buffers in turn, as the harness
/// uses `DEPTH` data pages: both copy into the same amount of memory.
fn raw(d: &Disk, op: u8, n: u64, rng: &mut Rng, bufs: &mut [u8]) {
    for i in 0..n as usize {
        let off = rng.block() * 4096;
        let slot = i % DEPTH as usize;
        let buf = &mut bufs[slot * 4096..(slot + 1) * 4096];
        if op == BLKIF_OP_READ {
            d.file().read_exact_at(buf, off).unwrap();
        } else {
            d.file().write_all_at(buf, off).unwrap();
        }
    }
}

/// Raw I/O straight into (or out of) the harness's own data pages: the
/// same file, the same destination memory, no ring and no grants.
fn raw_guest(d: &Disk, mem: &vm_memory::GuestMemoryMmap, op: u8, n: u64, rng: &mut Rng) {
    use vm_memory::GuestMemoryBackend;
    for i in 0..n {
        let block = rng.block();
        let page = DATA_PAGE0 + (i % u64::from(DEPTH)) * 4096;
        let s = mem.get_slice(vm_memory::GuestAddress(page), 4096).unwrap();
        if op == BLKIF_OP_READ {
            d.read_vectored(block * 8, &[s]).unwrap();
        } else {
            d.write_vectored(block * 8, &[s]).unwrap();
        }
    }
}

fn inline(h: &mut Harness, op: u8, n: u64, rng: &mut Rng) {
    let mut done = 0;
    while done < n {
        let batch = (n - done).min(u64::from(DEPTH));
        for slot in 0..batch as u32 {
            h.front.push(&request(op, u64::from(slot), slot, rng.block())).unwrap();
        }
        h.kick();
        let got = h.front.responses().unwrap();
        assert!(got.len() as u64 == batch && got.iter().all(|r| r.status == BLKIF_RSP_OKAY));
        done += batch;
    }
}

fn threaded(t: &mut Threaded, op: u8, n: u64, rng: &mut Rng) {
    let failed = t.run(n, DEPTH, |id, slot| request(op, id, slot, rng.block()));
    assert_eq!(failed, 0);
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let d = disk(&dir);
    let mut h = Harness::new(d.clone(), DEPTH).unwrap();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut buf = vec![0u8; 4096 * DEPTH as usize];
    for (name, op) in [("randread 4k", BLKIF_OP_READ), ("randwrite 4k", BLKIF_OP_WRITE)] {
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(u64::from(DEPTH)));
        g.bench_function("raw pread/pwrite", |b| b.iter(|| raw(&d, op, u64::from(DEPTH), &mut rng, &mut buf)));
        g.bench_function("raw into guest pages", |b| {
            b.iter(|| raw_guest(&d, h.front.memory(), op, u64::from(DEPTH), &mut rng))
        });
        g.bench_function("blkback (harness, inline)", |b| b.iter(|| inline(&mut h, op, u64::from(DEPTH), &mut rng)));
        g.finish();
    }

    // Only under `cargo bench` (not the one-pass run of `cargo test
    // --all-targets`), and not when profiling one function.
    // What one grant map + unmap costs (blkback does one per segment).
    let grants = h.front.grants().clone();
    c.bench_function("grant map+unmap", |b| b.iter(|| drop(grants.map(16, true).unwrap())));

    if std::env::var_os("BLK_BENCH_NO_SUMMARY").is_some() || !std::env::args().any(|a| a == "--bench") {
        return;
    }
    grant_contention(&grants);
    // The ratio, measured interleaved in one run (median of 7).
    println!("\nsummary (4 KiB random, {DEPTH} in flight, median of 7 interleaved runs of 20000 requests):");
    println!(
        "{:<10} {:>10} {:>22} {:>14} {:>8} {:>8}",
        "op", "raw IOPS", "raw into guest pages", "blkback IOPS", "ratio", "ratio2"
    );
    for (name, op) in [("randread", BLKIF_OP_READ), ("randwrite", BLKIF_OP_WRITE)] {
        let n = 20_000;
        let (mut r, mut g, mut b) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..7 {
            let t = Instant::now();
            raw(&d, op, n, &mut rng, &mut buf);
            r.push(t.elapsed());
            let t = Instant::now();
            raw_guest(&d, h.front.memory(), op, n, &mut rng);
            g.push(t.elapsed());
            let t = Instant::now();
            inline(&mut h, op, n, &mut rng);
            b.push(t.elapsed());
        }
        let med = |v: &mut Vec<Duration>| {
            v.sort();
            n as f64 / v[v.len() / 2].as_secs_f64()
        };
        let (ri, gi, bi) = (med(&mut r), med(&mut g), med(&mut b));
        println!("{name:<10} {ri:>10.0} {gi:>22.0} {bi:>14.0} {:>7.1}% {:>7.1}%", 100.0 * bi / ri, 100.0 * bi / gi);
    }

    // Notifications under load: back end on its own thread.
    let h = Harness::new(d.clone(), DEPTH).unwrap();
    let mut t = h.into_threaded().unwrap();
    for (name, op) in [("randread", BLKIF_OP_READ), ("randwrite", BLKIF_OP_WRITE)] {
        let (f0, b0, r0) = (t.front.notifies, t.back_notifies(), t.front.requests);
        let n = 50_000;
        let start = Instant::now();
        threaded(&mut t, op, n, &mut rng);
        let el = start.elapsed();
        let reqs = (t.front.requests - r0) as f64;
        println!(
            "threaded {name}: {:.0} IOPS, {:.1} requests per front->back notification, {:.1} responses per back->front notification",
            n as f64 / el.as_secs_f64(),
            reqs / (t.front.notifies - f0).max(1) as f64,
            reqs / (t.back_notifies() - b0).max(1) as f64,
        );
    }
    drop(t.stop());
    queues_summary(&d);
}

/// Multi-queue: 1 queue on 1 thread against 2 queues on 2 threads, each
/// thread running its queue's front and back end in turn (the inline
/// harness: the cost per request without cross-thread wake-ups), same
/// disk, interleaved in one run (median of 5 runs of 20000 requests per
/// queue). On a 2-core host this is the most 2 queues can gain.
fn queues_summary(d: &Arc<Disk>) {
    println!("\nqueues (4 KiB random, {DEPTH} in flight per queue, one thread per queue):");
    println!("{:<10} {:>14} {:>14} {:>8}", "op", "1 queue IOPS", "2 queues IOPS", "ratio");
    for (name, op) in [("randread", BLKIF_OP_READ), ("randwrite", BLKIF_OP_WRITE)] {
        let n = 20_000u64;
        let mut fronts: Vec<Harness> = (0..2).map(|_| Harness::new(d.clone(), DEPTH).unwrap()).collect();
        let (mut one, mut two) = (Vec::new(), Vec::new());
        for rep in 0..5u64 {
            for (queues, out) in [(1usize, &mut one), (2, &mut two)] {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for (q, t) in fronts.iter_mut().take(queues).enumerate() {
                        s.spawn(move || inline(t, op, n, &mut Rng(0x9e37_79b9 + 7 * rep + q as u64)));
                    }
                });
                out.push(n as f64 * queues as f64 / start.elapsed().as_secs_f64());
            }
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (a, b) = (med(&mut one), med(&mut two));
        println!("{name:<10} {a:>14.0} {b:>14.0} {:>7.2}x", b / a);
    }
}

/// Grant map+unmap pairs on 1 and on 2 threads at once, each thread on
/// its own reference (as two queues on two threads use their own
/// grants, 24 apart so no cache line is shared): with no table-wide lock the two threads do not wait for each
/// other (median of 7 runs of 200000 pairs per thread).
fn grant_contention(grants: &Arc<xen_domain::grant_table::GrantTable>) {
    const PAIRS: u32 = 200_000;
    let run = |threads: u32| {
        let mut v: Vec<Duration> = (0..7)
            .map(|_| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for t in 0..threads {
                        s.spawn(move || {
                            for _ in 0..PAIRS {
                                // References 24 apart: their grant entries and
                                // in-use words lie on different cache lines.
                                drop(grants.map_scoped(16 + 24 * t, true).unwrap());
                            }
                        });
                    }
                });
                start.elapsed()
            })
            .collect();
        v.sort();
        v[3].as_nanos() as f64 / f64::from(PAIRS)
    };
    let (one, two) = (run(1), run(2));
    println!("grant map+unmap: {one:.1} ns per pair on 1 thread, {two:.1} ns per pair per thread on 2 threads at once");
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
