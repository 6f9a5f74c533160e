//! Property test: random interleavings of both sides of a ring against a
//! simple model. No entry is lost or duplicated, and notifications are
//! raised exactly as Xen's rule prescribes (and never missed by a sleeper).

mod common;

use std::collections::VecDeque;

use proptest::prelude::*;
use ring_buffers::{need_notify, BackRing, FrontRing, Pod, RawMemory, RingError, RingMemory};

#[derive(Clone, Debug)]
enum Op {
    FrontPush(u8),
    FrontPublish,
    FrontPublishNoCheck,
    FrontPop(u8),
    FrontFinalCheck,
    BackPop(u8),
    BackPush(u8),
    BackPublish,
    BackFinalCheck,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6).prop_map(Op::FrontPush),
        Just(Op::FrontPublish),
        Just(Op::FrontPublishNoCheck),
        (0u8..6).prop_map(Op::FrontPop),
        Just(Op::FrontFinalCheck),
        (0u8..6).prop_map(Op::BackPop),
        (0u8..6).prop_map(Op::BackPush),
        Just(Op::BackPublish),
        Just(Op::BackFinalCheck),
    ]
}

/// The model: Xen's shared and private indices, kept independently of the
/// implementation, plus the ids in flight.
#[derive(Debug, Default)]
struct Model {
    size: u32,
    req_prod: u32,
    req_event: u32,
    rsp_prod: u32,
    rsp_event: u32,
    req_prod_pvt: u32,
    rsp_cons: u32,
    req_cons: u32,
    rsp_prod_pvt: u32,
    next_id: u64,
    /// Requests written by the front, in order (published or not).
    requests: VecDeque<u64>,
    /// Requests consumed by the back and not yet answered.
    consumed: VecDeque<u64>,
    /// Responses written by the back (published or not).
    responses: VecDeque<u64>,
    /// The back end found no work in its final check and sleeps.
    back_asleep: bool,
    /// The front end found no work in its final check and sleeps.
    front_asleep: bool,
    front_notifications: u64,
    back_notifications: u64,
}

fn make_req<Req: Pod + From<Id>>(id: u64) -> Req {
    Req::from(Id(id))
}

