//! Unit tests of the store tree and of the ring server against a hostile
//! guest (driven directly through the ring page, without a guest client).

use std::mem::offset_of;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex as StdMutex;

use pv_abi::xs_wire::*;
use ring_buffers::vm::GuestRingMemory;
use ring_buffers::{ByteConsumer, ByteProducer, ByteRingLayout, RingError};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::*;

fn events_of(store: &mut Store, conn: ConnId) -> Vec<(String, String)> {
    std::iter::from_fn(|| store.pop_event(conn)).map(|e| (e.path, e.token)).collect()
}

fn ev(path: &str, token: &str) -> (String, String) {
    (path.to_owned(), token.to_owned())
}

#[test]
fn read_write_directory_rm() {
    let mut s = Store::new();
    s.write(0, "/a/b/c", b"x").unwrap();
    assert_eq!(s.read(0, "/a/b/c").unwrap(), b"x");
    // Parents are created, empty.
    assert_eq!(s.read(0, "/a/b").unwrap(), b"");
    s.write(0, "/a/b/d", b"").unwrap();
    s.write(0, "/a/bb", b"").unwrap();
    assert_eq!(s.directory(0, "/a/b").unwrap(), ["c", "d"]);
    assert_eq!(s.directory(0, "/a").unwrap(), ["b", "bb"]);
    assert!(s.directory(0, "/").unwrap().contains(&"a".to_owned()));
    assert_eq!(s.directory(0, "/a/b/c").unwrap(), Vec::<String>::new());
    assert_eq!(s.directory(0, "/nope"), Err(StoreError::NoEntry));
    s.mkdir(0, "/m/n").unwrap();
    s.write(0, "/m/n", b"v").unwrap();
    s.mkdir(0, "/m/n").unwrap();
    assert_eq!(s.read(0, "/m/n").unwrap(), b"v", "mkdir keeps a value");
    s.rm(0, "/a/b").unwrap();
    assert_eq!(s.read(0, "/a/b/c"), Err(StoreError::NoEntry));
    assert_eq!(s.read(0, "/a/b"), Err(StoreError::NoEntry));
    assert_eq!(s.directory(0, "/a").unwrap(), ["bb"]);
    // Missing node with an existing parent: fine; missing parent: ENOENT.
    assert_eq!(s.rm(0, "/a/zz"), Ok(()));
    assert_eq!(s.rm(0, "/q/zz"), Err(StoreError::NoEntry));
    assert_eq!(s.rm(0, "/"), Err(StoreError::Invalid));
    assert_eq!(s.read(0, "bad//path"), Err(StoreError::Invalid));
    assert_eq!(s.write(0, "@special", b""), Err(StoreError::Invalid));
}

#[test]
fn guest_permissions() {
    let mut s = Store::new();
    s.write(0, "/local/domain/0/backend/echo/1/0/state", b"1").unwrap();
    s.write(0, "/local/domain/0/backend/echo/2/0/state", b"1").unwrap();
    s.write(0, "/local/domain/2/secret", b"s").unwrap();
    s.write(0, "/tool", b"t").unwrap();

    // Relative paths land in the guest's home.
    s.write(1, "device/echo/0/state", b"1").unwrap();
    assert_eq!(s.read(0, "/local/domain/1/device/echo/0/state").unwrap(), b"1");
    assert_eq!(s.read(1, "/local/domain/1/device/echo/0/state").unwrap(), b"1");
    assert_eq!(s.read(1, "/local/domain/1").unwrap(), b"");

    // Its back-ends: read, not write.
    assert_eq!(s.read(1, "/local/domain/0/backend/echo/1/0/state").unwrap(), b"1");
    assert_eq!(s.write(1, "/local/domain/0/backend/echo/1/0/state", b"4"), Err(StoreError::Access));
    assert_eq!(s.rm(1, "/local/domain/0/backend/echo/1"), Err(StoreError::Access));
    // Other domains, dom0 and the root: nothing.
    for p in [
        "/local/domain/0/backend/echo/2/0/state",
        "/local/domain/2/secret",
        "/tool",
        "/",
        "/local/domain/0/backend/echo",
    ] {
        assert_eq!(s.read(1, p), Err(StoreError::Access), "{p}");
        assert_eq!(s.directory(1, p), Err(StoreError::Access), "{p}");
        assert_eq!(s.write(1, p, b"x"), Err(StoreError::Access), "{p}");
    }
    assert_eq!(s.mkdir(1, "/local/domain/2/x"), Err(StoreError::Access));
    // Its home node itself is not its to change.
    assert_eq!(s.write(1, "/local/domain/1", b"x"), Err(StoreError::Access));
    assert_eq!(s.rm(1, "/local/domain/1"), Err(StoreError::Access));
    assert_eq!(s.read(0, "/local/domain/2/secret").unwrap(), b"s");
}

