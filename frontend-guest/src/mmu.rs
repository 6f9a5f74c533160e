//! The guest MMU: map, unmap and protect 4 KiB pages on page tables taken
//! from the VMM's page-table pool, in the three paging modes.
//!
//! - `native`: entries are written in place (the pool is writable); CR3 is
//!   loaded directly.
//! - `trapped`: entries are written in place too, but the pool is
//!   read-only to KVM, so each write exits to the VMM, which validates and
//!   applies it. Pinning and switching CR3 go through `mmuext_op`.
//! - `pv` (direct paging): updates are queued (Linux's lazy-MMU mode) and
//!   sent as one `mmu_update` when the queue holds `batch` updates, on an
//!   explicit [`Mmu::flush`], before any TLB flush, and when a new
//!   page-table page is linked in (so the walks that follow see it).
//!
//! Every entry is written with Accessed set, and Dirty on writable leaves,
//! so the result is the same in every mode (the `pv`/`trapped` validator
//! forces those bits anyway). Tables are reached through the identity map
//! of RAM, which the guest keeps in its own tables (read-only over the pool
//! in `pv` mode). TLB flushes are executed by the guest itself after its
//! updates reached the tables: KVM gives the VMM no way to flush them.
//!
//! The hardware-facing side is the [`PtOps`] trait, so the queueing logic
//! is unit-tested on the host with a fake.

use crate::arch;
use crate::hypercall::{check, Errno};
use pv_abi::event_channel::DOMID_SELF;
use pv_abi::hypercall::nr;
use pv_abi::layout::{PAGE_SHIFT, PAGE_SIZE};
use pv_abi::mmu::{self, pte, MmuUpdate, MmuextOp};
use pv_abi::multicall::MulticallEntry;
use pv_abi::start_info::{paging_mode, StartInfo};

/// Largest batch the queue holds.
pub const MAX_BATCH: usize = 512;

/// Size of a large (L2) page.
pub const LARGE_PAGE: u64 = 2 << 20;

/// What the MMU needs from the machine and the VMM.
pub trait PtOps {
    /// Reads the entry at guest-physical `gpa`.
    fn read(&self, gpa: u64) -> u64;
    /// Writes the entry at `gpa` in place (`native`, `trapped`).
    fn write(&mut self, gpa: u64, val: u64);
    /// `mmu_update`: on failure, the number applied and the errno.
    fn mmu_update(&mut self, reqs: &[MmuUpdate]) -> Result<(), (u32, Errno)>;
    /// `mmuext_op`.
    fn mmuext(&mut self, ops: &[MmuextOp]) -> Result<(), Errno>;
    /// Loads CR3 directly (`native`).
    fn load_cr3(&mut self, l4: u64);
    /// Drops one TLB entry.
    fn invlpg(&mut self, va: u64);
    /// Flushes the TLB.
    fn flush_tlb(&mut self);
}

/// Why an MMU operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmuError {
    /// The page-table pool has no free page left.
    PoolExhausted,
    /// The VMM rejected an update (`done` of the batch were applied).
    Rejected {
        /// Updates of the failed batch that were applied.
        done: u32,
        /// The errno.
        errno: Errno,
    },
    /// The VMM rejected an `mmuext_op`.
    ExtFailed(Errno),
    /// The address is covered by a large page or not mapped.
    NotMapped,
    /// The address is not canonical or not page-aligned.
    BadAddress,
}

/// Leaf flags of [`Mmu::map`].
pub mod flags {
    use pv_abi::mmu::pte;
    /// Read-only.
    pub const READ: u64 = 0;
    /// Writable.
    pub const WRITE: u64 = pte::RW;
    /// No-execute.
    pub const NOEXEC: u64 = pte::NX;
}

/// The guest MMU.
pub struct Mmu<O: PtOps> {
    ops: O,
    mode: u32,
    l4: u64,
    pool_start: u64,
    pool_next: u64,
    pool_end: u64,
    batch: usize,
    queued: usize,
    queue: [MmuUpdate; MAX_BATCH],
    /// `va >> 21` of the last L1 found, and that L1's address.
    l1_tag: u64,
    l1: u64,
    /// `mmu_update` calls made.
    pub flushes: u64,
}

