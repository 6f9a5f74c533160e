//! End to end without KVM: the guest's `StoreClient` (over `RawMemory`, as
//! in the guest) and the VMM's `StoreServer` (over `vm-memory`) share one
//! store page in guest memory; the client's transport runs the server
//! inline.

use std::marker::PhantomData;
use std::mem::{offset_of, size_of};
use std::sync::{Arc, Mutex};

use frontend_guest::store::{names, StoreClient, StoreError, StoreTransport};
use frontend_guest::xenbus::{self as guest_xenbus, XenbusState};
use pv_abi::errno;
use pv_abi::xs_wire::{XenstoreDomainInterface, XsdSockmsg, XS_READ};
use pv_store::xenbus as host_xenbus;
use pv_store::{SharedStore, StoreServer, WatchEvent};
use ring_buffers::vm::GuestRingMemory;
use ring_buffers::{ByteProducer, ByteRingLayout, RawMemory};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

const DOMID: u16 = 1;
const PAGE: GuestAddress = GuestAddress(0x3000);

/// Runs the store server whenever the client notifies or waits. A wait in
/// which the server does nothing can never end in a single thread: that is
/// a deadlock, reported as a test failure.
struct Inline<'a> {
    server: StoreServer<GuestRingMemory<'a>>,
    /// The guest memory the client's `RawMemory` points into.
    _mem: PhantomData<&'a GuestMemoryMmap>,
    idle: u32,
    /// Runs at each wait, before the server: "meanwhile, elsewhere".
    on_wait: Option<Box<dyn FnMut()>>,
}

impl StoreTransport for Inline<'_> {
    fn notify(&mut self) {
        if self.server.process() {
            self.idle = 0;
        }
    }

    fn wait(&mut self) {
        if let Some(f) = &mut self.on_wait {
            f();
        }
        if self.server.process() {
            self.idle = 0;
        } else {
            self.idle += 1;
            assert!(self.idle < 3, "client waits for a store that has nothing to do");
        }
    }
}

type Client<'a> = StoreClient<RawMemory, Inline<'a>>;

fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
}

fn connect<'a>(store: &SharedStore, gm: &'a GuestMemoryMmap) -> Client<'a> {
    let len = size_of::<XenstoreDomainInterface>();
    let page = GuestRingMemory::new(gm, PAGE, len).unwrap();
    let server = StoreServer::new(store.clone(), DOMID, page).unwrap();
    // Resolved through vm-memory so the range is known to lie in one region.
    let host = gm.get_slice(PAGE, len).unwrap().ptr_guard_mut().as_ptr();
    assert_eq!(host, gm.get_host_address(PAGE).unwrap());
    // SAFETY: `host..host+len` is the store page inside `gm`'s mmap, which
    // outlives the returned client (the lifetime `'a` ties them). Rust code
    // touches that memory only through vm-memory's volatile/atomic accesses
    // (the server) and this `RawMemory` (the client), never through `&`/`&mut`
    // references, which is what `RawMemory::new` requires.
    let mem = unsafe { RawMemory::new(host, len) }.unwrap();
    StoreClient::new(mem, Inline { server, _mem: PhantomData, idle: 0, on_wait: None }).unwrap()
}

fn req_prod(gm: &GuestMemoryMmap) -> u32 {
    gm.read_obj(PAGE.unchecked_add(offset_of!(XenstoreDomainInterface, req_prod) as u64)).unwrap()
}

fn rsp_prod(gm: &GuestMemoryMmap) -> u32 {
    gm.read_obj(PAGE.unchecked_add(offset_of!(XenstoreDomainInterface, rsp_prod) as u64)).unwrap()
}