#[test]
fn watches_fire_like_xenstored() {
    let mut s = Store::new();
    let c = s.connect(1, None);
    s.watch_conn(c, "device", "tok").unwrap();
    s.watch_conn(c, "/local/domain/1/other", "abs").unwrap();
    s.watch_conn(c, "/local/domain/0/backend/echo/1", "be").unwrap();
    // Once on registration, with the path as registered.
    assert_eq!(
        events_of(&mut s, c),
        [ev("device", "tok"), ev("/local/domain/1/other", "abs"), ev("/local/domain/0/backend/echo/1", "be")]
    );
    // Changes at or below fire; siblings and prefixes-of-names do not.
    s.write(1, "device/echo/0/state", b"1").unwrap();
    s.write(1, "devices", b"").unwrap();
    s.write(0, "/local/domain/1/other", b"").unwrap();
    s.write(0, "/local/domain/0/backend/echo/1/0/state", b"2").unwrap();
    s.write(0, "/local/domain/0/backend/echo/2/0/state", b"2").unwrap();
    s.mkdir(1, "device/vif").unwrap();
    assert_eq!(
        events_of(&mut s, c),
        [
            ev("device/echo/0/state", "tok"),
            ev("/local/domain/1/other", "abs"),
            ev("/local/domain/0/backend/echo/1/0/state", "be"),
            ev("device/vif", "tok"),
        ]
    );
    // Removing an ancestor fires watches inside it with their own path.
    s.watch_conn(c, "device/echo/0/state", "st").unwrap();
    events_of(&mut s, c);
    s.rm(0, "/local/domain/1").unwrap();
    let mut got = events_of(&mut s, c);
    got.sort();
    assert_eq!(got, [ev("/local/domain/1/other", "abs"), ev("device", "tok"), ev("device/echo/0/state", "st"),]);
    // Duplicates, unwatch, reset.
    assert_eq!(s.watch_conn(c, "device", "tok"), Err(StoreError::Exists));
    s.unwatch_conn(c, "device", "tok").unwrap();
    assert_eq!(s.unwatch_conn(c, "device", "tok"), Err(StoreError::NoEntry));
    s.write(1, "device/x", b"").unwrap();
    assert!(events_of(&mut s, c).is_empty());
    assert_eq!(s.watch_count(1), 3);
    s.reset_watches(c);
    assert_eq!(s.watch_count(1), 0);
    // A guest may not watch what it may not read; @ paths never fire.
    assert_eq!(s.watch_conn(c, "/local/domain/2", "x"), Err(StoreError::Access));
    s.watch_conn(c, "@releaseDomain", "r").unwrap();
    assert_eq!(events_of(&mut s, c), [ev("@releaseDomain", "r")]);
    s.write(0, "/x", b"").unwrap();
    assert!(events_of(&mut s, c).is_empty());
    s.disconnect(c);
    assert_eq!(s.watch_count(1), 0);
}

#[test]
fn host_sinks_run_unlocked_and_may_reenter() {
    let store = SharedStore::new();
    let seen = Arc::new(StdMutex::new(Vec::new()));
    let (st, seen2) = (store.clone(), seen.clone());
    store
        .watch_host(
            "/local/domain/1/device",
            "host",
            Arc::new(move |e: &WatchEvent| {
                // Re-entering the store from a sink must not deadlock.
                let v = st.read(&e.path).ok();
                seen2.lock().unwrap().push((e.path.clone(), v));
            }),
        )
        .unwrap();
    store.write_str("/local/domain/1/device/a", "va").unwrap();
    store.write_str("/local/domain/1/elsewhere", "x").unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [("/local/domain/1/device".to_owned(), None), ("/local/domain/1/device/a".to_owned(), Some(b"va".to_vec())),]
    );
    assert_eq!(
        store.watch_host("/local/domain/1/device", "host", Arc::new(|_: &WatchEvent| {})),
        Err(StoreError::Exists)
    );
    store.unwatch_host("/local/domain/1/device", "host").unwrap();
    store.write_str("/local/domain/1/device/b", "vb").unwrap();
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[test]
fn guest_kick_runs_when_events_are_queued() {
    let store = SharedStore::new();
    let kicks = Arc::new(AtomicUsize::new(0));
    let k = kicks.clone();
    let conn = store.with(None, |s| {
        s.connect(
            1,
            Some(Arc::new(move || {
                k.fetch_add(1, Ordering::SeqCst);
            })),
        )
    });
    store.with(Some(conn), |s| s.watch_conn(conn, "a", "t")).unwrap();
    assert_eq!(kicks.load(Ordering::SeqCst), 0, "own kick skipped");
    store.write_str("/local/domain/1/a/b", "").unwrap();
    store.write_str("/local/domain/1/a/c", "").unwrap();
    assert_eq!(kicks.load(Ordering::SeqCst), 2);
    assert_eq!(store.with(None, |s| s.pending_events(conn)), 3);
}