impl<O: PtOps> Mmu<O> {
    /// An MMU for `mode` drawing tables from `pool_start..pool_end`, with
    /// `batch` (clamped to 1..=[`MAX_BATCH`]) updates per `mmu_update`.
    pub fn new(ops: O, mode: u32, pool_start: u64, pool_end: u64, batch: usize) -> Self {
        Mmu {
            ops,
            mode,
            l4: 0,
            pool_start,
            pool_next: pool_start,
            pool_end,
            batch: batch.clamp(1, MAX_BATCH),
            queued: 0,
            queue: [MmuUpdate::default(); MAX_BATCH],
            l1_tag: u64::MAX,
            l1: 0,
            flushes: 0,
        }
    }

    /// The paging mode.
    pub fn mode(&self) -> u32 {
        self.mode
    }

    /// The L4 table's guest-physical address (0 before [`boot`](Self::boot)).
    pub fn l4(&self) -> u64 {
        self.l4
    }

    /// The hardware-facing operations.
    pub fn ops(&mut self) -> &mut O {
        &mut self.ops
    }

    /// Builds the guest's own tables — an identity map of RAM with 2 MiB
    /// pages (read-only over the pool in `pv` mode) — and switches to them.
    /// Only whole 2 MiB regions of RAM are mapped.
    pub fn boot(&mut self, mem_bytes: u64) -> Result<(), MmuError> {
        self.l4 = self.alloc_table()?;
        if self.mode != paging_mode::NATIVE {
            self.ext(MmuextOp::with_mfn(mmu::MMUEXT_PIN_L4_TABLE, self.l4 >> PAGE_SHIFT))?;
        }
        let pool = self.pool_range();
        let mut region = 0;
        while region + LARGE_PAGE <= mem_bytes {
            let over_pool = region < pool.1 && region + LARGE_PAGE > pool.0;
            let rw = if self.mode == paging_mode::PV && over_pool { 0 } else { pte::RW | pte::D };
            let l2 = self.table_for(region, 2, true)?;
            let slot = l2 + ((region >> 21) & 511) * 8;
            self.set_entry(slot, region | pte::P | pte::A | pte::PS | rw)?;
            region += LARGE_PAGE;
        }
        self.flush()?;
        if self.mode == paging_mode::NATIVE {
            self.ops.load_cr3(self.l4);
        } else {
            self.ext(MmuextOp::with_mfn(mmu::MMUEXT_NEW_BASEPTR, self.l4 >> PAGE_SHIFT))?;
        }
        Ok(())
    }

    /// The page-table pool.
    pub fn pool_range(&self) -> (u64, u64) {
        (self.pool_start, self.pool_end)
    }

    fn alloc_table(&mut self) -> Result<u64, MmuError> {
        if self.pool_next + PAGE_SIZE > self.pool_end {
            return Err(MmuError::PoolExhausted);
        }
        let p = self.pool_next;
        self.pool_next += PAGE_SIZE;
        Ok(p)
    }

    fn ext(&mut self, op: MmuextOp) -> Result<(), MmuError> {
        self.ops.mmuext(&[op]).map_err(MmuError::ExtFailed)
    }

    /// The table of `level` (1..=3) holding `va`'s entry, walking from the
    /// L4 and (if `alloc`) allocating and linking missing tables.
    pub fn table_for(&mut self, va: u64, level: u32, alloc: bool) -> Result<u64, MmuError> {
        let top = (va as i64) >> 47;
        if top != 0 && top != -1 {
            return Err(MmuError::BadAddress);
        }
        let mut table = self.l4;
        for lvl in (level + 1..=4).rev() {
            let slot = table + ((va >> (12 + 9 * (lvl - 1))) & 511) * 8;
            let e = self.ops.read(slot);
            table = if e & pte::P != 0 {
                if e & pte::PS != 0 {
                    return Err(MmuError::NotMapped);
                }
                e & pte::ADDR_MASK
            } else if alloc {
                let t = self.alloc_table()?;
                self.set_entry(slot, t | pte::P | pte::RW | pte::A)?;
                // Later walks read the tables: make the link visible now.
                self.flush()?;
                t
            } else {
                return Err(MmuError::NotMapped);
            };
        }
        Ok(table)
    }

    /// The address of `va`'s L1 entry (cached per 2 MiB).
    #[inline]
    fn l1_slot(&mut self, va: u64, alloc: bool) -> Result<u64, MmuError> {
        let tag = va >> 21;
        if tag != self.l1_tag {
            self.l1 = self.table_for(va, 1, alloc)?;
            self.l1_tag = tag;
        }
        Ok(self.l1 + ((va >> PAGE_SHIFT) & 511) * 8)
    }

