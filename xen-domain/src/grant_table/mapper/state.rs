//! The grant table's part of a snapshot ([`GrantState`]): the version
//! and where the table frames are. The entries themselves are guest
//! memory (the guest's frames, or the VMM pages of the VMM-owned model,
//! which the snapshot's memory carries too). Back ends' active mappings
//! are not saved: a back end maps its rings again after a restore.

use super::{GrantTable, MAX_GRANT_FRAMES};
use pv_abi::layout::PAGE_SIZE;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;

/// The grant table of a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantState {
    /// The grant-table version in force (1: there is no grant v2).
    pub version: u32,
    /// Guest-physical address of each table frame, in order.
    pub frames: Vec<u64>,
    /// The VMM-owned model (PVH: the frames are VMM pages the guest
    /// places with `XENMEM_add_to_physmap`), else the guest's own pages.
    pub owned: bool,
}

/// Why a grant-table state was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantStateError {
    /// Only version 1 exists.
    #[error("grant-table version {0} is not supported")]
    Version(u32),
    /// More frames than a table may have.
    #[error("{0} grant-table frames (at most {MAX_GRANT_FRAMES})")]
    TooManyFrames(usize),
    /// A frame a guest may not register (outside its usable RAM, unaligned).
    #[error("grant-table frame at {0:#x} is not a page of usable guest RAM")]
    BadFrame(u64),
    /// A back end still maps a grant of the table being replaced.
    #[error("grants are mapped; the table cannot be replaced")]
    Busy,
}

impl GrantTable {
    /// The registered frames (guest-physical), in order.
    pub fn frame_gpas(&self) -> Vec<u64> {
        let nr = self.frames.nr.load(Ordering::Acquire);
        (0..nr).map(|i| self.frames.gpa[i].load(Ordering::Relaxed)).collect()
    }

    /// The state to snapshot; `owned` says which model the domain uses.
    pub fn save_state(&self, owned: bool) -> GrantState {
        GrantState { version: 1, frames: self.frame_gpas(), owned }
    }

    /// Registers the frames of `s` as `GNTTABOP_setup_table` (guest
    /// frames: each must be a page of usable RAM) or the VMM-owned model
    /// would (the caller checked they are its pages). Refused while a
    /// grant is mapped.
    pub fn restore_state(&self, s: &GrantState) -> Result<(), GrantStateError> {
        if s.version != 1 {
            return Err(GrantStateError::Version(s.version));
        }
        if s.frames.len() > MAX_GRANT_FRAMES as usize {
            return Err(GrantStateError::TooManyFrames(s.frames.len()));
        }
        if let Some(&bad) = s.frames.iter().find(|&&g| g % PAGE_SIZE != 0 || (!s.owned && !self.frame_ok(g))) {
            return Err(GrantStateError::BadFrame(bad));
        }
        let _w = self.lock_writer();
        self.replace(&s.frames).map_err(|_| GrantStateError::Busy)
    }
}
