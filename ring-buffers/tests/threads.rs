//! Two real threads on one shared page exchange 10^7 requests and
//! responses through the full protocol (batching, notify checks, final
//! checks before sleeping); every id is accounted for exactly once.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use ring_buffers::{BackRing, FrontRing, RawMemory};

const N: u64 = 10_000_000;

/// A 64-byte request carrying its id and a checksum of it.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Req {
    id: u64,
    check: u64,
    body: [u64; 6],
}
// SAFETY: integers only; any bit pattern is valid.
unsafe impl ring_buffers::Pod for Req {}

/// An event channel stand-in: a pending flag the sleeper waits on.
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
    /// Waits for a notification (spinning, then yielding).
    fn wait(&self) {
        let mut spins = 0u32;
        while !self.pending.swap(false, Ordering::Acquire) {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

#[test]
fn ten_million_requests_two_threads() {
    let mut region = common::Region::new(1);
    let mem = region.mem();
    let mut front = FrontRing::<RawMemory, Req, u64>::init(mem).unwrap();
    let mut back = BackRing::<RawMemory, Req, u64>::attach(mem).unwrap();
    let to_back = Arc::new(Event::default());
    let to_front = Arc::new(Event::default());

    let (tb, tf) = (to_back.clone(), to_front.clone());
    let backend = std::thread::spawn(move || {
        let mut served = 0u64;
        while served < N {
            let mut batch = 0;
            while let Some(req) = back.pop_request().expect("corrupt ring") {
                assert_eq!(req.check, !req.id.rotate_left(17), "torn request");
                back.push_response(&req.id).unwrap();
                served += 1;
                batch += 1;
                if batch == 16 {
                    break;
                }
            }
            if batch > 0 {
                if back.push_responses_and_check_notify() {
                    tf.notify();
                }
                continue;
            }
            if !back.final_check_for_requests().unwrap() {
                tb.wait();
            }
        }
        served
    });

    let mut next_id = 0u64;
    let mut expect_rsp = 0u64;
    while expect_rsp < N {
        let mut pushed = 0;
        while next_id < N && !front.is_full() && pushed < 16 {
            let req = Req { id: next_id, check: !next_id.rotate_left(17), body: [next_id; 6] };
            front.push_request(&req).unwrap();
            next_id += 1;
            pushed += 1;
        }
        if pushed > 0 && front.push_requests_and_check_notify() {
            to_back.notify();
        }
        let mut got = 0;
        while let Some(id) = front.pop_response().expect("corrupt ring") {
            // Responses come back in order: each id exactly once.
            assert_eq!(id, expect_rsp);
            expect_rsp += 1;
            got += 1;
        }
        if got == 0 && pushed == 0 && !front.final_check_for_responses().unwrap() {
            to_front.wait();
        }
    }
    assert_eq!(backend.join().unwrap(), N);
    assert_eq!(front.outstanding_requests(), 0);
    assert_eq!(front.pop_response().unwrap(), None);
    let (to_b, to_f) = (to_back.sent.load(Ordering::Relaxed), to_front.sent.load(Ordering::Relaxed));
    eprintln!("notifications: front->back {to_b}, back->front {to_f} for {N} requests");
    assert!(to_b < N && to_f < N);
}
