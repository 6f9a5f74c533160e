//! Single-producer single-consumer throughput of 64-byte entries across two
//! threads: the Xen request/response ring (requests one way, 8-byte
//! responses back in the same slots, as the protocol requires) against
//! `rtrb` and crossbeam's `ArrayQueue` moving the same 64-byte entries one
//! way, at equal capacity. Also counts notifications per 1000 requests with
//! a busy consumer that sleeps (after Xen's final check) only when idle.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ring_buffers::{BackRing, FrontRing, Pod, RawMemory};

/// Entries moved per measured iteration.
const BATCH: u64 = 200_000;

/// A 64-byte entry.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(8))]
struct Entry([u64; 8]);
// SAFETY: integers only; any bit pattern is valid.
unsafe impl Pod for Entry {}

fn entry(i: u64) -> Entry {
    Entry([i, i ^ 1, i ^ 2, i ^ 3, i ^ 4, i ^ 5, i ^ 6, i ^ 7])
}

#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Page([u8; 4096]);

/// Shared ring memory of `pages` pages.
struct Region(Box<[Page]>);

impl Region {
    fn new(pages: usize) -> Self {
        Region(vec![Page([0; 4096]); pages].into_boxed_slice())
    }
    fn mem(&mut self) -> RawMemory {
        let len = self.0.len() * 4096;
        // SAFETY: the region outlives every use of the returned memory in
        // `run_xen`, which joins its thread before returning.
        unsafe { RawMemory::new(self.0.as_mut_ptr().cast::<u8>(), len) }.unwrap()
    }
}

/// A notification channel stand-in: a flag the sleeper waits on.
#[derive(Default)]
struct Event {
    pending: AtomicBool,
    sent: AtomicU64,
}

