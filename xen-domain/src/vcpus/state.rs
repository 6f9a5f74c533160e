//! The vCPU table's part of a snapshot ([`VcpuSetState`]): per vCPU the
//! scheduler flags (`is_initialised`, `_VPF_down`), a register state
//! `VCPUOP_initialise` left for a vCPU not yet up, the runstate with its
//! times, and the registered runstate area. Registers of running vCPUs
//! are the machine's (KVM) state, saved by the VMM.

use super::{Slot, VcpuSet};
use crate::hvm_context::VcpuContext;
use pv_abi::hypercall::vcpu_op::VcpuRunstateInfo;
use serde::{Deserialize, Serialize};

/// One vCPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuSave {
    /// Xen's `is_initialised`.
    pub initialised: bool,
    /// Xen's `_VPF_down`.
    pub down: bool,
    /// The state from `VCPUOP_initialise` its thread has not loaded yet.
    pub pending: Option<VcpuContext>,
    /// `RUNSTATE_*` now.
    pub runstate: u32,
    /// System time (ns) the state was entered.
    pub state_entry_time: u64,
    /// Time (ns) in each `RUNSTATE_*`.
    pub runstate_time: [u64; 4],
    /// `VCPUOP_register_runstate_memory_area`: address (0: none) and
    /// whether in the 32-bit layout.
    pub runstate_area: (u64, bool),
    /// Where its `vcpu_info` is when moved by `VCPUOP_register_vcpu_info`
    /// (`None`: its shared-info slot). Kept by the event channels; the
    /// domain's save fills it in.
    pub vcpu_info: Option<u64>,
}

/// The vCPUs of a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuSetState {
    /// Per vCPU, by id.
    pub vcpus: Vec<VcpuSave>,
}

/// Why a vCPU state was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VcpuStateError {
    /// The state has another number of vCPUs than the domain.
    #[error("the state has {saved} vCPUs, the domain {here}")]
    Count {
        /// In the state.
        saved: usize,
        /// In this domain.
        here: usize,
    },
    /// A vCPU's flags or runstate cannot be (up but uninitialised, vCPU 0
    /// uninitialised, a register state on an uninitialised vCPU, an
    /// unknown runstate).
    #[error("vCPU {0}: inconsistent scheduler state")]
    Inconsistent(u32),
}

impl VcpuSet {
    /// The state to snapshot (`vcpu_info` left `None`).
    pub fn save_state(&self) -> VcpuSetState {
        let vcpus = self
            .lock()
            .iter()
            .map(|s| VcpuSave {
                initialised: s.initialised,
                down: s.down,
                pending: s.pending,
                runstate: s.runstate.state,
                state_entry_time: s.runstate.state_entry_time,
                runstate_time: s.runstate.time,
                runstate_area: s.runstate_area,
                vcpu_info: None,
            })
            .collect();
        VcpuSetState { vcpus }
    }

    /// Checks `s` against this set without changing anything.
    pub fn check_state(&self, s: &VcpuSetState) -> Result<(), VcpuStateError> {
        let here = self.lock().len();
        if s.vcpus.len() != here {
            return Err(VcpuStateError::Count { saved: s.vcpus.len(), here });
        }
        for (id, v) in s.vcpus.iter().enumerate() {
            // A context may wait on an up vCPU too: `VCPUOP_up` came
            // before its thread loaded it.
            let bad = (!v.initialised && (!v.down || v.pending.is_some() || id == 0))
                || v.runstate as usize >= v.runstate_time.len();
            if bad {
                return Err(VcpuStateError::Inconsistent(id as u32));
            }
        }
        Ok(())
    }

    /// Puts back a state ([`check_state`](Self::check_state) first) and
    /// wakes the parked threads, which find their vCPUs up or down as saved.
    pub fn restore_state(&self, s: &VcpuSetState) -> Result<(), VcpuStateError> {
        self.check_state(s)?;
        let mut slots = self.lock();
        for (slot, v) in slots.iter_mut().zip(&s.vcpus) {
            *slot = Slot {
                initialised: v.initialised,
                down: v.down,
                pending: v.pending,
                runstate: VcpuRunstateInfo {
                    state: v.runstate,
                    pad: 0,
                    state_entry_time: v.state_entry_time,
                    time: v.runstate_time,
                },
                runstate_area: v.runstate_area,
            };
        }
        drop(slots);
        self.changed.notify_all();
        Ok(())
    }
}
