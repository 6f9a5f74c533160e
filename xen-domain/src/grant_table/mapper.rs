//! The grant mapper: the only way a back-end reaches guest pages.
//!
//! The guest owns its v1 grant table (pages it registered with
//! `GNTTABOP_setup_table`). To use a grant reference a back-end calls
//! [`GrantTable::map`], which checks the entry (`GTF_permit_access`, granted
//! to domain 0, not read-only for a write mapping, frame inside guest RAM
//! and outside the reserved and page-table regions) and atomically sets
//! `GTF_reading` (and `GTF_writing`) in the guest's entry, with a
//! compare-and-swap so a concurrent revocation either wins cleanly or sees
//! the page in use. While any [`GrantMapping`] is alive the guest cannot end
//! access; dropping the last one clears the flags. Every access through a
//! mapping is bounded to its page.

use pv_abi::event_channel::DOMID_VMM;
use pv_abi::grant_table::*;
use pv_abi::layout::PAGE_SIZE;
use std::ops::Deref;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileMemory, VolatileSlice};

pub mod state;

/// Most grant-table frames a guest may register.
pub const MAX_GRANT_FRAMES: u32 = 16;

/// Why a grant could not be used; each maps to Xen's `GNTST_*` status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// The guest has not registered a grant table.
    #[error("no grant table registered")]
    NoTable,
    /// The reference is beyond the table.
    #[error("grant reference {0} is out of range")]
    BadRef(GrantRef),
    /// The entry does not permit access to domain 0 (never granted,
    /// revoked, or granted to another domain).
    #[error("grant reference {0} does not permit access")]
    NotPermitted(GrantRef),
    /// A write through a read-only grant.
    #[error("grant reference {0} is read-only")]
    ReadOnly(GrantRef),
    /// The granted frame is not ordinary guest RAM.
    #[error("grant reference {0} names frame {1:#x} outside usable guest RAM")]
    BadFrame(GrantRef, u64),
    /// An access outside the granted page.
    #[error("access {offset}+{len} crosses the granted page")]
    OutOfPage {
        /// Offset in the page.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// The guest changed the entry under us too often.
    #[error("grant reference {0} keeps changing")]
    Busy(GrantRef),
    /// A copy side names a domain that does not exist.
    #[error("no such domain {0}")]
    BadDomain(u16),
}

impl GrantError {
    /// Xen's `GNTST_*` code for this error.
    pub fn gntst(self) -> i16 {
        match self {
            GrantError::NoTable | GrantError::BadRef(_) => GNTST_BAD_GNTREF,
            GrantError::NotPermitted(_) | GrantError::ReadOnly(_) => GNTST_PERMISSION_DENIED,
            GrantError::BadFrame(..) => GNTST_BAD_PAGE,
            GrantError::OutOfPage { .. } => GNTST_BAD_COPY_ARG,
            GrantError::Busy(_) => GNTST_EAGAIN,
            GrantError::BadDomain(_) => GNTST_BAD_DOMAIN,
        }
    }
}

/// Grant entries the largest table holds: the per-entry words are
/// allocated once for this many, so registering or growing the table
/// never moves them under a concurrent map.
const MAX_ENTRIES: usize = MAX_GRANT_FRAMES as usize * GRANT_ENTRIES_PER_FRAME;

/// Per-entry word, bits 0..32: live mappings (readers, every mapping
/// reads).
const READERS: u64 = 0xffff_ffff;
/// Per-entry word, bits 32..63: live writable mappings.
const WRITER: u64 = 1 << 32;
const WRITERS: u64 = 0x7fff_ffff << 32;
/// Per-entry word, bit 63: the entry's lock (Xen's active-entry lock,
/// `act->lock` in `xen/common/grant_table.c`), held while its in-use
/// flags and counts change together.
const LOCKED: u64 = 1 << 63;

fn counts(word: u64) -> (u32, u32) {
    ((word & READERS) as u32, ((word & WRITERS) >> 32) as u32)
}

/// The registered table frames, read without a lock: a map loads `nr`
/// (Acquire) and then the slots below it. Growing writes the new slots
/// before publishing the larger `nr` (Release), so a reader sees either
/// the old table or the grown one; replacing frames (only while no grant
/// is mapped) is bracketed by [`GrantTable::gen`].
struct FrameSlots {
    /// Guest-physical address of each registered table frame.
    gpa: [AtomicU64; MAX_GRANT_FRAMES as usize],
    /// Host address of each frame, resolved once at set-up (0: the page
    /// is not one contiguous piece of guest memory; its entries are
    /// looked up per access), so a map or unmap does no guest-memory
    /// lookup.
    host: [AtomicUsize; MAX_GRANT_FRAMES as usize],
    /// Registered frames.
    nr: AtomicUsize,
}

impl FrameSlots {
    fn new() -> Self {
        FrameSlots {
            gpa: std::array::from_fn(|_| AtomicU64::new(0)),
            host: std::array::from_fn(|_| AtomicUsize::new(0)),
            nr: AtomicUsize::new(0),
        }
    }
}

/// Host address of a page of guest memory that stays mapped while the
/// table's `mem` (a clone of the guest memory) lives.
#[derive(Clone, Copy)]
struct HostAddr(usize);

/// Where one grant entry lies: guest-physical, and in host memory if the
/// table frame was resolved.
#[derive(Clone, Copy)]
struct EntryAt {
    gpa: u64,
    host: Option<HostAddr>,
}

