//! The hypervisor CPUID leaves a Xen guest probes (Xen's `arch-x86/cpuid.h`):
//! signature, version, the hypercall-page MSR and the HVM features.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};
use pv_abi::hvm::cpuid::*;

pub use pv_abi::hvm::xen_version::XEN_VERSION;

/// The Xen leaves for vCPU `vcpu_id` of domain `domid`.
pub fn xen_leaves(vcpu_id: u32, domid: u32) -> [kvm_cpuid_entry2; 5] {
    let leaf = |i: u32, eax: u32, ebx: u32, ecx: u32, edx: u32| kvm_cpuid_entry2 {
        function: XEN_CPUID_BASE + i,
        eax,
        ebx,
        ecx,
        edx,
        ..Default::default()
    };
    let [b, c, d] = XEN_CPUID_SIGNATURE;
    [
        leaf(0, XEN_CPUID_MAX, b, c, d),
        leaf(1, XEN_VERSION, 0, 0, 0),
        // One hypercall page, at the MSR in ebx.
        leaf(2, 1, XEN_HYPERCALL_MSR, 0, 0),
        // Time leaf: nothing offered.
        leaf(3, 0, 0, 0, 0),
        // Subleaf 0 only: KVM answers other subleaves of a leaf whose index
        // is significant with zeros, as Xen's `cpuid_hypervisor_leaves()` does.
        kvm_cpuid_entry2 {
            flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
            index: 0,
            ..leaf(4, HVM_FEATURES, vcpu_id, domid, 0)
        },
    ]
}

/// `XEN_HVM_CPUID_IOMMU_MAPPINGS` (`xen/include/public/arch-x86/cpuid.h`):
/// Xen sets it for every HVM guest (the grant/foreign mapping of a
/// translated guest is visible to its IOMMU context).
pub const XEN_HVM_CPUID_IOMMU_MAPPINGS: u32 = 1 << 2;

/// Leaf base + 4 `eax` as `cpuid_hypervisor_leaves()` (`xen/arch/x86/cpuid.c`)
/// fills it for an HVM guest without APIC-virtualisation bits.
pub const HVM_FEATURES: u32 = XEN_HVM_CPUID_IOMMU_MAPPINGS
    | XEN_HVM_CPUID_VCPU_ID_PRESENT
    | XEN_HVM_CPUID_DOMID_PRESENT
    | XEN_HVM_CPUID_UPCALL_VECTOR;

/// Replaces every hypervisor leaf (0x40000000..0x4fffffff, e.g. KVM's own
/// signature) in `cpuid` with the Xen leaves, and sets the "running on a
/// hypervisor" bit (leaf 1, ecx bit 31).
pub fn install(cpuid: &CpuId, vcpu_id: u32, domid: u32) -> Result<CpuId, vmm_sys_util::fam::Error> {
    let mut entries: Vec<kvm_cpuid_entry2> =
        cpuid.as_slice().iter().copied().filter(|e| !(0x4000_0000..0x5000_0000).contains(&e.function)).collect();
    for e in entries.iter_mut().filter(|e| e.function == 1) {
        e.ecx |= 1 << 31;
    }
    entries.extend(xen_leaves(vcpu_id, domid));
    CpuId::from_entries(&entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_carry_signature_msr_and_ids() {
        let base = CpuId::from_entries(&[
            kvm_cpuid_entry2 { function: 0x4000_0000, ebx: 0x4b4d_564b, ..Default::default() },
            kvm_cpuid_entry2 { function: 1, ..Default::default() },
        ])
        .unwrap();
        let c = install(&base, 0, 1).unwrap();
        let find = |f: u32| *c.as_slice().iter().find(|e| e.function == f).unwrap();
        assert_eq!(c.as_slice().iter().filter(|e| e.function == XEN_CPUID_BASE).count(), 1);
        let sig = find(XEN_CPUID_BASE);
        let bytes: Vec<u8> = [sig.ebx, sig.ecx, sig.edx].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(&bytes, b"XenVMMXenVMM");
        assert!(sig.eax >= XEN_CPUID_BASE + 2);
        assert_eq!(find(XEN_CPUID_BASE + 2).ebx, 0x4000_0000);
        assert_eq!(find(XEN_CPUID_BASE + 4).ecx, 1);
        assert_ne!(find(1).ecx & (1 << 31), 0);
    }

    /// `cpuid_hypervisor_leaves()` (`xen/arch/x86/cpuid.c`), leaf base + 4:
    /// subleaf 0 only, `XEN_HVM_CPUID_IOMMU_MAPPINGS` always set for HVM.
    #[test]
    fn leaf_4_has_xens_hvm_bits_for_subleaf_0_only() {
        let l = xen_leaves(0, 1)[4];
        assert_eq!(l.function, XEN_CPUID_BASE + 4);
        assert_eq!(l.eax, (1 << 2) | (1 << 3) | (1 << 4) | (1 << 6));
        assert_eq!((l.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX, l.index), (KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0));
    }
}
