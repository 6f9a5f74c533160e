//! A hostile or buggy peer: corrupt indices give errors, never panics or
//! bogus entries. Also byte-ring behaviour and ring geometry checks.

mod common;

use std::sync::atomic::Ordering::SeqCst;

use pv_abi::blkif::{BlkifRequest, BlkifResponse};
use ring_buffers::{BackRing, ByteConsumer, ByteProducer, ByteRingLayout, FrontRing, RawMemory, RingError, RingMemory};

const REQ_PROD: usize = 0;
const RSP_PROD: usize = 8;

type Front = FrontRing<RawMemory, BlkifRequest, BlkifResponse>;
type Back = BackRing<RawMemory, BlkifRequest, BlkifResponse>;

fn req(id: u64) -> BlkifRequest {
    BlkifRequest { id, nr_segments: 1, ..Default::default() }
}

#[test]
fn request_producer_far_ahead_is_an_error() {
    let mut region = common::Region::new(1);
    let mem = region.mem();
    let mut front = Front::init(mem).unwrap();
    let mut back = Back::attach(mem).unwrap();
    assert_eq!(front.size(), 32);
    for id in 0..3 {
        front.push_request(&req(id)).unwrap();
    }
    front.push_requests_and_check_notify();
    assert_eq!(back.pop_request().unwrap().map(|r| r.id), Some(0));

    // The front end writes a producer 2^31 ahead.
    mem.store_u32(REQ_PROD, 1 + (1 << 31), SeqCst);
    // The cached producer still allows consuming the two valid entries...
    assert_eq!(back.pop_request().unwrap().map(|r| r.id), Some(1));
    assert_eq!(back.pop_request().unwrap().map(|r| r.id), Some(2));
    // ...but nothing beyond is trusted, however often we ask.
    let err = RingError::PeerOverrun { prod: 1 + (1 << 31), cons: 3 };
    assert_eq!(back.pop_request(), Err(err));
    assert_eq!(back.pop_request(), Err(err));
    assert_eq!(back.unconsumed_requests(), Err(err));
    assert_eq!(back.final_check_for_requests(), Err(err));
    assert!(err.to_string().contains("corrupt ring"));

    // One more than the ring size ahead of the oldest unanswered request is
    // also corrupt; exactly the ring size is a legitimately full ring.
    mem.store_u32(REQ_PROD, 3 + 32 + 1, SeqCst);
    assert!(matches!(back.pop_request(), Err(RingError::PeerOverrun { .. })));
    for _ in 0..3 {
        back.push_response(&BlkifResponse::default()).unwrap();
    }
    back.push_responses_and_check_notify();
    mem.store_u32(REQ_PROD, 3 + 32, SeqCst);
    assert_eq!(back.unconsumed_requests(), Ok(32));
    // A producer moving backwards is corrupt too.
    mem.store_u32(REQ_PROD, 2, SeqCst);
    assert!(matches!(back.unconsumed_requests(), Err(RingError::PeerOverrun { .. })));
}

#[test]
fn responses_beyond_requests_are_an_error() {
    let mut region = common::Region::new(1);
    let mem = region.mem();
    let mut front = Front::init(mem).unwrap();
    for id in 0..3 {
        front.push_request(&req(id)).unwrap();
    }
    // Written but unpublished requests cannot be answered either.
    front.push_requests_and_check_notify();
    front.push_request(&req(3)).unwrap();

    mem.store_u32(RSP_PROD, 4, SeqCst);
    let err = RingError::ResponsesBeyondRequests { rsp_prod: 4, req_prod: 3 };
    assert_eq!(front.pop_response(), Err(err));
    assert_eq!(front.final_check_for_responses(), Err(err));
    assert_eq!(front.outstanding_requests(), 3);

    mem.store_u32(RSP_PROD, 1 << 31, SeqCst);
    assert!(matches!(front.pop_response(), Err(RingError::ResponsesBeyondRequests { .. })));
    // Backwards is also beyond (modulo 2^32).
    mem.store_u32(RSP_PROD, 2, SeqCst);
    assert!(front.pop_response().unwrap().is_some());
    assert!(front.pop_response().unwrap().is_some());
    mem.store_u32(RSP_PROD, 1, SeqCst);
    assert!(matches!(front.pop_response(), Err(RingError::ResponsesBeyondRequests { .. })));
    // A valid producer again: consumption resumes.
    mem.store_u32(RSP_PROD, 3, SeqCst);
    assert!(front.pop_response().unwrap().is_some());
    assert_eq!(front.pop_response(), Ok(None));
}

#[test]
fn attach_rejects_inconsistent_indices() {
    let mut region = common::Region::new(1);
    let mem = region.mem();
    mem.store_u32(REQ_PROD, 100, SeqCst);
    mem.store_u32(RSP_PROD, 0, SeqCst);
    assert!(matches!(Front::attach(mem), Err(RingError::ResponsesBeyondRequests { .. })));
}

#[test]
fn requests_are_copied_before_validation() {
    // The back end gets a copy: rewriting the slot afterwards does not
    // change the request it already validated.
    let mut region = common::Region::new(1);
    let mem = region.mem();
    let mut front = Front::init(mem).unwrap();
    let mut back = Back::attach(mem).unwrap();
    front.push_request(&req(7)).unwrap();
    front.push_requests();
    let got = back.pop_request().unwrap().unwrap();
    mem.write(64, &req(666));
    assert_eq!(got.id, 7);
}