#[test]
fn guest_resources_are_bounded() {
    let limits = Limits { max_nodes: 10, max_value: 100, max_watches: 3, max_pending_events: 4 };
    let mut s = Store::with_limits(limits);
    let c = s.connect(1, None);
    // The home is created by domain 0 and does not count.
    assert_eq!(s.nodes_owned(1), 0);
    s.write(1, "a/b/c", b"").unwrap();
    assert_eq!(s.nodes_owned(1), 3);
    for i in 0..7 {
        s.write(1, &format!("n{i}"), b"").unwrap();
    }
    assert_eq!(s.nodes_owned(1), 10);
    assert_eq!(s.write(1, "more", b""), Err(StoreError::NoSpace));
    assert_eq!(s.mkdir(1, "more"), Err(StoreError::NoSpace));
    // Overwriting creates nothing.
    s.write(1, "n0", b"v").unwrap();
    s.rm(1, "a").unwrap();
    assert_eq!(s.nodes_owned(1), 7);
    s.write(1, "more", b"").unwrap();
    // Domain 0 is not bound by the node quota.
    for i in 0..20 {
        s.write(0, &format!("/h/{i}"), b"").unwrap();
    }
    // Value size, for everyone.
    assert_eq!(s.write(1, "n1", &[b'x'; 101]), Err(StoreError::TooBig));
    assert_eq!(s.write(0, "/h/0", &[b'x'; 101]), Err(StoreError::TooBig));
    s.write(1, "n1", &[b'x'; 100]).unwrap();
    // Watches.
    for i in 0..3 {
        s.watch_conn(c, &format!("n{i}"), "t").unwrap();
    }
    assert_eq!(s.watch_conn(c, "n4", "t"), Err(StoreError::TooBig));
    // Undelivered events: 3 initial + 1, then dropped.
    s.write(1, "n0", b"").unwrap();
    s.write(1, "n1", b"").unwrap();
    s.write(1, "n2", b"").unwrap();
    assert_eq!(s.pending_events(c), 4);
    assert_eq!(s.dropped_events(c), 2);
}

// ---- the ring server against a hostile guest ----

const PAGE: GuestAddress = GuestAddress(0x1000);

fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
}

/// The guest's side, driven by hand.
struct Guest<'a> {
    tx: ByteProducer<GuestRingMemory<'a>>,
    rx: ByteConsumer<GuestRingMemory<'a>>,
}

impl<'a> Guest<'a> {
    fn new(gm: &'a GuestMemoryMmap) -> Self {
        let mem = GuestRingMemory::new(gm, PAGE, size_of::<XenstoreDomainInterface>()).unwrap();
        Guest {
            tx: ByteProducer::new(mem, ByteRingLayout::STORE_REQ).unwrap(),
            rx: ByteConsumer::new(mem, ByteRingLayout::STORE_RSP).unwrap(),
        }
    }

    fn raw(&mut self, bytes: &[u8]) {
        assert_eq!(self.tx.write(bytes).unwrap(), bytes.len(), "request ring full");
    }

    fn send(&mut self, type_: u32, req_id: u32, payload: &[u8]) {
        self.send_tx(type_, req_id, 0, payload);
    }

    fn send_tx(&mut self, type_: u32, req_id: u32, tx_id: u32, payload: &[u8]) {
        let h = XsdSockmsg { type_, req_id, tx_id, len: payload.len() as u32 };
        self.raw(&h.to_bytes());
        self.raw(payload);
    }

    /// Every complete message in the response ring.
    fn recv(&mut self) -> Vec<(XsdSockmsg, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let mut h = [0u8; 16];
            if self.rx.peek(&mut h).unwrap() < 16 {
                return out;
            }
            let hdr = XsdSockmsg::from_bytes(&h);
            let mut msg = vec![0u8; 16 + hdr.len as usize];
            if self.rx.peek(&mut msg).unwrap() < msg.len() {
                return out;
            }
            self.rx.consume(msg.len()).unwrap();
            out.push((hdr, msg[16..].to_vec()));
        }
    }

    fn recv_one(&mut self) -> (XsdSockmsg, Vec<u8>) {
        let mut m = self.recv();
        assert_eq!(m.len(), 1, "{m:?}");
        m.pop().unwrap()
    }
}

/// The server over the store page in guest memory (through vm-memory, as
/// the VMM reaches it).
fn server<'a>(store: &SharedStore, gm: &'a GuestMemoryMmap) -> StoreServer<GuestRingMemory<'a>> {
    let page = GuestRingMemory::new(gm, PAGE, size_of::<XenstoreDomainInterface>()).unwrap();
    StoreServer::new(store.clone(), 1, page).unwrap()
}

fn error_reply(m: &(XsdSockmsg, Vec<u8>), req_id: u32, name: &str) {
    assert_eq!(m.0.type_, XS_ERROR, "{m:?}");
    assert_eq!(m.0.req_id, req_id);
    assert_eq!(m.1, format!("{name}\0").as_bytes());
}

#[test]
fn server_answers_requests() {
    let store = SharedStore::new();
    let gm = guest_memory();
    let mut srv = server(&store, &gm);
    let mut g = Guest::new(&gm);
    assert!(!srv.process(), "nothing to do, nothing to notify");

    g.send(XS_WRITE, 7, b"data/key\0hello");
    g.send(XS_READ, 8, b"data/key\0");
    g.send(XS_DIRECTORY, 9, b"data\0");
    g.send(XS_GET_DOMAIN_PATH, 10, b"1\0");
    g.send(XS_READ, 11, b"/local/domain/2/x\0");
    g.send(XS_READ, 12, b"data/none\0");
    assert!(srv.process());
    let m = g.recv();
    assert_eq!(m.len(), 6);
    assert_eq!((m[0].0.type_, m[0].0.req_id), (XS_WRITE, 7));
    assert_eq!(m[0].1, b"OK\0");
    assert_eq!((m[1].0.type_, m[1].0.req_id), (XS_READ, 8));
    assert_eq!(m[1].1, b"hello");
    assert_eq!(m[2].1, b"key\0");
    assert_eq!(m[3].1, b"/local/domain/1\0");
    error_reply(&m[4], 11, "EACCES");
    error_reply(&m[5], 12, "ENOENT");
    assert_eq!(store.read("/local/domain/1/data/key").unwrap(), b"hello");

    g.send(XS_RM, 13, b"data\0");
    g.send(XS_MKDIR, 14, b"dir\0");
    srv.process();
    let m = g.recv();
    assert_eq!(m[0].1, b"OK\0");
    assert_eq!(m[1].1, b"OK\0");
    assert_eq!(store.read("/local/domain/1/data"), Err(StoreError::NoEntry));
    assert!(store.read("/local/domain/1/dir").is_ok());
    let st = srv.stats();
    assert_eq!((st.requests, st.errors), (8, 2));
}

