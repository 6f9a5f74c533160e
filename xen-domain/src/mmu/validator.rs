//! The direct-paging validator: one set of rules for both entry points
//! (`mmu_update` in `pv` mode, trapped MMIO writes in `trapped` mode).
//!
//! Xen's rules, simplified:
//!
//! - a target entry lies in the page-table pool, 8-byte aligned, in a pool
//!   frame in use as a page table (its level is known);
//! - a present entry's frame is guest RAM;
//! - a present upper-level entry points at a pool frame that is (or can
//!   become) a table of the level below: when it is untyped, its current
//!   contents are validated at that level first (recursively), as Xen does
//!   when a page acquires a page-table type;
//! - no writable leaf maps a pool frame (`pv` mode; in `trapped` mode the
//!   read-only memslot write-protects the pool whatever the guest maps, and
//!   the guest must map its tables writable for its writes to reach the trap);
//! - reserved and unsupported bits are rejected;
//! - `new_baseptr` only to a pinned L4.
//!
//! Every installed present entry gets Accessed, and writable leaves Dirty,
//! so a hardware page walker never needs to write the read-only pool.
//!
//! Simplification against Xen: a pool frame keeps the level it first got
//! (by pinning or by being linked) for the life of the domain; there are no
//! type reference counts, so a table page cannot be reused at another level.

use crate::guest_memory::GuestRam;
use pv_abi::layout::PAGE_SIZE;
use pv_abi::mmu::{mmu_err, pte};
use pv_abi::start_info::paging_mode;

pub mod state;

/// A validated update that failed: the errno to return (positive).
pub type Errno = i64;

/// Per-domain direct-paging state.
#[derive(Debug, Clone)]
pub struct PagingState {
    /// One of [`paging_mode`].
    pub mode: u32,
    pool_start: u64,
    pool_end: u64,
    mem_bytes: u64,
    /// Per pool frame: 0 = not a page table, 1..=4 = its level.
    level: Vec<u8>,
    /// Per pool frame: pinned (`MMUEXT_PIN_Lx_TABLE`).
    pinned: Vec<bool>,
    /// The pinned L4 the vCPU runs on, once `new_baseptr` switched to one.
    pub base: Option<u64>,
    /// A CR3 value the vCPU loop must load before re-entering the guest.
    pub pending_cr3: Option<u64>,
    /// Counters.
    pub counters: PagingMetrics,
    /// Table frames whose contents validations have scanned so far: the
    /// cost the per-exit work bound charges (`crate::preempt`).
    pub frames_scanned: std::cell::Cell<u64>,
}

/// What the validator did, for statistics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PagingMetrics {
    /// Entries validated and written.
    pub applied: u64,
    /// Entries rejected (either entry point).
    pub rejected: u64,
    /// Trapped writes to the pool (MMIO exits).
    pub trapped_writes: u64,
}

/// Level of a table and whether an entry of it is a leaf.
fn is_leaf(level: u8, val: u64) -> bool {
    level == 1 || (level == 2 && val & pte::PS != 0)
}

impl PagingState {
    /// State for a domain with `mem_bytes` of RAM and the pool at
    /// `pool_start..pool_end` (page-aligned, inside RAM).
    pub fn new(mode: u32, pool_start: u64, pool_end: u64, mem_bytes: u64) -> Self {
        let frames = (pool_end.saturating_sub(pool_start) / PAGE_SIZE) as usize;
        PagingState {
            mode,
            pool_start,
            pool_end,
            mem_bytes,
            level: vec![0; frames],
            pinned: vec![false; frames],
            base: None,
            pending_cr3: None,
            counters: PagingMetrics::default(),
            frames_scanned: std::cell::Cell::new(0),
        }
    }

    /// Whether guest-physical `gpa` lies in the pool.
    pub fn in_pool(&self, gpa: u64) -> bool {
        (self.pool_start..self.pool_end).contains(&gpa)
    }

