//! Snapshot/restore of the store: the state survives a round trip, a
//! guest's watch still fires and its open transaction still commits (or
//! conflicts) after a restore, and a tampered state is refused with the
//! store unchanged. References: Xen's `docs/designs/xenstore-migration.md`
//! (what the state holds), `docs/misc/xenstore.txt` and
//! `tools/xenstored/transaction.c` (how watches and transactions behave).

use super::*;
use crate::{SharedStore, StoreServer};
use pv_abi::xs_wire::*;
use ring_buffers::vm::GuestRingMemory;
use ring_buffers::{ByteConsumer, ByteProducer, ByteRingLayout};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const PAGE: GuestAddress = GuestAddress(0x1000);

fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
}

fn page(gm: &GuestMemoryMmap) -> GuestRingMemory<'_> {
    GuestRingMemory::new(gm, PAGE, std::mem::size_of::<XenstoreDomainInterface>()).unwrap()
}

/// The guest's side of the ring, by hand.
struct Guest<'a> {
    tx: ByteProducer<GuestRingMemory<'a>>,
    rx: ByteConsumer<GuestRingMemory<'a>>,
}

impl<'a> Guest<'a> {
    fn new(gm: &'a GuestMemoryMmap) -> Self {
        Guest {
            tx: ByteProducer::new(page(gm), ByteRingLayout::STORE_REQ).unwrap(),
            rx: ByteConsumer::new(page(gm), ByteRingLayout::STORE_RSP).unwrap(),
        }
    }

    fn raw(&mut self, bytes: &[u8]) {
        assert_eq!(self.tx.write(bytes).unwrap(), bytes.len());
    }

    fn send(&mut self, type_: u32, req_id: u32, tx_id: u32, payload: &[u8]) {
        let h = XsdSockmsg { type_, req_id, tx_id, len: payload.len() as u32 };
        self.raw(&h.to_bytes());
        self.raw(payload);
    }

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
}

fn tx_id(reply: &[u8]) -> u32 {
    std::str::from_utf8(reply.strip_suffix(b"\0").unwrap()).unwrap().parse().unwrap()
}

/// Serves domain 1's ring in `gm`: a node it owns under an explicit
/// permission list, a watch on `device`, an open transaction holding a
/// write, and half a request read by the server. Returns the server and
/// the transaction id.
fn busy_guest<'a>(store: &SharedStore, gm: &'a GuestMemoryMmap) -> (StoreServer<GuestRingMemory<'a>>, u32) {
    let mut srv = StoreServer::new(store.clone(), 1, page(gm)).unwrap();
    let mut g = Guest::new(gm);
    g.send(XS_WRITE, 1, 0, b"data/mine\0v1");
    g.send(XS_SET_PERMS, 2, 0, b"data/mine\0b1\0r0\0");
    g.send(XS_WATCH, 3, 0, b"device\0tok\0");
    g.send(XS_TRANSACTION_START, 4, 0, b"\0");
    srv.process();
    let m = g.recv();
    assert!(m.iter().all(|(h, _)| h.type_ != XS_ERROR), "{m:?}");
    let tx = tx_id(&m.iter().find(|(h, _)| h.req_id == 4).unwrap().1);
    g.send(XS_WRITE, 5, tx, b"data/tx\0in-tx");
    srv.process();
    assert_eq!(g.recv()[0].1, b"OK\0");
    // Half a request: the header and part of its payload.
    let h = XsdSockmsg { type_: XS_READ, req_id: 6, tx_id: 0, len: 10 };
    g.raw(&h.to_bytes());
    g.raw(b"data/");
    srv.process();
    (srv, tx)
}

/// The snapshot: the store's state with the server side of `srv`.
fn save<M: ring_buffers::RingMemory>(store: &SharedStore, srv: &StoreServer<M>) -> StoreState {
    let mut s = store.save_state();
    srv.save_into(&mut s);
    s
}

fn copy_page(from: &GuestMemoryMmap, to: &GuestMemoryMmap) {
    let mut buf = vec![0u8; 4096];
    from.read_slice(&mut buf, PAGE).unwrap();
    to.write_slice(&buf, PAGE).unwrap();
}

/// The state survives save, serialisation, restore and save again: nodes
/// with their permissions and owners, the quota count, the watch, the
/// open transaction and the partly read request.
#[test]
fn a_round_trip_gives_the_same_state() {
    let store = SharedStore::new();
    let gm = guest_memory();
    let (srv, _) = busy_guest(&store, &gm);
    let s = save(&store, &srv);
    let c = &s.conns[0];
    assert_eq!((c.domid, c.watches.len()), (1, 1));
    let server = c.server.as_ref().unwrap();
    assert_eq!((server.transactions.len(), server.inbuf.len()), (1, 16 + 5));
    let json = serde_json::to_vec(&s).unwrap();
    let back: StoreState = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, s);
    let (store2, gm2) = (SharedStore::new(), guest_memory());
    copy_page(&gm, &gm2);
    store2.restore_state(&back).unwrap();
    let srv2 = StoreServer::restore(store2.clone(), 1, page(&gm2), &back).unwrap();
    assert_eq!(save(&store2, &srv2), s);
    // `XS_GET_PERMS` answers as before (`do_get_perms()`).
    let perms = |st: &SharedStore| st.with(None, |x| x.get_perms(1, "data/mine"));
    assert_eq!(perms(&store2), perms(&store));
    assert_eq!(store2.with(None, |x| x.nodes_owned(1)), store.with(None, |x| x.nodes_owned(1)));
}

