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
    }
}
