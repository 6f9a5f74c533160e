//! The direct-paging validator's part of a snapshot ([`PagingSave`]):
//! the mode, the pool, each pool frame's type (table level) and pin, the
//! base table and a CR3 the vCPU loop has not loaded yet.
//!
//! The types are the validator's promise that every table entry in the
//! pool was checked (no writable mapping of the pool, no frame outside
//! RAM). A tampered state must not break it, so a restore does not take
//! the saved types on trust: it validates every saved table against guest
//! memory (already restored) as `MMUEXT_PIN_Lx_TABLE` would, from the top
//! level down, and refuses the state if the contents do not validate or
//! the types that result differ from the saved ones.

use super::{Errno, PagingState};
use pv_abi::layout::PAGE_SIZE;
use serde::{Deserialize, Serialize};

/// The paging state of a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PagingSave {
    /// `paging_mode::*`.
    pub mode: u32,
    /// The pool, guest-physical `[start, end)`.
    pub pool: (u64, u64),
    /// Each typed pool frame (guest-physical) and its level (1..=4).
    pub tables: Vec<(u64, u8)>,
    /// Pinned frames (guest-physical).
    pub pinned: Vec<u64>,
    /// The pinned L4 the vCPU runs on.
    pub base: Option<u64>,
    /// A CR3 the vCPU loop must load before re-entering the guest.
    pub pending_cr3: Option<u64>,
}

/// Why a paging state was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PagingStateError {
    /// Mode or pool differ from the domain's (they come from its config).
    #[error("paging mode {mode} / pool {pool:x?} in the state, not this domain's")]
    Layout {
        /// Saved mode.
        mode: u32,
        /// Saved pool.
        pool: (u64, u64),
    },
    /// A table, pin or base frame outside the pool or misaligned, a level
    /// not 1..=4, a base that is not a pinned L4.
    #[error("page-table frame {0:#x}: not a valid pool frame in this role")]
    BadFrame(u64),
    /// A saved table whose contents do not validate at its level (errno).
    #[error("page-table frame {frame:#x} does not validate as level {level} (errno {errno})")]
    Invalid {
        /// The frame.
        frame: u64,
        /// Its saved level.
        level: u8,
        /// The validator's errno.
        errno: Errno,
    },
}

impl PagingState {
    /// The state to snapshot.
    pub fn save_state(&self) -> PagingSave {
        let frame = |i: usize| self.pool_start + i as u64 * PAGE_SIZE;
        let tables = (self.level.iter().enumerate()).filter(|(_, &l)| l != 0).map(|(i, &l)| (frame(i), l)).collect();
        let pinned = (self.pinned.iter().enumerate()).filter(|(_, &p)| p).map(|(i, _)| frame(i)).collect();
        PagingSave {
            mode: self.mode,
            pool: (self.pool_start, self.pool_end),
            tables,
            pinned,
            base: self.base,
            pending_cr3: self.pending_cr3,
        }
    }

    /// Re-validates and puts back `s`; guest memory must already hold
    /// the snapshot's pages. On error nothing changes.
    pub fn restore_state(
        &mut self,
        ram: &crate::guest_memory::GuestRam,
        s: &PagingSave,
    ) -> Result<(), PagingStateError> {
        if s.mode != self.mode || s.pool != (self.pool_start, self.pool_end) {
            return Err(PagingStateError::Layout { mode: s.mode, pool: s.pool });
        }
        let mut fresh = PagingState::new(self.mode, self.pool_start, self.pool_end, self.mem_bytes);
        let mut tables = s.tables.clone();
        // Top level first, so lower tables are typed by their parents.
        tables.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for &(frame, level) in &tables {
            if frame % PAGE_SIZE != 0 || !fresh.in_pool(frame) || !(1..=4).contains(&level) {
                return Err(PagingStateError::BadFrame(frame));
            }
            if fresh.level_of(frame) == level {
                continue;
            }
            let mut newly = Vec::new();
            fresh.check_table(ram, frame, level, &mut newly).map_err(|errno| PagingStateError::Invalid {
                frame,
                level,
                errno,
            })?;
            fresh.commit_types(&newly);
        }
        let mut want = vec![0u8; fresh.level.len()];
        for &(frame, level) in &tables {
            if let Some(i) = fresh.pool_index(frame) {
                want[i] = level;
            }
        }
        if let Some(i) = (0..want.len()).find(|&i| want[i] != fresh.level[i]) {
            return Err(PagingStateError::BadFrame(self.pool_start + i as u64 * PAGE_SIZE));
        }
        for &frame in &s.pinned {
            match fresh.pool_index(frame).filter(|&i| frame % PAGE_SIZE == 0 && fresh.level[i] != 0) {
                Some(i) => fresh.pinned[i] = true,
                None => return Err(PagingStateError::BadFrame(frame)),
            }
        }
        for cr3 in [s.base, s.pending_cr3].into_iter().flatten() {
            if !fresh.is_pinned(cr3) || fresh.level_of(cr3) != 4 || cr3 % PAGE_SIZE != 0 {
                return Err(PagingStateError::BadFrame(cr3));
            }
        }
        fresh.base = s.base;
        fresh.pending_cr3 = s.pending_cr3;
        fresh.counters = self.counters;
        *self = fresh;
        Ok(())
    }
}