#[test]
fn store_operations_over_the_ring() {
    let store = SharedStore::new();
    let gm = guest_memory();
    let mut c = connect(&store, &gm);
    let mut buf = [0u8; 4096];

    c.write("data/greeting", b"hello").unwrap();
    assert_eq!(c.read("data/greeting", &mut buf).unwrap(), 5);
    assert_eq!(&buf[..5], b"hello");
    assert_eq!(store.read("/local/domain/1/data/greeting").unwrap(), b"hello");
    c.write_u32("data/n", 4_000_000_000).unwrap();
    assert_eq!(c.read_u32("data/n").unwrap(), 4_000_000_000);
    assert_eq!(c.read_u32("data/greeting"), Err(StoreError::BadValue));
    c.mkdir("data/dir").unwrap();

    let n = c.directory("data", &mut buf).unwrap();
    let listed: Vec<&[u8]> = names(&buf[..n]).collect();
    assert_eq!(listed, [&b"dir"[..], b"greeting", b"n"]);

    let n = c.get_domain_path(DOMID, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"/local/domain/1");
    // Absolute paths in its own tree work too.
    assert_eq!(c.read("/local/domain/1/data/greeting", &mut buf).unwrap(), 5);

    // Errors come back as xsd_errors names mapped to errno.
    let enoent = StoreError::Xs(errno::ENOENT);
    let eacces = StoreError::Xs(errno::EACCES);
    assert_eq!(c.read("data/missing", &mut buf), Err(enoent));
    assert_eq!(c.write("/local/domain/2/x", b"v"), Err(eacces));
    assert_eq!(c.write("/tool/x", b"v"), Err(eacces));
    assert_eq!(c.read("/local/domain/0", &mut buf), Err(eacces));
    assert_eq!(c.write("bad//path", b""), Err(StoreError::Xs(errno::EINVAL)));
    assert_eq!(enoent.name(), "ENOENT");
    assert_eq!(store.read("/tool/x"), Err(pv_store::StoreError::NoEntry));
    // A buffer too small for the reply: reported, and the stream stays in
    // sync.
    assert_eq!(c.read("data/greeting", &mut buf[..2]), Err(StoreError::BufferTooSmall(5)));
    // Too long to send at all.
    assert_eq!(c.write("data/big", &[0u8; 4096]), Err(StoreError::TooLong));

    c.rm("data").unwrap();
    assert_eq!(c.read("data/greeting", &mut buf), Err(enoent));
    assert_eq!(c.directory("data", &mut buf), Err(enoent));
    assert_eq!(c.stale_replies(), 0);
}

/// The guest client's transactions against the server (Xen's
/// `docs/misc/xenstore.txt`: TRANSACTION_START/END, `EAGAIN` when another
/// change came first, `ENOENT` for an id no longer open).
#[test]
fn guest_transactions_commit_conflict_and_abort() {
    let store = SharedStore::new();
    let gm = guest_memory();
    let mut c = connect(&store, &gm);
    let mut buf = [0u8; 16];
    let t = c.transaction_start().unwrap();
    assert_ne!(t, 0);
    c.write_in(t, "device/vif/0/tx-ring-ref", b"8").unwrap();
    assert_eq!(c.read_in(t, "device/vif/0/tx-ring-ref", &mut buf), Ok(1));
    assert_eq!(c.read("device/vif/0/tx-ring-ref", &mut buf), Err(StoreError::Xs(errno::ENOENT)));
    c.transaction_end(t, true).unwrap();
    assert_eq!(store.read("/local/domain/1/device/vif/0/tx-ring-ref").unwrap(), b"8");
    let t = c.transaction_start().unwrap();
    c.write_in(t, "device/vif/0/rx-ring-ref", b"9").unwrap();
    store.write("/local/domain/1/device/vif/0/state", b"3").unwrap();
    assert_eq!(c.transaction_end(t, true), Err(StoreError::Xs(errno::EAGAIN)));
    assert_eq!(c.transaction_end(t, true), Err(StoreError::Xs(errno::ENOENT)));
    let t = c.transaction_start().unwrap();
    c.write_in(t, "device/vif/0/rx-ring-ref", b"9").unwrap();
    c.transaction_end(t, false).unwrap();
    assert_eq!(store.read("/local/domain/1/device/vif/0/rx-ring-ref"), Err(pv_store::StoreError::NoEntry));
}

#[test]
fn traffic_wraps_the_rings_and_exceeds_them() {
    let store = SharedStore::new();
    let gm = guest_memory();
    let mut c = connect(&store, &gm);
    let mut buf = [0u8; 4096];
    // Many small messages of odd sizes: headers and payloads straddle the
    // wrap at every offset.
    for i in 0..300u32 {
        let path = format!("w/k{}", i % 7);
        let value = vec![b'a' + (i % 26) as u8; (i as usize * 13) % 200];
        c.write(&path, &value).unwrap();
        let n = c.read(&path, &mut buf).unwrap();
        assert_eq!(&buf[..n], &value[..], "round {i}");
    }
    // Values close to the payload limit: requests and replies larger than
    // the 1024-byte rings travel in pieces.
    for len in [1000, 1024, 1025, 3000, 4090] {
        let value: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        c.write("big", &value).unwrap();
        let n = c.read("big", &mut buf).unwrap();
        assert_eq!(&buf[..n], &value[..], "len {len}");
    }
    assert!(req_prod(&gm) > 50_000, "request ring wrapped many times");
    assert!(rsp_prod(&gm) > 40_000, "response ring wrapped many times");
}

