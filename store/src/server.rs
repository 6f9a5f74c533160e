//! Serving one guest's store ring.
//!
//! The guest writes requests (an [`XsdSockmsg`] header and `len` payload
//! bytes) into the `req` byte ring of its `xenstore_domain_interface` page;
//! [`StoreServer::process`] assembles them (a request may be larger than
//! the ring, so it arrives in pieces), validates, executes against the
//! [`SharedStore`] as the guest's domain, and writes replies and watch
//! events into the `rsp` ring. Everything read from the ring is copied into
//! the server's own buffer before it is parsed.
//!
//! # What a hostile guest can cause
//!
//! * A malformed request (unknown type, missing NUL, bad path, a
//!   transaction id that names no open transaction) gets an `XS_ERROR`
//!   reply with xenstored's errno; the stream stays in sync.
//! * A header claiming `len > XENSTORE_PAYLOAD_MAX` cannot be
//!   resynchronised (the payload boundary is unknown): the server replies
//!   `XS_ERROR` `E2BIG` and discards everything currently in the request
//!   ring. Later bytes are parsed as a new header.
//! * Corrupt ring indices (a producer more than the ring size ahead, a
//!   consumer ahead of our producer): the server logs, sets the page's
//!   `error` field to `XENSTORE_ERROR_RINGIDX`, and stops serving the ring
//!   until [`StoreServer::reset`].
//! * Not reading replies: at most [`MAX_QUEUED_REPLIES`] replies are queued;
//!   beyond that the server stops consuming requests. Watch events wait in
//!   the store's bounded per-connection queue.

use std::collections::VecDeque;
use std::mem::offset_of;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use pv_abi::event_channel::DomId;
use pv_abi::xs_wire::*;
use ring_buffers::{ByteConsumer, ByteProducer, ByteRingLayout, Pod, RingError, RingMemory};

use super::op::{self, Op, TxRule, OK};
use super::{ConnId, Kick, SharedStore, StoreError, WatchEvent};

/// Replies (not counting watch events) queued for a guest that does not
/// read its `rsp` ring before the server stops consuming requests.
pub const MAX_QUEUED_REPLIES: usize = 16;
/// Requests handled per [`StoreServer::process`] call before yielding, so a
/// guest streaming requests cannot hold the device thread.
pub const MAX_REQUESTS_PER_CALL: usize = 64;

/// Watch-event messages moved from the store's queue into the output queue
/// at a time.
const MAX_QUEUED_EVENTS: usize = 16;

const HDR: usize = XsdSockmsg::SIZE;

/// Failure to set up a store server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreServerError {
    /// The ring page is unusable (outside guest memory, misaligned, ...).
    #[error("store ring page: {0}")]
    Ring(#[from] RingError),
}

/// Counters of one store connection, for tests and `--stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreMetrics {
    /// Complete requests handled (including rejected ones).
    pub requests: u64,
    /// `XS_ERROR` replies sent.
    pub errors: u64,
    /// `XS_WATCH_EVENT` messages queued for the guest.
    pub watch_events: u64,
    /// Watch events dropped (too large for one message).
    pub dropped_events: u64,
    /// Request bytes discarded after an oversized header.
    pub discarded_bytes: u64,
    /// Times the ring was found corrupt.
    pub ring_errors: u64,
}

/// One memory object shared by the two ring views and the server (so `M`
/// need not be `Clone`: a grant mapping, say).
struct SharedMem<M>(Arc<M>);

impl<M> Clone for SharedMem<M> {
    fn clone(&self) -> Self {
        SharedMem(self.0.clone())
    }
}

impl<M: RingMemory> RingMemory for SharedMem<M> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn load_u32(&self, offset: usize, order: Ordering) -> u32 {
        self.0.load_u32(offset, order)
    }
    fn store_u32(&self, offset: usize, val: u32, order: Ordering) {
        self.0.store_u32(offset, val, order)
    }
    fn read<T: Pod>(&self, offset: usize) -> T {
        self.0.read(offset)
    }
    fn write<T: Pod>(&self, offset: usize, val: &T) {
        self.0.write(offset, val)
    }
    fn read_bytes(&self, offset: usize, dst: &mut [u8]) {
        self.0.read_bytes(offset, dst)
    }
    fn write_bytes(&self, offset: usize, src: &[u8]) {
        self.0.write_bytes(offset, src)
    }
    fn fence(&self) {
        self.0.fence()
    }
}