/// After a restore the guest's watch still fires (`docs/misc/
/// xenstore.txt` WATCH: a change at or below the path queues an event),
/// the request it was half-way through sending is answered, and its
/// transaction commits (`XS_TRANSACTION_END` "T": `OK`, the write is
/// visible).
#[test]
fn a_watch_fires_and_a_transaction_commits_after_a_restore() {
    let store = SharedStore::new();
    let gm = guest_memory();
    let (srv, tx) = busy_guest(&store, &gm);
    let s = save(&store, &srv);
    let (store2, gm2) = (SharedStore::new(), guest_memory());
    copy_page(&gm, &gm2);
    store2.restore_state(&s).unwrap();
    let mut srv2 = StoreServer::restore(store2.clone(), 1, page(&gm2), &s).unwrap();
    let mut g = Guest::new(&gm2);
    g.raw(b"mine\0");
    g.send(XS_TRANSACTION_END, 7, tx, b"T\0");
    srv2.process();
    // After the commit (any change before it would fail it: the store
    // detects conflicts per store).
    store2.write("/local/domain/1/device/vbd/0", b"").unwrap();
    srv2.process();
    let m = g.recv();
    let by_id = |id: u32| m.iter().find(|(h, _)| h.req_id == id && h.type_ != XS_WATCH_EVENT).unwrap();
    assert_eq!(by_id(6).1, b"v1", "the request completed across the restore");
    assert_eq!(by_id(7).1, b"OK\0", "the transaction committed");
    let ev = m.iter().find(|(h, _)| h.type_ == XS_WATCH_EVENT).expect("the watch fired");
    assert_eq!(ev.1, b"device/vbd/0\0tok\0");
    assert_eq!(store2.read("/local/domain/1/data/tx").unwrap(), b"in-tx");
}

/// A transaction restored open still conflicts when the store changed
/// meanwhile (`tools/xenstored/transaction.c`: `EAGAIN`), and nothing of
/// it is applied.
#[test]
fn a_restored_transaction_still_conflicts() {
    let store = SharedStore::new();
    let gm = guest_memory();
    let (srv, tx) = busy_guest(&store, &gm);
    let s = save(&store, &srv);
    let (store2, gm2) = (SharedStore::new(), guest_memory());
    copy_page(&gm, &gm2);
    store2.restore_state(&s).unwrap();
    let mut srv2 = StoreServer::restore(store2.clone(), 1, page(&gm2), &s).unwrap();
    let mut g = Guest::new(&gm2);
    g.raw(b"mine\0");
    store2.write("/local/domain/1/data/other", b"theirs").unwrap();
    g.send(XS_TRANSACTION_END, 7, tx, b"T\0");
    srv2.process();
    let m = g.recv();
    let end = m.iter().find(|(h, _)| h.req_id == 7).unwrap();
    assert_eq!((end.0.type_, end.1.as_slice()), (XS_ERROR, &b"EAGAIN\0"[..]));
    assert!(store2.read("/local/domain/1/data/tx").is_err());
}

/// The VMM builds its store server before it knows it restores: that
/// server's connection id is the restored connection's too, and dropping
/// it afterwards must not disconnect the restored one (its watch still
/// fires).
#[test]
fn a_server_made_before_the_restore_does_not_drop_the_restored_connection() {
    let store = SharedStore::new();
    let gm = guest_memory();
    let (srv, _) = busy_guest(&store, &gm);
    let s = save(&store, &srv);
    let (store2, gm2) = (SharedStore::new(), guest_memory());
    let early = StoreServer::new(store2.clone(), 1, page(&gm2)).unwrap();
    assert_eq!(early.conn(), srv.conn(), "the same id");
    copy_page(&gm, &gm2);
    store2.restore_state(&s).unwrap();
    let mut srv2 = StoreServer::restore(store2.clone(), 1, page(&gm2), &s).unwrap();
    drop(early);
    assert_eq!(store2.with(None, |x| x.watch_count(1)), 1, "the restored watch is still there");
    let mut g = Guest::new(&gm2);
    g.raw(b"mine\0");
    srv2.process();
    g.recv();
    store2.write("/local/domain/1/device/x", b"").unwrap();
    srv2.process();
    assert!(g.recv().iter().any(|(h, p)| h.type_ == XS_WATCH_EVENT && p == b"device/x\0tok\0"));
}

