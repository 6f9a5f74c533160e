//! The hypervisor state of a domain as data ([`DomainState`]), for
//! snapshot/restore and migration: what Xen's `xc_domain_save` stream
//! carries in its `HVM_CONTEXT`, `SHARED_INFO` and toolstack records,
//! minus the machine (vCPU registers, LAPIC, memory), which the VMM
//! saves.
//!
//! [`Domain::save_state`] takes it from a paused domain;
//! [`Domain::restore_state`] puts it into a domain the VMM built with the
//! same configuration (RAM size, vCPUs, guest kind) *after* guest memory
//! was restored, because the paging state is re-validated against it.
//! The state may come from a tampered file: every field is checked
//! (ports in range, frames inside RAM, vCPU ids below the vCPU count,
//! page tables valid) and an inconsistency is a [`StateError`], never a
//! panic; on error the domain may be partly restored and must be thrown
//! away.
//!
//! Not in the state: back ends' eventfds and grant mappings (a back end
//! re-attaches to its port with `EventChannels::reattach` and maps its
//! rings again), and the console sinks (the VMM's choice).

use crate::domain::{Domain, Shutdown};
use crate::event_channel::state::{EvtchnState, EvtchnStateError};
use crate::grant_table::mapper::state::{GrantState, GrantStateError};
use crate::mmu::validator::state::{PagingSave, PagingStateError};
use crate::pvh::state::{PvhSave, PvhStateError};
use crate::vcpus::state::{VcpuSetState, VcpuStateError};
use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// The version of [`DomainState`]'s layout; a file format carrying it
/// refuses another version.
pub const DOMAIN_STATE_VERSION: u32 = 1;

/// `SCHEDOP_shutdown`'s request, if the guest made one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownSave {
    /// `SHUTDOWN_*`.
    pub reason: u32,
    /// The exit status.
    pub code: u32,
}

/// Everything the hypervisor keeps for a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainState {
    /// [`DOMAIN_STATE_VERSION`] when saved.
    pub version: u32,
    /// Guest RAM in bytes (must match the restoring domain's).
    pub ram_bytes: u64,
    /// `XENVER_get_features` bits.
    pub features: u32,
    /// A shutdown the guest asked for (a snapshot is normally taken
    /// before one).
    pub shutdown: Option<ShutdownSave>,
    /// The current hypercall's compat (32-bit) mode.
    pub compat: bool,
    /// A hypercall continuation not yet re-entered.
    pub continuation: Option<[u64; 5]>,
    /// Event channels (2-level or FIFO).
    pub evtchn: EvtchnState,
    /// The grant table.
    pub grants: GrantState,
    /// The vCPUs.
    pub vcpus: VcpuSetState,
    /// Direct paging.
    pub paging: PagingSave,
    /// Xen PVH guests only.
    pub pvh: Option<PvhSave>,
    /// The hypervisor console's part line (`console_io`, port 0xE9).
    pub hv_console_line: Vec<u8>,
}