    /// Index of the pool frame holding `gpa`.
    fn pool_index(&self, gpa: u64) -> Option<usize> {
        self.in_pool(gpa).then(|| ((gpa - self.pool_start) / PAGE_SIZE) as usize)
    }

    /// Level of the table in the frame holding `gpa` (0 = none).
    pub fn level_of(&self, gpa: u64) -> u8 {
        self.pool_index(gpa).and_then(|i| self.level.get(i).copied()).unwrap_or(0)
    }

    /// Whether the frame at `gpa` is pinned.
    pub fn is_pinned(&self, gpa: u64) -> bool {
        self.pool_index(gpa).and_then(|i| self.pinned.get(i).copied()).unwrap_or(false)
    }

    /// Checks the entry address of an update: aligned, in a pool frame in
    /// use as a table. Returns that table's level.
    fn check_target(&self, ptr: u64) -> Result<u8, Errno> {
        if ptr % 8 != 0 {
            return Err(mmu_err::MISALIGNED);
        }
        match self.level_of(ptr) {
            0 => Err(mmu_err::NOT_IN_POOL),
            l => Ok(l),
        }
    }

    /// Checks `val` as an entry of a table of `level`. Untyped tables it
    /// links are validated and recorded in `newly` (frame, level), not yet
    /// committed. Returns the value to install (with A/D set).
    fn check_entry(&self, ram: &GuestRam, level: u8, val: u64, newly: &mut Vec<(u64, u8)>) -> Result<u64, Errno> {
        if val & pte::P == 0 {
            // Not present: the hardware ignores the other bits (Xen lets
            // the guest keep e.g. swap entries there).
            return Ok(val);
        }
        if val & pte::HIGH_RESERVED != 0 {
            return Err(mmu_err::BAD_BITS);
        }
        if is_leaf(level, val) {
            let (frame, size) = if level == 2 {
                // Bits 13..=20 of a 2 MiB leaf are reserved.
                if val & (pte::ADDR_MASK & !pte::ADDR_MASK_2M & !pte::PAT_LARGE) != 0 {
                    return Err(mmu_err::BAD_BITS);
                }
                (val & pte::ADDR_MASK_2M, 2 << 20)
            } else {
                (val & pte::ADDR_MASK, PAGE_SIZE)
            };
            let end = frame.checked_add(size).ok_or(mmu_err::FRAME_NOT_RAM)?;
            if end > self.mem_bytes {
                return Err(mmu_err::FRAME_NOT_RAM);
            }
            let writable = val & pte::RW != 0;
            if writable && self.mode != paging_mode::TRAPPED && frame < self.pool_end && end > self.pool_start {
                return Err(mmu_err::WRITABLE_POOL);
            }
            let dirty = if writable { pte::D } else { 0 };
            return Ok(val | pte::A | dirty);
        }
        // Upper-level entry: no large pages above L2, bits 6..=8 unsupported.
        if val & (pte::D | pte::PS | pte::G) != 0 {
            return Err(mmu_err::BAD_BITS);
        }
        let child = val & pte::ADDR_MASK;
        if !self.in_pool(child) {
            return Err(mmu_err::UPPER_NOT_POOL);
        }
        self.check_table(ram, child, level - 1, newly)?;
        Ok(val | pte::A)
    }

    /// Checks that the pool frame `frame` can be a table of `level`:
    /// already typed so, or untyped with contents valid at that level.
    fn check_table(&self, ram: &GuestRam, frame: u64, level: u8, newly: &mut Vec<(u64, u8)>) -> Result<(), Errno> {
        match self.level_of(frame) {
            l if l == level => return Ok(()),
            0 => {}
            _ => return Err(mmu_err::UPPER_NOT_POOL),
        }
        if let Some(&(_, l)) = newly.iter().find(|(f, _)| *f == frame) {
            // Already being validated in this update: fine at the same
            // level, a cycle or a level clash otherwise.
            return if l == level { Ok(()) } else { Err(mmu_err::UPPER_NOT_POOL) };
        }
        newly.push((frame, level));
        self.frames_scanned.set(self.frames_scanned.get() + 1);
        let bytes = ram.read_vec(frame, PAGE_SIZE).map_err(|_| mmu_err::UPPER_NOT_POOL)?;
        for e in bytes.chunks_exact(8) {
            let v = u64::from_le_bytes(e.try_into().expect("8 bytes"));
            if v & pte::P != 0 {
                // Existing entries must be valid as they are; the A/D bits
                // the check would add are not written back.
                self.check_entry(ram, level, v, newly)?;
            }
        }
        Ok(())
    }

