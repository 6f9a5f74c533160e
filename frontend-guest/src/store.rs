//! The guest's store client: requests and replies over the store ring page
//! (`xenstore_domain_interface`), with no heap.
//!
//! Every operation sends one request (an [`XsdSockmsg`] header and its
//! payload, in pieces if the request ring is full), notifies the store, and
//! reads messages until the reply with the same `req_id` arrives (in pieces
//! if it is larger than the ring). Replies land in caller-provided buffers.
//! `XS_WATCH_EVENT` messages that arrive meanwhile are kept in a small
//! fixed-size queue ([`EVENT_QUEUE_BYTES`]; when full, the oldest events are
//! dropped and counted) for [`StoreClient::wait_watch`].
//!
//! The client is transport-agnostic: [`StoreTransport`] says how to kick
//! the store and how to wait for it (an event channel in the guest; a
//! direct call into the store server in host tests).

use core::fmt;

use pv_abi::errno;
use pv_abi::xs_wire::*;
use ring_buffers::{ByteConsumer, ByteProducer, ByteRingLayout, RingError, RingMemory};

/// How the client reaches the store besides the shared page.
pub trait StoreTransport {
    /// Tells the store there is something to do (requests written or
    /// replies consumed): kick the store event channel.
    fn notify(&mut self);
    /// Blocks until the store may have produced something (or consumed
    /// requests); spurious returns are fine.
    fn wait(&mut self);
}

/// A failed store operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The store replied `XS_ERROR` naming this errno (Xen's `xsd_errors`;
    /// an unknown name reads as `EIO`).
    Xs(i64),
    /// The reply (or watch event) needs this many bytes and the buffer is
    /// smaller; the message has been consumed.
    BufferTooSmall(usize),
    /// The request would exceed `XENSTORE_PAYLOAD_MAX`, or a path does not
    /// fit a [`NodePath`](crate::xenbus::NodePath).
    TooLong,
    /// A node's value is not what was asked for (e.g. not a decimal u32).
    BadValue,
    /// The store broke the protocol (e.g. a reply longer than
    /// `XENSTORE_PAYLOAD_MAX` or of the wrong type).
    Protocol,
    /// The ring indices are corrupt.
    Ring(RingError),
}

impl StoreError {
    /// The errno this error maps to.
    pub fn errno(&self) -> i64 {
        match self {
            StoreError::Xs(e) => *e,
            StoreError::BufferTooSmall(_) | StoreError::TooLong => errno::E2BIG,
            StoreError::BadValue => errno::EINVAL,
            StoreError::Protocol | StoreError::Ring(_) => errno::EIO,
        }
    }

    /// The errno's name (`"ENOENT"`, ...).
    pub fn name(&self) -> &'static str {
        xsd_error_name(self.errno()).unwrap_or_else(|| errno::name(self.errno()))
    }
}

impl From<RingError> for StoreError {
    fn from(e: RingError) -> Self {
        StoreError::Ring(e)
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Xs(_) => write!(f, "store error {}", self.name()),
            StoreError::BufferTooSmall(n) => write!(f, "reply needs a {n}-byte buffer"),
            StoreError::TooLong => f.write_str("request too long"),
            StoreError::BadValue => f.write_str("unexpected node value"),
            StoreError::Protocol => f.write_str("store protocol violation"),
            StoreError::Ring(e) => write!(f, "store ring: {e}"),
        }
    }
}

/// Bytes of watch events the client buffers while waiting for replies.
pub const EVENT_QUEUE_BYTES: usize = 1024;

/// A fixed-size FIFO of raw watch-event payloads (`path\0token\0`), each
/// stored as a little-endian u16 length and the bytes, packed from 0.
struct EventQueue {
    buf: [u8; EVENT_QUEUE_BYTES],
    len: usize,
    dropped: u32,
}

impl EventQueue {
    const fn new() -> Self {
        EventQueue { buf: [0; EVENT_QUEUE_BYTES], len: 0, dropped: 0 }
    }

    fn entry_len(&self, off: usize) -> usize {
        usize::from(u16::from_le_bytes([self.buf[off], self.buf[off + 1]]))
    }

