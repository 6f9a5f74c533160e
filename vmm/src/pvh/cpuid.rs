//! The hypervisor CPUID leaves a Xen guest probes (Xen's `arch-x86/cpuid.h`):
//! signature, version, the hypercall-page MSR and the HVM features.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};
use pv_abi::hvm::cpuid::*;

pub use pv_abi::hvm::xen_version::XEN_VERSION;

/// The Xen leaves for vCPU `vcpu_id` of domain `domid`.
pub fn xen_leaves(vcpu_id: u32, domid: u32) -> [kvm_cpuid_entry2; 6] {
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
        // Time leaf: [`with_time_leaves`] fills it once the TSC rate is known.
        leaf(3, 0, 0, 0, 0),
        // Subleaf 0 only: KVM answers other subleaves of a leaf whose index
        // is significant with zeros, as Xen's `cpuid_hypervisor_leaves()` does.
        kvm_cpuid_entry2 {
            flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
            index: 0,
            ..leaf(4, HVM_FEATURES, vcpu_id, domid, 0)
        },
        // PV-specific parameters: nothing for an HVM guest (Xen breaks out
        // of `case 5` leaving zeros).
        leaf(5, 0, 0, 0, 0),
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

/// Leaf base + 3 (time), subleaves 0..=2, as `cpuid_hypervisor_leaves()`
/// (`xen/arch/x86/cpuid.c`) fills them for a guest with xl's default
/// `tsc_mode` (0, "default") whose TSC is not emulated (KVM runs the guest
/// on the host TSC, scaled): subleaf 0: eax = vtsc (0) | host TSC reliable
/// << 1 | RDTSCP << 2, ebx = `tsc_mode`, ecx = the guest's TSC kHz, edx =
/// incarnation (0: never migrated); subleaf 1: eax/ebx = offset (0: the
/// pvclock's system time starts at boot), ecx = `mul_frac`, edx = `shift`
/// (sign-extended, as Xen assigns the `s8`); subleaf 2: eax = the physical
/// CPU's kHz (the host TSC rate KVM reports). `host` is the CPUID the
/// RDTSCP (0x80000001 edx bit 27) and invariant-TSC (0x80000007 edx bit 8,
/// for Xen's `host_tsc_is_safe()`) bits come from.
pub fn time_leaves(tsc_khz: u32, host: &[kvm_cpuid_entry2]) -> [kvm_cpuid_entry2; 3] {
    let edx = |f: u32| host.iter().find(|e| e.function == f).map_or(0, |e| e.edx);
    let reliable = (edx(0x8000_0007) >> 8) & 1;
    let rdtscp = (edx(0x8000_0001) >> 27) & 1;
    let (mul, shift) = xen_domain::time::time_scale(u64::from(tsc_khz) * 1000);
    let sub = |index: u32, eax: u32, ebx: u32, ecx: u32, edx: u32| kvm_cpuid_entry2 {
        function: XEN_CPUID_BASE + 3,
        index,
        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        eax,
        ebx,
        ecx,
        edx,
        ..Default::default()
    };
    [
        sub(0, (reliable << 1) | (rdtscp << 2), 0, tsc_khz, 0),
        sub(1, 0, 0, mul, i32::from(shift) as u32),
        sub(2, tsc_khz, 0, 0, 0),
    ]
}

/// `cpuid` with leaf base + 3 replaced by [`time_leaves`].
pub fn with_time_leaves(cpuid: CpuId, tsc_khz: u32) -> Result<CpuId, vmm_sys_util::fam::Error> {
    let time = time_leaves(tsc_khz, cpuid.as_slice());
    let mut entries: Vec<kvm_cpuid_entry2> =
        cpuid.as_slice().iter().copied().filter(|e| e.function != XEN_CPUID_BASE + 3).collect();
    entries.extend(time);
    CpuId::from_entries(&entries)
}

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
        // cpuid_hypervisor_leaves(): base + XEN_CPUID_MAX_NUM_LEAVES (5) by default.
        assert_eq!(sig.eax, XEN_CPUID_BASE + 5);
        let l5 = find(XEN_CPUID_BASE + 5);
        assert_eq!((l5.eax, l5.ebx, l5.ecx, l5.edx), (0, 0, 0, 0), "leaf 5 is PV-only");
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

    /// `cpuid_hypervisor_leaves()` (`xen/arch/x86/cpuid.c`), leaf base + 3
    /// and `xen/include/public/arch-x86/cpuid.h` ("Leaf 4 (0x40000x03)"):
    /// tsc_khz in subleaf 0 ecx, the tsc->ns scale in subleaf 1 ecx/edx,
    /// cpu_khz in subleaf 2 eax; each subleaf answered separately.
    #[test]
    fn leaf_3_reports_the_tsc_rate_and_scale_per_subleaf() {
        let host = [
            kvm_cpuid_entry2 { function: 0x8000_0001, edx: 1 << 27, ..Default::default() },
            kvm_cpuid_entry2 { function: 0x8000_0007, edx: 1 << 8, ..Default::default() },
        ];
        let base = install(&CpuId::from_entries(&host).unwrap(), 0, 1).unwrap();
        let c = with_time_leaves(base, 2_500_000).unwrap();
        let sub = |i: u32| *c.as_slice().iter().find(|e| e.function == XEN_CPUID_BASE + 3 && e.index == i).unwrap();
        assert_eq!(c.as_slice().iter().filter(|e| e.function == XEN_CPUID_BASE + 3).count(), 3);
        assert_eq!((sub(0).eax, sub(0).ebx, sub(0).ecx, sub(0).edx), (0b110, 0, 2_500_000, 0));
        // Xen's set_time_scale(): 2.5 GHz halves once (shift -1) to 1.25
        // GHz, mul_frac = 2^32 * 1e9 / 1.25e9 = 0.8 * 2^32.
        let (mul, shift) = (sub(1).ecx, sub(1).edx as i32);
        assert_eq!(shift, -1, "sign-extended s8");
        assert_eq!(mul, 3_435_973_836);
        let ns = (((2_500_000_000u64 >> 1) as u128 * u128::from(mul)) >> 32) as u64;
        assert!(ns.abs_diff(1_000_000_000) < 10, "one second of TSC scales to 1e9 ns, got {ns}");
        assert_eq!(sub(2).eax, 2_500_000);
        for e in [sub(0), sub(1), sub(2)] {
            assert_eq!(e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
        }
        let bare = with_time_leaves(install(&CpuId::new(0).unwrap(), 0, 1).unwrap(), 1000).unwrap();
        let s0 = *bare.as_slice().iter().find(|e| e.function == XEN_CPUID_BASE + 3).unwrap();
        assert_eq!(s0.eax, 0, "no RDTSCP, no invariant TSC: bits clear");
    }
}