/// `XS_GET_PERMS` / `XS_SET_PERMS` (`docs/misc/xenstore.txt`, mandatory;
/// `tools/xenstored/core.c` `do_get_perms()`, `do_set_perms()`,
/// `perm_for_conn()`, `construct_node()`): a guest's own node is its
/// (`n1`); it may set the list of a node it owns but not change the owner
/// (`EPERM`), not set one it does not own (`EACCES`), not name a missing
/// node (`ENOENT`); nodes created later below inherit the list with the
/// creator as owner; the list is enforced on other domains' access.
#[test]
fn guest_reads_and_sets_permissions_as_xenstored_allows() {
    let store = SharedStore::new();
    store.write_str("/local/domain/1/control/shutdown", "").unwrap();
    let gm = guest_memory();
    let mut srv = server(&store, &gm);
    let mut g = Guest::new(&gm);
    let mut ask_tx = |t: u32, id: u32, tx: u32, p: &[u8]| {
        g.send_tx(t, id, tx, p);
        srv.process();
        g.recv_one()
    };
    assert_eq!(ask_tx(XS_WRITE, 1, 0, b"data/mine\0v").1, b"OK\0");
    assert_eq!(ask_tx(XS_GET_PERMS, 2, 0, b"data/mine\0").1, b"n1\0", "the creator owns it");
    assert_eq!(ask_tx(XS_GET_PERMS, 3, 0, b"control/shutdown\0").1, b"n0\0b1\0", "toolstack node the guest may write");
    assert_eq!(ask_tx(XS_GET_PERMS, 4, 0, b"/local/domain/1\0").1, b"n0\0r1\0", "its home: read only");
    error_reply(&ask_tx(XS_GET_PERMS, 5, 0, b"/local/domain/0\0"), 5, "EACCES");
    error_reply(&ask_tx(XS_GET_PERMS, 6, 0, b"data/none\0"), 6, "ENOENT");
    assert_eq!(ask_tx(XS_SET_PERMS, 7, 0, b"data/mine\0r1\0b0\0w5\0").1, b"OK\0");
    assert_eq!(ask_tx(XS_GET_PERMS, 8, 0, b"data/mine\0").1, b"r1\0b0\0w5\0");
    error_reply(&ask_tx(XS_SET_PERMS, 9, 0, b"data/mine\0n2\0"), 9, "EPERM");
    error_reply(&ask_tx(XS_SET_PERMS, 10, 0, b"control/shutdown\0n1\0"), 10, "EACCES");
    error_reply(&ask_tx(XS_SET_PERMS, 11, 0, b"data/none\0n1\0"), 11, "ENOENT");
    error_reply(&ask_tx(XS_SET_PERMS, 12, 0, b"data/mine\0"), 12, "EINVAL");
    error_reply(&ask_tx(XS_SET_PERMS, 13, 0, b"data/mine\0n1\0n1\0n1\0n1\0n1\0n1\0"), 13, "ENOSPC");
    // Inherited by a child, the creator its owner.
    assert_eq!(ask_tx(XS_WRITE, 14, 0, b"data/mine/kid\0v").1, b"OK\0");
    assert_eq!(ask_tx(XS_GET_PERMS, 15, 0, b"data/mine/kid\0").1, b"r1\0b0\0w5\0");
    // Domain 0 reads the list and the nodes whatever the list says.
    assert_eq!(store.with(None, |s| s.get_perms(0, "/local/domain/1/data/mine")).unwrap()[0].domid, 1);
    assert_eq!(store.read("/local/domain/1/data/mine/kid").unwrap(), b"v", "domain 0 reads everything");
    // Within a transaction, committed at the end.
    let tx = ask_tx(XS_TRANSACTION_START, 16, 0, b"\0").1;
    let tx: u32 = std::str::from_utf8(&tx[..tx.len() - 1]).unwrap().parse().unwrap();
    assert_eq!(ask_tx(XS_SET_PERMS, 17, tx, b"data/mine\0n1\0").1, b"OK\0");
    assert_eq!(ask_tx(XS_GET_PERMS, 18, 0, b"data/mine\0").1, b"r1\0b0\0w5\0", "not yet");
    assert_eq!(ask_tx(XS_TRANSACTION_END, 19, tx, b"T\0").1, b"OK\0");
    assert_eq!(ask_tx(XS_GET_PERMS, 20, 0, b"data/mine\0").1, b"n1\0");
}

