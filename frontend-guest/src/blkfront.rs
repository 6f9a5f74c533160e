//! blkfront: the block front end (protocol in `pv_abi::blkif`).
//!
//! Disks are found in the store under `device/vbd/<vdev>` ([`list_disks`]).
//! [`connect`] runs the xenbus handshake (ring page granted to domain 0, an
//! unbound event channel, `ring-ref`/`event-channel`/`protocol` published)
//! and reads the back end's `sectors`, `info` and features.
//! [`connect_queues`] connects several queues (`multi-queue-num-queues`,
//! each queue's `queue-<N>/ring-ref` and `queue-<N>/event-channel`) and
//! multi-page rings (`ring-page-order`, `ring-ref<i>`), as Linux's
//! blkfront (`talk_to_blkback()` in `drivers/block/xen-blkfront.c`): each
//! queue is a [`BlkFront`] of its own (its ring, slots and event channel),
//! so each vCPU can drive one without sharing anything. Requests are
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

/// Requests in flight at most on a one-page ring.
pub const SLOTS: usize = BLKIF_RING_SIZE as usize;
/// Largest `ring-page-order` this front end uses: 8 pages, 256 requests
/// (a slot number fits the low 8 bits of a request id).
pub const MAX_RING_ORDER: u32 = 3;
/// Requests in flight at most on the largest ring.
pub const MAX_SLOTS: usize = SLOTS << MAX_RING_ORDER;
/// Most queues [`connect_queues`] sets up for one disk.
pub const MAX_QUEUES: usize = 8;
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

/// A connected block front end: one queue of a disk (the only one unless
/// [`connect_queues`] set up several).
pub struct BlkFront {
    ring: FrontRing<RawMemory, BlkifRequest, BlkifResponse>,
    /// One per ring slot, in pages of their own (a 256-slot array would
    /// not fit the boot stack next to the others).
    slots: &'static mut [Slot],
    /// Slots marked busy, kept beside `slots` so that
    /// [`in_flight`](Self::in_flight) (called twice per request by a caller
    /// keeping a depth) need not walk every slot: since the slots became a
    /// slice of run-time length that walk was no longer unrolled and cost
    /// ~110 guest instructions more per request (`vmm bench --only blk`).
    busy: usize,
    seq: u64,
    /// The device number (`device/vbd/<vdev>`).
    pub vdev: u32,
    /// The disk.
    pub info: DiskInfo,
    /// Grant reference of the (first) ring page.
    pub ring_ref: GrantRef,
    /// Grant references of every ring page (`ring_pages` of them).
    ring_refs: [GrantRef; 1 << MAX_RING_ORDER],
    /// Pages of the ring (2^`ring-page-order`).
    pub ring_pages: u32,
    /// This queue's number (0 with one queue).
    pub queue: u32,
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

/// `count` slots in fresh pages of their own.
fn alloc_slots(count: usize) -> Result<&'static mut [Slot], BlkError> {
    let bytes = (count * core::mem::size_of::<Slot>()) as u64;
    let gpa = crate::pages::alloc(bytes.div_ceil(PAGE_SIZE).max(1)).ok_or(BlkError::NoMemory)?;
    let first = gpa as *mut Slot;
    for i in 0..count {
        // SAFETY: `gpa` starts fresh, identity-mapped pages of at least
        // `count` slots, handed out once (the bump allocator never reuses
        // pages) and page-aligned, so aligned for `Slot`.
        unsafe { first.wrapping_add(i).write(FREE_SLOT) };
    }
    // SAFETY: the `count` slots were just initialised; nothing else refers
    // to these pages, for the guest's life.
    Ok(unsafe { core::slice::from_raw_parts_mut(first, count) })
}

/// One queue's ring before the handshake: its pages (granted), slots and
/// unbound event channel.
struct NewQueue {
    ring: FrontRing<RawMemory, BlkifRequest, BlkifResponse>,
    slots: &'static mut [Slot],
    refs: [GrantRef; 1 << MAX_RING_ORDER],
    port: u32,
}

impl NewQueue {
    fn new(order: u32) -> Result<Self, BlkError> {
        let pages = 1u64 << order;
        let base = crate::pages::alloc(pages).ok_or(BlkError::NoMemory)?;
        // SAFETY: `pages` pages just allocated for this ring, contiguous and
        // identity mapped, kept for the guest's life (never reused).
        let mem = unsafe { ring_buffers::RawMemory::new(base as *mut u8, (pages * PAGE_SIZE) as usize) }?;
        let ring = FrontRing::init(mem)?;
        let slots = alloc_slots(ring.size() as usize)?;
        let mut refs = [0; 1 << MAX_RING_ORDER];
        for (i, r) in refs.iter_mut().enumerate().take(pages as usize) {
            *r = grant::grant_page(DOMID_VMM, base + i as u64 * PAGE_SIZE, false).ok_or(BlkError::NoMemory)?;
        }
        let port = evtchn::alloc_unbound(DOMID_VMM)?;
        Ok(NewQueue { ring, slots, refs, port })
    }