/// A tampered state is refused and the store keeps what it had.
#[test]
fn inconsistent_states_are_refused_and_change_nothing() {
    let store = SharedStore::new();
    let gm = guest_memory();
    let (srv, _) = busy_guest(&store, &gm);
    let s = save(&store, &srv);
    let target = SharedStore::new();
    target.write("/keep", b"me").unwrap();
    let refuse = |bad: &StoreState| {
        let e = target.restore_state(bad).expect_err("refused");
        assert_eq!(target.read("/keep").unwrap(), b"me", "{e}: unchanged");
        e
    };
    let mut bad = s.clone();
    bad.version += 1;
    assert_eq!(refuse(&bad), StoreStateError::Version(2));
    let mut bad = s.clone();
    bad.tree.nodes.retain(|n| n.path != "/local/domain/1/data");
    assert_eq!(refuse(&bad), StoreStateError::BadNode("/local/domain/1/data/mine".into()));
    let mut bad = s.clone();
    bad.tree.nodes[3].path = "/local//x".into();
    assert!(matches!(refuse(&bad), StoreStateError::BadNode(_)));
    let mut bad = s.clone();
    bad.tree.owned = vec![(1, 99)];
    assert_eq!(refuse(&bad), StoreStateError::Quota(1));
    let mut bad = s.clone();
    bad.conns[0].id = bad.next_conn;
    assert!(matches!(refuse(&bad), StoreStateError::BadConn(_)));
    let mut bad = s.clone();
    bad.conns[0].watches[0].path = "/local/domain/2".into();
    assert!(matches!(refuse(&bad), StoreStateError::BadConn(_)), "a path domain 1 may not read");
    // The server side: too many transactions, an output offset past its message.
    target.restore_state(&s).unwrap();
    let mut bad = s.clone();
    let server = bad.conns[0].server.as_mut().unwrap();
    server.transactions = (1..=17).map(|id| TransactionSave { id, ..server.transactions[0].clone() }).collect();
    assert!(matches!(StoreServer::restore(target.clone(), 1, page(&gm), &bad), Err(StoreStateError::BadServer(_))));
    let mut bad = s.clone();
    bad.conns[0].server.as_mut().unwrap().out = vec![(vec![0; 16], true)];
    bad.conns[0].server.as_mut().unwrap().out_off = 16;
    assert!(matches!(StoreServer::restore(target.clone(), 1, page(&gm), &bad), Err(StoreStateError::BadServer(_))));
    assert!(matches!(StoreServer::restore(target.clone(), 2, page(&gm), &s), Err(StoreStateError::NoConn(2))));
}

/// Applies one mutation to a JSON tree (see the domain's snapshot tests):
/// the `pick`-th leaf or array gets `value`, loses or doubles an element.
fn mutate(v: &mut serde_json::Value, pick: &mut usize, kind: u8, value: u64) -> bool {
    use serde_json::Value;
    match v {
        Value::Array(a) => {
            if *pick == 0 && !a.is_empty() && kind % 3 != 0 {
                if kind % 3 == 1 {
                    a.remove(value as usize % a.len());
                } else {
                    let e = a[value as usize % a.len()].clone();
                    a.push(e);
                }
                return true;
            }
            *pick = pick.saturating_sub(1);
            a.iter_mut().any(|e| mutate(e, pick, kind, value))
        }
        Value::Object(o) => o.values_mut().any(|e| mutate(e, pick, kind, value)),
        leaf => {
            if *pick > 0 {
                *pick -= 1;
                return false;
            }
            *leaf = match leaf {
                Value::Bool(b) => Value::Bool(!*b),
                Value::String(s) if kind & 4 != 0 => Value::from(format!("{s}/x")),
                Value::String(_) if kind & 8 != 0 => Value::from("/local//domain"),
                _ if kind & 4 != 0 => Value::from(value % 64),
                _ => Value::from(value),
            };
            true
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]

    /// A tampered store state is restored or refused, never a panic; a
    /// restored one is served (a tampered partial request may swallow the
    /// guest's next bytes, as a guest's own garbage would) and the store
    /// stays usable.
    #[test]
    fn a_mutated_state_never_panics(pick in 0usize..300, kind in 0u8..16, value in proptest::num::u64::ANY) {
        static SOURCE: std::sync::OnceLock<(Vec<u8>, serde_json::Value)> = std::sync::OnceLock::new();
        let (ring, json) = SOURCE.get_or_init(|| {
            let store = SharedStore::new();
            let gm = guest_memory();
            let (srv, _) = busy_guest(&store, &gm);
            let mut ring = vec![0u8; 4096];
            gm.read_slice(&mut ring, PAGE).unwrap();
            (ring, serde_json::to_value(save(&store, &srv)).unwrap())
        });
        let mut v = json.clone();
        let mut p = pick;
        mutate(&mut v, &mut p, kind, value);
        if let Ok(s) = serde_json::from_value::<StoreState>(v) {
            let store = SharedStore::new();
            let gm = guest_memory();
            gm.write_slice(ring, PAGE).unwrap();
            if store.restore_state(&s).is_ok() {
                if let Ok(mut srv) = StoreServer::restore(store.clone(), 1, page(&gm), &s) {
                    let mut g = Guest::new(&gm);
                    g.raw(b"mine\0");
                    g.send(XS_DIRECTORY, 9, 0, b"/local\0");
                    srv.process();
                    let _ = g.recv();
                }
                proptest::prop_assert!(store.read("/local").is_ok());
            }
        }
    }
}