    fn commit_types(&mut self, newly: &[(u64, u8)]) {
        for &(frame, level) in newly {
            if let Some(i) = self.pool_index(frame) {
                self.level[i] = level;
            }
        }
    }

    /// Validates and applies one update of the entry at `ptr` to `val`.
    /// On error nothing is written and no frame changes type.
    pub fn update(&mut self, ram: &GuestRam, ptr: u64, val: u64) -> Result<(), Errno> {
        let res = self.validate(ram, ptr, val);
        match res {
            Ok((install, newly)) => {
                ram.write_obj(ptr, &install).map_err(|_| mmu_err::NOT_IN_POOL)?;
                self.commit_types(&newly);
                self.counters.applied += 1;
                Ok(())
            }
            Err(e) => {
                self.counters.rejected += 1;
                tracing::debug!(ptr, val, errno = pv_abi::errno::name(e), "page-table update rejected");
                Err(e)
            }
        }
    }

    /// The checks of [`update`](Self::update) without side effects: the
    /// value to install and the frames that would get a type.
    pub fn validate(&self, ram: &GuestRam, ptr: u64, val: u64) -> Result<(u64, Vec<(u64, u8)>), Errno> {
        let level = self.check_target(ptr)?;
        let mut newly = Vec::new();
        let install = self.check_entry(ram, level, val, &mut newly)?;
        Ok((install, newly))
    }

    /// `MMUEXT_PIN_Lx_TABLE`: pins the pool frame at `gpa` as a table of
    /// `level`, validating its contents if it has no type yet.
    pub fn pin(&mut self, ram: &GuestRam, gpa: u64, level: u8) -> Result<(), Errno> {
        let i = self.pool_index(gpa).ok_or(mmu_err::NOT_IN_POOL)?;
        if self.pinned[i] {
            return Err(mmu_err::ALREADY_PINNED);
        }
        let mut newly = Vec::new();
        self.check_table(ram, gpa, level, &mut newly)?;
        self.commit_types(&newly);
        self.pinned[i] = true;
        Ok(())
    }

    /// `MMUEXT_UNPIN_TABLE`.
    pub fn unpin(&mut self, gpa: u64) -> Result<(), Errno> {
        let i = self.pool_index(gpa).ok_or(mmu_err::NOT_IN_POOL)?;
        if !self.pinned[i] {
            return Err(mmu_err::NOT_PINNED_UNPIN);
        }
        if self.base == Some(gpa) {
            return Err(mmu_err::IN_USE);
        }
        self.pinned[i] = false;
        Ok(())
    }

    /// `MMUEXT_NEW_BASEPTR`: records the new CR3 for the vCPU loop.
    pub fn new_baseptr(&mut self, gpa: u64) -> Result<(), Errno> {
        if !self.is_pinned(gpa) || self.level_of(gpa) != 4 {
            return Err(mmu_err::NOT_PINNED);
        }
        self.base = Some(gpa);
        self.pending_cr3 = Some(gpa);
        Ok(())
    }