    fn remove_at(&mut self, off: usize) {
        let end = off + 2 + self.entry_len(off);
        self.buf.copy_within(end..self.len, off);
        self.len -= end - off;
    }

    /// Room for an entry of `n` bytes at the end (dropping the oldest
    /// entries as needed), or `None` if it can never fit.
    fn reserve(&mut self, n: usize) -> Option<&mut [u8]> {
        if n + 2 > EVENT_QUEUE_BYTES {
            return None;
        }
        while self.len + n + 2 > EVENT_QUEUE_BYTES {
            self.remove_at(0);
            self.dropped += 1;
        }
        let at = self.len + 2;
        Some(&mut self.buf[at..at + n])
    }

    /// Appends the entry prepared by [`reserve`](Self::reserve).
    fn commit(&mut self, n: usize) {
        self.buf[self.len..self.len + 2].copy_from_slice(&(n as u16).to_le_bytes());
        self.len += n + 2;
    }

    /// Offset of the first entry whose token is `token` (any if `None`).
    fn find(&self, token: Option<&[u8]>) -> Option<usize> {
        let mut off = 0;
        while off < self.len {
            let n = self.entry_len(off);
            let (_, t) = split_event(&self.buf[off + 2..off + 2 + n]);
            if token.is_none_or(|tok| tok == t) {
                return Some(off);
            }
            off += 2 + n;
        }
        None
    }

    /// Removes the entry at `off`, copying its path (and token, if a buffer
    /// is given) out.
    fn take(
        &mut self,
        off: usize,
        path_buf: &mut [u8],
        token_buf: Option<&mut [u8]>,
    ) -> Result<(usize, usize), StoreError> {
        let n = self.entry_len(off);
        let (p, t) = split_event(&self.buf[off + 2..off + 2 + n]);
        let r = match token_buf {
            _ if p.len() > path_buf.len() => Err(StoreError::BufferTooSmall(p.len())),
            Some(tb) if t.len() > tb.len() => Err(StoreError::BufferTooSmall(t.len())),
            tb => {
                path_buf[..p.len()].copy_from_slice(p);
                if let Some(tb) = tb {
                    tb[..t.len()].copy_from_slice(t);
                }
                Ok((p.len(), t.len()))
            }
        };
        self.remove_at(off);
        r
    }

    fn purge(&mut self, token: &[u8]) {
        while let Some(off) = self.find(Some(token)) {
            self.remove_at(off);
        }
    }
}

/// Splits a watch-event payload into path and token (each up to its NUL).
fn split_event(p: &[u8]) -> (&[u8], &[u8]) {
    let nul = p.iter().position(|&b| b == 0).unwrap_or(p.len());
    let path = &p[..nul];
    let rest = p.get(nul + 1..).unwrap_or(&[]);
    let tnul = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    (path, &rest[..tnul])
}

/// The two byte rings and the transport.
struct Link<M, T> {
    req: ByteProducer<M>,
    rsp: ByteConsumer<M>,
    transport: T,
    /// Reply bytes consumed since the store was last notified.
    consumed: bool,
}

impl<M: RingMemory, T: StoreTransport> Link<M, T> {
    /// Writes all of `data` into the request ring, waiting for space.
    fn put(&mut self, mut data: &[u8]) -> Result<(), StoreError> {
        while !data.is_empty() {
            let n = self.req.write(data)?;
            data = &data[n..];
            if n == 0 {
                self.transport.notify();
                self.transport.wait();
            }
        }
        Ok(())
    }

    /// Fills `buf` from the response ring, waiting for bytes.
    fn get(&mut self, buf: &mut [u8]) -> Result<(), StoreError> {
        let mut got = 0;
        while got < buf.len() {
            let n = self.rsp.read(&mut buf[got..])?;
            got += n;
            if n > 0 {
                self.consumed = true;
            } else {
                self.flush_notify();
                self.transport.wait();
            }
        }
        Ok(())
    }

    /// Consumes `n` bytes from the response ring.
    fn skip(&mut self, mut n: usize) -> Result<(), StoreError> {
        let mut scratch = [0u8; 64];
        while n > 0 {
            let k = n.min(scratch.len());
            self.get(&mut scratch[..k])?;
            n -= k;
        }
        Ok(())
    }