    /// Writes (or queues) one entry update.
    #[inline]
    fn set_entry(&mut self, slot: u64, val: u64) -> Result<(), MmuError> {
        if self.mode == paging_mode::PV {
            // `slot` is 8-byte aligned, so its command bits are already
            // MMU_NORMAL_PT_UPDATE (0).
            self.queue[self.queued % MAX_BATCH] = MmuUpdate { ptr: slot, val };
            self.queued += 1;
            if self.queued >= self.batch {
                return self.flush();
            }
            Ok(())
        } else {
            self.ops.write(slot, val);
            Ok(())
        }
    }

    /// Maps the 4 KiB page at `va` to the frame at `frame` with
    /// [`flags`]; the mapping is usable after the next [`flush`](Self::flush).
    #[inline]
    pub fn map(&mut self, va: u64, frame: u64, flags: u64) -> Result<(), MmuError> {
        let slot = self.l1_slot(va, true)?;
        let dirty = if flags & pte::RW != 0 { pte::D } else { 0 };
        self.set_entry(slot, (frame & pte::ADDR_MASK) | flags | pte::P | pte::A | dirty)
    }

    /// Unmaps the page at `va`. Stale translations remain until
    /// [`flush_tlb`](Self::flush_tlb) or [`invlpg`](Self::invlpg).
    pub fn unmap(&mut self, va: u64) -> Result<(), MmuError> {
        let slot = self.l1_slot(va, false)?;
        self.set_entry(slot, 0)
    }

    /// Changes the flags of the mapped page at `va`, keeping its frame.
    pub fn protect(&mut self, va: u64, flags: u64) -> Result<(), MmuError> {
        let slot = self.l1_slot(va, false)?;
        let cur = self.entry(slot);
        if cur & pte::P == 0 {
            return Err(MmuError::NotMapped);
        }
        let dirty = if flags & pte::RW != 0 { pte::D } else { 0 };
        self.set_entry(slot, (cur & pte::ADDR_MASK) | flags | pte::P | pte::A | dirty)
    }

    /// The entry at `slot` as it will be once the queue is flushed.
    pub fn entry(&self, slot: u64) -> u64 {
        self.queue[..self.queued.min(MAX_BATCH)]
            .iter()
            .rev()
            .find(|u| u.addr() == slot)
            .map_or_else(|| self.ops.read(slot), |u| u.val)
    }

    /// The current L1 entry of `va` (0 if no L1 covers it).
    pub fn lookup(&mut self, va: u64) -> u64 {
        match self.l1_slot(va, false) {
            Ok(slot) => self.entry(slot),
            Err(_) => 0,
        }
    }

    /// Updates waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Sends the queued updates (one `mmu_update`); nothing if empty.
    pub fn flush(&mut self) -> Result<(), MmuError> {
        if self.queued == 0 {
            return Ok(());
        }
        let n = self.queued.min(MAX_BATCH);
        self.queued = 0;
        self.flushes += 1;
        self.ops.mmu_update(&self.queue[..n]).map_err(|(done, errno)| MmuError::Rejected { done, errno })
    }

    /// Flushes the queue, then the TLB.
    pub fn flush_tlb(&mut self) -> Result<(), MmuError> {
        self.flush()?;
        self.ops.flush_tlb();
        Ok(())
    }

    /// Flushes the queue, then drops `va`'s TLB entry.
    pub fn invlpg(&mut self, va: u64) -> Result<(), MmuError> {
        self.flush()?;
        self.ops.invlpg(va);
        Ok(())
    }
}

/// `mmu_update(reqs, count, &done, DOMID_SELF)`.
pub fn mmu_update(reqs: &[MmuUpdate]) -> Result<(), (u32, Errno)> {
    let mut done: u32 = 0;
    // SAFETY: the VMM reads `reqs` (valid for its length) and writes a u32
    // at the `done` pointer, which names `done`.
    let ret = unsafe {
        arch::hypercall(
            nr::MMU_UPDATE,
            reqs.as_ptr() as u64,
            reqs.len() as u64,
            &mut done as *mut u32 as u64,
            u64::from(DOMID_SELF),
            0,
        )
    };
    check(ret).map(|_| ()).map_err(|e| (done, e))
}

/// `mmuext_op(ops, count, NULL, DOMID_SELF)`.
pub fn mmuext_op(ops: &[MmuextOp]) -> Result<(), Errno> {
    // SAFETY: the VMM only reads `ops`, valid for its length.
    let ret =
        unsafe { arch::hypercall(nr::MMUEXT_OP, ops.as_ptr() as u64, ops.len() as u64, 0, u64::from(DOMID_SELF), 0) };
    check(ret).map(|_| ())
}