    /// Writes this queue's keys under `dir` (the device's directory with
    /// one queue, `queue-<N>` with several): `ring-ref` for a one-page
    /// ring, else `ring-ref0`.., and `event-channel`.
    fn publish(&self, c: &mut Store, dir: &str, order: u32) -> Result<(), StoreError> {
        for i in 0..1u32 << order {
            let mut p = NodePath::<128>::new(dir)?;
            if order == 0 {
                p.push(xb::RING_REF)?;
            } else {
                let mut name = [0u8; 24];
                p.push(numbered(xb::RING_REF, i, &mut name)?)?;
            }
            c.write_u32(p.as_str(), self.refs[i as usize])?;
        }
        let mut p = NodePath::<128>::new(dir)?;
        p.push(xb::EVENT_CHANNEL)?;
        c.write_u32(p.as_str(), self.port)
    }
}

/// `base` followed by `n` in decimal (`ring-ref3`, `queue-1`), in `buf`.
fn numbered<'b>(base: &str, n: u32, buf: &'b mut [u8; 24]) -> Result<&'b str, StoreError> {
    let mut digits = [0u8; 10];
    let digits = crate::store::fmt_u32(n, &mut digits);
    let len = base.len() + digits.len();
    if len > buf.len() {
        return Err(StoreError::BadValue);
    }
    buf[..base.len()].copy_from_slice(base.as_bytes());
    buf[base.len()..len].copy_from_slice(digits);
    core::str::from_utf8(&buf[..len]).map_err(|_| StoreError::BadValue)
}

/// Reads a `u32` key of the back end (`None` if absent).
fn backend_u32(store: &mut Store, be: &str, key: &str) -> Result<Option<u32>, BlkError> {
    Ok(read_u64(store, be, key)?.map(|v| v.min(u64::from(u32::MAX)) as u32))
}

/// Sets up the disk `device/vbd/<vdev>` with one queue and a one-page
/// ring and runs the xenbus handshake (the keys every back end knows).
pub fn connect(store: &mut Store, vdev: u32) -> Result<BlkFront, BlkError> {
    let mut out = [None];
    connect_queues(store, vdev, 0, &mut out)?;
    out[0].take().ok_or(BlkError::BadRequest)
}

/// Sets up the disk `device/vbd/<vdev>` with up to `out.len()` queues
/// (at most [`MAX_QUEUES`]) and rings of 2^`ring_order` pages (at most
/// [`MAX_RING_ORDER`]), as many as the back end offers
/// (`multi-queue-max-queues`, `max-ring-page-order`; Linux's blkfront
/// takes the smaller of its own and the back end's), runs the handshake
/// and fills `out[..n]` with the queues; returns `n`. Each queue is used
/// on its own (its own ring, slots and event channel: one per vCPU needs
/// no lock). To detach, [`close`](BlkFront::close) one queue (the device
/// goes `Closed`, and with it every queue on the back end) and
/// [`release`](BlkFront::release) the others.
pub fn connect_queues(
    store: &mut Store,
    vdev: u32,
    ring_order: u32,
    out: &mut [Option<BlkFront>],
) -> Result<usize, BlkError> {
    if out.is_empty() {
        // No queue to fill: writing multi-queue-num-queues = 0 would only
        // make the back end refuse.
        return Err(BlkError::BadRequest);
    }
    let mut dir = NodePath::<64>::new("device")?;
    dir.push(DEVICE_TYPE)?;
    dir.push_u32(vdev)?;
    let mut be = [0u8; 128];
    let be_len = crate::xenbus::read_backend_path(store, dir.as_str(), &mut be)?.len();
    let be = core::str::from_utf8(&be[..be_len]).map_err(|_| StoreError::BadValue)?;
    let mut be_state = NodePath::<160>::new(be)?;
    be_state.push(xb::STATE)?;
    // The back end's limits are written before it goes InitWait.
    crate::xenbus::wait_for_state(store, be_state.as_str(), |s| s >= XenbusState::InitWait)?;
    let max_queues = backend_u32(store, be, xb::MULTI_QUEUE_MAX_QUEUES)?.unwrap_or(1);
    let max_order = backend_u32(store, be, xb::MAX_RING_PAGE_ORDER)?.unwrap_or(0);
    let queues = out.len().min(MAX_QUEUES).min(max_queues.max(1) as usize);
    let order = ring_order.min(MAX_RING_ORDER).min(max_order);
    let mut new: [Option<NewQueue>; MAX_QUEUES] = [const { None }; MAX_QUEUES];
    for q in new.iter_mut().take(queues) {
        *q = Some(NewQueue::new(order)?);
    }
    crate::xenbus::connect_frontend(store, dir.as_str(), |c, d| publish_queues(c, d, &new[..queues], order))
        .map_err(BlkError::Connect)?;
    let info = read_info(store, be)?;
    for (i, (slot, q)) in out.iter_mut().zip(new.iter_mut().take(queues)).enumerate() {
        let Some(q) = q.take() else { continue };
        *slot = Some(BlkFront {
            ring: q.ring,
            slots: q.slots,
            busy: 0,
            seq: 0,
            vdev,
            info,
            ring_ref: q.refs[0],
            ring_refs: q.refs,
            ring_pages: 1 << order,
            queue: i as u32,
            port: q.port,
            notifies: 0,
            leaked_grants: 0,
            be_state,
        });
    }
    Ok(queues)
}