    fn header(&mut self) -> Result<XsdSockmsg, StoreError> {
        let mut h = [0u8; XsdSockmsg::SIZE];
        self.get(&mut h)?;
        let hdr = XsdSockmsg::from_bytes(&h);
        if hdr.len > XENSTORE_PAYLOAD_MAX {
            return Err(StoreError::Protocol);
        }
        Ok(hdr)
    }

    /// Tells the store we made room in the response ring.
    fn flush_notify(&mut self) {
        if self.consumed {
            self.consumed = false;
            self.transport.notify();
        }
    }
}

/// The store client over a store ring page in `M`.
pub struct StoreClient<M: RingMemory, T: StoreTransport> {
    link: Link<M, T>,
    next_req_id: u32,
    events: EventQueue,
    stale_replies: u32,
}

impl<M: RingMemory + Clone, T: StoreTransport> StoreClient<M, T> {
    /// A client of the store page in `mem` (a whole
    /// `xenstore_domain_interface`), continuing from the ring indices in
    /// the page.
    pub fn new(mem: M, transport: T) -> Result<Self, StoreError> {
        Ok(StoreClient {
            link: Link {
                req: ByteProducer::new(mem.clone(), ByteRingLayout::STORE_REQ)?,
                rsp: ByteConsumer::new(mem, ByteRingLayout::STORE_RSP)?,
                transport,
                consumed: false,
            },
            next_req_id: 1,
            events: EventQueue::new(),
            stale_replies: 0,
        })
    }
}

impl<M: RingMemory, T: StoreTransport> StoreClient<M, T> {
    /// The transport.
    pub fn transport(&self) -> &T {
        &self.link.transport
    }