impl Event {
    fn notify(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.pending.store(true, Ordering::Release);
    }
    fn wait(&self) {
        let mut spins = 0u32;
        while !self.pending.swap(false, Ordering::Acquire) {
            spins += 1;
            if spins < 256 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Moves `n` 64-byte requests front -> back and `n` responses back through
/// a ring of `pages` pages. With `sleep`, the back end sleeps on an event
/// when idle (after its final check) and the front end notifies as Xen's
/// rule says; without, both sides poll. Returns the elapsed time and the
/// number of front -> back notifications. `work` adds that many rounds of
/// dummy computation per request in the back end (a busy consumer).
fn run_xen(n: u64, pages: usize, sleep: bool, work: u32) -> (Duration, u64) {
    let mut region = Region::new(pages);
    let mem = region.mem();
    let mut front = FrontRing::<RawMemory, Entry, u64>::init(mem).unwrap();
    let mut back = BackRing::<RawMemory, Entry, u64>::attach(mem).unwrap();
    let ev = Arc::new(Event::default());
    let ev2 = ev.clone();
    let start = Instant::now();
    let consumer = std::thread::spawn(move || {
        let mut sum = 0u64;
        let mut served = 0;
        while served < n {
            let mut got = 0;
            while let Some(e) = back.pop_request().unwrap() {
                sum = sum.wrapping_add(e.0[0] ^ e.0[7]);
                for k in 0..work {
                    // Stand-in for per-request back-end work.
                    sum = std::hint::black_box(sum.rotate_left(5) ^ u64::from(k));
                }
                back.push_response(&e.0[0]).unwrap();
                got += 1;
                // Publish responses as they complete (every 16), so the
                // front end can refill while the back end is still busy.
                if got % 16 == 0 {
                    back.push_responses_and_check_notify();
                }
            }
            if got > 0 {
                served += got;
                back.push_responses_and_check_notify();
            } else if sleep {
                if !back.final_check_for_requests().unwrap() {
                    ev2.wait();
                }
            } else {
                std::hint::spin_loop();
            }
        }
        sum
    });
    let mut next = 0u64;
    let mut answered = 0u64;
    while answered < n {
        let mut pushed = 0;
        while next < n && !front.is_full() {
            front.push_request(&entry(next)).unwrap();
            next += 1;
            pushed += 1;
        }
        if pushed > 0 && front.push_requests_and_check_notify() {
            ev.notify();
        }
        while let Some(id) = front.pop_response().unwrap() {
            debug_assert_eq!(id, answered);
            answered += 1;
        }
        if pushed == 0 {
            std::hint::spin_loop();
        }
    }
    std::hint::black_box(consumer.join().unwrap());
    (start.elapsed(), ev.sent.load(Ordering::Relaxed))
}

fn run_rtrb(n: u64, cap: usize) -> Duration {
    let (mut p, mut c) = rtrb::RingBuffer::<Entry>::new(cap);
    let start = Instant::now();
    let consumer = std::thread::spawn(move || {
        let mut sum = 0u64;
        let mut got = 0;
        while got < n {
            match c.pop() {
                Ok(e) => {
                    sum = sum.wrapping_add(e.0[0] ^ e.0[7]);
                    got += 1;
                }
                Err(_) => std::hint::spin_loop(),
            }
        }
        sum
    });
    let mut i = 0;
    while i < n {
        if p.push(entry(i)).is_ok() {
            i += 1;
        } else {
            std::hint::spin_loop();
        }
    }
    std::hint::black_box(consumer.join().unwrap());
    start.elapsed()
}

fn run_arrayqueue(n: u64, cap: usize) -> Duration {
    let q = Arc::new(crossbeam_queue::ArrayQueue::<Entry>::new(cap));
    let q2 = q.clone();
    let start = Instant::now();
    let consumer = std::thread::spawn(move || {
        let mut sum = 0u64;
        let mut got = 0;
        while got < n {
            match q2.pop() {
                Some(e) => {
                    sum = sum.wrapping_add(e.0[0] ^ e.0[7]);
                    got += 1;
                }
                None => std::hint::spin_loop(),
            }
        }
        sum
    });
    let mut i = 0;
    while i < n {
        if q.push(entry(i)).is_ok() {
            i += 1;
        } else {
            std::hint::spin_loop();
        }
    }
    std::hint::black_box(consumer.join().unwrap());
    start.elapsed()
}

fn spsc(c: &mut Criterion) {
    // (pages of Xen ring, slots): 1 page of 64-byte slots holds 32 entries,
    // 8 pages hold 256. rtrb and ArrayQueue get the same capacity.
    for (pages, cap) in [(1usize, 32usize), (8, 256)] {
        let mut g = c.benchmark_group(format!("spsc_64B_cap{cap}"));
        g.throughput(Throughput::Elements(BATCH));
        g.bench_function("xen_ring", |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run_xen(BATCH, pages, false, 0).0).sum())
        });
        g.bench_function("xen_ring_with_events", |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run_xen(BATCH, pages, true, 0).0).sum())
        });
        g.bench_function("rtrb", |b| b.iter_custom(|iters| (0..iters).map(|_| run_rtrb(BATCH, cap)).sum()));
        g.bench_function("crossbeam_array_queue", |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run_arrayqueue(BATCH, cap)).sum())
        });
        g.finish();
    }

    // Notifications per 1000 requests: counts, not times. The front end
    // publishes whenever it has free slots; the back end sleeps (after its
    // final check) only when it finds the ring empty.
    for (label, work) in [("busy consumer (~100 ops/request)", 100u32), ("idle-prone consumer (no work)", 0)] {
        for pages in [1usize, 8] {
            let n = 1_000_000;
            let (t, notes) = run_xen(n, pages, true, work);
            println!(
                "notifications front->back, {label}, {pages}-page ring: {notes} for {n} requests \
                 = {:.3} per 1000 requests ({:.1} Mreq/s)",
                notes as f64 * 1000.0 / n as f64,
                n as f64 / t.as_secs_f64() / 1e6
            );
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    targets = spsc
}
criterion_main!(benches);
