//! Multi-queue and multi-page rings: blkback through the real handshake
//! driver ([`XenbusDevice`]) over a map store, with front ends written as
//! Linux's blkfront writes its keys (`talk_to_blkback()` in
//! `drivers/block/xen-blkfront.c`).

use super::*;
use crate::guest_side::GuestSide;
use crate::ring_page::RingPage;
use crate::xenbus::{BindError, DevicePaths, EvtchnBinder, XenbusDevice, XenbusHost, XenbusStore};
use crate::Notify;
use pv_abi::blkif::*;
use pv_abi::xenbus::keys as xb;
use pv_abi::xenbus::XenbusState;
use ring_buffers::FrontRing;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use vmm_sys_util::eventfd::EventFd;

use crate::xenbus::tests::MapStore;

const SECTORS: u64 = 2048;

/// Counts bindings still open; binding a port twice is refused, as the
/// VMM's event channels refuse it (the port is no longer unbound).
#[derive(Default)]
struct Binder {
    bound: Mutex<Vec<u32>>,
    binds: AtomicU32,
}

struct NoNotify;
impl Notify for NoNotify {
    fn notify(&self) {}
}

impl EvtchnBinder for Binder {
    fn bind(&self, port: u32, _: Arc<EventFd>) -> Result<Arc<dyn Notify>, BindError> {
        let mut b = self.bound.lock().unwrap();
        if b.contains(&port) {
            return Err(BindError::Evtchn(xen_domain::event_channel::EvtchnError::BadPort(port)));
        }
        b.push(port);
        self.binds.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::new(NoNotify))
    }
    fn close(&self, port: u32) {
        self.bound.lock().unwrap().retain(|&p| p != port);
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    img: std::path::PathBuf,
    side: GuestSide,
    store: Arc<MapStore>,
    binder: Arc<Binder>,
    dev: XenbusDevice<BlockBackend>,
}

const PATHS: (&str, &str) = ("/local/domain/1/device/vbd/51712", "/local/domain/0/backend/vbd/1/51712");

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.img");
    std::fs::write(&img, vec![0u8; (SECTORS * SECTOR_SIZE) as usize]).unwrap();
    let disk = Disk::open(&DiskSpec::new(img.clone(), false)).unwrap();
    let side = GuestSide::new(crate::guest_side::AFTER_TABLE, 64).unwrap();
    let store = Arc::new(MapStore::default());
    let binder = Arc::new(Binder::default());
    let host = XenbusHost { store: store.clone(), evtchn: binder.clone(), grants: side.grants().clone() };
    let paths = DevicePaths { front: PATHS.0.into(), back: PATHS.1.into() };
    let dev = XenbusDevice::new(BlockBackend::new(disk), paths, &host).unwrap();
    Setup { _dir: dir, img, side, store, binder, dev }
}

impl Setup {
    fn front(&self, key: &str, value: impl ToString) {
        self.store.write(&format!("{}/{key}", PATHS.0), &value.to_string());
    }
    fn back(&self, key: &str) -> Option<String> {
        self.store.read(&format!("{}/{key}", PATHS.1))
    }
    /// The front end says `Initialised`; the driver connects (or not).
    fn initialised(&mut self) -> Option<String> {
        self.front(xb::STATE, XenbusState::Initialised.as_str());
        self.dev.frontend_changed();
        self.back(xb::STATE)
    }
    /// A front ring over data pages `pages` (granted read-write to us; the
    /// front end reaches them through the same grant table).
    fn ring(&self, pages: &[u32]) -> FrontRing<RingPage, BlkifRequest, BlkifResponse> {
        let maps = pages.iter().map(|&p| self.side.grants().map(self.side.page_gref(p), true).unwrap()).collect();
        FrontRing::init(RingPage::granted_pages(maps).unwrap()).unwrap()
    }
}

/// Pushes `n` one-page writes of data page `data`'s contents (sector
/// `first + 8 * i`), publishes them and returns how many fit.
fn push_writes(ring: &mut FrontRing<RingPage, BlkifRequest, BlkifResponse>, gref: u32, first: u64, n: u64) -> u64 {
    let mut pushed = 0;
    for i in 0..n {
        let seg = [BlkifRequestSegment::new(gref, 0, 7)];
        if ring.push_request(&BlkifRequest::direct(BLKIF_OP_WRITE, i, first + 8 * i, &seg)).is_err() {
            break;
        }
        pushed += 1;
    }
    ring.push_requests();
    pushed
}

fn responses(ring: &mut FrontRing<RingPage, BlkifRequest, BlkifResponse>) -> Vec<BlkifResponse> {
    std::iter::from_fn(|| ring.pop_response().unwrap()).collect()
}

