//! One vCPU's KVM state: what `KVM_GET_*` returns, restored with the
//! matching `KVM_SET_*` in the order Firecracker's `restore_state` uses
//! (the MSRs after the LAPIC, the pending events last, so nothing set
//! earlier overwrites them).

use super::SnapshotError;
use kvm_bindings::{
    kvm_debugregs, kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events,
    kvm_xcrs, kvm_xsave, Msrs, KVM_SYNC_X86_REGS, KVM_SYNC_X86_SREGS,
};
use kvm_ioctls::{Kvm, VcpuFd};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// At most this many MSRs per `KVM_GET_MSRS`/`KVM_SET_MSRS` call (KVM's
/// `KVM_MAX_MSR_ENTRIES`).
const MSR_BATCH: usize = 256;

/// Every MSR KVM can save (`KVM_GET_MSR_INDEX_LIST`: the kvmclock MSRs,
/// the TSC, the syscall MSRs, ...), read once while the VM is built (the
/// vCPU thread's filter forbids system ioctls).
static MSR_INDEX: OnceLock<Vec<u32>> = OnceLock::new();

/// Reads the MSR list from `kvm` (once per process).
pub fn init_msr_index(kvm: &Kvm) {
    MSR_INDEX.get_or_init(|| kvm.get_msr_index_list().map(|l| l.as_slice().to_vec()).unwrap_or_default());
}

/// `kvm_fpu` (which has no serde of its own in kvm-bindings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FpuState {
    fpr: [[u8; 16]; 8],
    fcw: u16,
    fsw: u16,
    ftwx: u8,
    last_opcode: u16,
    last_ip: u64,
    last_dp: u64,
    xmm: [[u8; 16]; 16],
    mxcsr: u32,
}

impl From<&kvm_fpu> for FpuState {
    fn from(f: &kvm_fpu) -> Self {
        FpuState {
            fpr: f.fpr,
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftwx,
            last_opcode: f.last_opcode,
            last_ip: f.last_ip,
            last_dp: f.last_dp,
            xmm: f.xmm,
            mxcsr: f.mxcsr,
        }
    }
}

impl From<&FpuState> for kvm_fpu {
    fn from(f: &FpuState) -> Self {
        kvm_fpu {
            fpr: f.fpr,
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftwx,
            last_opcode: f.last_opcode,
            last_ip: f.last_ip,
            last_dp: f.last_dp,
            xmm: f.xmm,
            mxcsr: f.mxcsr,
            ..Default::default()
        }
    }
}

/// The saved state of one vCPU.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    /// The vCPU id.
    pub id: u32,
    /// General registers.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers, EFER, APIC base.
    pub sregs: kvm_sregs,
    /// The FPU and SSE state (legacy layout).
    pub fpu: FpuState,
    /// The XSAVE area (AVX and beyond), when the host has XSAVE.
    pub xsave: Option<kvm_xsave>,
    /// XCR0.
    pub xcrs: Option<kvm_xcrs>,
    /// The local APIC's registers.
    pub lapic: kvm_lapic_state,
    /// Every readable MSR: index and value (TSC, kvmclock, syscall MSRs).
    pub msrs: Vec<(u32, u64)>,
    /// Runnable, halted, waiting for SIPI...
    pub mp_state: kvm_mp_state,
    /// Pending exceptions, interrupts, NMIs, SMM state.
    pub events: kvm_vcpu_events,
    /// DR0-3, DR6, DR7.
    pub debugregs: kvm_debugregs,
}

impl std::fmt::Debug for VcpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuState").field("id", &self.id).field("rip", &self.regs.rip).finish_non_exhaustive()
    }
}

fn kvm_err(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> SnapshotError {
    move |e| SnapshotError::Kvm { what, source: e }
}

/// Reads every MSR of the index list that KVM lets this vCPU read.
fn read_msrs(fd: &VcpuFd) -> Result<Vec<(u32, u64)>, SnapshotError> {
    let list = MSR_INDEX.get().map(Vec::as_slice).unwrap_or_default();
    let mut out = Vec::with_capacity(list.len());
    let mut rest = list;
    while !rest.is_empty() {
        let batch = &rest[..rest.len().min(MSR_BATCH)];
        let entries: Vec<kvm_msr_entry> =
            batch.iter().map(|&index| kvm_msr_entry { index, ..Default::default() }).collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|e| SnapshotError::Encode(format!("MSR list: {e:?}")))?;
        let n = fd.get_msrs(&mut msrs).map_err(kvm_err("KVM_GET_MSRS"))?;
        out.extend(msrs.as_slice()[..n].iter().map(|e| (e.index, e.data)));
        // KVM stops at the first MSR it cannot read: skip that one.
        rest = &rest[(n + usize::from(n < batch.len())).min(rest.len())..];
    }
    Ok(out)
}

