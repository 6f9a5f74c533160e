//! Unmodified Xen PVH guests (DESIGN.md "Xen PVH guests"): what is
//! PVH-specific on the machine side.
//!
//! Such a guest boots in 32-bit protected mode ([`crate::boot::pvh`], from
//! the ELF note `crate::boot::elf` finds), finds the hypervisor by CPUID
//! ([`cpuid`]), asks for a hypercall page by writing an MSR
//! ([`hypercall_page`]) whose stubs enter the VMM through the project's
//! port-I/O transport, and takes events on a callback vector
//! ([`callback`]). Its hypercalls, layout and state are `xen_domain`'s
//! (`xen_domain::pvh`).

pub mod callback;
pub mod cpuid;
pub mod hypercall_page;

/// `EFER.LMA`.
const EFER_LMA: u64 = 1 << 10;

/// Whether the vCPU runs 64-bit code (long mode and a 64-bit CS).
pub fn long_mode(sregs: &kvm_bindings::kvm_sregs) -> bool {
    sregs.efer & EFER_LMA != 0 && sregs.cs.l != 0
}

/// A filtered `wrmsr` exit: 0 when handled, 1 to make KVM inject `#GP`.
pub fn wrmsr_exit(dom: &mut xen_domain::domain::Domain, msr: u32, value: u64) -> u8 {
    let Some(pvh) = dom.pvh.as_mut() else { return 1 };
    match hypercall_page::wrmsr(pvh, &dom.ram, msr, value) {
        Ok(()) => 0,
        Err(e) => {
            tracing::debug!(msr, value, error = %e, "wrmsr refused");
            1
        }
    }
}