#[test]
fn a_multi_page_ring_holds_more_requests_and_may_be_scattered() {
    // io/blkif.h "ring-page-order" / "ring-ref%u": 2^order pages, each its
    // own grant; Xen maps them wherever they are (xenbus_map_ring_valloc),
    // so both adjacent and scattered pages must work.
    for pages in [[0u32, 1, 2, 3], [6, 2, 9, 4]] {
        let mut s = setup();
        assert_eq!(s.back(xb::MAX_RING_PAGE_ORDER).as_deref(), Some("4"), "Linux blkback's default order");
        s.front(xb::RING_PAGE_ORDER, 2);
        for (i, p) in pages.iter().enumerate() {
            s.front(&format!("ring-ref{i}"), s.side.page_gref(*p));
        }
        s.front(xb::EVENT_CHANNEL, 7);
        s.front(xb::PROTOCOL, "x86_64-abi");
        let mut ring = s.ring(&pages);
        assert_eq!(ring.size(), 128, "a 4-page ring holds 128 blkif requests (one page: 32)");
        assert_eq!(s.initialised().as_deref(), Some(XenbusState::Connected.as_str()), "{:?}", s.back("error"));
        s.side.write_page(20, 0, &[0xa5; 4096]);
        assert_eq!(push_writes(&mut ring, s.side.page_gref(20), 0, 100), 100, "100 requests in flight at once");
        while s.dev.backend.queue0.as_mut().is_some_and(|q| q.process()) {}
        let rsp = responses(&mut ring);
        assert_eq!(rsp.len(), 100);
        assert!(rsp.iter().all(|r| r.status == BLKIF_RSP_OKAY), "{rsp:?}");
        let data = std::fs::read(&s.img).unwrap();
        assert!(data[..800 * 512].iter().all(|&b| b == 0xa5), "every write reached the image");
        assert!(data[800 * 512..].iter().all(|&b| b == 0));
    }
}

#[test]
fn each_queue_has_its_own_ring_and_event_channel() {
    // io/blkif.h "multi-queue-num-queues", "queue-%u/ring-ref",
    // "queue-%u/event-channel"; blkback publishes multi-queue-max-queues.
    let mut s = setup();
    assert_eq!(s.back(xb::MULTI_QUEUE_MAX_QUEUES).as_deref(), Some("4"));
    s.front(xb::MULTI_QUEUE_NUM_QUEUES, 3);
    for q in 0..3u32 {
        s.front(&format!("queue-{q}/ring-ref"), s.side.page_gref(q));
        s.front(&format!("queue-{q}/event-channel"), 10 + q);
    }
    let mut rings: Vec<_> = (0..3).map(|q| s.ring(&[q])).collect();
    assert_eq!(s.initialised().as_deref(), Some(XenbusState::Connected.as_str()), "{:?}", s.back("error"));
    assert_eq!(*s.binder.bound.lock().unwrap(), [10, 11, 12], "one event channel per queue");
    assert_eq!(s.dev.backend.connected_queues(), 3);
    for (q, ring) in rings.iter_mut().enumerate() {
        let page = 30 + q as u32;
        s.side.write_page(page, 0, &[q as u8 + 1; 4096]);
        assert_eq!(push_writes(ring, s.side.page_gref(page), 64 * q as u64, 4), 4);
    }
    // Each queue is served by its own server: queue 0 by the device,
    // queues 1 and 2 by their subscribers (here without threads).
    while s.dev.backend.queue0.as_mut().is_some_and(|q| q.process()) {}
    assert!(responses(&mut rings[1]).is_empty(), "queue 1 is not served by queue 0's server");
    for q in 1..3 {
        while s.dev.backend.queue(q).unwrap().lock().unwrap().process() {}
    }
    for (q, ring) in rings.iter_mut().enumerate() {
        let rsp = responses(ring);
        assert_eq!(rsp.len(), 4, "queue {q}");
        assert!(rsp.iter().all(|r| r.status == BLKIF_RSP_OKAY));
    }
    let data = std::fs::read(&s.img).unwrap();
    for q in 0..3usize {
        let at = q * 64 * 512;
        assert!(data[at..at + 32 * 512].iter().all(|&b| b == q as u8 + 1), "queue {q}'s writes");
    }
    // Closing drops every queue and closes every event channel.
    s.front(xb::STATE, XenbusState::Closing.as_str());
    s.dev.frontend_changed();
    assert_eq!(s.dev.backend.connected_queues(), 0);
    assert!(s.binder.bound.lock().unwrap().is_empty());
    assert_eq!(s.side.grants().mapped_refs(), 3, "only the test's own ring mappings are left");
}

#[test]
fn a_queue_is_served_while_another_queue_is_held() {
    // No lock is shared between queues on the request path: with queue
    // 1's lock held (a queue stuck in a slow request), queue 2 is served
    // on another thread and its requests complete.
    let mut s = setup();
    s.front(xb::MULTI_QUEUE_NUM_QUEUES, 3);
    for q in 0..3u32 {
        s.front(&format!("queue-{q}/ring-ref"), s.side.page_gref(q));
        s.front(&format!("queue-{q}/event-channel"), 20 + q);
    }
    let mut ring2 = s.ring(&[2]);
    assert_eq!(s.initialised().as_deref(), Some(XenbusState::Connected.as_str()), "{:?}", s.back("error"));
    s.side.write_page(50, 0, &[0x77; 4096]);
    assert_eq!(push_writes(&mut ring2, s.side.page_gref(50), 256, 8), 8);
    let (q1, q2) = (s.dev.backend.queue(1).unwrap().clone(), s.dev.backend.queue(2).unwrap().clone());
    let held = q1.lock().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        while q2.lock().unwrap().process() {}
        tx.send(()).unwrap();
    });
    // A liveness bound, not a timing assertion: a shared lock would block
    // the server forever.
    rx.recv_timeout(std::time::Duration::from_secs(60)).expect("queue 2 served while queue 1 is held");
    drop(held);
    server.join().unwrap();
    let rsp = responses(&mut ring2);
    assert_eq!(rsp.len(), 8);
    assert!(rsp.iter().all(|r| r.status == BLKIF_RSP_OKAY));
    let data = std::fs::read(&s.img).unwrap();
    assert!(data[256 * 512..320 * 512].iter().all(|&b| b == 0x77));
}

