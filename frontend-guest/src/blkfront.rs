//! blkfront: the block front end (protocol in `pv_abi::blkif`).
//!
//! Disks are found in the store under `device/vbd/<vdev>` ([`list_disks`]).
//! [`connect`] runs the xenbus handshake (ring page granted to domain 0, an
//! unbound event channel, `ring-ref`/`event-channel`/`protocol` published)
//! and reads the back end's `sectors`, `info` and features. Requests are
//! queued with [`BlkFront::queue_io`] (read/write of a buffer of whole
//! sectors: up to 11 segments directly, more through an indirect page),
//! [`BlkFront::queue_flush`] and [`BlkFront::queue_discard`]; up to a ring's
//! worth may be in flight. [`BlkFront::push`] publishes them and notifies
//! only when Xen's rule says the back end is waiting; completions arrive
//! through the event-channel upcall ([`BlkFront::wait`]). Each data page is
//! granted for the life of its request and the grant ended on completion.
//!
//! Hot-plug: [`wait_for_disk`] waits for a disk to appear (a watch on
//! `device/vbd`); [`BlkFront::wait_backend_leaves`] and
//! [`BlkFront::close`] follow the toolstack's detach.

use crate::evtchn;
use crate::grant;
use crate::hypercall::Errno;
use crate::store::StoreError;
use crate::xenbus::{NodePath, Store};
use pv_abi::blkif::*;
use pv_abi::event_channel::DOMID_VMM;
use pv_abi::grant_table::GrantRef;
use pv_abi::layout::PAGE_SIZE;
use pv_abi::xenbus::{keys as xb, XenbusState, XEN_IO_PROTO_ABI_X86_64};
use ring_buffers::{FrontRing, RawMemory, RingError, RingMemory};

/// Requests in flight at most (one ring).
pub const SLOTS: usize = BLKIF_RING_SIZE as usize;
/// Most segments this front end puts in one request (indirect beyond 11).
pub const MAX_SEGMENTS: usize = 32;

/// What the back end says about the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskInfo {
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// `sector-size`.
    pub sector_size: u32,
    /// `info` (`VDISK_*` bits).
    pub info: u32,
    /// `feature-flush-cache`.
    pub flush: bool,
    /// `feature-discard`.
    pub discard: bool,
    /// `feature-max-indirect-segments` (0: no indirect requests).
    pub max_indirect: u32,
}

impl DiskInfo {
    /// Whether the disk is read-only.
    pub fn readonly(&self) -> bool {
        self.info & VDISK_READONLY != 0
    }
}

/// Why an operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlkError {
    /// No free page or grant reference.
    NoMemory,
    /// A hypercall failed.
    Hypercall(Errno),
    /// The ring is corrupt (or full when it must not be).
    Ring(RingError),
    /// A store operation failed.
    Store(StoreError),
    /// The handshake failed.
    Connect(crate::xenbus::ConnectError),
    /// Every request slot is in use.
    Busy,
    /// A buffer not 512-byte aligned, no sectors, or more segments than
    /// the back end accepts.
    BadRequest,
}

impl From<Errno> for BlkError {
    fn from(e: Errno) -> Self {
        BlkError::Hypercall(e)
    }
}
impl From<RingError> for BlkError {
    fn from(e: RingError) -> Self {
        BlkError::Ring(e)
    }
}
impl From<StoreError> for BlkError {
    fn from(e: StoreError) -> Self {
        BlkError::Store(e)
    }
}

#[derive(Clone, Copy)]
struct Slot {
    busy: bool,
    grefs: [GrantRef; MAX_SEGMENTS],
    ngrefs: u8,
    /// Indirect page of this slot (allocated on first use) and its grant.
    indirect: Option<(u64, GrantRef)>,
}

const FREE_SLOT: Slot = Slot { busy: false, grefs: [0; MAX_SEGMENTS], ngrefs: 0, indirect: None };

/// A completed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The id [`BlkFront::queue_io`] (etc.) returned.
    pub id: u64,
    /// The operation the back end reports.
    pub operation: u8,
    /// `BLKIF_RSP_*`.
    pub status: i16,
}