#[test]
fn server_rejects_malformed_requests_and_stays_in_sync() {
    let store = SharedStore::new();
    let gm = guest_memory();
    let mut srv = server(&store, &gm);
    let mut g = Guest::new(&gm);
    let cases: &[(u32, u32, &[u8], &str)] = &[
        (XS_READ, 0, b"data/key", "EINVAL"),           // no NUL
        (XS_READ, 0, b"a\0b\0", "EINVAL"),             // two strings
        (XS_READ, 0, b"", "EINVAL"),                   // empty
        (XS_READ, 0, b"\xff\xfe\0", "EINVAL"),         // not UTF-8
        (XS_READ, 0, b"a//b\0", "EINVAL"),             // bad path
        (XS_WRITE, 0, b"novalue", "EINVAL"),           // no NUL at all
        (XS_WATCH, 0, b"path\0", "EINVAL"),            // token missing
        (XS_WATCH, 0, b"path\0tok", "EINVAL"),         // token unterminated
        (XS_GET_DOMAIN_PATH, 0, b"x1\0", "EINVAL"),    // not a number
        (XS_GET_DOMAIN_PATH, 0, b"99999\0", "EINVAL"), // not a domid
        // Xen's tools/xenstored/core.c (process_message): a type with no
        // handler is ENOSYS, a privileged one from a guest EACCES.
        (99, 0, b"", "ENOSYS"), // unknown type
        (XS_INVALID, 0, b"", "ENOSYS"),
        (XS_WATCH_EVENT, 0, b"a\0b\0", "ENOSYS"), // only the store sends these
        (XS_ERROR, 0, b"EIO\0", "ENOSYS"),
        (XS_CONTROL, 0, b"print\0hi\0", "EACCES"), // alias XS_DEBUG
        (XS_INTRODUCE, 0, b"2\0 1\0 1\0", "EACCES"),
        (XS_TRANSACTION_END, 7, b"T\0", "ENOENT"), // no such transaction
        (XS_TRANSACTION_END, 7, b"X\0", "ENOENT"), // the id is checked first
        (XS_TRANSACTION_END, 0, b"T\0", "ENOENT"), // 0 is no transaction
        (XS_GET_DOMAIN_PATH, 9, b"1\0", "ENOENT"), // every type but WATCH/UNWATCH
        (XS_SET_PERMS, 0, b"a\0x1\0", "EINVAL"),   // no such letter (xenstore_strings_to_perms)
        (XS_READ, 5, b"a\0", "ENOENT"),            // no such transaction
        (XS_WRITE, 0, b"@x\0v", "EINVAL"),
    ];
    for (i, (ty, tx, payload, name)) in cases.iter().enumerate() {
        let id = 100 + i as u32;
        g.send_tx(*ty, id, *tx, payload);
        srv.process();
        let m = g.recv_one();
        error_reply(&m, id, name);
        assert_eq!(m.0.tx_id, *tx, "tx_id echoed");
    }
    // Still in sync.
    g.send(XS_WRITE, 1, b"ok\0v");
    srv.process();
    assert_eq!(g.recv_one().1, b"OK\0");
    assert_eq!(srv.stats().errors, cases.len() as u64);
    assert!(srv.broken().is_none());
}

#[test]
fn oversized_header_discards_the_ring() {
    let store = SharedStore::new();
    let gm = guest_memory();
    let mut srv = server(&store, &gm);
    let mut g = Guest::new(&gm);
    let h = XsdSockmsg { type_: XS_WRITE, req_id: 42, tx_id: 0, len: XENSTORE_PAYLOAD_MAX + 1 };
    g.raw(&h.to_bytes());
    g.raw(&[b'a'; 300]);
    assert!(srv.process());
    error_reply(&g.recv_one(), 42, "E2BIG");
    assert_eq!(srv.stats().discarded_bytes, 300);
    // A u32::MAX length is no worse.
    g.send(XS_READ, 43, b"");
    let mut h = h;
    h.len = u32::MAX;
    g.raw(&h.to_bytes()[..12]);
    srv.process();
    error_reply(&g.recv_one(), 43, "EINVAL");
    g.raw(&h.to_bytes()[12..]);
    srv.process();
    error_reply(&g.recv_one(), 42, "E2BIG");
    // The next request is served normally.
    g.send(XS_WRITE, 44, b"k\0v");
    srv.process();
    assert_eq!(g.recv_one().1, b"OK\0");
    assert!(srv.broken().is_none());
}