#[test]
fn stray_replies_are_skipped_by_req_id() {
    let store = SharedStore::new();
    let gm = guest_memory();
    // A reply to a request the client never sent, already in the ring.
    let ring = GuestRingMemory::new(&gm, PAGE, size_of::<XenstoreDomainInterface>()).unwrap();
    let mut rsp = ByteProducer::new(ring, ByteRingLayout::STORE_RSP).unwrap();
    let stray = XsdSockmsg { type_: XS_READ, req_id: 77, tx_id: 0, len: 3 };
    rsp.write(&stray.to_bytes()).unwrap();
    rsp.write(b"bad").unwrap();
    let mut c = connect(&store, &gm);
    c.write("k", b"good").unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(c.read("k", &mut buf).unwrap(), 4);
    assert_eq!(&buf[..4], b"good");
    assert_eq!(c.stale_replies(), 1);
}

#[test]
fn watches_fire_and_events_are_not_lost() {
    let store = SharedStore::new();
    let gm = guest_memory();
    let mut c = connect(&store, &gm);
    let (mut p, mut t) = ([0u8; 128], [0u8; 32]);
    let mut next = |c: &mut Client<'_>| {
        let (pl, tl) = c.wait_watch(&mut p, &mut t).unwrap();
        (String::from_utf8(p[..pl].to_vec()).unwrap(), String::from_utf8(t[..tl].to_vec()).unwrap())
    };
    let ev = |p: &str, t: &str| (p.to_owned(), t.to_owned());

    c.watch("dev", "mine").unwrap();
    c.watch("/local/domain/0/backend/echo/1", "be").unwrap();
    // These events arrive while the client waits for the write replies and
    // are queued, not lost.
    c.write("dev/a", b"1").unwrap();
    c.write("elsewhere", b"1").unwrap();
    c.write("dev/b", b"2").unwrap();
    assert_eq!(next(&mut c), ev("dev", "mine"));
    assert_eq!(next(&mut c), ev("/local/domain/0/backend/echo/1", "be"));
    assert_eq!(next(&mut c), ev("dev/a", "mine"));
    assert_eq!(next(&mut c), ev("dev/b", "mine"));
    assert_eq!(c.poll_watch(&mut [0; 64], &mut [0; 16]), Ok(None));

    // The VMM writes the guest's back-end directory: the event reaches the
    // guest (its transport's wait runs the server, which fetches it).
    store.write_str("/local/domain/0/backend/echo/1/0/state", "2").unwrap();
    assert_eq!(next(&mut c), ev("/local/domain/0/backend/echo/1/0/state", "be"));

    // Selective waiting leaves other tokens' events queued, in order.
    c.write("dev/c", b"").unwrap();
    store.write_str("/local/domain/0/backend/echo/1/0/x", "").unwrap();
    let mut path = [0u8; 128];
    let n = c.wait_watch_token("be", &mut path).unwrap();
    assert_eq!(&path[..n], b"/local/domain/0/backend/echo/1/0/x");
    assert_eq!(next(&mut c), ev("dev/c", "mine"));

    // After unwatch nothing more arrives for it; a missing watch is ENOENT.
    c.unwatch("dev", "mine").unwrap();
    c.write("dev/d", b"").unwrap();
    assert_eq!(c.poll_watch(&mut [0; 64], &mut [0; 16]), Ok(None));
    assert_eq!(c.unwatch("dev", "mine"), Err(StoreError::Xs(errno::ENOENT)));
    assert_eq!(c.watch("/local/domain/2", "x"), Err(StoreError::Xs(errno::EACCES)));
    assert_eq!(c.dropped_events(), 0);
    assert_eq!(c.transport().server.stats().watch_events, 7);
}

/// The back end's reading of a state node (missing reads as `Unknown`).
fn state(store: &SharedStore, path: &str) -> XenbusState {
    store.read(path).map_or(XenbusState::Unknown, |v| XenbusState::parse(&v).expect("a xenbus state"))
}

/// The back end's reading of a decimal node.
fn number(store: &SharedStore, path: &str) -> u32 {
    pv_abi::xenbus::parse_u32(&store.read(path).unwrap()).expect("a decimal u32")
}

fn switch_state(store: &SharedStore, dir: &str, state: XenbusState) {
    store.write_str(&format!("{dir}/state"), state.as_str()).unwrap();
}