/// An id wrapped so entry types can be built from it.
struct Id(u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
struct Req64([u64; 8]);
// SAFETY: an array of integers accepts every bit pattern.
unsafe impl Pod for Req64 {}
impl From<Id> for Req64 {
    fn from(id: Id) -> Self {
        Req64([id.0, !id.0, id.0 ^ 0x5555, 3, 4, 5, 6, id.0.wrapping_mul(7)])
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
struct ReqBig([u64; 125]);
// SAFETY: an array of integers accepts every bit pattern.
unsafe impl Pod for ReqBig {}
impl From<Id> for ReqBig {
    fn from(id: Id) -> Self {
        let mut a = [id.0; 125];
        a[124] = !id.0;
        ReqBig(a)
    }
}

trait HasId {
    fn id(&self) -> u64;
}
impl HasId for Req64 {
    fn id(&self) -> u64 {
        assert_eq!(*self, Req64::from(Id(self.0[0])), "torn request");
        self.0[0]
    }
}
impl HasId for ReqBig {
    fn id(&self) -> u64 {
        assert_eq!(*self, ReqBig::from(Id(self.0[0])), "torn request");
        self.0[0]
    }
}

fn run<Req: Pod + From<Id> + HasId>(ops: &[Op], start: u32) -> Result<(), TestCaseError> {
    let mut region = common::Region::new(1);
    let mem = region.mem();
    // Start every index at `start` to exercise 2^32 wrap-around.
    mem.store_u32(0, start, std::sync::atomic::Ordering::SeqCst);
    mem.store_u32(4, start.wrapping_add(1), std::sync::atomic::Ordering::SeqCst);
    mem.store_u32(8, start, std::sync::atomic::Ordering::SeqCst);
    mem.store_u32(12, start.wrapping_add(1), std::sync::atomic::Ordering::SeqCst);
    let mut front = FrontRing::<RawMemory, Req, u64>::attach(mem).unwrap();
    let mut back = BackRing::<RawMemory, Req, u64>::attach(mem).unwrap();
    let mut m = Model {
        size: front.size(),
        req_prod: start,
        req_event: start.wrapping_add(1),
        rsp_prod: start,
        rsp_event: start.wrapping_add(1),
        req_prod_pvt: start,
        rsp_cons: start,
        req_cons: start,
        rsp_prod_pvt: start,
        ..Model::default()
    };
    prop_assert_eq!(back.size(), m.size);

    for op in ops {
        match *op {
            Op::FrontPush(k) => {
                for _ in 0..k {
                    let free = m.size - m.req_prod_pvt.wrapping_sub(m.rsp_cons);
                    prop_assert_eq!(front.free_requests(), free);
                    let r = front.push_request(&make_req::<Req>(m.next_id));
                    if free == 0 {
                        prop_assert_eq!(r, Err(RingError::Full));
                    } else {
                        prop_assert_eq!(r, Ok(()));
                        m.requests.push_back(m.next_id);
                        m.next_id += 1;
                        m.req_prod_pvt = m.req_prod_pvt.wrapping_add(1);
                    }
                }
            }
            Op::FrontPublish | Op::FrontPublishNoCheck => {
                let (old, new) = (m.req_prod, m.req_prod_pvt);
                m.req_prod = new;
                if matches!(op, Op::FrontPublish) {
                    let notify = front.push_requests_and_check_notify();
                    prop_assert_eq!(notify, need_notify(old, new, m.req_event));
                    if m.back_asleep && new != old {
                        prop_assert!(notify, "lost wake-up of a sleeping back end");
                    }
                    if notify {
                        m.front_notifications += 1;
                        m.back_asleep = false;
                    }
                } else {
                    // An unchecked push is followed by an unconditional
                    // notification (as Xen callers of RING_PUSH_REQUESTS do).
                    front.push_requests();
                    m.back_asleep = false;
                }
            }
            Op::FrontPop(k) => {
                for _ in 0..k {
                    let got = front.pop_response().unwrap();
                    if m.rsp_cons == m.rsp_prod {
                        prop_assert_eq!(got, None);
                    } else {
                        let id = m.responses.pop_front().unwrap();
                        prop_assert_eq!(got, Some(!id));
                        m.rsp_cons = m.rsp_cons.wrapping_add(1);
                        m.front_asleep = false;
                    }
                }
            }
            Op::FrontFinalCheck => {
                let work = front.final_check_for_responses().unwrap();
                let expect = m.rsp_prod != m.rsp_cons;
                prop_assert_eq!(work, expect);
                if !expect {
                    m.rsp_event = m.rsp_cons.wrapping_add(1);
                    m.front_asleep = true;
                }
            }
            Op::BackPop(k) => {
                for _ in 0..k {
                    let got = back.pop_request().unwrap();
                    if m.req_cons == m.req_prod {
                        prop_assert!(got.is_none());
                    } else {
                        let id = m.requests.pop_front().unwrap();
                        prop_assert_eq!(got.map(|r| r.id()), Some(id));
                        m.consumed.push_back(id);
                        m.req_cons = m.req_cons.wrapping_add(1);
                        m.back_asleep = false;
                    }
                }
            }
            Op::BackPush(k) => {
                for _ in 0..k {
                    match m.consumed.pop_front() {
                        None => prop_assert_eq!(back.push_response(&0), Err(RingError::Full)),
                        Some(id) => {
                            prop_assert_eq!(back.push_response(&!id), Ok(()));
                            m.responses.push_back(id);
                            m.rsp_prod_pvt = m.rsp_prod_pvt.wrapping_add(1);
                        }
                    }
                }
            }
            Op::BackPublish => {
                let (old, new) = (m.rsp_prod, m.rsp_prod_pvt);
                m.rsp_prod = new;
                let notify = back.push_responses_and_check_notify();
                prop_assert_eq!(notify, need_notify(old, new, m.rsp_event));
                if m.front_asleep && new != old {
                    prop_assert!(notify, "lost wake-up of a sleeping front end");
                }
                if notify {
                    m.back_notifications += 1;
                    m.front_asleep = false;
                }
            }
            Op::BackFinalCheck => {
                let work = back.final_check_for_requests().unwrap();
                let expect = m.req_prod != m.req_cons;
                prop_assert_eq!(work, expect);
                if !expect {
                    m.req_event = m.req_cons.wrapping_add(1);
                    m.back_asleep = true;
                }
            }
        }
    }

    // Drain: publish everything and check every id comes back exactly once.
    front.push_requests_and_check_notify();
    for id in m.consumed.drain(..) {
        back.push_response(&!id).unwrap();
    }
    let mut answered: Vec<u64> = Vec::new();
    loop {
        while let Some(r) = back.pop_request().unwrap() {
            back.push_response(&!r.id()).unwrap();
        }
        back.push_responses_and_check_notify();
        let mut progressed = false;
        while let Some(rsp) = front.pop_response().unwrap() {
            answered.push(!rsp);
            progressed = true;
        }
        if !progressed && !back.final_check_for_requests().unwrap() {
            break;
        }
    }
    let first_unanswered = m.next_id - (answered.len() as u64);
    // Responses consumed during the ops were checked in order; the drain
    // must return exactly the remaining ids, in order.
    let expect: Vec<u64> = (first_unanswered..m.next_id).collect();
    prop_assert_eq!(answered, expect);
    prop_assert_eq!(front.outstanding_requests(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn model_64_byte_entries(ops in prop::collection::vec(op(), 0..300)) {
        run::<Req64>(&ops, 0)?;
    }

    #[test]
    fn model_small_ring_wraps_indices(
        ops in prop::collection::vec(op(), 0..300),
        start in prop_oneof![Just(u32::MAX - 20), Just(u32::MAX), any::<u32>()],
    ) {
        // 1000-byte entries: only 4 slots per page, so slots wrap constantly.
        run::<ReqBig>(&ops, start)?;
    }
}

#[test]
fn busy_consumer_avoids_notifications() {
    // The back end drains in batches and only sleeps when idle: publishing
    // 1000 requests in batches of 8 while it is busy raises one notification
    // per sleep, not one per request.
    let mut region = common::Region::new(1);
    let mem = region.mem();
    let mut front = FrontRing::<RawMemory, Req64, u64>::init(mem).unwrap();
    let mut back = BackRing::<RawMemory, Req64, u64>::attach(mem).unwrap();
    let mut notifications = 0;
    let mut id = 0;
    while id < 1000 {
        for _ in 0..8 {
            front.push_request(&Req64::from(Id(id))).unwrap();
            id += 1;
        }
        if front.push_requests_and_check_notify() {
            notifications += 1;
        }
        // Busy back end: consumes half a batch per round, never sleeps.
        for _ in 0..8 {
            if let Some(r) = back.pop_request().unwrap() {
                back.push_response(&r.id()).unwrap();
            }
        }
        back.push_responses_and_check_notify();
        while front.pop_response().unwrap().is_some() {}
    }
    // Only the very first publish (req_event starts at 1) notifies.
    assert_eq!(notifications, 1);
}
