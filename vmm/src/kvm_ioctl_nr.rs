//! KVM ioctl request numbers the VMM issues by hand or lets through its
//! seccomp filters (`linux/kvm.h`). Both the code issuing a request and
//! [`crate::seccomp`] take the number from here, so neither imports the
//! other.

/// `KVMIO`, the ioctl type of every KVM request.
pub const KVMIO: u64 = 0xae;

const fn io(nr: u64) -> u64 {
    (KVMIO << 8) | nr
}

const fn iow(nr: u64, size: usize) -> u64 {
    (1 << 30) | ((size as u64) << 16) | (KVMIO << 8) | nr
}

const fn ior(nr: u64, size: usize) -> u64 {
    (2 << 30) | ((size as u64) << 16) | (KVMIO << 8) | nr
}

const fn iowr(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64) << 16) | (KVMIO << 8) | nr
}

/// `KVM_TRANSLATE` (reading the instruction bytes of a failed run).
pub const KVM_TRANSLATE: u64 = iowr(0x85, std::mem::size_of::<kvm_bindings::kvm_translation>());

/// `KVM_RUN`.
pub const KVM_RUN: u64 = io(0x80);
/// `KVM_GET_REGS`.
pub const KVM_GET_REGS: u64 = ior(0x81, std::mem::size_of::<kvm_bindings::kvm_regs>());
/// `KVM_SET_REGS`.
pub const KVM_SET_REGS: u64 = iow(0x82, std::mem::size_of::<kvm_bindings::kvm_regs>());
/// `KVM_GET_SREGS`.
pub const KVM_GET_SREGS: u64 = ior(0x83, std::mem::size_of::<kvm_bindings::kvm_sregs>());
/// `KVM_SET_SREGS`.
pub const KVM_SET_SREGS: u64 = iow(0x84, std::mem::size_of::<kvm_bindings::kvm_sregs>());
/// `KVM_INTERRUPT`: queues an external interrupt (the PVH callback vector).
pub const KVM_INTERRUPT: u64 = iow(0x86, std::mem::size_of::<kvm_bindings::kvm_interrupt>());
/// `KVM_IOEVENTFD`: binds or unbinds a doorbell.
pub const KVM_IOEVENTFD: u64 = iow(0x79, std::mem::size_of::<kvm_bindings::kvm_ioeventfd>());
/// `KVM_SET_USER_MEMORY_REGION`: PVH guests place frames at run time.
pub const KVM_SET_USER_MEMORY_REGION: u64 = iow(0x46, std::mem::size_of::<kvm_bindings::kvm_userspace_memory_region>());
/// `KVM_GET_DIRTY_LOG`: live migration reads the pages the guest wrote.
pub const KVM_GET_DIRTY_LOG: u64 = iow(0x42, std::mem::size_of::<kvm_bindings::kvm_dirty_log>());
/// `KVM_SET_GSI_ROUTING`: PVH guests choose their upcall vector.
pub const KVM_SET_GSI_ROUTING: u64 = iow(0x6a, std::mem::size_of::<kvm_bindings::kvm_irq_routing>());

/// `KVM_GET_FPU` (snapshots read each vCPU on its own thread).
pub const KVM_GET_FPU: u64 = ior(0x8c, std::mem::size_of::<kvm_bindings::kvm_fpu>());
/// `KVM_GET_LAPIC`.
pub const KVM_GET_LAPIC: u64 = ior(0x8e, std::mem::size_of::<kvm_bindings::kvm_lapic_state>());
/// `KVM_GET_MSRS`.
pub const KVM_GET_MSRS: u64 = iowr(0x88, std::mem::size_of::<kvm_bindings::kvm_msrs>());
/// `KVM_GET_MP_STATE`.
pub const KVM_GET_MP_STATE: u64 = ior(0x98, std::mem::size_of::<kvm_bindings::kvm_mp_state>());
/// `KVM_GET_VCPU_EVENTS`.
pub const KVM_GET_VCPU_EVENTS: u64 = ior(0x9f, std::mem::size_of::<kvm_bindings::kvm_vcpu_events>());
/// `KVM_GET_DEBUGREGS`.
pub const KVM_GET_DEBUGREGS: u64 = ior(0xa1, std::mem::size_of::<kvm_bindings::kvm_debugregs>());
/// `KVM_GET_XSAVE`.
pub const KVM_GET_XSAVE: u64 = ior(0xa4, std::mem::size_of::<kvm_bindings::kvm_xsave>());
/// `KVM_GET_XCRS`.
pub const KVM_GET_XCRS: u64 = ior(0xa6, std::mem::size_of::<kvm_bindings::kvm_xcrs>());
/// `KVM_GET_CLOCK` (vCPU 0 reads the VM's clock for a snapshot).
pub const KVM_GET_CLOCK: u64 = ior(0x7c, std::mem::size_of::<kvm_bindings::kvm_clock_data>());
/// `KVM_GET_IRQCHIP`.
pub const KVM_GET_IRQCHIP: u64 = iowr(0x62, std::mem::size_of::<kvm_bindings::kvm_irqchip>());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_linux_kvm_h() {
        assert_eq!(KVM_RUN, 0xae80);
        assert_eq!(KVM_GET_REGS, 0x8090_ae81);
        assert_eq!(KVM_TRANSLATE, 0xc018_ae85);
        assert_eq!(KVM_SET_SREGS, 0x4138_ae84);
        assert_eq!(KVM_INTERRUPT, 0x4004_ae86);
        assert_eq!(KVM_IOEVENTFD, 0x4040_ae79);
        assert_eq!(KVM_SET_USER_MEMORY_REGION, 0x4020_ae46);
        assert_eq!(KVM_SET_GSI_ROUTING, 0x4008_ae6a);
        assert_eq!(KVM_GET_DIRTY_LOG, 0x4010_ae42);
        assert_eq!(KVM_GET_MSRS, 0xc008_ae88);
        assert_eq!(KVM_GET_LAPIC, 0x8400_ae8e);
        assert_eq!(KVM_GET_XSAVE, 0x9000_aea4);
        assert_eq!(KVM_GET_CLOCK, 0x8030_ae7c);
        assert_eq!(KVM_GET_IRQCHIP, 0xc208_ae62);
    }
}