#[test]
fn xenbus_handshake_between_guest_and_back_end() {
    let store = SharedStore::new();
    let gm = guest_memory();
    let dev = host_xenbus::create_device(&store, DOMID, "echo", 0).unwrap();

    // The back end, driven by a watch on the front end's state.
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let (st, d, l) = (store.clone(), dev.clone(), log.clone());
    let front_state = format!("{}/state", dev.front);
    store
        .watch_host(
            &front_state,
            "backend",
            Arc::new(move |_: &WatchEvent| {
                let state = state(&st, &format!("{}/state", d.front));
                let mut log = l.lock().unwrap();
                match state {
                    XenbusState::Initialised => {
                        let ring_ref = number(&st, &format!("{}/ring-ref", d.front));
                        let event_channel = number(&st, &format!("{}/event-channel", d.front));
                        log.push(format!("ring-ref {ring_ref} event-channel {event_channel}"));
                        switch_state(&st, &d.back, XenbusState::Connected);
                    }
                    XenbusState::Connected => log.push("front connected".into()),
                    s => log.push(format!("front {s:?}")),
                }
            }),
        )
        .unwrap();
    // The back end publishes its features and waits for the front end.
    store.write_str(&format!("{}/feature-echo", dev.back), "1").unwrap();
    switch_state(&store, &dev.back, XenbusState::InitWait);

    // The front end, in the guest.
    let mut c = connect(&store, &gm);
    let front = "device/echo/0";
    let mut buf = [0u8; 128];
    let back = guest_xenbus::read_backend_path(&mut c, front, &mut buf).unwrap().to_owned();
    assert_eq!(back, dev.back);
    assert_eq!(guest_xenbus::read_backend_id(&mut c, front).unwrap(), 0);
    let back_state = format!("{back}/state");
    assert_eq!(guest_xenbus::read_state(&mut c, &format!("{front}/state")).unwrap(), XenbusState::Initialising);
    assert_eq!(
        guest_xenbus::wait_for_state(&mut c, &back_state, |s| s == XenbusState::InitWait),
        Ok(XenbusState::InitWait)
    );
    assert_eq!(c.read_u32(&format!("{back}/feature-echo")), Ok(1));
    c.write_u32(&format!("{front}/ring-ref"), 8).unwrap();
    c.write_u32(&format!("{front}/event-channel"), 5).unwrap();
    guest_xenbus::switch_state(&mut c, front, XenbusState::Initialised).unwrap();
    assert_eq!(
        guest_xenbus::wait_for_state(&mut c, &back_state, |s| s >= XenbusState::Connected),
        Ok(XenbusState::Connected)
    );
    guest_xenbus::switch_state(&mut c, front, XenbusState::Connected).unwrap();

    assert_eq!(*log.lock().unwrap(), ["front Initialising", "ring-ref 8 event-channel 5", "front connected"]);
    assert_eq!(state(&store, &front_state), XenbusState::Connected);
    // The guest cannot fake the back end's state.
    assert_eq!(guest_xenbus::switch_state(&mut c, &back, XenbusState::Closed), Err(StoreError::Xs(errno::EACCES)));
    // wait_for_state removed its watch.
    assert_eq!(c.unwatch(&back_state, guest_xenbus::WAIT_STATE_TOKEN), Err(StoreError::Xs(errno::ENOENT)));
}

#[test]
fn wait_for_state_follows_a_back_end_that_moves_later() {
    let store = SharedStore::new();
    let gm = guest_memory();
    let dev = host_xenbus::create_device(&store, DOMID, "echo", 1).unwrap();
    let mut c = connect(&store, &gm);
    c.watch("other", "keep").unwrap();
    // The back end moves only once the guest is already waiting, and in
    // two steps (the first is not what the guest wants).
    let (st, back, mut waits) = (store.clone(), dev.back.clone(), 0);
    c.transport_mut().on_wait = Some(Box::new(move || {
        waits += 1;
        let state = match waits {
            1 => XenbusState::Closing,
            2 => XenbusState::InitWait,
            _ => return,
        };
        switch_state(&st, &back, state);
    }));
    let state = format!("{}/state", dev.back);
    assert_eq!(guest_xenbus::wait_for_state(&mut c, &state, |s| s == XenbusState::InitWait), Ok(XenbusState::InitWait));
    // Events of other watches survived the wait.
    let (mut p, mut t) = ([0u8; 64], [0u8; 16]);
    let (pl, tl) = c.wait_watch(&mut p, &mut t).unwrap();
    assert_eq!((&p[..pl], &t[..tl]), (&b"other"[..], &b"keep"[..]));
    assert_eq!(c.poll_watch(&mut p, &mut t), Ok(None));
}