/// A connected block front end.
pub struct BlkFront {
    ring: FrontRing<RawMemory, BlkifRequest, BlkifResponse>,
    slots: [Slot; SLOTS],
    seq: u64,
    /// The device number (`device/vbd/<vdev>`).
    pub vdev: u32,
    /// The disk.
    pub info: DiskInfo,
    /// Grant reference of the ring page.
    pub ring_ref: GrantRef,
    /// The event channel.
    pub port: u32,
    /// Notifications sent to the back end.
    pub notifies: u64,
    /// Grants the back end still held at completion (leaked, not reused).
    pub leaked_grants: u32,
    /// The back end's `state` node.
    be_state: NodePath<160>,
}

impl core::fmt::Debug for BlkFront {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BlkFront").field("vdev", &self.vdev).field("info", &self.info).finish_non_exhaustive()
    }
}

/// Calls `f` with each disk's `vdev` under `device/vbd`, in store order.
pub fn list_disks(store: &mut Store, mut f: impl FnMut(u32)) -> Result<(), BlkError> {
    let mut buf = [0u8; 256];
    let mut dir = NodePath::<64>::new("device")?;
    dir.push(DEVICE_TYPE)?;
    let n = match store.directory(dir.as_str(), &mut buf) {
        Ok(n) => n,
        Err(StoreError::Xs(e)) if e == pv_abi::errno::ENOENT => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for name in crate::store::names(&buf[..n]) {
        if let Some(v) = crate::store::parse_u32(name) {
            f(v);
        }
    }
    Ok(())
}

/// The token of [`wait_for_disk`]'s watch on `device/vbd`.
pub const VBD_WATCH_TOKEN: &str = "rt-device-vbd";

/// Waits until a disk appears under `device/vbd` and returns its vdev:
/// a disk hot-plugged while the guest runs (`xl block-attach`, `vmm ctl
/// add-disk`), noticed through a watch on the directory as Linux's xenbus
/// front end notices it (`drivers/xen/xenbus/xenbus_probe_frontend.c`
/// watches `device`). The watch is removed before returning.
pub fn wait_for_disk(store: &mut Store) -> Result<u32, BlkError> {
    let mut dir = NodePath::<64>::new("device")?;
    dir.push(DEVICE_TYPE)?;
    store.watch(dir.as_str(), VBD_WATCH_TOKEN)?;
    let r = (|| loop {
        let mut first = None;
        list_disks(store, |v| {
            first.get_or_insert(v);
        })?;
        if let Some(v) = first {
            return Ok(v);
        }
        let mut path = [0u8; 128];
        match store.wait_watch_token(VBD_WATCH_TOKEN, &mut path) {
            Ok(_) | Err(StoreError::BufferTooSmall(_)) => {}
            Err(e) => return Err(BlkError::Store(e)),
        }
    })();
    let u = store.unwatch(dir.as_str(), VBD_WATCH_TOKEN);
    let v = r?;
    u?;
    Ok(v)
}

fn read_u64(store: &mut Store, dir: &str, key: &str) -> Result<Option<u64>, BlkError> {
    let mut p = NodePath::<160>::new(dir)?;
    p.push(key)?;
    let mut buf = [0u8; 24];
    match store.read(p.as_str(), &mut buf) {
        Ok(n) => Ok(crate::cmdline::parse_u64(buf[..n].trim_ascii())),
        Err(StoreError::Xs(e)) if e == pv_abi::errno::ENOENT => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Sets up the disk `device/vbd/<vdev>` and runs the xenbus handshake.
pub fn connect(store: &mut Store, vdev: u32) -> Result<BlkFront, BlkError> {
    let page = crate::pages::alloc(1).ok_or(BlkError::NoMemory)?;
    // SAFETY: a page just allocated for this ring and kept for the guest's
    // life (the bump allocator never reuses pages).
    let mem = unsafe { crate::arch::shared_page(page) };
    let ring = FrontRing::init(mem)?;
    let ring_ref = grant::grant_page(DOMID_VMM, page, false).ok_or(BlkError::NoMemory)?;
    let port = evtchn::alloc_unbound(DOMID_VMM)?;
    let mut dir = NodePath::<64>::new("device")?;
    dir.push(DEVICE_TYPE)?;
    dir.push_u32(vdev)?;
    crate::xenbus::connect_frontend(store, dir.as_str(), |c, d| {
        for (key, v) in [(xb::RING_REF, ring_ref), (xb::EVENT_CHANNEL, port)] {
            let mut p = NodePath::<96>::new(d)?;
            p.push(key)?;
            c.write_u32(p.as_str(), v)?;
        }
        let mut p = NodePath::<96>::new(d)?;
        p.push(xb::PROTOCOL)?;
        c.write(p.as_str(), XEN_IO_PROTO_ABI_X86_64.as_bytes())
    })
    .map_err(BlkError::Connect)?;
    // The disk's size and features, from the back end's directory.
    let mut be = [0u8; 128];
    let be_len = crate::xenbus::read_backend_path(store, dir.as_str(), &mut be)?.len();
    let be = core::str::from_utf8(&be[..be_len]).map_err(|_| StoreError::BadValue)?;
    let info = DiskInfo {
        sectors: read_u64(store, be, keys::SECTORS)?.ok_or(StoreError::BadValue)?,
        sector_size: read_u64(store, be, keys::SECTOR_SIZE)?.unwrap_or(SECTOR_SIZE) as u32,
        info: read_u64(store, be, keys::INFO)?.unwrap_or(0) as u32,
        flush: read_u64(store, be, keys::FEATURE_FLUSH_CACHE)? == Some(1),
        discard: read_u64(store, be, keys::FEATURE_DISCARD)? == Some(1),
        max_indirect: read_u64(store, be, keys::FEATURE_MAX_INDIRECT_SEGMENTS)?.unwrap_or(0) as u32,
    };
    let mut be_state = NodePath::<160>::new(be)?;
    be_state.push(xb::STATE)?;
    Ok(BlkFront {
        ring,
        slots: [FREE_SLOT; SLOTS],
        seq: 0,
        vdev,
        info,
        ring_ref,
        port,
        notifies: 0,
        leaked_grants: 0,
        be_state,
    })
}

impl BlkFront {
    /// Waits until the back end leaves `Connected`: `Closing` when the
    /// toolstack detaches the disk (`xl block-detach`, `vmm ctl
    /// remove-device`), `Unknown` when its directory is gone (a forced
    /// detach). Returns that state.
    pub fn wait_backend_leaves(&self, store: &mut Store) -> Result<XenbusState, BlkError> {
        let s = crate::xenbus::wait_for_state(store, self.be_state.as_str(), |s| {
            s == XenbusState::Unknown || s >= XenbusState::Closing
        })?;
        Ok(s)
    }

    /// The back end's state now (`Unknown` once its directory is gone).
    pub fn backend_state(&self, store: &mut Store) -> Result<XenbusState, BlkError> {
        Ok(crate::xenbus::read_state(store, self.be_state.as_str())?)
    }

    /// Waits until the back end's directory is gone (its state reads as
    /// `Unknown`): a front end that ignored `Closing` sees the VMM force
    /// the detach.
    pub fn wait_backend_gone(&self, store: &mut Store) -> Result<(), BlkError> {
        crate::xenbus::wait_for_state(store, self.be_state.as_str(), |s| s == XenbusState::Unknown)?;
        Ok(())
    }

    /// Closes the device as Linux's blkfront does when its back end goes
    /// `Closing` (`blkback_changed()` -> `blkfront_closing()` ->
    /// `xenbus_frontend_closed()`): switches to `Closed`, waits for the
    /// back end to be `Closed` (or gone), then ends the ring's grant and
    /// closes the event channel. Requests still in flight are abandoned.
    pub fn close(self, store: &mut Store) -> Result<(), BlkError> {
        let mut dir = NodePath::<64>::new("device")?;
        dir.push(DEVICE_TYPE)?;
        dir.push_u32(self.vdev)?;
        crate::xenbus::switch_state(store, dir.as_str(), XenbusState::Closed)?;
        crate::xenbus::wait_for_state(store, self.be_state.as_str(), |s| {
            s == XenbusState::Unknown || s == XenbusState::Closed
        })?;
        self.release()
    }

    /// Ends the ring's grant and closes the event channel, once the back
    /// end has gone (`Closed`, or removed by force). Fails with the
    /// grant table's error if the back end still maps the ring (then the
    /// page stays granted: it is leaked, never reused).
    pub fn release(self) -> Result<(), BlkError> {
        grant::end_access(self.ring_ref)?;
        evtchn::close(self.port)?;
        Ok(())
    }

    /// Reconnects after the guest resumed as a new domain
    /// ([`crate::hypercall::Resumed::NewDomain`]), as Linux's
    /// `blkfront_resume()` does: the old ring's grant and event channel
    /// are given up (the back end has unmapped and closed them while it
    /// reset to `InitWait`) and the handshake runs again on a fresh ring.
    /// Requests must not be in flight (the caller quiesced the disk).
    pub fn reconnect(self, store: &mut Store) -> Result<BlkFront, BlkError> {
        let vdev = self.vdev;
        // A grant the back end still maps is leaked, not reused; the
        // handshake goes on either way.
        let _ = self.release();
        connect(store, vdev)
    }

    fn free_slot(&mut self) -> Result<usize, BlkError> {
        if self.ring.is_full() {
            return Err(BlkError::Busy);
        }
        self.slots.iter().position(|s| !s.busy).ok_or(BlkError::Busy)
    }

    fn next_id(&mut self, slot: usize) -> u64 {
        self.seq += 1;
        self.seq << 8 | slot as u64
    }

    /// Requests queued or in flight.
    pub fn in_flight(&self) -> usize {
        self.slots.iter().filter(|s| s.busy).count()
    }

    /// Queues a read (`op` = [`BLKIF_OP_READ`]) or write of `nr` sectors at
    /// `sector` into or out of the buffer at guest-physical `buf`
    /// (identity mapped, 512-byte aligned, `nr * 512` bytes). The buffer
    /// must not be touched until the request completes. Returns the id.
    pub fn queue_io(&mut self, op: u8, sector: u64, buf: u64, nr: u64) -> Result<u64, BlkError> {
        let nsegs = ((buf % PAGE_SIZE) / SECTOR_SIZE + nr).div_ceil(SECTORS_PER_PAGE) as usize;
        let indirect_ok = nsegs <= MAX_SEGMENTS && nsegs <= self.info.max_indirect as usize;
        if buf % SECTOR_SIZE != 0 || nr == 0 || (nsegs > BLKIF_MAX_SEGMENTS_PER_REQUEST && !indirect_ok) {
            return Err(BlkError::BadRequest);
        }
        if op != BLKIF_OP_READ && op != BLKIF_OP_WRITE {
            return Err(BlkError::BadRequest);
        }
        let slot = self.free_slot()?;
        let indirect = if nsegs > BLKIF_MAX_SEGMENTS_PER_REQUEST {
            Some(match self.slots[slot].indirect {
                Some(i) => i,
                None => {
                    let page = crate::pages::alloc(1).ok_or(BlkError::NoMemory)?;
                    let gref = grant::grant_page(DOMID_VMM, page, true).ok_or(BlkError::NoMemory)?;
                    self.slots[slot].indirect = Some((page, gref));
                    (page, gref)
                }
            })
        } else {
            None
        };
        // Grant the pages, building the segments.
        let mut segs = [BlkifRequestSegment::default(); MAX_SEGMENTS];
        let (mut left, mut addr) = (nr, buf);
        for (i, seg) in segs.iter_mut().enumerate().take(nsegs) {
            let first = (addr % PAGE_SIZE) / SECTOR_SIZE;
            let n = left.min(SECTORS_PER_PAGE - first);
            // A write only lets the back end read the page.
            let Some(gref) = grant::grant_page(DOMID_VMM, addr & !(PAGE_SIZE - 1), op == BLKIF_OP_WRITE) else {
                let g = self.slots[slot].grefs;
                self.end_grants(&g[..i]);
                return Err(BlkError::NoMemory);
            };
            self.slots[slot].grefs[i] = gref;
            *seg = BlkifRequestSegment::new(gref, first as u8, (first + n - 1) as u8);
            left -= n;
            addr = (addr & !(PAGE_SIZE - 1)) + PAGE_SIZE;
        }
        let id = self.next_id(slot);
        let req = match indirect {
            None => {
                let mut r = BlkifRequest::direct(op, id, sector, &segs[..nsegs]);
                r.handle = self.vdev as u16;
                r
            }
            Some((page, gref)) => {
                // SAFETY: the slot's indirect page, allocated above for the
                // guest's life and identity mapped; the back end only reads it
                // while this request is in flight, and this slot is free.
                let mem = unsafe { crate::arch::shared_page(page) };
                for (i, s) in segs[..nsegs].iter().enumerate() {
                    mem.write(i * core::mem::size_of::<BlkifRequestSegment>(), s);
                }
                let mut grefs = [0; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
                grefs[0] = gref;
                BlkifRequest::from_indirect(&BlkifRequestIndirect {
                    operation: BLKIF_OP_INDIRECT,
                    indirect_op: op,
                    nr_segments: nsegs as u16,
                    id,
                    sector_number: sector,
                    handle: self.vdev as u16,
                    indirect_grefs: grefs,
                    ..Default::default()
                })
            }
        };
        self.slots[slot].ngrefs = nsegs as u8;
        self.queue_raw(slot, &req)?;
        Ok(id)
    }

    /// Queues a cache flush (answered once earlier writes are durable).
    pub fn queue_flush(&mut self) -> Result<u64, BlkError> {
        let slot = self.free_slot()?;
        let id = self.next_id(slot);
        let req =
            BlkifRequest { operation: BLKIF_OP_FLUSH_DISKCACHE, id, handle: self.vdev as u16, ..Default::default() };
        self.slots[slot].ngrefs = 0;
        self.queue_raw(slot, &req)?;
        Ok(id)
    }

    /// Queues a discard of `nr` sectors at `sector` (they read back as
    /// zeros afterwards).
    pub fn queue_discard(&mut self, sector: u64, nr: u64) -> Result<u64, BlkError> {
        let slot = self.free_slot()?;
        let id = self.next_id(slot);
        let d = BlkifRequestDiscard {
            operation: BLKIF_OP_DISCARD,
            id,
            sector_number: sector,
            nr_sectors: nr,
            handle: self.vdev as u16,
            ..Default::default()
        };
        self.slots[slot].ngrefs = 0;
        self.queue_raw(slot, &BlkifRequest::from_discard(&d))?;
        Ok(id)
    }

    fn queue_raw(&mut self, slot: usize, req: &BlkifRequest) -> Result<(), BlkError> {
        if let Err(e) = self.ring.push_request(req) {
            let (g, n) = (self.slots[slot].grefs, self.slots[slot].ngrefs as usize);
            self.end_grants(&g[..n]);
            return Err(e.into());
        }
        self.slots[slot].busy = true;
        Ok(())
    }

    /// Queues any request as is, in slot `id & 0xff` (hostile-guest tests:
    /// the caller owns whatever grants it names). Completes like any other.
    pub fn queue_unchecked(&mut self, req: &BlkifRequest) -> Result<(), BlkError> {
        let slot = (req.id & 0xff) as usize % SLOTS;
        self.slots[slot].ngrefs = 0;
        self.ring.push_request(req)?;
        self.slots[slot].busy = true;
        Ok(())
    }

    /// Publishes queued requests and notifies the back end if it asked to
    /// be (Xen's `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`).
    pub fn push(&mut self) {
        if self.ring.push_requests_and_check_notify() {
            self.notifies += 1;
            evtchn::notify(self.port);
        }
    }

    fn end_grants(&mut self, grefs: &[GrantRef]) {
        for &g in grefs {
            if grant::end_access(g).is_err() {
                self.leaked_grants += 1;
            }
        }
    }

    /// Takes one completion if there is one, ending its grants.
    pub fn poll(&mut self) -> Result<Option<Completion>, BlkError> {
        let Some(r) = self.ring.pop_response()? else { return Ok(None) };
        let slot = (r.id & 0xff) as usize;
        if let Some(s) = self.slots.get(slot).copied() {
            if s.busy {
                self.end_grants(&s.grefs[..s.ngrefs as usize]);
                self.slots[slot].busy = false;
                self.slots[slot].ngrefs = 0;
            }
        }
        Ok(Some(Completion { id: r.id, operation: r.operation, status: r.status }))
    }

    /// Waits (halting between upcalls) for the next completion, re-arming
    /// `rsp_event` before sleeping so the back end notifies us.
    pub fn wait(&mut self) -> Result<Completion, BlkError> {
        loop {
            if let Some(c) = self.poll()? {
                return Ok(c);
            }
            evtchn::wait_for_responses(&mut self.ring, self.port)?;
        }
    }

    /// Like [`wait`](Self::wait), but gives up (returning `None`) after
    /// `spins` checks without an event: for requests that may never be
    /// answered (a stopped back end).
    pub fn wait_bounded(&mut self, spins: u32) -> Result<Option<Completion>, BlkError> {
        for _ in 0..spins {
            if let Some(c) = self.poll()? {
                return Ok(Some(c));
            }
            crate::arch::pause();
        }
        Ok(None)
    }

    /// Pushes and waits for request `id`, returning its status (other
    /// completions that arrive first are dropped).
    pub fn complete(&mut self, id: u64) -> Result<i16, BlkError> {
        self.push();
        loop {
            let c = self.wait()?;
            if c.id == id {
                return Ok(c.status);
            }
        }
    }

    /// Reads `nr` sectors at `sector` into `buf` and waits.
    pub fn read(&mut self, sector: u64, buf: u64, nr: u64) -> Result<i16, BlkError> {
        let id = self.queue_io(BLKIF_OP_READ, sector, buf, nr)?;
        self.complete(id)
    }

    /// Writes `nr` sectors at `sector` from `buf` and waits.
    pub fn write(&mut self, sector: u64, buf: u64, nr: u64) -> Result<i16, BlkError> {
        let id = self.queue_io(BLKIF_OP_WRITE, sector, buf, nr)?;
        self.complete(id)
    }

    /// Flushes and waits: on `BLKIF_RSP_OKAY` every completed write is durable.
    pub fn flush(&mut self) -> Result<i16, BlkError> {
        let id = self.queue_flush()?;
        self.complete(id)
    }

    /// Discards and waits.
    pub fn discard(&mut self, sector: u64, nr: u64) -> Result<i16, BlkError> {
        let id = self.queue_discard(sector, nr)?;
        self.complete(id)
    }

    /// Overwrites the shared `req_prod` (hostile-guest tests).
    pub fn poke_req_prod(&self, value: u32) {
        self.ring.memory().store_u32(0, value, core::sync::atomic::Ordering::SeqCst);
    }

    /// Notifies the back end whatever the ring says.
    pub fn kick(&mut self) {
        self.notifies += 1;
        evtchn::notify(self.port);
    }
}

/// The test pattern: the 8-byte word at disk byte offset `offset` (a
/// multiple of 8) of a write tagged `seed`. Host tests compute the same.
pub fn pattern_word(seed: u64, offset: u64) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ offset
}

/// A buffer of whole pages for block I/O.
#[derive(Clone, Copy, Debug)]
pub struct IoBuf {
    /// Guest-physical (= virtual) address of the first page.
    pub gpa: u64,
    /// Number of pages.
    pub pages: u64,
}

impl IoBuf {
    /// `pages` fresh pages.
    pub fn alloc(pages: u64) -> Option<IoBuf> {
        Some(IoBuf { gpa: crate::pages::alloc(pages)?, pages })
    }

    /// Calls `f(page memory, offset in page, offset from at)` for each
    /// 8-byte word of `bytes` bytes at byte `at` of the buffer; stops at
    /// the first `false`.
    fn words(&self, at: u64, bytes: u64, mut f: impl FnMut(&RawMemory, usize, u64) -> bool) -> bool {
        let end = (at + bytes).min(self.pages * PAGE_SIZE);
        let mut pos = at;
        while pos < end {
            let page = pos & !(PAGE_SIZE - 1);
            // SAFETY: `page` is one of this buffer's pages (bounded by
            // `self.pages` above), allocated for the guest's life and
            // identity mapped; the back end writes it only while a request
            // is in flight, when the caller does not touch it.
            let mem = unsafe { crate::arch::shared_page(self.gpa + page) };
            let stop = end.min(page + PAGE_SIZE);
            while pos < stop {
                if !f(&mem, (pos - page) as usize, pos - at) {
                    return false;
                }
                pos += 8;
            }
        }
        true
    }

    /// Fills `nr` sectors at byte `at` of the buffer with the pattern for
    /// disk sector `sector` and `seed`.
    pub fn fill(&self, at: u64, nr: u64, sector: u64, seed: u64) {
        let base = sector * SECTOR_SIZE;
        self.words(at, nr * SECTOR_SIZE, |m, off, w| {
            m.write(off, &pattern_word(seed, base + w));
            true
        });
    }

    /// Checks `nr` sectors at byte `at` against the pattern; returns the
    /// byte offset (from `at`) of the first difference.
    pub fn check(&self, at: u64, nr: u64, sector: u64, seed: u64) -> Option<u64> {
        let base = sector * SECTOR_SIZE;
        let mut bad = None;
        self.words(at, nr * SECTOR_SIZE, |m, off, w| {
            if m.read::<u64>(off) != pattern_word(seed, base + w) {
                bad = Some(w);
            }
            bad.is_none()
        });
        bad
    }

    /// Whether `nr` sectors at byte `at` are all zero.
    pub fn is_zero(&self, at: u64, nr: u64) -> bool {
        self.words(at, nr * SECTOR_SIZE, |m, off, _| m.read::<u64>(off) == 0)
    }

    /// Sets every word of `nr` sectors at byte `at` to `value`.
    pub fn set(&self, at: u64, nr: u64, value: u64) {
        self.words(at, nr * SECTOR_SIZE, |m, off, _| {
            m.write(off, &value);
            true
        });
    }
}