/// Why a state cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Another layout version.
    #[error("domain state version {0}, this build reads version {DOMAIN_STATE_VERSION}")]
    Version(u32),
    /// Saved with another RAM size.
    #[error("domain state for {saved} bytes of RAM, the domain has {here}")]
    RamSize {
        /// In the state.
        saved: u64,
        /// In this domain.
        here: u64,
    },
    /// A PVH state for a domain that is not PVH, or none for one that is.
    #[error("the state is for a {saved} guest, the domain is a {here} guest")]
    GuestKind {
        /// In the state.
        saved: &'static str,
        /// In this domain.
        here: &'static str,
    },
    /// A `vcpu_info` place that is not valid.
    #[error("vCPU {0}: vcpu_info outside guest RAM")]
    VcpuInfo(u32),
    /// The grant model does not match the guest kind.
    #[error("grant table: {0}")]
    GrantModel(&'static str),
    /// Event channels.
    #[error(transparent)]
    Evtchn(#[from] EvtchnStateError),
    /// Grant table.
    #[error(transparent)]
    Grants(#[from] GrantStateError),
    /// vCPUs.
    #[error(transparent)]
    Vcpus(#[from] VcpuStateError),
    /// Paging.
    #[error(transparent)]
    Paging(#[from] PagingStateError),
    /// PVH.
    #[error(transparent)]
    Pvh(#[from] PvhStateError),
}

impl Domain {
    /// The domain's state; the guest must be paused (no vCPU in a
    /// hypercall) so the parts agree with each other.
    pub fn save_state(&self) -> DomainState {
        let mut vcpus = self.vcpus.save_state();
        for (id, v) in vcpus.vcpus.iter_mut().enumerate() {
            let id = id as u32;
            v.vcpu_info = self.evtchn.vcpu_info_registered(id).then(|| self.evtchn.vcpu_info(id)).flatten();
        }
        DomainState {
            version: DOMAIN_STATE_VERSION,
            ram_bytes: self.ram.size(),
            features: self.features,
            shutdown: self.shutdown.map(|s| ShutdownSave { reason: s.reason, code: s.code }),
            compat: self.compat,
            continuation: self.continuation,
            evtchn: self.evtchn.save_state(),
            grants: self.grants.save_state(self.pvh.is_some()),
            vcpus,
            paging: self.paging.save_state(),
            pvh: self.pvh.as_ref().map(|p| p.save_state()),
            hv_console_line: self.hv_console.pending_line().to_vec(),
        }
    }

    /// Puts `s` into this freshly built domain (same configuration, guest
    /// memory already restored). Every part is checked before the first
    /// is changed, except the page tables, which are validated as they
    /// are restored (nothing is changed if they fail).
    pub fn restore_state(&mut self, s: &DomainState) -> Result<(), StateError> {
        self.check_state(s)?;
        self.paging.restore_state(&self.ram, &s.paging)?;
        self.evtchn.restore_state(&s.evtchn)?;
        for (id, v) in s.vcpus.vcpus.iter().enumerate() {
            if !self.evtchn.restore_vcpu_info(id as u32, v.vcpu_info) {
                return Err(StateError::VcpuInfo(id as u32));
            }
        }
        self.grants.restore_state(&s.grants)?;
        self.vcpus.restore_state(&s.vcpus)?;
        let nr_vcpus = self.vcpus.count();
        if let (Some(p), Some(saved)) = (self.pvh.as_mut(), s.pvh.as_ref()) {
            p.restore_state(saved, nr_vcpus)?;
            // The upcall route the guest's `HVM_PARAM_CALLBACK_IRQ` /
            // `HVMOP_set_evtchn_upcall_vector` set on the machine.
            let platform = self.evtchn.platform();
            if let Some(v) = saved.upcall_vector {
                platform.set_upcall_vector(v).map_err(PvhStateError::from)?;
            }
            use pv_abi::hvm::hvm_op::{CALLBACK_TYPE_SHIFT, CALLBACK_TYPE_VECTOR};
            let (kind, vector) = (saved.callback_irq >> CALLBACK_TYPE_SHIFT, saved.callback_irq as u8);
            // As `hvm_op`'s `HVM_PARAM_CALLBACK_IRQ`: only a vector is delivered.
            let deliver = kind == CALLBACK_TYPE_VECTOR && vector >= 0x10;
            platform.set_callback_vector(if deliver { vector } else { 0 });
        }
        self.features = s.features;
        self.shutdown = s.shutdown.map(|s| Shutdown { reason: s.reason, code: s.code });
        self.compat = s.compat;
        self.continuation = s.continuation;
        self.hv_console.restore_line(&s.hv_console_line);
        Ok(())
    }

    /// The checks of [`restore_state`](Self::restore_state) that need no
    /// guest memory, without changing anything.
    pub fn check_state(&self, s: &DomainState) -> Result<(), StateError> {
        if s.version != DOMAIN_STATE_VERSION {
            return Err(StateError::Version(s.version));
        }
        let here = self.ram.size();
        if s.ram_bytes != here {
            return Err(StateError::RamSize { saved: s.ram_bytes, here });
        }
        let kind = |pvh: bool| if pvh { "PVH" } else { "PV" };
        if s.pvh.is_some() != self.pvh.is_some() {
            return Err(StateError::GuestKind { saved: kind(s.pvh.is_some()), here: kind(self.pvh.is_some()) });
        }
        if s.grants.owned != self.pvh.is_some() {
            return Err(StateError::GrantModel("the frame model does not match the guest kind"));
        }
        if let Some(p) = &self.pvh {
            let owned = (0..s.grants.frames.len() as u32).map(|i| p.layout.grant_frame(i));
            if !s.grants.frames.iter().copied().eq(owned) {
                return Err(StateError::GrantModel("VMM-owned frames not where the layout puts them"));
            }
        }
        self.evtchn.check_state(&s.evtchn)?;
        self.vcpus.check_state(&s.vcpus)?;
        if let (Some(p), Some(saved)) = (&self.pvh, &s.pvh) {
            p.check_state(saved, self.vcpus.count())?;
            // `grant_frames` is how far the VMM-owned table was grown.
            if saved.grant_frames as usize != s.grants.frames.len() {
                return Err(StateError::GrantModel("the PVH grant-frame count differs from the frame list"));
            }
        }
        Ok(())
    }
}