#[test]
fn requests_larger_than_the_ring_arrive_in_pieces() {
    let store = SharedStore::new();
    let gm = guest_memory();
    let mut srv = server(&store, &gm);
    let mut g = Guest::new(&gm);
    let value: Vec<u8> = (0..4000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut payload = b"big\0".to_vec();
    payload.extend_from_slice(&value);
    let h = XsdSockmsg { type_: XS_WRITE, req_id: 5, tx_id: 0, len: payload.len() as u32 };
    let mut msg = h.to_bytes().to_vec();
    msg.extend_from_slice(&payload);
    // Byte-at-a-time first, then as much as fits each round.
    let mut sent = 0;
    for _ in 0..20 {
        g.raw(&msg[sent..sent + 1]);
        sent += 1;
        srv.process();
    }
    while sent < msg.len() {
        sent += g.tx.write(&msg[sent..]).unwrap();
        srv.process();
    }
    assert_eq!(g.recv_one().1, b"OK\0");
    assert_eq!(store.read("/local/domain/1/big").unwrap(), value);

    // A reply larger than the ring is written in pieces as the guest reads.
    g.send(XS_READ, 6, b"big\0");
    srv.process();
    let mut got = Vec::new();
    for _ in 0..10 {
        let mut buf = [0u8; 1024];
        let n = g.rx.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
        srv.process();
    }
    assert_eq!(got.len(), 16 + value.len());
    assert_eq!(&got[16..], &value[..]);
}

#[test]
fn corrupt_indices_stop_the_server_until_reset() {
    let store = SharedStore::new();
    let gm = guest_memory();
    let mut srv = server(&store, &gm);
    let req_prod = PAGE.unchecked_add(offset_of!(XenstoreDomainInterface, req_prod) as u64);
    let rsp_cons = PAGE.unchecked_add(offset_of!(XenstoreDomainInterface, rsp_cons) as u64);
    let error = PAGE.unchecked_add(offset_of!(XenstoreDomainInterface, error) as u64);
    let features = PAGE.unchecked_add(offset_of!(XenstoreDomainInterface, server_features) as u64);
    assert_eq!(gm.read_obj::<u32>(features).unwrap(), XENSTORE_SERVER_FEATURE_ERROR);

    for garbage in [2000u32, u32::MAX, 0x8000_0000] {
        gm.write_obj(garbage, req_prod).unwrap();
        assert!(srv.process(), "the guest is told");
        assert!(srv.broken().is_some());
        assert_eq!(gm.read_obj::<u32>(error).unwrap(), XENSTORE_ERROR_RINGIDX);
        assert!(!srv.process(), "not served until reset");
        srv.reset().unwrap();
        assert_eq!(gm.read_obj::<u32>(req_prod).unwrap(), 0);
        assert_eq!(gm.read_obj::<u32>(error).unwrap(), 0);
        let mut g = Guest::new(&gm);
        g.send(XS_WRITE, 1, b"k\0v");
        assert!(srv.process());
        assert_eq!(g.recv_one().1, b"OK\0");
    }

    // A response consumer ahead of our producer.
    let mut g = Guest::new(&gm);
    g.send(XS_READ, 2, b"k\0");
    gm.write_obj(500u32, rsp_cons).unwrap();
    srv.process();
    assert!(matches!(srv.broken(), Some(RingError::CorruptConsumer { .. })));
    assert_eq!(srv.stats().ring_errors, 4);
}

#[test]
fn a_guest_that_never_reads_replies_is_bounded() {
    let store = SharedStore::new();
    let gm = guest_memory();
    let mut srv = server(&store, &gm);
    let mut g = Guest::new(&gm);
    let value = vec![b'v'; 1000];
    let mut p = b"k\0".to_vec();
    p.extend_from_slice(&value);
    g.send(XS_WRITE, 1, &p);
    srv.process();
    g.recv();
    // Requests for 1000-byte replies, never reading them.
    let mut sent = 0;
    for i in 0..200 {
        if g.tx.space().unwrap() < 19 {
            srv.process();
            if g.tx.space().unwrap() < 19 {
                break;
            }
        }
        g.send(XS_READ, i, b"k\0");
        sent += 1;
    }
    srv.process();
    // One reply fits in the ring, MAX_QUEUED_REPLIES wait, the rest of the
    // requests stay unconsumed in the request ring.
    assert!(sent < 200);
    assert!(srv.stats().requests <= 1 + MAX_QUEUED_REPLIES as u64 + 1);
    assert!(g.tx.space().unwrap() < 19);
    // Once the guest reads, service resumes and every request is answered.
    let mut answered = 0;
    for _ in 0..1000 {
        answered += g.recv().len();
        srv.process();
        if answered == sent {
            break;
        }
    }
    assert_eq!(answered, sent);
}

#[test]
fn watch_events_reach_the_ring() {
    let store = SharedStore::new();
    let gm = guest_memory();
    let mut srv = server(&store, &gm);
    let kicked = Arc::new(AtomicUsize::new(0));
    let k = kicked.clone();
    srv.set_kick(Arc::new(move || {
        k.fetch_add(1, Ordering::SeqCst);
    }));
    let mut g = Guest::new(&gm);
    g.send(XS_WATCH, 3, b"/local/domain/0/backend/echo/1\0be\0");
    g.send(XS_WATCH, 4, b"dev\0me\0");
    srv.process();
    let m = g.recv();
    assert_eq!(m.len(), 4);
    // The reply precedes the initial event.
    assert_eq!((m[0].0.type_, m[0].0.req_id), (XS_WATCH, 3));
    assert_eq!(m[1].0.type_, XS_WATCH_EVENT);
    assert_eq!(m[1].1, b"/local/domain/0/backend/echo/1\0be\0");
    assert_eq!(m[3].1, b"dev\0me\0");
    assert_eq!(kicked.load(Ordering::SeqCst), 0, "own events need no kick");

    // A host write fires the guest's watch: the kick runs, process delivers.
    store.write_str("/local/domain/0/backend/echo/1/0/state", "2").unwrap();
    assert_eq!(kicked.load(Ordering::SeqCst), 1);
    assert!(srv.process());
    let (h, p) = g.recv_one();
    assert_eq!(h.type_, XS_WATCH_EVENT);
    assert_eq!(p, b"/local/domain/0/backend/echo/1/0/state\0be\0");

    g.send(XS_UNWATCH, 5, b"dev\0me\0");
    g.send(XS_UNWATCH, 6, b"dev\0me\0");
    srv.process();
    let m = g.recv();
    assert_eq!(m[0].1, b"OK\0");
    error_reply(&m[1], 6, "ENOENT");
    assert_eq!(srv.stats().watch_events, 3);

    // Dropping the server forgets its watches.
    let conn = srv.conn();
    drop(srv);
    assert_eq!(store.with(None, |s| s.watch_count(1)), 0);
    assert_eq!(store.with(None, |s| s.pending_events(conn)), 0);
}

#[test]
fn server_and_store_can_move_to_a_device_thread() {
    fn send<T: Send>() {}
    fn sync<T: Send + Sync>() {}
    send::<StoreServer<ring_buffers::RawMemory>>();
    sync::<SharedStore>();
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

    /// Whatever bytes a guest puts in its request ring — and whatever it
    /// does to the indices — the server answers or stops, never panics, and
    /// never lets the guest write outside its own tree.
    #[test]
    fn arbitrary_ring_traffic_never_panics(
        msgs in proptest::collection::vec(
            (0u32..30, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), 0u32..3),
            1..12,
        ),
        garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        poke_prod in proptest::option::of(proptest::prelude::any::<u32>()),
    ) {
        let store = SharedStore::new();
        let gm = guest_memory();
        let mut srv = server(&store, &gm);
        let mut g = Guest::new(&gm);
        for (type_, payload, tx) in &msgs {
            let h = XsdSockmsg { type_: *type_, req_id: 1, tx_id: *tx, len: payload.len() as u32 };
            if g.tx.space().unwrap_or(0) as usize >= 16 + payload.len() {
                g.raw(&h.to_bytes());
                g.raw(payload);
            }
            srv.process();
            let mut sink = [0u8; 1024];
            while matches!(g.rx.read(&mut sink), Ok(n) if n > 0) {}
        }
        if g.tx.space().unwrap_or(0) as usize >= garbage.len() {
            g.raw(&garbage);
        }
        srv.process();
        if let Some(p) = poke_prod {
            let off = core::mem::offset_of!(XenstoreDomainInterface, req_prod) as u64;
            gm.write_obj(p, GuestAddress(PAGE.0 + off)).unwrap();
            srv.process();
        }
        // Nothing outside the guest's home was written by the guest.
        proptest::prop_assert!(store.directory("/local/domain/0").map(|d| d.is_empty()).unwrap_or(true));
    }
}