/// `multicall(entries, count)`: each entry's `result` is filled in.
pub fn multicall(entries: &mut [MulticallEntry]) -> Result<(), Errno> {
    // SAFETY: the VMM reads the entries and writes only their `result`
    // fields (and the `args` of an entry it continues); the argument
    // pointers inside were built by the caller, and each nested call
    // checks its own.
    let ret = unsafe { arch::hypercall(nr::MULTICALL, entries.as_mut_ptr() as u64, entries.len() as u64, 0, 0, 0) };
    check(ret).map(|_| ())
}

/// The real machine: tables read and written through the identity map of
/// RAM, hypercalls through `arch`.
pub struct HwOps;

impl PtOps for HwOps {
    #[inline(always)]
    fn read(&self, gpa: u64) -> u64 {
        // SAFETY: page tables live in the pool, which both the boot map and
        // the guest's own tables map at its guest-physical address.
        unsafe { arch::read_u64(gpa) }
    }
    #[inline(always)]
    fn write(&mut self, gpa: u64, val: u64) {
        // SAFETY: as `read`; in `native` mode the pool is writable and in
        // `trapped` mode the write exits to the VMM instead of landing. The
        // entry is not one the running code depends on unless the caller
        // means it to be.
        unsafe { arch::write_u64(gpa, val) }
    }
    fn mmu_update(&mut self, reqs: &[MmuUpdate]) -> Result<(), (u32, Errno)> {
        mmu_update(reqs)
    }
    fn mmuext(&mut self, ops: &[MmuextOp]) -> Result<(), Errno> {
        mmuext_op(ops)
    }
    fn load_cr3(&mut self, l4: u64) {
        // SAFETY: only called by `Mmu::boot` with an L4 that identity-maps
        // all whole 2 MiB regions of RAM, which hold the image, its stack
        // and start-info.
        unsafe { arch::write_cr3(l4) }
    }
    fn invlpg(&mut self, va: u64) {
        arch::invlpg(va)
    }
    fn flush_tlb(&mut self) {
        arch::flush_tlb()
    }
}