/// A guest's grant table as domain 0 sees it.
///
/// Locking: map and unmap take no table-wide lock. They find the entry
/// through [`FrameSlots`] (atomics) and serialise on the entry alone (the
/// `LOCKED` bit of its word in `in_use`), as Xen serialises on the active
/// entry, so back-end queues on different threads using different grants
/// never wait for each other. Only the rare writers of the frame list
/// (`setup`, `setup_owned`, `swap`) take `writer`.
pub struct GrantTable {
    mem: GuestMemoryMmap,
    /// Frames a grant may name: `[lo, hi)` guest-physical.
    usable: (u64, u64),
    /// Host address of `usable.0` if the whole usable range is one
    /// contiguous host mapping: a granted page's slice is then found
    /// without a guest-memory lookup.
    usable_host: Option<HostAddr>,
    frames: FrameSlots,
    /// Odd while frames are being replaced; bumped twice per replacement.
    /// A map reads it before finding the entry and again after marking
    /// it: if it changed, the map undoes its mark and retries.
    gen: AtomicU64,
    /// Per reference: live mappings (readers, writers) and the entry lock.
    in_use: Box<[AtomicU64]>,
    /// Serialises the writers of `frames` (never taken by map or unmap).
    writer: Mutex<()>,
}

/// The held lock of one entry's word; dropping it stores `word` (the new
/// counts) and so releases the lock.
struct EntryLock<'a> {
    slot: &'a AtomicU64,
    word: u64,
}

impl Drop for EntryLock<'_> {
    fn drop(&mut self) {
        self.slot.store(self.word & !LOCKED, Ordering::Release);
    }
}

impl std::fmt::Debug for GrantTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantTable").field("usable", &self.usable).finish_non_exhaustive()
    }
}