// ---- transactions ----

fn tx_id(reply: &[u8]) -> u32 {
    std::str::from_utf8(reply.strip_suffix(b"\0").unwrap()).unwrap().parse().unwrap()
}

#[test]
fn a_transaction_sees_its_own_writes_and_commits_them() {
    let store = SharedStore::new();
    let gm = guest_memory();
    let mut srv = server(&store, &gm);
    let mut g = Guest::new(&gm);
    g.send(XS_WRITE, 1, b"data/a\0old");
    g.send(XS_TRANSACTION_START, 2, b"\0");
    srv.process();
    let m = g.recv();
    let t = tx_id(&m[1].1);
    assert_ne!(t, 0);
    g.send_tx(XS_WRITE, 3, t, b"data/a\0new");
    g.send_tx(XS_READ, 4, t, b"data/a\0");
    g.send(XS_READ, 5, b"data/a\0");
    srv.process();
    let m = g.recv();
    assert_eq!(m[1].1, b"new", "the transaction sees its own write");
    assert_eq!(m[2].1, b"old", "outside it the write is not visible yet");
    g.send_tx(XS_TRANSACTION_END, 6, t, b"T\0");
    g.send(XS_READ, 7, b"data/a\0");
    srv.process();
    let m = g.recv();
    assert_eq!(m[0].1, b"OK\0");
    assert_eq!(m[1].1, b"new", "committed");
}

#[test]
fn a_conflicting_change_fails_the_commit_with_eagain_and_abort_discards() {
    let store = SharedStore::new();
    let gm = guest_memory();
    let mut srv = server(&store, &gm);
    let mut g = Guest::new(&gm);
    g.send(XS_TRANSACTION_START, 1, b"\0");
    srv.process();
    let t = tx_id(&g.recv_one().1);
    g.send_tx(XS_WRITE, 2, t, b"data/x\0mine");
    srv.process();
    g.recv_one();
    // Someone else (the back end, domain 0) changes the store meanwhile.
    store.write("/local/domain/1/data/x", b"theirs").unwrap();
    g.send_tx(XS_TRANSACTION_END, 3, t, b"T\0");
    srv.process();
    error_reply(&g.recv_one(), 3, "EAGAIN");
    assert_eq!(store.read("/local/domain/1/data/x").unwrap(), b"theirs", "nothing of the failed transaction applied");
    // The transaction is gone; a retry succeeds.
    g.send_tx(XS_READ, 4, t, b"data/x\0");
    g.send(XS_TRANSACTION_START, 5, b"\0");
    srv.process();
    let m = g.recv();
    error_reply(&m[0], 4, "ENOENT");
    let t2 = tx_id(&m[1].1);
    g.send_tx(XS_WRITE, 6, t2, b"data/x\0mine");
    g.send_tx(XS_TRANSACTION_END, 7, t2, b"T\0");
    srv.process();
    assert_eq!(g.recv()[1].1, b"OK\0");
    assert_eq!(store.read("/local/domain/1/data/x").unwrap(), b"mine");
    // Abort discards.
    g.send(XS_TRANSACTION_START, 8, b"\0");
    srv.process();
    let t3 = tx_id(&g.recv_one().1);
    g.send_tx(XS_RM, 9, t3, b"data/x\0");
    g.send_tx(XS_TRANSACTION_END, 10, t3, b"F\0");
    srv.process();
    assert_eq!(g.recv()[1].1, b"OK\0");
    assert_eq!(store.read("/local/domain/1/data/x").unwrap(), b"mine", "aborted rm changed nothing");
}