    /// The trapped entry point: a guest write of `data` at `addr` in the
    /// read-only pool. The write is merged into the 8-byte entry it falls
    /// in and validated as an update of that entry.
    pub fn trapped_write(&mut self, ram: &GuestRam, addr: u64, data: &[u8]) -> Result<(), Errno> {
        self.counters.trapped_writes += 1;
        if self.mode != paging_mode::TRAPPED {
            self.counters.rejected += 1;
            tracing::debug!(addr, "direct write to the page-table pool outside trapped mode dropped");
            return Err(mmu_err::NOT_IN_POOL);
        }
        let off = (addr % 8) as usize;
        if data.is_empty() || off + data.len() > 8 {
            self.counters.rejected += 1;
            tracing::debug!(addr, len = data.len(), "trapped write straddles an entry");
            return Err(mmu_err::MISALIGNED);
        }
        let ptr = addr - off as u64;
        let mut bytes = ram.read_obj::<u64>(ptr).map_err(|_| mmu_err::NOT_IN_POOL)?.to_le_bytes();
        bytes[off..off + data.len()].copy_from_slice(data);
        self.update(ram, ptr, u64::from_le_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_memory::Slot;

    const MEM: u64 = 16 << 20;
    const POOL: u64 = 12 << 20;

    fn setup(mode: u32) -> (GuestRam, PagingState) {
        let ram = GuestRam::new(&[Slot { start: 0, len: MEM, readonly: false }]).unwrap();
        (ram, PagingState::new(mode, POOL, MEM, MEM))
    }

    fn read(ram: &GuestRam, gpa: u64) -> u64 {
        ram.read_obj(gpa).unwrap()
    }

    /// L4 at POOL (pinned), L3 at POOL+1p, L2 at +2p, L1 at +3p.
    fn chain(ram: &GuestRam, s: &mut PagingState) -> [u64; 4] {
        let t = [POOL, POOL + 0x1000, POOL + 0x2000, POOL + 0x3000];
        s.pin(ram, t[0], 4).unwrap();
        s.update(ram, t[0], t[1] | pte::P | pte::RW).unwrap();
        s.update(ram, t[1], t[2] | pte::P | pte::RW).unwrap();
        s.update(ram, t[2], t[3] | pte::P | pte::RW).unwrap();
        t
    }

    #[test]
    fn legal_updates_apply_with_accessed_and_dirty() {
        let (ram, mut s) = setup(paging_mode::PV);
        let t = chain(&ram, &mut s);
        assert_eq!(s.level_of(t[3]), 1);
        assert_eq!(read(&ram, t[0]), t[1] | pte::P | pte::RW | pte::A);
        s.update(&ram, t[3] + 8, 0x20_0000 | pte::P | pte::RW).unwrap();
        assert_eq!(read(&ram, t[3] + 8), 0x20_0000 | pte::P | pte::RW | pte::A | pte::D);
        // Read-only leaf of a pool frame is fine; no Dirty on it.
        s.update(&ram, t[3] + 16, t[0] | pte::P).unwrap();
        assert_eq!(read(&ram, t[3] + 16), t[0] | pte::P | pte::A);
        // Unmap.
        s.update(&ram, t[3] + 8, 0).unwrap();
        assert_eq!(read(&ram, t[3] + 8), 0);
        s.new_baseptr(t[0]).unwrap();
        assert_eq!(s.pending_cr3, Some(t[0]));
    }

    #[test]
    fn each_rule_has_its_code_and_changes_nothing() {
        let (ram, mut s) = setup(paging_mode::PV);
        let t = chain(&ram, &mut s);
        s.update(&ram, t[3], 0x30_0000 | pte::P).unwrap();
        let snapshot = ram.read_vec(POOL, 8 * 4096).unwrap();
        let cases: &[(&str, u64, u64, i64)] = &[
            ("writable pool", t[3], POOL | pte::P | pte::RW, mmu_err::WRITABLE_POOL),
            ("writable 2M over pool", t[2] + 8, (12 << 20) | pte::P | pte::RW | pte::PS, mmu_err::WRITABLE_POOL),
            ("outside pool", 0x10_0000, pte::P, mmu_err::NOT_IN_POOL),
            ("untyped pool frame", POOL + 0x5000, pte::P, mmu_err::NOT_IN_POOL),
            ("misaligned", t[3] + 4, pte::P, mmu_err::MISALIGNED),
            ("frame not RAM", t[3], MEM | pte::P, mmu_err::FRAME_NOT_RAM),
            ("huge frame", t[3], pte::ADDR_MASK | pte::P, mmu_err::FRAME_NOT_RAM),
            ("upper not pool", t[2] + 16, 0x10_0000 | pte::P, mmu_err::UPPER_NOT_POOL),
            ("upper to typed other level", t[2] + 16, t[1] | pte::P, mmu_err::UPPER_NOT_POOL),
            ("upper self cycle", t[1] + 8, t[1] | pte::P, mmu_err::UPPER_NOT_POOL),
            ("reserved high bits", t[3], 0x1000 | pte::P | (1 << 52), mmu_err::BAD_BITS),
            ("1G page", t[1] + 8, pte::P | pte::PS, mmu_err::BAD_BITS),
            ("2M reserved bits", t[2] + 8, (2 << 20) | (1 << 13) | pte::P | pte::PS, mmu_err::BAD_BITS),
        ];
        for &(what, ptr, val, want) in cases {
            assert_eq!(s.update(&ram, ptr, val), Err(want), "{what}");
        }
        assert_eq!(ram.read_vec(POOL, 8 * 4096).unwrap(), snapshot);
        assert_eq!(s.new_baseptr(t[1]), Err(mmu_err::NOT_PINNED));
        assert_eq!(s.new_baseptr(0x10_0000), Err(mmu_err::NOT_PINNED));
        assert_eq!(s.pin(&ram, t[0], 4), Err(mmu_err::ALREADY_PINNED));
        assert_eq!(s.pin(&ram, 0x10_0000, 1), Err(mmu_err::NOT_IN_POOL));
        assert_eq!(s.unpin(t[1]), Err(mmu_err::NOT_PINNED_UNPIN));
        s.new_baseptr(t[0]).unwrap();
        assert_eq!(s.unpin(t[0]), Err(mmu_err::IN_USE));
        assert_eq!(s.counters.rejected, cases.len() as u64);
    }

    #[test]
    fn linking_an_untyped_table_validates_its_contents() {
        let (ram, mut s) = setup(paging_mode::PV);
        let t = chain(&ram, &mut s);
        // A fresh L1 that already holds a writable mapping of the pool
        // (written behind the validator's back, as a hostile harness may).
        let bad = POOL + 0x6000;
        ram.write_obj(bad, &(POOL | pte::P | pte::RW)).unwrap();
        assert_eq!(s.update(&ram, t[2] + 8, bad | pte::P), Err(mmu_err::WRITABLE_POOL));
        assert_eq!(s.level_of(bad), 0);
        assert_eq!(read(&ram, t[2] + 8), 0);
    }

    #[test]
    fn trapped_writes_merge_partial_bytes_and_allow_writable_pool() {
        let (ram, mut s) = setup(paging_mode::TRAPPED);
        let t = chain(&ram, &mut s);
        let v = 0x40_0000 | pte::P | pte::RW;
        s.trapped_write(&ram, t[3] + 8, &v.to_le_bytes()).unwrap();
        assert_eq!(read(&ram, t[3] + 8), v | pte::A | pte::D);
        // A 4-byte write of the low half only.
        s.trapped_write(&ram, t[3] + 8, &(0x50_0000u32 | 1).to_le_bytes()).unwrap();
        assert_eq!(read(&ram, t[3] + 8), 0x50_0000 | pte::P | pte::A);
        // The pool may be mapped writable: the memslot protects it.
        s.trapped_write(&ram, t[3], &(POOL | pte::P | pte::RW).to_le_bytes()).unwrap();
        // Rules still apply.
        assert_eq!(s.trapped_write(&ram, t[3] + 16, &(MEM | pte::P).to_le_bytes()), Err(mmu_err::FRAME_NOT_RAM));
        assert_eq!(s.trapped_write(&ram, t[3] + 4, &[0; 8]), Err(mmu_err::MISALIGNED));
        assert_eq!(read(&ram, t[3] + 16), 0);
        let (ram2, mut pv) = setup(paging_mode::PV);
        assert!(pv.trapped_write(&ram2, POOL, &[1]).is_err());
    }
}