impl GrantTable {
    /// A table for a guest whose grantable RAM is `usable_lo..usable_hi`.
    pub fn new(mem: GuestMemoryMmap, usable_lo: u64, usable_hi: u64) -> Self {
        let usable_host = usable_hi
            .checked_sub(usable_lo)
            .and_then(|len| mem.get_slice(GuestAddress(usable_lo), usize::try_from(len).ok()?).ok())
            .map(|s| HostAddr(s.ptr_guard().as_ptr().expose_provenance()));
        GrantTable {
            mem,
            usable: (usable_lo, usable_hi),
            usable_host,
            frames: FrameSlots::new(),
            gen: AtomicU64::new(0),
            in_use: (0..MAX_ENTRIES).map(|_| AtomicU64::new(0)).collect(),
            writer: Mutex::new(()),
        }
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes entry `i`'s lock (spinning: it is held only for a few atomic
    /// operations; yielding now and then in case its holder was
    /// descheduled). `i` must be below `MAX_ENTRIES`.
    fn lock_entry(&self, i: usize) -> EntryLock<'_> {
        let slot = &self.in_use[i];
        let mut spins = 0u32;
        loop {
            let cur = slot.load(Ordering::Relaxed);
            if cur & LOCKED == 0
                && slot.compare_exchange_weak(cur, cur | LOCKED, Ordering::SeqCst, Ordering::Relaxed).is_ok()
            {
                return EntryLock { slot, word: cur };
            }
            spins = spins.wrapping_add(1);
            if spins % 64 == 0 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    fn frame_ok(&self, gpa: u64) -> bool {
        gpa % PAGE_SIZE == 0 && gpa >= self.usable.0 && gpa.checked_add(PAGE_SIZE).is_some_and(|e| e <= self.usable.1)
    }

    /// `GNTTABOP_setup_table`: registers the guest's table frames (guest
    /// frame numbers). Refused while any grant is mapped.
    pub fn setup(&self, frames: &[u64]) -> Result<(), i16> {
        if frames.is_empty() || frames.len() > MAX_GRANT_FRAMES as usize {
            return Err(GNTST_GENERAL_ERROR);
        }
        let gpas: Vec<u64> = frames.iter().map(|&f| f.wrapping_mul(PAGE_SIZE)).collect();
        if frames.iter().zip(&gpas).any(|(&f, &g)| f > u64::MAX / PAGE_SIZE || !self.frame_ok(g)) {
            return Err(GNTST_BAD_VIRT_ADDR);
        }
        let _w = self.lock_writer();
        self.replace(&gpas)
    }

    /// Xen's model (VMM-owned frames, PVH guests): the table is the
    /// VMM's own pages `gpas` (guest-physical, page-aligned, outside the
    /// grantable range by design). Growing keeps live mappings: the new
    /// list must extend the registered one.
    pub fn setup_owned(&self, gpas: &[u64]) -> Result<(), i16> {
        if gpas.is_empty() || gpas.len() > MAX_GRANT_FRAMES as usize || gpas.iter().any(|g| g % PAGE_SIZE != 0) {
            return Err(GNTST_GENERAL_ERROR);
        }
        let _w = self.lock_writer();
        let nr = self.frames.nr.load(Ordering::Acquire);
        let extends = gpas.len() >= nr && (0..nr).all(|i| self.frames.gpa[i].load(Ordering::Relaxed) == gpas[i]);
        if !extends {
            return self.replace(gpas);
        }
        // Frames below `nr` are unchanged; a map sees the new ones only
        // once `nr` is published after them.
        self.write_slots(nr, &gpas[nr..]);
        self.frames.nr.store(gpas.len(), Ordering::Release);
        Ok(())
    }

    /// Replaces the frame list with `gpas` if no grant is mapped (the
    /// caller holds `writer`). `gen` is odd from before the check until
    /// after the new list is in place: a map that locked its entry before
    /// `gen` turned odd is seen by the check (its entry word is non-zero
    /// from the moment it takes the entry lock); one that locked it later
    /// sees `gen` changed and marks nothing ([`Self::mark_entry`]).
    fn replace(&self, gpas: &[u64]) -> Result<(), i16> {
        self.gen.fetch_add(1, Ordering::SeqCst);
        let busy = self.in_use.iter().any(|w| w.load(Ordering::SeqCst) != 0);
        if !busy {
            #[cfg(test)]
            std::thread::yield_now();
            self.write_slots(0, gpas);
            self.frames.nr.store(gpas.len(), Ordering::Release);
        }
        self.gen.fetch_add(1, Ordering::SeqCst);
        if busy {
            Err(GNTST_GENERAL_ERROR)
        } else {
            Ok(())
        }
    }

    /// Stores frames `gpas` (and their host addresses) from slot `from`.
    fn write_slots(&self, from: usize, gpas: &[u64]) {
        for (i, (&gpa, host)) in gpas.iter().zip(self.resolve(gpas)).enumerate() {
            self.frames.gpa[from + i].store(gpa, Ordering::Relaxed);
            self.frames.host[from + i].store(host.map_or(0, |HostAddr(a)| a), Ordering::Relaxed);
        }
    }

    /// `GNTTABOP_swap_grant_ref` (Xen's `swap_grant_ref()`, grant v1):
    /// swaps two entries of the guest's table. A reference beyond the
    /// table is `GNTST_bad_gntref`, the same reference twice is a no-op,
    /// an entry mapped by a back end is `GNTST_eagain`.
    pub fn swap(&self, a: GrantRef, b: GrantRef) -> i16 {
        let _w = self.lock_writer();
        let n = self.frames.nr.load(Ordering::Acquire) * GRANT_ENTRIES_PER_FRAME;
        if a as usize >= n || b as usize >= n {
            return GNTST_BAD_GNTREF;
        }
        if a == b {
            return GNTST_OKAY;
        }
        // Both entry locks, lower reference first (no lock-order cycle
        // with another swap; maps hold one entry lock at a time).
        let (lo, hi) = (a.min(b) as usize, a.max(b) as usize);
        let (l1, l2) = (self.lock_entry(lo), self.lock_entry(hi));
        if l1.word != 0 || l2.word != 0 {
            return GNTST_EAGAIN;
        }
        let (Ok(ea), Ok(eb)) = (self.entry_at(a), self.entry_at(b)) else {
            return GNTST_BAD_GNTREF;
        };
        let load = |e| self.with_entry(e, |w: &AtomicU64| w.load(Ordering::SeqCst));
        let (Some(wa), Some(wb)) = (load(ea), load(eb)) else { return GNTST_GENERAL_ERROR };
        let _ = self.with_entry(ea, |w: &AtomicU64| w.store(wb, Ordering::SeqCst));
        let _ = self.with_entry(eb, |w: &AtomicU64| w.store(wa, Ordering::SeqCst));
        GNTST_OKAY
    }

    /// Number of registered frames.
    pub fn nr_frames(&self) -> u32 {
        self.frames.nr.load(Ordering::Acquire) as u32
    }

    /// The host address of each table frame, if it is one contiguous
    /// piece of guest memory.
    fn resolve(&self, gpas: &[u64]) -> Vec<Option<HostAddr>> {
        let page = PAGE_SIZE as usize;
        let host = |&gpa: &u64| self.mem.get_slice(GuestAddress(gpa), page).ok().map(|s| s.ptr_guard().as_ptr());
        gpas.iter().map(|gpa| host(gpa).map(|p| HostAddr(p.expose_provenance()))).collect()
    }

    /// Where `gref`'s entry lies, from the frame slots (no lock).
    fn entry_at(&self, gref: GrantRef) -> Result<EntryAt, GrantError> {
        let nr = self.frames.nr.load(Ordering::Acquire);
        if nr == 0 {
            return Err(GrantError::NoTable);
        }
        let per = GRANT_ENTRIES_PER_FRAME as u32;
        let i = (gref / per) as usize;
        if i >= nr {
            return Err(GrantError::BadRef(gref));
        }
        let offset = (gref % per) as usize * 8;
        let frame = self.frames.gpa[i].load(Ordering::Relaxed);
        let host = match self.frames.host[i].load(Ordering::Relaxed) {
            0 => None,
            a => Some(HostAddr(a + offset)),
        };
        Ok(EntryAt { gpa: frame + offset as u64, host })
    }

    /// Calls `f` with the atomic `T` (u64: the whole entry, u16: its flags)
    /// at the start of grant entry `e`; `None` if it is not guest memory.
    fn with_entry<T: vm_memory::AtomicInteger, R>(&self, e: EntryAt, f: impl FnOnce(&T) -> R) -> Option<R> {
        let Some(HostAddr(addr)) = e.host else { return self.with_atomic(e.gpa, f) };
        let p = std::ptr::with_exposed_provenance_mut::<T>(addr);
        // SAFETY: `addr` lies in a table frame resolved by `resolve` to one
        // contiguous host mapping of guest memory, which stays mapped while
        // `self.mem` (a clone sharing the regions) lives, so as long as
        // `self`; it is 8-aligned (page base + 8 * index) and `T` is at
        // most 8 bytes. Guest memory is only ever accessed atomically or
        // volatilely, never through Rust references, as `from_ptr` needs.
        Some(f(unsafe { &*p.cast::<T>() }))
    }

    fn with_atomic<T: vm_memory::AtomicInteger, R>(&self, gpa: u64, f: impl FnOnce(&T) -> R) -> Option<R> {
        let slice = self.mem.get_slice(GuestAddress(gpa), std::mem::size_of::<T>()).ok()?;
        let a = slice.get_atomic_ref::<T>(0).ok()?;
        Some(f(a))
    }

    /// Maps `gref` for domain 0, read-only or writable. The returned
    /// mapping keeps the grant marked in use until dropped.
    pub fn map(self: &Arc<Self>, gref: GrantRef, writable: bool) -> Result<GrantMapping, GrantError> {
        let (entry, gpa) = self.mark(gref, writable)?;
        Ok(GrantMapping { table: self.clone(), gref, entry, gpa, writable })
    }

    /// [`map`](Self::map) for a mapping that lives no longer than this
    /// borrow of the table (a request's data pages): the same checks and
    /// marks, without taking a reference count on the table.
    pub fn map_scoped(&self, gref: GrantRef, writable: bool) -> Result<GrantMapping<&Self>, GrantError> {
        let (entry, gpa) = self.mark(gref, writable)?;
        Ok(GrantMapping { table: self, gref, entry, gpa, writable })
    }

    /// Finds `gref`'s entry, checks it and marks it in use; returns where
    /// the entry is and the granted page's guest-physical address. Retries
    /// (a few times, then `Busy`) while the frame list is being replaced.
    fn mark(&self, gref: GrantRef, writable: bool) -> Result<(EntryAt, u64), GrantError> {
        if gref as usize >= MAX_ENTRIES {
            return Err(self.entry_at(gref).err().unwrap_or(GrantError::BadRef(gref)));
        }
        for _ in 0..64 {
            let gen = self.gen.load(Ordering::SeqCst);
            if gen % 2 == 0 {
                race_point();
                if let Some(marked) = self.mark_entry(gref, gen, writable) {
                    return marked;
                }
            }
            std::thread::yield_now();
        }
        Err(GrantError::Busy(gref))
    }

    /// Under the entry's lock: finds and checks the guest's entry, sets
    /// `GTF_reading` (and `GTF_writing`) and counts the mapping. `None`
    /// (nothing done) if the frame list changed since `gen` was read.
    ///
    /// Why this is safe against `replace` without a table lock: the entry
    /// lock is taken (a SeqCst write making the entry word non-zero)
    /// before `gen` is read again. If `gen` is unchanged then, `replace`
    /// has not yet made it odd, so its later scan sees this word non-zero
    /// and refuses; the word stays non-zero while the mapping lives.
    fn mark_entry(&self, gref: GrantRef, gen: u64, writable: bool) -> Option<Result<(EntryAt, u64), GrantError>> {
        // `mark` bounded `gref` by MAX_ENTRIES.
        let mut lock = self.lock_entry(gref as usize);
        if self.gen.load(Ordering::SeqCst) != gen {
            return None;
        }
        let entry = match self.entry_at(gref) {
            Ok(e) => e,
            Err(e) => return Some(Err(e)),
        };
        Some(self.mark_locked(&mut lock, gref, entry, writable).map(|gpa| (entry, gpa)))
    }

    fn mark_locked(
        &self,
        lock: &mut EntryLock<'_>,
        gref: GrantRef,
        entry: EntryAt,
        writable: bool,
    ) -> Result<u64, GrantError> {
        let (readers, writers) = counts(lock.word);
        if readers == u32::MAX || (writable && u64::from(writers) == WRITERS >> 32) {
            return Err(GrantError::Busy(gref));
        }
        let add = if writable { GTF_READING | GTF_WRITING } else { GTF_READING };
        // One 64-bit compare-and-swap over the whole v1 entry (flags,
        // domid, frame): the frame we checked is the frame we marked, so
        // no re-read is needed, and a concurrent revocation either lands
        // before (we refuse) or fails against our mark.
        let frame_gpa = self
            .with_entry(entry, |w: &AtomicU64| {
                for _ in 0..64 {
                    let cur = w.load(Ordering::SeqCst);
                    let GrantEntryV1 { flags, domid, frame } = GrantEntryV1::from_word(cur);
                    if flags & GTF_TYPE_MASK != GTF_PERMIT_ACCESS || domid != DOMID_VMM {
                        return Err(GrantError::NotPermitted(gref));
                    }
                    if writable && flags & GTF_READONLY != 0 {
                        return Err(GrantError::ReadOnly(gref));
                    }
                    let gpa = frame as u64 * PAGE_SIZE;
                    if !self.frame_ok(gpa) {
                        return Err(GrantError::BadFrame(gref, frame as u64));
                    }
                    if w.compare_exchange(cur, cur | add as u64, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                        return Ok(gpa);
                    }
                }
                Err(GrantError::Busy(gref))
            })
            .ok_or(GrantError::BadRef(gref))??;
        race_point();
        lock.word += 1 + if writable { WRITER } else { 0 };
        Ok(frame_gpa)
    }

    /// Clears the in-use flags no longer justified after going from
    /// `before` to `after` (readers, writers).
    fn clear_flags(&self, entry: EntryAt, before: (u32, u32), after: (u32, u32)) {
        let mut clear = 0u16;
        if after.1 == 0 && before.1 > 0 {
            clear |= GTF_WRITING;
        }
        if after.0 == 0 {
            clear |= GTF_READING | GTF_WRITING;
        }
        let _ = self.with_entry(entry, |f: &AtomicU16| f.fetch_and(!clear, Ordering::SeqCst));
    }

    /// Drops one mapping of `gref`: under the entry's lock, so a map of
    /// the same reference cannot set a flag this then clears.
    fn unmap(&self, gref: GrantRef, entry: EntryAt, writable: bool) {
        if gref as usize >= MAX_ENTRIES {
            return;
        }
        let mut lock = self.lock_entry(gref as usize);
        let before = counts(lock.word);
        if before.0 == 0 {
            return;
        }
        lock.word -= 1;
        if writable && before.1 > 0 {
            lock.word -= WRITER;
        }
        race_point();
        self.clear_flags(entry, before, counts(lock.word));
    }

    /// References currently mapped (for tests and diagnostics).
    pub fn mapped_refs(&self) -> usize {
        self.in_use.iter().filter(|w| counts(w.load(Ordering::Acquire)).0 != 0).count()
    }

    /// Copies `len` bytes from guest-physical `gpa` (one page, usable RAM)
    /// — the `GNTTABOP_copy` side that names a frame directly.
    pub fn check_frame_range(&self, gpa: u64, offset: u64, len: u64) -> Result<u64, GrantError> {
        if offset.checked_add(len).is_none_or(|e| e > PAGE_SIZE) {
            return Err(GrantError::OutOfPage { offset, len });
        }
        if !self.frame_ok(gpa) {
            return Err(GrantError::BadFrame(0, gpa / PAGE_SIZE));
        }
        Ok(gpa + offset)
    }

    /// The guest memory (for copies between two checked ranges).
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }
}

/// In unit tests, yields now and then at the points where a map or unmap
/// is between its count and its flag update, widening the windows a
/// missing entry lock would open so the concurrency tests catch it; in
/// other builds nothing.
#[inline]
fn race_point() {
    #[cfg(test)]
    {
        thread_local!(static N: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
        if N.with(|n| {
            n.set(n.get().wrapping_add(1));
            n.get() % 5 == 0
        }) {
            std::thread::yield_now();
        }
    }
}

/// A live mapping of one granted page, holding the table through `G`
/// (an `Arc` from [`GrantTable::map`], a borrow from
/// [`GrantTable::map_scoped`]).
pub struct GrantMapping<G: Deref<Target = GrantTable> = Arc<GrantTable>> {
    table: G,
    gref: GrantRef,
    entry: EntryAt,
    gpa: u64,
    writable: bool,
}

impl<G: Deref<Target = GrantTable>> std::fmt::Debug for GrantMapping<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantMapping")
            .field("gref", &self.gref)
            .field("gpa", &self.gpa)
            .field("writable", &self.writable)
            .finish()
    }
}

