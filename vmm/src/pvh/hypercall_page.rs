//! The hypercall page. A guest writes the page's guest-physical address to
//! the MSR named in CPUID leaf 0x40000002; the write exits to the VMM
//! (user-space MSR exits, filtered to that one MSR), which fills the page
//! with 128 stubs of 32 bytes: `mov $nr, %eax; out %al, $HYPERCALL_PORT;
//! ret`. They run the same in 32- and 64-bit mode and clobber only `rax`,
//! and enter the VMM through the project's port-I/O transport (no `vmcall`,
//! which does not complete on software KVM). The `__HYPERVISOR_iret` slot is
//! `ud2`, as in Xen's HVM page.

use kvm_ioctls::{MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, VmFd};
use pv_abi::hvm::cpuid::XEN_HYPERCALL_MSR;
use pv_abi::hvm::hypercall_page::{HYPERVISOR_IRET, NR_STUBS, STUB_SIZE};
use pv_abi::hypercall::HYPERCALL_PORT;
use pv_abi::layout::PAGE_SIZE;
use xen_domain::pvh::PvhState;

/// The page's bytes.
pub fn page() -> [u8; PAGE_SIZE as usize] {
    let mut p = [0xcc_u8; PAGE_SIZE as usize]; // int3 filler
    for nr in 0..NR_STUBS {
        let s = &mut p[(nr * STUB_SIZE) as usize..][..STUB_SIZE as usize];
        if nr == HYPERVISOR_IRET {
            s[..2].copy_from_slice(&[0x0f, 0x0b]); // ud2
            continue;
        }
        s[0] = 0xb8; // mov $nr, %eax
        s[1..5].copy_from_slice(&(nr as u32).to_le_bytes());
        s[5] = 0xe6; // out %al, $port
        s[6] = HYPERCALL_PORT as u8;
        s[7] = 0xc3; // ret
    }
    p
}

/// Makes guest writes to the hypercall-page MSR (and only it) exit to the
/// VMM: `KVM_CAP_X86_USER_SPACE_MSR` for filtered accesses and a filter
/// denying that one MSR.
pub fn enable_msr_exit(vm: &VmFd) -> Result<(), kvm_ioctls::Error> {
    let cap = kvm_bindings::kvm_enable_cap {
        cap: kvm_bindings::KVM_CAP_X86_USER_SPACE_MSR,
        args: [u64::from(kvm_bindings::KVM_MSR_EXIT_REASON_FILTER), 0, 0, 0],
        ..Default::default()
    };
    vm.enable_cap(&cap)?;
    let deny = [0u8; 1];
    let range = MsrFilterRange {
        flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
        base: XEN_HYPERCALL_MSR,
        msr_count: 1,
        bitmap: &deny,
    };
    vm.set_msr_filter(MsrFilterDefaultAction::ALLOW, &[range])
}

/// Why a hypercall-page MSR write was refused (the guest gets `#GP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MsrError {
    /// Not the hypercall-page MSR.
    #[error("MSR {0:#x} is not emulated")]
    UnknownMsr(u32),
    /// Page index (low 12 bits) other than 0: only one page exists.
    #[error("hypercall page index {0} (only page 0 exists)")]
    BadIndex(u64),
    /// The page is not ordinary guest RAM (outside RAM or a VMM page).
    #[error("hypercall page {0:#x} is not in guest RAM")]
    NotRam(u64),
}

/// Handles a guest `wrmsr` of `value` to `msr`: writes the stubs.
pub fn wrmsr(pvh: &mut PvhState, ram: &crate::memory::GuestRam, msr: u32, value: u64) -> Result<(), MsrError> {
    if msr != XEN_HYPERCALL_MSR {
        return Err(MsrError::UnknownMsr(msr));
    }
    let index = value & (PAGE_SIZE - 1);
    if index != 0 {
        return Err(MsrError::BadIndex(index));
    }
    let gpa = value;
    if pvh.layout.is_vmm_page(gpa) || gpa.checked_add(PAGE_SIZE).is_none_or(|e| e > pvh.layout.vmm_base) {
        return Err(MsrError::NotRam(gpa));
    }
    ram.write(gpa, &page()).map_err(|_| MsrError::NotRam(gpa))?;
    pvh.hypercall_page = Some(gpa);
    Ok(())
}

/// Handles a guest `rdmsr` of the hypercall MSR: Xen reads it as 0.
pub fn rdmsr(msr: u32) -> Result<u64, MsrError> {
    if msr == XEN_HYPERCALL_MSR {
        Ok(0)
    } else {
        Err(MsrError::UnknownMsr(msr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stubs_enter_through_the_port_and_iret_traps() {
        let p = page();
        assert_eq!(&p[12 * 32..12 * 32 + 8], &[0xb8, 12, 0, 0, 0, 0xe6, HYPERCALL_PORT as u8, 0xc3]);
        assert_eq!(&p[23 * 32..23 * 32 + 2], &[0x0f, 0x0b]);
        assert_eq!(p[127 * 32 + 1], 127);
    }
}