    /// The transport, mutably.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.link.transport
    }

    /// Watch events dropped because the event queue was full.
    pub fn dropped_events(&self) -> u32 {
        self.events.dropped
    }

    /// Replies discarded because their `req_id` matched no request.
    pub fn stale_replies(&self) -> u32 {
        self.stale_replies
    }

    /// Reads the value of `path` into `buf`; returns its length.
    pub fn read(&mut self, path: &str, buf: &mut [u8]) -> Result<usize, StoreError> {
        self.transact(XS_READ, &[path.as_bytes(), b"\0"], buf)
    }

    /// Writes `value` to `path` (the store creates missing parents).
    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<(), StoreError> {
        self.transact_ok(XS_WRITE, &[path.as_bytes(), b"\0", value])
    }

    /// Creates `path` with an empty value (no-op if it exists).
    pub fn mkdir(&mut self, path: &str) -> Result<(), StoreError> {
        self.transact_ok(XS_MKDIR, &[path.as_bytes(), b"\0"])
    }

    /// Removes `path` and everything below it.
    pub fn rm(&mut self, path: &str) -> Result<(), StoreError> {
        self.transact_ok(XS_RM, &[path.as_bytes(), b"\0"])
    }

    /// Lists the children of `path` into `buf` as NUL-terminated names;
    /// returns the bytes used (see [`names`]).
    pub fn directory(&mut self, path: &str, buf: &mut [u8]) -> Result<usize, StoreError> {
        self.transact(XS_DIRECTORY, &[path.as_bytes(), b"\0"], buf)
    }

    /// Registers a watch on `path`; the store fires it once at once, then
    /// on every change at or below `path`. Use a distinct token per watch.
    pub fn watch(&mut self, path: &str, token: &str) -> Result<(), StoreError> {
        self.transact_ok(XS_WATCH, &[path.as_bytes(), b"\0", token.as_bytes(), b"\0"])
    }

    /// Removes a watch, and drops queued events carrying its token.
    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<(), StoreError> {
        let r = self.transact_ok(XS_UNWATCH, &[path.as_bytes(), b"\0", token.as_bytes(), b"\0"]);
        self.events.purge(token.as_bytes());
        r
    }

    /// Opens a transaction (`XS_TRANSACTION_START`) and returns its id,
    /// never 0 (Xen's `docs/misc/xenstore.txt`: transaction id 0 means
    /// "no transaction"). Pass the id to [`read_in`](Self::read_in) and
    /// [`write_in`](Self::write_in), then end it with
    /// [`transaction_end`](Self::transaction_end).
    pub fn transaction_start(&mut self) -> Result<u32, StoreError> {
        let mut id = [0u8; 16];
        let n = self.transact(XS_TRANSACTION_START, &[b"\0"], &mut id)?;
        let digits = id[..n].strip_suffix(b"\0").unwrap_or(&id[..n]);
        match parse_u32(digits) {
            Some(0) | None => Err(StoreError::Protocol),
            Some(tx) => Ok(tx),
        }
    }

    /// Ends transaction `tx`: commits its changes (`commit`) or drops
    /// them. A commit that conflicted with another change fails with
    /// `Xs(EAGAIN)`: start the transaction again.
    pub fn transaction_end(&mut self, tx: u32, commit: bool) -> Result<(), StoreError> {
        let mut ok = [0u8; 8];
        let arg: &[u8] = if commit { b"T\0" } else { b"F\0" };
        self.transact_in(tx, XS_TRANSACTION_END, &[arg], &mut ok).map(|_| ())
    }

    /// [`read`](Self::read) inside transaction `tx`.
    pub fn read_in(&mut self, tx: u32, path: &str, buf: &mut [u8]) -> Result<usize, StoreError> {
        self.transact_in(tx, XS_READ, &[path.as_bytes(), b"\0"], buf)
    }

    /// [`write`](Self::write) inside transaction `tx`.
    pub fn write_in(&mut self, tx: u32, path: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut ok = [0u8; 8];
        self.transact_in(tx, XS_WRITE, &[path.as_bytes(), b"\0", value], &mut ok).map(|_| ())
    }

    /// Writes the home path of `domid` (`/local/domain/<domid>`) into
    /// `buf`; returns its length (without the NUL).
    pub fn get_domain_path(&mut self, domid: u16, buf: &mut [u8]) -> Result<usize, StoreError> {
        let mut d = [0u8; 10];
        let d = fmt_u32(u32::from(domid), &mut d);
        let n = self.transact(XS_GET_DOMAIN_PATH, &[d, b"\0"], buf)?;
        Ok(buf[..n].strip_suffix(b"\0").map_or(n, <[u8]>::len))
    }

    /// Reads a node holding a decimal u32 ([`BadValue`](StoreError::BadValue)
    /// if it does not).
    pub fn read_u32(&mut self, path: &str) -> Result<u32, StoreError> {
        let mut buf = [0u8; 16];
        let n = match self.read(path, &mut buf) {
            Err(StoreError::BufferTooSmall(_)) => return Err(StoreError::BadValue),
            r => r?,
        };
        parse_u32(&buf[..n]).ok_or(StoreError::BadValue)
    }

    /// Writes `v` in decimal to `path`.
    pub fn write_u32(&mut self, path: &str, v: u32) -> Result<(), StoreError> {
        let mut d = [0u8; 10];
        let d = fmt_u32(v, &mut d);
        self.write(path, d)
    }

    /// Waits for the next watch event and copies its path and token out;
    /// returns their lengths. An event too large for the buffers is
    /// consumed and reported as [`BufferTooSmall`](StoreError::BufferTooSmall).
    pub fn wait_watch(&mut self, path_buf: &mut [u8], token_buf: &mut [u8]) -> Result<(usize, usize), StoreError> {
        loop {
            if let Some(off) = self.events.find(None) {
                return self.events.take(off, path_buf, Some(token_buf));
            }
            self.recv_message()?;
        }
    }

    /// Waits for the next watch event carrying `token` (events of other
    /// watches stay queued); returns the event path's length.
    pub fn wait_watch_token(&mut self, token: &str, path_buf: &mut [u8]) -> Result<usize, StoreError> {
        loop {
            if let Some(off) = self.events.find(Some(token.as_bytes())) {
                return self.events.take(off, path_buf, None).map(|(p, _)| p);
            }
            self.recv_message()?;
        }
    }

    /// Returns a watch event if one is queued or complete in the ring,
    /// without waiting.
    pub fn poll_watch(
        &mut self,
        path_buf: &mut [u8],
        token_buf: &mut [u8],
    ) -> Result<Option<(usize, usize)>, StoreError> {
        self.drain_ready()?;
        match self.events.find(None) {
            Some(off) => self.events.take(off, path_buf, Some(token_buf)).map(Some),
            None => Ok(None),
        }
    }

    /// Takes a queued (or complete in the ring) watch event carrying
    /// `token`, without waiting; returns the event path's length. Events of
    /// other watches stay queued.
    pub fn poll_watch_token(&mut self, token: &str, path_buf: &mut [u8]) -> Result<Option<usize>, StoreError> {
        self.drain_ready()?;
        match self.events.find(Some(token.as_bytes())) {
            Some(off) => self.events.take(off, path_buf, None).map(|(p, _)| Some(p)),
            None => Ok(None),
        }
    }

    /// Reads every message already complete in the response ring (events
    /// are queued, stray replies dropped).
    fn drain_ready(&mut self) -> Result<(), StoreError> {
        loop {
            let mut h = [0u8; XsdSockmsg::SIZE];
            if self.link.rsp.peek(&mut h)? < h.len() {
                break;
            }
            let len = XsdSockmsg::from_bytes(&h).len;
            if self.link.rsp.available()? < (h.len() as u32).saturating_add(len) {
                break;
            }
            self.recv_message()?;
        }
        self.link.flush_notify();
        Ok(())
    }

    /// Reads one message that is not the reply being waited for: queues a
    /// watch event, drops anything else.
    fn recv_message(&mut self) -> Result<(), StoreError> {
        let hdr = self.link.header()?;
        if hdr.type_ == XS_WATCH_EVENT {
            self.queue_event(hdr.len as usize)
        } else {
            self.stale_replies += 1;
            self.link.skip(hdr.len as usize)
        }
    }

    fn queue_event(&mut self, len: usize) -> Result<(), StoreError> {
        match self.events.reserve(len) {
            Some(slot) => {
                self.link.get(slot)?;
                self.events.commit(len);
                Ok(())
            }
            None => {
                self.events.dropped += 1;
                self.link.skip(len)
            }
        }
    }

    /// Sends a message with any type, any claimed length and any payload,
    /// and waits for the reply to it: for hostile-guest tests of the
    /// store. Returns the reply's length, or the store's error.
    pub fn raw_request(&mut self, type_: u32, claimed_len: u32, payload: &[u8]) -> Result<usize, StoreError> {
        let req_id = self.next_req_id;
        self.next_req_id = self.next_req_id.wrapping_add(1);
        let hdr = XsdSockmsg { type_, req_id, tx_id: 0, len: claimed_len };
        self.link.put(&hdr.to_bytes())?;
        self.link.put(payload)?;
        self.link.transport.notify();
        let mut reply = [0u8; 256];
        let r = self.await_reply(type_, req_id, &mut reply);
        self.link.flush_notify();
        r
    }

    fn transact_ok(&mut self, type_: u32, parts: &[&[u8]]) -> Result<(), StoreError> {
        let mut ok = [0u8; 8];
        self.transact(type_, parts, &mut ok).map(|_| ())
    }

    /// Sends one request outside any transaction and reads its reply.
    fn transact(&mut self, type_: u32, parts: &[&[u8]], reply: &mut [u8]) -> Result<usize, StoreError> {
        self.transact_in(0, type_, parts, reply)
    }

    /// Sends one request in transaction `tx_id` (0: none) and reads its
    /// reply into `reply`.
    fn transact_in(&mut self, tx_id: u32, type_: u32, parts: &[&[u8]], reply: &mut [u8]) -> Result<usize, StoreError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > XENSTORE_PAYLOAD_MAX as usize {
            return Err(StoreError::TooLong);
        }
        let req_id = self.next_req_id;
        self.next_req_id = self.next_req_id.wrapping_add(1);
        let hdr = XsdSockmsg { type_, req_id, tx_id, len: len as u32 };
        self.link.put(&hdr.to_bytes())?;
        for p in parts {
            self.link.put(p)?;
        }
        self.link.transport.notify();
        let r = self.await_reply(type_, req_id, reply);
        self.link.flush_notify();
        r
    }

    fn await_reply(&mut self, type_: u32, req_id: u32, reply: &mut [u8]) -> Result<usize, StoreError> {
        loop {
            let hdr = self.link.header()?;
            let len = hdr.len as usize;
            if hdr.type_ == XS_WATCH_EVENT {
                self.queue_event(len)?;
                continue;
            }
            if hdr.req_id != req_id {
                self.stale_replies += 1;
                self.link.skip(len)?;
                continue;
            }
            if hdr.type_ == XS_ERROR {
                let mut name = [0u8; 16];
                let n = len.min(name.len());
                self.link.get(&mut name[..n])?;
                self.link.skip(len - n)?;
                return Err(StoreError::Xs(xsd_error_errno(&name[..n]).unwrap_or(errno::EIO)));
            }
            if hdr.type_ != type_ {
                self.link.skip(len)?;
                return Err(StoreError::Protocol);
            }
            if len > reply.len() {
                self.link.skip(len)?;
                return Err(StoreError::BufferTooSmall(len));
            }
            self.link.get(&mut reply[..len])?;
            return Ok(len);
        }
    }
}