/// Writes the keys of `queues` in the device directory `dir`: at the top
/// with one queue, else `multi-queue-num-queues` and `queue-<N>/`;
/// `ring-page-order` (only above 0, as Linux's blkfront) and `protocol` at
/// the top.
fn publish_queues(c: &mut Store, dir: &str, queues: &[Option<NewQueue>], order: u32) -> Result<(), StoreError> {
    if order > 0 {
        let mut p = NodePath::<96>::new(dir)?;
        p.push(xb::RING_PAGE_ORDER)?;
        c.write_u32(p.as_str(), order)?;
    }
    if let [Some(q)] = queues {
        q.publish(c, dir, order)?;
    } else {
        let mut p = NodePath::<96>::new(dir)?;
        p.push(xb::MULTI_QUEUE_NUM_QUEUES)?;
        c.write_u32(p.as_str(), queues.len() as u32)?;
        for (n, q) in queues.iter().enumerate() {
            let Some(q) = q else { continue };
            let mut name = [0u8; 24];
            let mut qdir = NodePath::<96>::new(dir)?;
            qdir.push(numbered(xb::QUEUE_PREFIX, n as u32, &mut name)?)?;
            q.publish(c, qdir.as_str(), order)?;
        }
    }
    let mut p = NodePath::<96>::new(dir)?;
    p.push(xb::PROTOCOL)?;
    c.write(p.as_str(), XEN_IO_PROTO_ABI_X86_64.as_bytes())
}

/// The disk's size and features, from the back end's directory `be`.
fn read_info(store: &mut Store, be: &str) -> Result<DiskInfo, BlkError> {
    Ok(DiskInfo {
        sectors: read_u64(store, be, keys::SECTORS)?.ok_or(StoreError::BadValue)?,
        sector_size: read_u64(store, be, keys::SECTOR_SIZE)?.unwrap_or(SECTOR_SIZE) as u32,
        info: read_u64(store, be, keys::INFO)?.unwrap_or(0) as u32,
        flush: read_u64(store, be, keys::FEATURE_FLUSH_CACHE)? == Some(1),
        discard: read_u64(store, be, keys::FEATURE_DISCARD)? == Some(1),
        max_indirect: read_u64(store, be, keys::FEATURE_MAX_INDIRECT_SEGMENTS)?.unwrap_or(0) as u32,
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
        for &r in &self.ring_refs[..self.ring_pages as usize] {
            grant::end_access(r)?;
        }
        evtchn::close(self.port)?;
        Ok(())
    }

    /// Requests this queue can have in flight (its ring's size).
    pub fn slots(&self) -> usize {
        self.slots.len()
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
        self.busy
    }

    /// Marks `slot` busy (a request in it went on the ring).
    fn set_busy(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            self.busy += usize::from(!s.busy);
            s.busy = true;
        }
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
        self.set_busy(slot);
        Ok(())
    }

    /// Queues any request as is, in slot `id & 0xff` (hostile-guest tests:
    /// the caller owns whatever grants it names). Completes like any other.
    pub fn queue_unchecked(&mut self, req: &BlkifRequest) -> Result<(), BlkError> {
        let slot = (req.id & 0xff) as usize % self.slots.len();
        self.slots[slot].ngrefs = 0;
        self.ring.push_request(req)?;
        self.set_busy(slot);
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
                self.busy = self.busy.saturating_sub(1);
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