struct Outgoing {
    bytes: Vec<u8>,
    is_reply: bool,
}

/// The store back end of one guest connection: its ring page and its
/// connection to the [`SharedStore`]. `M` is the ring page's memory: the
/// VMM's own page type on the device thread, ring-buffers'
/// `GuestRingMemory` or `RawMemory` in tests.
pub struct StoreServer<M: RingMemory> {
    store: SharedStore,
    conn: ConnId,
    domid: DomId,
    mem: SharedMem<M>,
    req: ByteConsumer<SharedMem<M>>,
    rsp: ByteProducer<SharedMem<M>>,
    /// The request being assembled: header, then payload.
    inbuf: Vec<u8>,
    out: VecDeque<Outgoing>,
    /// Bytes of `out.front()` already written.
    out_off: usize,
    broken: Option<RingError>,
    /// The last `process` stopped at its budget with work left.
    more: bool,
    /// This connection's open transactions.
    transactions: super::transaction::Transactions,
    /// Its connection's serial ([`crate::Store::disconnect_if`]).
    serial: u64,
    stats: StoreMetrics,
    /// Rate limit of this guest's log lines.
    log: pv_util::ratelimit::LogLimiter,
}

impl<M: RingMemory> std::fmt::Debug for StoreServer<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreServer")
            .field("domid", &self.domid)
            .field("conn", &self.conn)
            .field("broken", &self.broken)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<M: RingMemory> StoreServer<M> {
    /// Serves the store page in `mem` (which must hold a whole
    /// `xenstore_domain_interface`) for `domid`, continuing from the ring
    /// indices currently in the page, and advertises
    /// `XENSTORE_SERVER_FEATURE_ERROR`. The server is `Send` (can live on a
    /// device thread) when `M` is `Send + Sync`.
    pub fn new(store: SharedStore, domid: DomId, mem: M) -> Result<Self, StoreServerError> {
        let mem = SharedMem(Arc::new(mem));
        let req = ByteConsumer::new(mem.clone(), ByteRingLayout::STORE_REQ)?;
        let rsp = ByteProducer::new(mem.clone(), ByteRingLayout::STORE_RSP)?;
        mem.store_u32(
            offset_of!(XenstoreDomainInterface, server_features),
            XENSTORE_SERVER_FEATURE_ERROR,
            Ordering::Release,
        );
        let (conn, serial) = store.with(None, |s| {
            let conn = s.connect(domid, None);
            (conn, s.conn_serial(conn).unwrap_or(0))
        });
        Ok(StoreServer {
            store,
            conn,
            domid,
            mem,
            req,
            rsp,
            inbuf: Vec::with_capacity(HDR + XENSTORE_PAYLOAD_MAX as usize),
            out: VecDeque::new(),
            out_off: 0,
            broken: None,
            more: false,
            transactions: Default::default(),
            serial,
            stats: StoreMetrics::default(),
            log: Default::default(),
        })
    }

    /// Sets the callback run when watch events are queued for this guest by
    /// someone else (another connection or the host), so that `process` gets
    /// called.
    pub fn set_kick(&self, kick: Kick) {
        let conn = self.conn;
        self.store.with(None, |s| s.set_kick(conn, Some(kick)));
    }

    /// The guest domain served.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// This connection's id in the store.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// The counters.
    pub fn stats(&self) -> StoreMetrics {
        self.stats
    }

    /// The ring error that stopped the server, if any.
    pub fn broken(&self) -> Option<RingError> {
        self.broken
    }

    /// Reconnects after the ring was found corrupt (or the guest restarted
    /// its store client): zeroes the four ring indices and the `error`
    /// field, forgets the partial request and queued output, and removes
    /// this connection's watches. The guest must start a fresh client.
    pub fn reset(&mut self) -> Result<(), StoreServerError> {
        for off in [
            offset_of!(XenstoreDomainInterface, req_cons),
            offset_of!(XenstoreDomainInterface, req_prod),
            offset_of!(XenstoreDomainInterface, rsp_cons),
            offset_of!(XenstoreDomainInterface, rsp_prod),
            offset_of!(XenstoreDomainInterface, error),
        ] {
            self.mem.store_u32(off, 0, Ordering::Release);
        }
        self.req = ByteConsumer::new(self.mem.clone(), ByteRingLayout::STORE_REQ)?;
        self.rsp = ByteProducer::new(self.mem.clone(), ByteRingLayout::STORE_RSP)?;
        self.inbuf.clear();
        self.out.clear();
        self.out_off = 0;
        self.broken = None;
        let conn = self.conn;
        self.store.with(None, |s| s.reset_watches(conn));
        Ok(())
    }

    /// Whether the last [`process`](Self::process) stopped at its budget
    /// with requests left (the caller should call it again after the other
    /// devices on its thread had their turn).
    pub fn more_work(&self) -> bool {
        self.more
    }

    /// Consumes every complete request in the ring, answers it, and writes
    /// queued replies and watch events as space allows. Returns whether
    /// the guest should be notified (bytes were consumed or produced, or
    /// the ring was just found corrupt). Never panics on ring contents.
    pub fn process(&mut self) -> bool {
        if self.broken.is_some() {
            return false;
        }
        match self.process_inner() {
            Ok(notify) => notify,
            Err(e) => {
                tracing::warn!(domid = self.domid, "store ring corrupt ({e}); not serving it until reset");
                self.stats.ring_errors += 1;
                self.broken = Some(e);
                self.mem.store_u32(
                    offset_of!(XenstoreDomainInterface, error),
                    XENSTORE_ERROR_RINGIDX,
                    Ordering::Release,
                );
                true
            }
        }
    }

    fn process_inner(&mut self) -> Result<bool, RingError> {
        let mut notify = false;
        let mut handled = 0;
        self.more = false;
        loop {
            self.pull_events();
            notify |= self.flush()?;
            if self.queued_replies() >= MAX_QUEUED_REPLIES {
                break;
            }
            if handled >= MAX_REQUESTS_PER_CALL {
                // Yield the device thread; the caller comes back.
                self.more = true;
                break;
            }
            handled += 1;
            let (consumed, complete) = self.fill_request()?;
            notify |= consumed;
            if !complete {
                break;
            }
            let msg = std::mem::take(&mut self.inbuf);
            self.handle(&msg);
            self.inbuf = msg;
            self.inbuf.clear();
        }
        // Replies queued by the last round (an E2BIG for an oversized header).
        notify |= self.flush()?;
        Ok(notify)
    }

    fn queued_replies(&self) -> usize {
        self.out.iter().filter(|o| o.is_reply).count()
    }

    /// Reads request bytes into `inbuf`. Returns whether anything was
    /// consumed and whether `inbuf` now holds a complete request.
    fn fill_request(&mut self) -> Result<(bool, bool), RingError> {
        let mut consumed = false;
        if self.inbuf.len() < HDR {
            consumed |= self.read_into_inbuf(HDR)?;
            if self.inbuf.len() < HDR {
                return Ok((consumed, false));
            }
        }
        let hdr = self.header();
        if hdr.len > XENSTORE_PAYLOAD_MAX {
            pv_util::limited_warn!(
                self.log,
                domid = self.domid,
                len = hdr.len,
                "store request longer than XENSTORE_PAYLOAD_MAX; discarding the ring contents"
            );
            self.stats.requests += 1;
            self.reply_error(&hdr, StoreError::TooBig);
            let avail = self.req.available()? as usize;
            let n = self.req.consume(avail)?;
            self.stats.discarded_bytes += n as u64;
            self.inbuf.clear();
            return Ok((true, false));
        }
        let want = HDR + hdr.len as usize;
        consumed |= self.read_into_inbuf(want)?;
        Ok((consumed, self.inbuf.len() == want))
    }

    /// Reads up to `want - inbuf.len()` bytes.
    fn read_into_inbuf(&mut self, want: usize) -> Result<bool, RingError> {
        let start = self.inbuf.len();
        if start >= want {
            return Ok(false);
        }
        self.inbuf.resize(want, 0);
        let n = self.req.read(&mut self.inbuf[start..])?;
        self.inbuf.truncate(start + n);
        Ok(n > 0)
    }

    fn header(&self) -> XsdSockmsg {
        let mut h = [0u8; HDR];
        h.copy_from_slice(&self.inbuf[..HDR]);
        XsdSockmsg::from_bytes(&h)
    }

    fn handle(&mut self, msg: &[u8]) {
        let mut h = [0u8; HDR];
        h.copy_from_slice(&msg[..HDR]);
        let hdr = XsdSockmsg::from_bytes(&h);
        let payload = &msg[HDR..];
        self.stats.requests += 1;
        match self.execute(&hdr, payload) {
            Ok(reply) => self.queue(hdr.type_, hdr.req_id, hdr.tx_id, &reply, true),
            Err(e) => {
                tracing::debug!(domid = self.domid, type_ = hdr.type_, "store request failed: {}", e.name());
                self.reply_error(&hdr, e);
            }
        }
    }

    fn reply_error(&mut self, hdr: &XsdSockmsg, e: StoreError) {
        self.stats.errors += 1;
        let mut p = e.name().as_bytes().to_vec();
        p.push(0);
        self.queue(XS_ERROR, hdr.req_id, hdr.tx_id, &p, true);
    }

    /// Answers one request: refused in xenstored's order (type, then
    /// transaction id, then payload; see [`op`](super::op)), then run in
    /// its transaction or on the live store.
    fn execute(&mut self, hdr: &XsdSockmsg, payload: &[u8]) -> Result<Vec<u8>, StoreError> {
        let tx = match op::admit(hdr.type_)? {
            TxRule::LookedUp => self.transactions.check(hdr.tx_id)?,
            TxRule::Ignored => 0,
        };
        let (domid, conn) = (self.domid, self.conn);
        match Op::parse(hdr.type_, payload)? {
            Op::TransactionStart => self.transactions.start(&self.store, tx),
            Op::TransactionEnd { commit } => self.transactions.end(&self.store, domid, conn, tx, commit),
            Op::ResetWatches => {
                // "Reset all watches and transactions of the caller"
                // (docs/misc/xenstore.txt).
                self.transactions.clear();
                self.store.with(Some(conn), |s| s.reset_watches(conn));
                Ok(OK.to_vec())
            }
            op => match (tx != 0).then(|| self.transactions.op(domid, tx, &op)).flatten() {
                Some(reply) => reply,
                None => self.run(&op),
            },
        }
    }

    /// Runs `op` on the live store (outside any transaction).
    fn run(&self, op: &Op<'_>) -> Result<Vec<u8>, StoreError> {
        let (domid, conn) = (self.domid, self.conn);
        let ok = |r: Result<(), StoreError>| r.map(|()| OK.to_vec());
        match *op {
            Op::Watch { path, token } => ok(self.store.with(Some(conn), |s| s.watch_conn(conn, path, token))),
            Op::Unwatch { path, token } => ok(self.store.with(Some(conn), |s| s.unwatch_conn(conn, path, token))),
            Op::GetDomainPath(d) => {
                let mut p = super::home(d).into_bytes();
                p.push(0);
                Ok(p)
            }
            // Transaction control is `execute`'s; what is left are tree
            // operations.
            _ => self.store.with(Some(conn), |s| op.apply(s, domid)).unwrap_or(Err(StoreError::Invalid)),
        }
    }

    /// Moves watch events from the store's queue into the output queue.
    fn pull_events(&mut self) {
        let conn = self.conn;
        let queued_events = self.out.iter().filter(|o| !o.is_reply).count();
        if queued_events >= MAX_QUEUED_EVENTS {
            return;
        }
        let events: Vec<WatchEvent> = self.store.with(Some(conn), |s| {
            std::iter::from_fn(|| s.pop_event(conn)).take(MAX_QUEUED_EVENTS - queued_events).collect()
        });
        for ev in events {
            let mut p = Vec::with_capacity(ev.path.len() + ev.token.len() + 2);
            p.extend_from_slice(ev.path.as_bytes());
            p.push(0);
            p.extend_from_slice(ev.token.as_bytes());
            p.push(0);
            if p.len() > XENSTORE_PAYLOAD_MAX as usize {
                self.stats.dropped_events += 1;
                pv_util::limited_warn!(self.log, domid = self.domid, "store: watch event too large, dropped");
                continue;
            }
            self.stats.watch_events += 1;
            self.queue(XS_WATCH_EVENT, 0, 0, &p, false);
        }
    }

    fn queue(&mut self, type_: u32, req_id: u32, tx_id: u32, payload: &[u8], is_reply: bool) {
        let hdr = XsdSockmsg { type_, req_id, tx_id, len: payload.len() as u32 };
        let mut bytes = Vec::with_capacity(HDR + payload.len());
        bytes.extend_from_slice(&hdr.to_bytes());
        bytes.extend_from_slice(payload);
        self.out.push_back(Outgoing { bytes, is_reply });
    }

    /// Writes queued output while the `rsp` ring has space.
    fn flush(&mut self) -> Result<bool, RingError> {
        let mut wrote = false;
        while let Some(front) = self.out.front() {
            let n = self.rsp.write(&front.bytes[self.out_off..])?;
            if n == 0 {
                break;
            }
            wrote = true;
            self.out_off += n;
            if self.out_off == front.bytes.len() {
                self.out.pop_front();
                self.out_off = 0;
            }
        }
        Ok(wrote)
    }
}