/// Iterates over the NUL-terminated names a [`StoreClient::directory`]
/// call left in `buf[..len]`.
pub fn names(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    buf.split(|&b| b == 0).filter(|n| !n.is_empty())
}

/// Parses a decimal u32 as written to the store: pv-abi's one strict
/// parser, shared with the VMM.
pub use pv_abi::xenbus::parse_u32;

/// Formats `v` in decimal into `buf`, returning the digits.
pub fn fmt_u32(mut v: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal() {
        let mut b = [0u8; 10];
        assert_eq!(fmt_u32(0, &mut b), b"0");
        assert_eq!(fmt_u32(u32::MAX, &mut b), b"4294967295");
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"12\0"), Some(12));
        for bad in [&b""[..], b"4294967296", b"-1", b"1 ", b"0x1", b"\0"] {
            assert_eq!(parse_u32(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn event_queue_keeps_order_and_drops_oldest() {
        let mut q = EventQueue::new();
        let push = |q: &mut EventQueue, p: &[u8]| {
            let slot = q.reserve(p.len()).unwrap();
            slot.copy_from_slice(p);
            q.commit(p.len());
        };
        push(&mut q, b"a\0t1\0");
        push(&mut q, b"b\0t2\0");
        push(&mut q, b"c\0t1\0");
        let (mut p, mut t) = ([0u8; 8], [0u8; 8]);
        // Selective take leaves the others in order.
        let off = q.find(Some(b"t2")).unwrap();
        assert_eq!(q.take(off, &mut p, Some(&mut t)), Ok((1, 2)));
        assert_eq!(&p[..1], b"b");
        q.purge(b"t1");
        assert_eq!(q.find(None), None);
        // Filling it drops the oldest.
        let big = [b'x'; 510];
        push(&mut q, &big);
        push(&mut q, &big);
        push(&mut q, b"new\0tok\0");
        assert_eq!(q.dropped, 1);
        let off = q.find(Some(b"tok")).unwrap();
        assert_eq!(q.take(off, &mut p, Some(&mut t)), Ok((3, 3)));
        assert!(q.reserve(EVENT_QUEUE_BYTES).is_none());
        // Too-small buffers: reported, entry consumed.
        push(&mut q, b"longpath\0t\0");
        let off = q.find(Some(b"t")).unwrap();
        let mut small = [0u8; 2];
        assert_eq!(q.take(off, &mut small, Some(&mut t)), Err(StoreError::BufferTooSmall(8)));
        assert_eq!(q.find(Some(b"t")), None);
        assert_eq!(split_event(b"p"), (&b"p"[..], &b""[..]));
    }

    #[test]
    fn error_names() {
        assert_eq!(StoreError::Xs(errno::ENOENT).name(), "ENOENT");
        assert_eq!(StoreError::BufferTooSmall(3).name(), "E2BIG");
        assert_eq!(StoreError::Protocol.errno(), errno::EIO);
    }
}