impl<G: Deref<Target = GrantTable>> GrantMapping<G> {
    fn bounds(&self, offset: u64, len: usize) -> Result<GuestAddress, GrantError> {
        let len = len as u64;
        if offset.checked_add(len).is_none_or(|e| e > PAGE_SIZE) {
            return Err(GrantError::OutOfPage { offset, len });
        }
        Ok(GuestAddress(self.gpa + offset))
    }

    /// Guest-physical address of the granted page.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }

    /// The grant reference.
    pub fn gref(&self) -> GrantRef {
        self.gref
    }

    /// Whether writes are allowed.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// The guest memory the page lives in (for ring views over it).
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.table.mem
    }

    /// Copies bytes out of the granted page.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), GrantError> {
        let at = self.bounds(offset, buf.len())?;
        self.table.mem.read_slice(buf, at).map_err(|_| GrantError::BadFrame(self.gref, self.gpa / PAGE_SIZE))
    }

    /// Copies `out.len()` wire structures (such as indirect segment
    /// descriptors) out of the granted page from `offset`.
    pub fn read_pod<T: pv_abi::Pod>(&self, offset: u64, out: &mut [T]) -> Result<(), GrantError> {
        let len = std::mem::size_of_val(out);
        // SAFETY: the byte view covers exactly the memory of `out`, which it
        // borrows mutably; `T: Pod` has no padding bytes and accepts every
        // bit pattern, so whatever bytes the guest wrote form valid `T`s.
        let bytes = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), len) };
        self.read(offset, bytes)
    }

    /// Copies bytes into the granted page (writable mappings only).
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), GrantError> {
        if !self.writable {
            return Err(GrantError::ReadOnly(self.gref));
        }
        let at = self.bounds(offset, data.len())?;
        self.table.mem.write_slice(data, at).map_err(|_| GrantError::BadFrame(self.gref, self.gpa / PAGE_SIZE))
    }
}