#[test]
fn geometry_is_checked() {
    let mut region = common::Region::new(4);
    let mem = region.mem();
    // 2 pages of blkif: (8192 - 64) / 112 = 72 -> 64 slots.
    // SAFETY: within `region`, which outlives the views.
    let two = unsafe { RawMemory::new(mem.as_ptr(), 8192) }.unwrap();
    assert_eq!(Front::init(two).unwrap().size(), 64);
    // SAFETY: as above.
    let three = unsafe { RawMemory::new(mem.as_ptr(), 3 * 4096) }.unwrap();
    assert_eq!(Front::init(three).err(), Some(RingError::BadLayout));
    // SAFETY: as above.
    let partial = unsafe { RawMemory::new(mem.as_ptr(), 4000) }.unwrap();
    assert_eq!(Back::attach(partial).err(), Some(RingError::BadLayout));
    // SAFETY: as above (never dereferenced: construction fails).
    let odd = unsafe { RawMemory::new(mem.as_ptr().wrapping_add(8), 4096) };
    assert_eq!(odd.err(), Some(RingError::Misaligned));
}

#[test]
fn byte_ring_round_trip_with_wrap() {
    let mut region = common::Region::new(1);
    let mem = region.mem();
    let mut tx = ByteProducer::new(mem, ByteRingLayout::CONSOLE_OUT).unwrap();
    let mut rx = ByteConsumer::new(mem, ByteRingLayout::CONSOLE_OUT).unwrap();
    let mut sent = Vec::new();
    let mut received = Vec::new();
    let mut buf = [0u8; 700];
    for round in 0u32..50 {
        let chunk: Vec<u8> = (0..(round * 37 % 900)).map(|i| (i ^ round) as u8).collect();
        let n = tx.write(&chunk).unwrap();
        sent.extend_from_slice(&chunk[..n]);
        let m = rx.read(&mut buf[..(round as usize * 13 % 700)]).unwrap();
        received.extend_from_slice(&buf[..m]);
    }
    loop {
        let m = rx.read(&mut buf).unwrap();
        if m == 0 {
            break;
        }
        received.extend_from_slice(&buf[..m]);
    }
    assert_eq!(sent, received);
    assert!(sent.len() > 4096, "exercised wrap-around");
    // Full ring: writes stop at 2048 bytes.
    let big = vec![0xaa; 5000];
    assert_eq!(tx.write(&big).unwrap(), 2048);
    assert_eq!(tx.write(&big).unwrap(), 0);
    assert_eq!(rx.available().unwrap(), 2048);
    assert_eq!(rx.consume(10).unwrap(), 10);
    assert_eq!(tx.space().unwrap(), 10);
}

#[test]
fn byte_ring_corrupt_indices() {
    let mut region = common::Region::new(1);
    let mem = region.mem();
    let l = ByteRingLayout::STORE_RSP;
    let mut rx = ByteConsumer::new(mem, l).unwrap();
    let mut buf = [0u8; 64];
    mem.store_u32(l.prod, 1 << 31, SeqCst);
    assert_eq!(rx.read(&mut buf), Err(RingError::PeerOverrun { prod: 1 << 31, cons: 0 }));
    mem.store_u32(l.prod, 1025, SeqCst);
    assert!(rx.read(&mut buf).is_err());
    mem.store_u32(l.prod, 1024, SeqCst);
    assert_eq!(rx.read(&mut buf), Ok(64));

    let l = ByteRingLayout::STORE_REQ;
    let mut tx = ByteProducer::new(mem, l).unwrap();
    assert_eq!(tx.write(b"hello"), Ok(5));
    // The consumer claims to have read more than was written.
    mem.store_u32(l.cons, 6, SeqCst);
    assert_eq!(tx.write(b"x"), Err(RingError::CorruptConsumer { prod: 5, cons: 6 }));
    // A peer rewriting our producer index in memory does not move us.
    mem.store_u32(l.cons, 5, SeqCst);
    mem.store_u32(l.prod, 999, SeqCst);
    assert_eq!(tx.write(b"!"), Ok(1));
    assert_eq!(tx.prod(), 6);
    // Layouts outside the region are rejected.
    // SAFETY: within `region`.
    let small = unsafe { RawMemory::new(mem.as_ptr(), 1024) }.unwrap();
    assert_eq!(ByteConsumer::new(small, l).err(), Some(RingError::BadLayout));
}

#[test]
fn entry_copies_are_byte_exact() {
    // 112-byte requests go by whole words; 12-byte x86_32 responses
    // (4-aligned) by field. Both must copy every byte, at any slot.
    use pv_abi::blkif::x86_32::Response as BlkifResponse32;
    let mut region = common::Region::new(1);
    let mem = region.mem();
    let size = std::mem::size_of::<BlkifRequest>();
    let mut bytes = [0u8; 112];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(1);
    }
    for at in [64, 64 + size, 4096 - size] {
        mem.write_bytes(at, &bytes);
        let got: BlkifRequest = mem.read(at);
        // SAFETY: `BlkifRequest` is `Pod` with explicit padding fields: all
        // 112 bytes are initialised.
        let got = unsafe { std::slice::from_raw_parts((&got as *const BlkifRequest).cast::<u8>(), size) };
        assert_eq!(got, bytes, "slot at {at}");
    }
    mem.write_bytes(4084, &bytes[..12]);
    let rsp: BlkifResponse32 = mem.read(4084);
    let mut back = [0u8; 12];
    mem.write(0, &rsp);
    mem.read_bytes(0, &mut back);
    assert_eq!(back, bytes[..12]);
}