/// An MMU on the real machine for the mode and pool in start-info.
pub fn from_start_info(si: &StartInfo, batch: usize) -> Mmu<HwOps> {
    Mmu::new(HwOps, si.paging_mode, si.pt_pool_start, si.pt_pool_end, batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    #[derive(Debug, Clone, PartialEq)]
    enum Ev {
        Write(u64),
        Update(usize),
        Ext(u32),
        Cr3(u64),
        Flush,
        Invlpg(u64),
    }

    #[derive(Default)]
    struct Fake {
        mem: BTreeMap<u64, u64>,
        ev: Vec<Ev>,
        reject_val: Option<u64>,
    }

    impl PtOps for Fake {
        fn read(&self, gpa: u64) -> u64 {
            self.mem.get(&gpa).copied().unwrap_or(0)
        }
        fn write(&mut self, gpa: u64, val: u64) {
            self.ev.push(Ev::Write(gpa));
            self.mem.insert(gpa, val);
        }
        fn mmu_update(&mut self, reqs: &[MmuUpdate]) -> Result<(), (u32, Errno)> {
            self.ev.push(Ev::Update(reqs.len()));
            for (i, r) in reqs.iter().enumerate() {
                if Some(r.val) == self.reject_val {
                    return Err((i as u32, Errno(30)));
                }
                self.mem.insert(r.addr(), r.val);
            }
            Ok(())
        }
        fn mmuext(&mut self, ops: &[MmuextOp]) -> Result<(), Errno> {
            ops.iter().for_each(|o| self.ev.push(Ev::Ext(o.cmd)));
            Ok(())
        }
        fn load_cr3(&mut self, l4: u64) {
            self.ev.push(Ev::Cr3(l4));
        }
        fn invlpg(&mut self, va: u64) {
            self.ev.push(Ev::Invlpg(va));
        }
        fn flush_tlb(&mut self) {
            self.ev.push(Ev::Flush);
        }
    }

    const POOL: u64 = 60 << 20;
    const MEM: u64 = 64 << 20;
    const VA: u64 = 0x80_0000_0000;

    fn booted(mode: u32, batch: usize) -> Mmu<Fake> {
        let mut m = Mmu::new(Fake::default(), mode, POOL, MEM, batch);
        m.boot(MEM).unwrap();
        m.ops.ev.clear();
        m
    }

    #[test]
    fn boot_builds_an_identity_map_read_only_over_the_pool_in_pv() {
        let m = booted(paging_mode::PV, 64);
        let l3 = m.ops.read(POOL) & pte::ADDR_MASK;
        let l2 = m.ops.read(l3) & pte::ADDR_MASK;
        assert_eq!(m.ops.read(l2 + 8), (2 << 20) | 0xe3);
        assert_eq!(m.ops.read(l2 + 30 * 8) & pte::RW, 0, "pool region RO");
        assert_eq!(m.ops.read(l2 + 32 * 8), 0, "nothing beyond RAM");
        let n = booted(paging_mode::NATIVE, 64);
        let l2 = n.ops.read(n.ops.read(POOL) & pte::ADDR_MASK) & pte::ADDR_MASK;
        assert_ne!(n.ops.read(l2 + 30 * 8) & pte::RW, 0);
        let mut m = Mmu::new(Fake::default(), paging_mode::PV, POOL, MEM, 8);
        m.boot(MEM).unwrap();
        assert_eq!(m.ops.ev[0], Ev::Ext(mmu::MMUEXT_PIN_L4_TABLE));
        assert_eq!(m.ops.ev.last(), Some(&Ev::Ext(mmu::MMUEXT_NEW_BASEPTR)));
    }

    #[test]
    fn queue_flushes_when_full_on_flush_and_before_tlb_flush() {
        let mut m = booted(paging_mode::PV, 8);
        m.map(VA, 0x20_0000, flags::WRITE).unwrap();
        // Linking L3, L2, L1 flushed three times; the leaf is queued.
        assert_eq!(m.ops.ev, [Ev::Update(1), Ev::Update(1), Ev::Update(1)]);
        assert_eq!(m.queued(), 1);
        m.ops.ev.clear();
        for i in 1..8 {
            m.map(VA + i * 4096, 0x20_0000, flags::WRITE).unwrap();
        }
        assert_eq!(m.ops.ev, [Ev::Update(8)], "full batch sent");
        m.ops.ev.clear();
        m.map(VA + 8 * 4096, 0x21_0000, flags::READ).unwrap();
        assert!(m.ops.ev.is_empty());
        assert_eq!(m.lookup(VA + 8 * 4096), 0x21_0000 | pte::P | pte::A);
        m.flush().unwrap();
        m.flush().unwrap();
        assert_eq!(m.ops.ev, [Ev::Update(1)], "explicit flush, empty is free");
        m.ops.ev.clear();
        m.unmap(VA).unwrap();
        m.protect(VA + 4096, flags::READ).unwrap();
        m.flush_tlb().unwrap();
        m.unmap(VA + 4096).unwrap();
        m.invlpg(VA + 4096).unwrap();
        assert_eq!(m.ops.ev, [Ev::Update(2), Ev::Flush, Ev::Update(1), Ev::Invlpg(VA + 4096)]);
        assert_eq!(m.lookup(VA), 0);
        assert_eq!(m.lookup(VA + 2 * 4096), 0x20_0000 | 0x63);
        assert_eq!(m.unmap(0x7f_0000_0000), Err(MmuError::NotMapped));
    }

    #[test]
    fn native_and_trapped_write_in_place_and_errors_surface() {
        let mut m = booted(paging_mode::TRAPPED, 64);
        m.map(VA, 0x20_0000, flags::WRITE).unwrap();
        assert_eq!(m.ops.ev.len(), 4);
        assert!(m.ops.ev.iter().all(|e| matches!(e, Ev::Write(_))));
        assert_eq!(m.queued(), 0);
        let mut p = booted(paging_mode::PV, 4);
        p.ops.reject_val = Some(0x30_0000 | 0x63);
        p.map(VA, 0x20_0000, flags::WRITE).unwrap();
        p.map(VA + 4096, 0x30_0000, flags::WRITE).unwrap();
        assert_eq!(p.flush(), Err(MmuError::Rejected { done: 1, errno: Errno(30) }));
        let mut tiny = Mmu::new(Fake::default(), paging_mode::NATIVE, POOL, POOL + 4096, 1);
        assert_eq!(tiny.boot(MEM), Err(MmuError::PoolExhausted));
        assert_eq!(tiny.table_for(0x8000_0000_0000, 1, true), Err(MmuError::BadAddress));
    }
}