impl<G: Deref<Target = GrantTable>> GrantMapping<G> {
    /// `len` bytes of the granted page at `offset`, as a volatile slice of
    /// guest memory for I/O straight between a file and the page (a
    /// back-end's `preadv`/`pwritev`), bounded to the page and living no
    /// longer than this mapping. `for_write`: the caller will write into
    /// the page, which a read-only mapping refuses.
    pub fn slice(&self, offset: u64, len: usize, for_write: bool) -> Result<VolatileSlice<'_>, GrantError> {
        if for_write && !self.writable {
            return Err(GrantError::ReadOnly(self.gref));
        }
        let at = self.bounds(offset, len)?;
        if let Some(HostAddr(base)) = self.table.usable_host {
            // `frame_ok` put the page inside the usable range when it was
            // mapped, and `bounds` keeps `at..at+len` inside the page.
            let p = std::ptr::with_exposed_provenance_mut::<u8>(base + (at.0 - self.table.usable.0) as usize);
            // SAFETY: `p..p+len` lies in the usable range, which `new`
            // found to be one contiguous host mapping of guest memory; it
            // stays mapped while the table's `mem` lives, and the table
            // outlives this borrow of the mapping. Guest memory is only
            // accessed volatilely or atomically, never through references.
            return Ok(unsafe { VolatileSlice::new(p, len) });
        }
        self.table.mem.get_slice(at, len).map_err(|_| GrantError::BadFrame(self.gref, self.gpa / PAGE_SIZE))
    }
}