impl<M: RingMemory> Drop for StoreServer<M> {
    fn drop(&mut self) {
        let (conn, serial) = (self.conn, self.serial);
        self.store.with(None, |s| s.disconnect_if(conn, serial));
    }
}

impl<M: RingMemory> StoreServer<M> {
    /// This connection's server side as data ([`crate::snapshot`]); the
    /// guest must be paused.
    pub fn save_state(&self) -> crate::snapshot::ServerSave {
        let (transactions, next_tx_id) = self.transactions.save_state();
        crate::snapshot::ServerSave {
            inbuf: self.inbuf.clone(),
            out: self.out.iter().map(|o| (o.bytes.clone(), o.is_reply)).collect(),
            out_off: self.out_off,
            transactions,
            next_tx_id,
        }
    }

    /// Adds this connection's server side to `state` (taken with
    /// [`Store::save_state`](crate::Store::save_state)).
    pub fn save_into(&self, state: &mut crate::snapshot::StoreState) {
        let id = self.conn.0;
        if let Some(c) = state.conns.iter_mut().find(|c| c.id == id) {
            c.server = Some(self.save_state());
        }
    }

    /// Serves the store page in `mem` for `domid` on the connection
    /// `state` saved for it (the store was restored from `state` first),
    /// continuing from the ring indices in the page with the saved
    /// partial request, queued output and open transactions.
    pub fn restore(
        store: SharedStore,
        domid: DomId,
        mem: M,
        state: &crate::snapshot::StoreState,
    ) -> Result<Self, crate::snapshot::StoreStateError> {
        use crate::snapshot::StoreStateError;
        let c = (state.conns.iter())
            .find(|c| c.domid == domid && c.server.is_some())
            .ok_or(StoreStateError::NoConn(domid))?;
        let saved = c.server.as_ref().ok_or(StoreStateError::NoConn(domid))?;
        let conn = ConnId(c.id);
        let bad = || StoreStateError::BadServer(c.id);
        let max_msg = HDR + XENSTORE_PAYLOAD_MAX as usize;
        let replies = saved.out.iter().filter(|o| o.1).count();
        let out_ok = replies <= MAX_QUEUED_REPLIES
            && saved.out.len() - replies <= MAX_QUEUED_EVENTS
            && saved.out.iter().all(|(b, _)| (HDR..=max_msg).contains(&b.len()))
            && saved.out.first().map_or(saved.out_off == 0, |(b, _)| saved.out_off < b.len());
        let in_ok = saved.inbuf.len() < max_msg;
        if !out_ok || !in_ok {
            return Err(bad());
        }
        let (transactions, serial) = store
            .with(None, |s| {
                let serial = s.conns.get(&conn).filter(|k| k.domid == domid)?.serial;
                let tx = super::transaction::Transactions::load_state(s, &saved.transactions, saved.next_tx_id)?;
                Some((tx, serial))
            })
            .ok_or_else(bad)?;
        let mem = SharedMem(Arc::new(mem));
        let ring = |e| StoreStateError::Ring(e);
        let req = ByteConsumer::new(mem.clone(), ByteRingLayout::STORE_REQ).map_err(ring)?;
        let rsp = ByteProducer::new(mem.clone(), ByteRingLayout::STORE_RSP).map_err(ring)?;
        let mut inbuf = Vec::with_capacity(max_msg);
        inbuf.extend_from_slice(&saved.inbuf);
        Ok(StoreServer {
            store,
            conn,
            domid,
            mem,
            req,
            rsp,
            inbuf,
            out: saved.out.iter().map(|(b, r)| Outgoing { bytes: b.clone(), is_reply: *r }).collect(),
            out_off: saved.out_off,
            broken: None,
            more: false,
            transactions,
            serial,
            stats: StoreMetrics::default(),
            log: Default::default(),
        })
    }
}