/// Xen's `docs/misc/xenstore.txt` and `tools/xenstored/transaction.c`:
/// no nested transactions (`EBUSY`), `WATCH` ignores the transaction id,
/// `RESET_WATCHES` drops the caller's transactions too, too many changes
/// in one transaction is `ENOSPC`.
#[test]
fn transaction_ids_are_checked_as_xenstored_does() {
    let store = SharedStore::new();
    let gm = guest_memory();
    let mut srv = server(&store, &gm);
    let mut g = Guest::new(&gm);
    g.send(XS_TRANSACTION_START, 1, b"\0");
    srv.process();
    let t = tx_id(&g.recv_one().1);
    g.send_tx(XS_TRANSACTION_START, 2, t, b"\0");
    g.send_tx(XS_WATCH, 3, t + 100, b"data\0tok\0");
    g.send_tx(XS_GET_DOMAIN_PATH, 4, t, b"1\0");
    srv.process();
    let m: Vec<_> = g.recv().into_iter().filter(|m| m.0.type_ != XS_WATCH_EVENT).collect();
    error_reply(&m[0], 2, "EBUSY");
    assert_eq!((m[1].0.type_, m[1].0.req_id, m[1].1.as_slice()), (XS_WATCH, 3, &b"OK\0"[..]), "tx id ignored");
    assert_eq!(m[2].1, b"/local/domain/1\0");
    g.send(XS_RESET_WATCHES, 5, b"");
    g.send_tx(XS_READ, 6, t, b"data\0");
    srv.process();
    let m = g.recv();
    assert_eq!(m[0].1, b"OK\0");
    error_reply(&m[1], 6, "ENOENT");
    // One change past the bound.
    g.send(XS_TRANSACTION_START, 7, b"\0");
    srv.process();
    let t = tx_id(&g.recv_one().1);
    for i in 0..=crate::transaction::MAX_TRANSACTION_OPS as u32 {
        g.send_tx(XS_WRITE, 100 + i, t, b"data/n\0v");
        srv.process();
        let m = g.recv_one();
        if (i as usize) < crate::transaction::MAX_TRANSACTION_OPS {
            assert_eq!(m.1, b"OK\0");
        } else {
            error_reply(&m, 100 + i, "ENOSPC");
        }
    }
}

#[test]
fn open_transactions_are_bounded() {
    let store = SharedStore::new();
    let gm = guest_memory();
    let mut srv = server(&store, &gm);
    let mut g = Guest::new(&gm);
    for i in 0..=crate::transaction::MAX_TRANSACTIONS as u32 {
        g.send(XS_TRANSACTION_START, i, b"\0");
        srv.process();
        let m = g.recv_one();
        if (i as usize) < crate::transaction::MAX_TRANSACTIONS {
            assert_eq!(m.0.type_, XS_TRANSACTION_START);
        } else {
            error_reply(&m, i, "ENOSPC");
        }
    }
}

/// Warnings logged while `f` runs on this thread.
fn warnings_during(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<StdMutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let out = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || out.clone())
        .without_time()
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(sub, f);
    let bytes = buf.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn a_full_watch_queue_logs_a_bounded_number_of_lines_with_a_suppressed_count() {
    let limits = Limits { max_nodes: 100, max_value: 100, max_watches: 3, max_pending_events: 2 };
    let mut s = Store::with_limits(limits);
    let c = s.connect(1, None);
    s.watch_conn(c, "n", "t").unwrap();
    let log = warnings_during(|| {
        for _ in 0..1000 {
            s.write(1, "n", b"").unwrap();
        }
    });
    assert!(s.dropped_events(c) >= 990, "{}", s.dropped_events(c));
    let lines = log.lines().filter(|l| l.contains("queue full")).count();
    assert!((1..=pv_util::ratelimit::LogLimiter::BURST as usize).contains(&lines), "{lines} lines:\n{log}");
    assert!(log.contains("dropped="), "{log}");
}

/// `do_set_perms()` (`tools/xenstored/core.c`) ends with `fire_watches()`
/// on the node: a watch on it (or above it) sees the change.
#[test]
fn set_perms_fires_the_nodes_watches() {
    let mut s = Store::new();
    let conn = s.connect(1, None);
    s.write(1, "data/n", b"v").unwrap();
    s.watch_conn(conn, "data", "t").unwrap();
    assert_eq!(events_of(&mut s, conn), vec![ev("data", "t")], "the initial event");
    let list = perms::parse(&["n1", "r0"]).unwrap();
    s.set_perms(1, "data/n", list).unwrap();
    assert_eq!(events_of(&mut s, conn), vec![ev("data/n", "t")], "relative, as registered");
    assert_eq!(s.set_perms(1, "data/missing", perms::parse(&["n1"]).unwrap()), Err(StoreError::NoEntry));
    assert_eq!(events_of(&mut s, conn), vec![], "nothing for a refusal");
}