impl<G: Deref<Target = GrantTable>> Drop for GrantMapping<G> {
    fn drop(&mut self) {
        self.table.unmap(self.gref, self.entry, self.writable);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: u64 = 4 << 20;
    const TABLE: u64 = 0x20_0000;

    fn setup() -> Arc<GrantTable> {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
        let gt = Arc::new(GrantTable::new(mem, 0x10_0000, 3 << 20));
        gt.setup(&[TABLE / PAGE_SIZE]).unwrap();
        gt
    }

    fn grant(gt: &GrantTable, gref: u32, frame_gpa: u64, flags: u16) {
        let e = GrantEntryV1 { flags, domid: DOMID_VMM, frame: (frame_gpa / PAGE_SIZE) as u32 };
        gt.mem.write_obj(e.to_word(), GuestAddress(TABLE + gref as u64 * 8)).unwrap();
    }

    fn flags(gt: &GrantTable, gref: u32) -> u16 {
        gt.mem.read_obj(GuestAddress(TABLE + gref as u64 * 8)).unwrap()
    }

    /// Writes `byte` through a scoped mapping's slice of `gref` at
    /// `offset` and returns what guest memory then holds there.
    fn through_slice(gt: &GrantTable, gref: u32, gpa: u64, offset: u64, byte: u8) -> Vec<u8> {
        let m = gt.map_scoped(gref, true).unwrap();
        let s = m.slice(offset, 512, true).unwrap();
        s.write_slice(&[byte; 512], 0).unwrap();
        assert!(m.slice(offset, 4097 - offset as usize, false).is_err(), "must not cross the page");
        drop(m);
        assert_eq!(flags(gt, gref), GTF_PERMIT_ACCESS, "scoped mapping released");
        let mut back = vec![0u8; 512];
        gt.mem.read_slice(&mut back, GuestAddress(gpa + offset)).unwrap();
        back
    }

    #[test]
    fn slices_reach_the_granted_page_with_one_or_two_memory_regions() {
        // One region: slices come from the cached host address.
        let gt = setup();
        assert!(gt.usable_host.is_some());
        grant(&gt, 5, 0x2f_f000, GTF_PERMIT_ACCESS);
        assert_eq!(through_slice(&gt, 5, 0x2f_f000, 3584, 0xa5), vec![0xa5; 512]);
        // The usable range spans two regions: looked up per slice.
        let half = RAM as usize / 2;
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), half), (GuestAddress(half as u64), half)]).unwrap();
        let gt = GrantTable::new(mem, 0x10_0000, 3 << 20);
        gt.setup(&[TABLE / PAGE_SIZE]).unwrap();
        assert!(gt.usable_host.is_none());
        for (gref, gpa) in [(6, 0x1f_f000), (7, 0x20_1000)] {
            grant(&gt, gref, gpa, GTF_PERMIT_ACCESS);
            assert_eq!(through_slice(&gt, gref, gpa, 512, gref as u8), vec![gref as u8; 512]);
        }
    }

    #[test]
    fn map_marks_in_use_and_unmap_clears() {
        let gt = setup();
        grant(&gt, 3, 0x28_0000, GTF_PERMIT_ACCESS);
        let m = gt.map(3, true).unwrap();
        assert_eq!(flags(&gt, 3), GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
        m.write(10, b"hello").unwrap();
        let mut b = [0u8; 5];
        m.read(10, &mut b).unwrap();
        assert_eq!(&b, b"hello");
        assert!(m.write(4094, b"xyz").is_err(), "must not cross the page");
        let r = gt.map(3, false).unwrap();
        drop(m);
        assert_eq!(flags(&gt, 3), GTF_PERMIT_ACCESS | GTF_READING, "reader still live");
        drop(r);
        assert_eq!(flags(&gt, 3), GTF_PERMIT_ACCESS);
        assert_eq!(gt.mapped_refs(), 0);
    }

    #[test]
    fn refusals() {
        let gt = setup();
        assert_eq!(gt.map(1, false).unwrap_err(), GrantError::NotPermitted(1), "never granted");
        grant(&gt, 2, 0x28_0000, GTF_PERMIT_ACCESS | GTF_READONLY);
        assert_eq!(gt.map(2, true).unwrap_err(), GrantError::ReadOnly(2));
        let ro = gt.map(2, false).unwrap();
        assert_eq!(ro.write(0, b"x").unwrap_err(), GrantError::ReadOnly(2));
        assert!(matches!(gt.map(600, false), Err(GrantError::BadRef(600))));
        grant(&gt, 4, 0x1000, GTF_PERMIT_ACCESS);
        assert!(matches!(gt.map(4, false), Err(GrantError::BadFrame(4, 1))), "reserved low memory");
        grant(&gt, 5, 0x28_0000, GTF_PERMIT_ACCESS);
        let e = GrantEntryV1 { flags: GTF_PERMIT_ACCESS, domid: 7, frame: 0x280 };
        gt.mem.write_obj(e.domid, GuestAddress(TABLE + 5 * 8 + 2)).unwrap();
        assert_eq!(gt.map(5, false).unwrap_err(), GrantError::NotPermitted(5), "granted to another domain");
        // Revoked (flags cleared by the guest).
        grant(&gt, 6, 0x28_0000, GTF_PERMIT_ACCESS);
        grant(&gt, 6, 0x28_0000, 0);
        assert_eq!(gt.map(6, false).unwrap_err(), GrantError::NotPermitted(6));
    }

    #[test]
    fn setup_validates_frames_and_refuses_while_mapped() {
        let gt = setup();
        assert_eq!(gt.setup(&[]), Err(GNTST_GENERAL_ERROR));
        assert_eq!(gt.setup(&[RAM / PAGE_SIZE]), Err(GNTST_BAD_VIRT_ADDR));
        assert_eq!(gt.setup(&[u64::MAX]), Err(GNTST_BAD_VIRT_ADDR));
        assert_eq!(gt.setup(&[0; 17]), Err(GNTST_GENERAL_ERROR));
        grant(&gt, 1, 0x28_0000, GTF_PERMIT_ACCESS);
        let _m = gt.map(1, false).unwrap();
        assert_eq!(gt.setup(&[TABLE / PAGE_SIZE]), Err(GNTST_GENERAL_ERROR));
    }

    /// The guest's side of `gnttab_end_foreign_access_ref()` (grant v1,
    /// Linux `gnttab_end_foreign_access_ref_v1`): clears the entry's
    /// flags unless `GTF_reading`/`GTF_writing` say a mapping is live.
    fn try_revoke(gt: &GrantTable, gref: u32) -> bool {
        let slice = gt.mem.get_slice(GuestAddress(TABLE + gref as u64 * 8), 2).unwrap();
        let f = slice.get_atomic_ref::<AtomicU16>(0).unwrap();
        let cur = f.load(Ordering::SeqCst);
        cur & (GTF_READING | GTF_WRITING) == 0 && f.compare_exchange(cur, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }

    /// Several threads map and unmap one shared reference (read-only and
    /// writable mixed) and a private one each, with no table lock: while
    /// a thread holds a mapping its `GTF_reading` (and `GTF_writing` for a
    /// writable one) must be set — a bit lost to an interleaved unmap of
    /// another thread would let the guest revoke a page still in use
    /// (Xen: `GTF_reading`/`GTF_writing` in `xen/include/public/
    /// grant_table.h`, kept while the active entry has pins,
    /// `xen/common/grant_table.c` `gnttab_clear_flags`).
    #[test]
    fn concurrent_maps_never_lose_an_in_use_flag() {
        const THREADS: u32 = 4;
        const ROUNDS: u32 = 5_000;
        let gt = setup();
        grant(&gt, 1, 0x28_0000, GTF_PERMIT_ACCESS);
        for t in 0..THREADS {
            grant(&gt, 10 + t, 0x29_0000 + t as u64 * PAGE_SIZE, GTF_PERMIT_ACCESS);
        }
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let gt = gt.clone();
                std::thread::spawn(move || {
                    for i in 0..ROUNDS {
                        let writable = (i + t) % 3 == 0;
                        let shared = gt.map(1, writable).unwrap();
                        let private = gt.map_scoped(10 + t, true).unwrap();
                        let f = flags(&gt, 1);
                        assert_ne!(f & GTF_READING, 0, "shared entry mapped but not reading: {f:#x}");
                        if writable {
                            assert_ne!(f & GTF_WRITING, 0, "writable mapping but not writing: {f:#x}");
                        }
                        assert_eq!(flags(&gt, 10 + t), GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
                        private.write(0, &i.to_le_bytes()).unwrap();
                        drop(private);
                        assert_eq!(flags(&gt, 10 + t), GTF_PERMIT_ACCESS, "private entry released");
                        // Still marked at the end of the hold: another
                        // thread's unmap did not clear it meanwhile.
                        let f = flags(&gt, 1);
                        assert_ne!(f & GTF_READING, 0, "reading lost while mapped: {f:#x}");
                        assert!(!writable || f & GTF_WRITING != 0, "writing lost while mapped: {f:#x}");
                        drop(shared);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(flags(&gt, 1), GTF_PERMIT_ACCESS, "every mapping dropped: no flag left behind");
        assert_eq!(gt.mapped_refs(), 0);
    }

    /// Loom-free stress: a guest thread keeps revoking and re-granting
    /// references (as `gnttab_end_foreign_access_ref()` does, refusing
    /// while in use) while back-end threads map them. A mapping that
    /// succeeds must find the entry still granted and marked, and every
    /// revocation must fail while some mapping is live: the guest never
    /// takes back a page the back end holds.
    #[test]
    fn revocation_races_maps_without_taking_back_a_mapped_page() {
        const REFS: u32 = 4;
        let gt = setup();
        for r in 0..REFS {
            grant(&gt, r, 0x28_0000 + r as u64 * PAGE_SIZE, GTF_PERMIT_ACCESS);
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let live: Arc<Vec<AtomicU64>> = Arc::new((0..REFS).map(|_| AtomicU64::new(0)).collect());
        let guest = {
            let (gt, stop, live) = (gt.clone(), stop.clone(), live.clone());
            std::thread::spawn(move || {
                let mut revoked = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    for r in 0..REFS {
                        if try_revoke(&gt, r) {
                            // Only the guest re-grants, so nothing can map
                            // `r` between the revocation and this check.
                            assert_eq!(live[r as usize].load(Ordering::SeqCst), 0, "revoked while mapped");
                            revoked += 1;
                            grant(&gt, r, 0x28_0000 + r as u64 * PAGE_SIZE, GTF_PERMIT_ACCESS);
                        }
                    }
                }
                revoked
            })
        };
        let backs: Vec<_> = (0..3u32)
            .map(|t| {
                let (gt, live) = (gt.clone(), live.clone());
                std::thread::spawn(move || {
                    let mut mapped = 0u64;
                    for i in 0..10_000u32 {
                        let r = (i + t) % REFS;
                        match gt.map_scoped(r, i % 2 == 0) {
                            Ok(m) => {
                                live[r as usize].fetch_add(1, Ordering::SeqCst);
                                let f = flags(&gt, r);
                                assert_eq!(f & (GTF_PERMIT_ACCESS | GTF_READING), GTF_PERMIT_ACCESS | GTF_READING);
                                live[r as usize].fetch_sub(1, Ordering::SeqCst);
                                drop(m);
                                mapped += 1;
                            }
                            Err(e) => assert_eq!(e, GrantError::NotPermitted(r), "only a revocation refuses"),
                        }
                    }
                    mapped
                })
            })
            .collect();
        let mapped: u64 = backs.into_iter().map(|t| t.join().unwrap()).sum();
        stop.store(true, Ordering::SeqCst);
        let revoked = guest.join().unwrap();
        assert!(mapped > 0, "some maps succeeded");
        assert!(revoked > 0, "some revocations succeeded");
        assert_eq!(gt.mapped_refs(), 0);
        for r in 0..REFS {
            assert_eq!(flags(&gt, r) & (GTF_READING | GTF_WRITING), 0, "no flag left on {r}");
        }
    }

    /// The frame list changes under concurrent maps: a VMM-owned (PVH)
    /// table grows frame by frame while threads map references in the
    /// first frame and in each newly published one, and a guest-owned
    /// table's `setup_table` races maps. Growing keeps live mappings;
    /// replacing frames succeeds only when nothing is mapped, and then no
    /// mapping of the old table survives (`setup` refused while mapped,
    /// this module's contract).
    #[test]
    fn frame_list_changes_race_maps_consistently() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
        let gt = Arc::new(GrantTable::new(mem, 0x10_0000, 3 << 20));
        let frame = |i: u64| 0x30_0000 + i * PAGE_SIZE;
        gt.setup_owned(&[frame(0)]).unwrap();
        let per = GRANT_ENTRIES_PER_FRAME as u64;
        for i in 0..MAX_GRANT_FRAMES as u64 {
            let e = GrantEntryV1 { flags: GTF_PERMIT_ACCESS, domid: DOMID_VMM, frame: 0x280 + i as u32 };
            gt.mem.write_obj(e.to_word(), GuestAddress(frame(i) + 8)).unwrap();
        }
        let held = gt.map(1, false).unwrap();
        let t = {
            let gt = gt.clone();
            std::thread::spawn(move || {
                let mut ok = 0;
                for _ in 0..200 {
                    for i in 0..MAX_GRANT_FRAMES as u64 {
                        let gref = (i * per + 1) as u32;
                        match gt.map_scoped(gref, true) {
                            Ok(m) => ok += usize::from(m.gpa() == (0x280 + i) * PAGE_SIZE),
                            Err(e) => assert_eq!(e, GrantError::BadRef(gref), "only an unpublished frame refuses"),
                        }
                    }
                }
                ok
            })
        };
        for n in 1..=MAX_GRANT_FRAMES as u64 {
            gt.setup_owned(&(0..n).map(frame).collect::<Vec<_>>()).unwrap();
        }
        assert!(t.join().unwrap() > 0);
        assert_eq!(held.gpa(), 0x28_0000, "growing kept the live mapping");
        assert_eq!(gt.mapped_refs(), 1);
        assert_eq!(gt.setup_owned(&[frame(1)]), Err(GNTST_GENERAL_ERROR), "replacing refused while mapped");
        drop(held);
        // A guest-owned table: `setup` to a second frame races maps of
        // reference 1, granted in both frames to different pages.
        let gt = setup();
        let other = TABLE + PAGE_SIZE;
        grant(&gt, 1, 0x28_0000, GTF_PERMIT_ACCESS);
        let e = GrantEntryV1 { flags: GTF_PERMIT_ACCESS, domid: DOMID_VMM, frame: 0x290 };
        gt.mem.write_obj(e.to_word(), GuestAddress(other + 8)).unwrap();
        let t = {
            let gt = gt.clone();
            std::thread::spawn(move || {
                for _ in 0..5_000 {
                    if let Ok(m) = gt.map_scoped(1, true) {
                        // While this mapping lives no `setup` succeeds:
                        // the entry it marked is in the table in force,
                        // and it names that table's page.
                        std::thread::yield_now();
                        let table = gt.frames.gpa[0].load(Ordering::SeqCst);
                        assert_eq!(m.entry.gpa & !(PAGE_SIZE - 1), table, "mapped from a replaced table");
                        assert_eq!(m.gpa(), if table == TABLE { 0x28_0000 } else { 0x29_0000 });
                    }
                }
            })
        };
        let mut switched = 0;
        for i in 0..2_000u64 {
            let f = [TABLE, other][i as usize % 2];
            switched += usize::from(gt.setup(&[f / PAGE_SIZE]).is_ok());
        }
        t.join().unwrap();
        tracing::debug!(switched, "setups that found nothing mapped during the race");
        assert_eq!(gt.setup(&[other / PAGE_SIZE]), Ok(()), "nothing mapped once the maps are done");
        for f in [TABLE, other] {
            let fl: u16 = gt.mem.read_obj(GuestAddress(f + 8)).unwrap();
            assert_eq!(fl, GTF_PERMIT_ACCESS, "no in-use flag left in the table at {f:#x}");
        }
        assert_eq!(gt.mapped_refs(), 0);
    }
}