/// Writes `msrs`, skipping (and counting) any KVM refuses.
fn write_msrs(fd: &VcpuFd, msrs: &[(u32, u64)]) -> Result<usize, SnapshotError> {
    let mut skipped = 0;
    let mut rest = msrs;
    while !rest.is_empty() {
        let batch = &rest[..rest.len().min(MSR_BATCH)];
        let entries: Vec<kvm_msr_entry> =
            batch.iter().map(|&(index, data)| kvm_msr_entry { index, data, ..Default::default() }).collect();
        let m = Msrs::from_entries(&entries).map_err(|e| SnapshotError::Encode(format!("MSR list: {e:?}")))?;
        let n = fd.set_msrs(&m).map_err(kvm_err("KVM_SET_MSRS"))?;
        if n < batch.len() {
            tracing::debug!(msr = batch[n].0, "KVM refused to restore an MSR");
            skipped += 1;
        }
        rest = &rest[(n + usize::from(n < batch.len())).min(rest.len())..];
    }
    Ok(skipped)
}

/// Reads vCPU `id`'s state. The general (and system) registers come from
/// the `kvm_run` sync area when the VMM changed them there since the last
/// exit (a hypercall's result): `KVM_GET_REGS` would not see that yet.
pub fn capture(fd: &mut VcpuFd, id: u32) -> Result<VcpuState, SnapshotError> {
    let dirty = fd.get_kvm_run().kvm_dirty_regs;
    let regs = match dirty & u64::from(KVM_SYNC_X86_REGS) != 0 {
        true => fd.sync_regs().regs,
        false => fd.get_regs().map_err(kvm_err("KVM_GET_REGS"))?,
    };
    let sregs = match dirty & u64::from(KVM_SYNC_X86_SREGS) != 0 {
        true => fd.sync_regs().sregs,
        false => fd.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?,
    };
    Ok(VcpuState {
        id,
        regs,
        sregs,
        fpu: (&fd.get_fpu().map_err(kvm_err("KVM_GET_FPU"))?).into(),
        xsave: fd.get_xsave().ok(),
        xcrs: fd.get_xcrs().ok(),
        lapic: fd.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?,
        msrs: read_msrs(fd)?,
        mp_state: fd.get_mp_state().map_err(kvm_err("KVM_GET_MP_STATE"))?,
        events: fd.get_vcpu_events().map_err(kvm_err("KVM_GET_VCPU_EVENTS"))?,
        debugregs: fd.get_debug_regs().map_err(kvm_err("KVM_GET_DEBUGREGS"))?,
    })
}

/// Loads `s` into a freshly built vCPU.
pub fn apply(fd: &mut VcpuFd, s: &VcpuState) -> Result<(), SnapshotError> {
    // Nothing the builder left in the sync area may overwrite the state.
    fd.get_kvm_run().kvm_dirty_regs = 0;
    fd.set_mp_state(s.mp_state).map_err(kvm_err("KVM_SET_MP_STATE"))?;
    fd.set_regs(&s.regs).map_err(kvm_err("KVM_SET_REGS"))?;
    fd.set_sregs(&s.sregs).map_err(kvm_err("KVM_SET_SREGS"))?;
    match &s.xsave {
        // SAFETY: `x` came from KVM_GET_XSAVE on a vCPU of the same layout
        // (the legacy 4 KiB area: no XSAVE2 extension is read past it).
        Some(x) => unsafe { fd.set_xsave(x) }.map_err(kvm_err("KVM_SET_XSAVE"))?,
        None => fd.set_fpu(&(&s.fpu).into()).map_err(kvm_err("KVM_SET_FPU"))?,
    }
    if let Some(x) = &s.xcrs {
        fd.set_xcrs(x).map_err(kvm_err("KVM_SET_XCRS"))?;
    }
    fd.set_debug_regs(&s.debugregs).map_err(kvm_err("KVM_SET_DEBUGREGS"))?;
    fd.set_lapic(&s.lapic).map_err(kvm_err("KVM_SET_LAPIC"))?;
    write_msrs(fd, &s.msrs)?;
    fd.set_vcpu_events(&s.events).map_err(kvm_err("KVM_SET_VCPU_EVENTS"))?;
    Ok(())
}