#[test]
fn hostile_queue_keys_get_blkback_errors_and_leave_nothing_bound() {
    // drivers/block/xen-blkback/xenbus.c connect_ring(): 0 or more than
    // the maximum -> "guest requested %u queues, exceeding the maximum of
    // %u."; read_per_ring_refs(): a missing key fails the connection. The
    // back end goes Closing with `error` written (xenbus_dev_fatal).
    type Case = (&'static str, fn(&Setup), &'static str);
    let cases: [Case; 6] = [
        (
            "zero queues",
            |s| s.front(xb::MULTI_QUEUE_NUM_QUEUES, 0),
            "guest requested 0 queues, exceeding the maximum of 4.",
        ),
        (
            "too many",
            |s| s.front(xb::MULTI_QUEUE_NUM_QUEUES, 5),
            "guest requested 5 queues, exceeding the maximum of 4.",
        ),
        ("not a number", |s| s.front(xb::MULTI_QUEUE_NUM_QUEUES, "two"), "multi-queue-num-queues"),
        (
            "no queue-1/event-channel",
            |s| {
                s.front(xb::MULTI_QUEUE_NUM_QUEUES, 2);
                s.front("queue-0/event-channel", 3);
                s.front("queue-0/ring-ref", s.side.page_gref(0));
                s.front("queue-1/ring-ref", s.side.page_gref(1));
            },
            "front end has no 'queue-1/event-channel'",
        ),
        (
            "no queue-1/ring-ref",
            |s| {
                s.front(xb::MULTI_QUEUE_NUM_QUEUES, 2);
                s.front("queue-0/event-channel", 3);
                s.front("queue-1/event-channel", 4);
                s.front("queue-0/ring-ref", s.side.page_gref(0));
            },
            "front end has no 'queue-1/ring-ref'",
        ),
        (
            "order above the maximum",
            |s| {
                s.front(xb::RING_PAGE_ORDER, 5);
                s.front(xb::EVENT_CHANNEL, 3);
                s.front("ring-ref0", s.side.page_gref(0));
            },
            "ring-page-order above max-ring-page-order 4",
        ),
    ];
    for (what, keys, want) in cases {
        let mut s = setup();
        keys(&s);
        assert_eq!(s.initialised().as_deref(), Some(XenbusState::Closing.as_str()), "{what}");
        let err = s.back(xb::ERROR).unwrap_or_default();
        assert!(err.contains(want), "{what}: error {err:?}, wanted {want:?}");
        assert!(s.binder.bound.lock().unwrap().is_empty(), "{what}: every bound port closed again");
        assert_eq!(s.side.grants().mapped_refs(), 0, "{what}: no ring left mapped");
        assert_eq!(s.dev.backend.connected_queues(), 0, "{what}");
    }
    // The same port for two queues: the second bind is refused.
    let mut s = setup();
    s.front(xb::MULTI_QUEUE_NUM_QUEUES, 2);
    for q in 0..2u32 {
        s.front(&format!("queue-{q}/ring-ref"), s.side.page_gref(q));
        s.front(&format!("queue-{q}/event-channel"), 9);
    }
    assert_eq!(s.initialised().as_deref(), Some(XenbusState::Closing.as_str()));
    assert!(s.binder.bound.lock().unwrap().is_empty());
}

#[test]
fn one_queue_front_ends_keep_the_top_level_keys() {
    // A front end that ignores multi-queue (GRUB, old Linux) writes
    // `ring-ref` and `event-channel` at the top; so does one that writes
    // multi-queue-num-queues = 1 (blkfront's nr_rings == 1 case).
    for num in [None, Some(1)] {
        let mut s = setup();
        if let Some(n) = num {
            s.front(xb::MULTI_QUEUE_NUM_QUEUES, n);
        }
        s.front(xb::RING_REF, s.side.page_gref(0));
        s.front(xb::EVENT_CHANNEL, 5);
        let mut ring = s.ring(&[0]);
        assert_eq!(s.initialised().as_deref(), Some(XenbusState::Connected.as_str()), "{num:?}");
        assert_eq!(s.dev.backend.connected_queues(), 1);
        assert_eq!(push_writes(&mut ring, s.side.page_gref(40), 0, 40), 32, "a one-page ring holds 32");
        while s.dev.backend.queue0.as_mut().is_some_and(|q| q.process()) {}
        assert_eq!(responses(&mut ring).len(), 32);
    }
}
