//! Guest RAM as KVM memory slots. The RAM itself and its checked access
//! are `xen_domain::guest_memory` (re-exported here for the machine code);
//! registering it with KVM is the machine's job.

pub use xen_domain::guest_memory::{BadGuestRange, GuestRam, Slot};

use crate::error::VmmError;
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

/// Registering guest RAM with a KVM VM.
pub trait RegisterSlots {
    /// Registers each slot with KVM (slot numbers from 0).
    fn register(&self, vm: &VmFd, slots: &[Slot]) -> Result<(), VmmError>;
}

impl RegisterSlots for GuestRam {
    fn register(&self, vm: &VmFd, slots: &[Slot]) -> Result<(), VmmError> {
        for (i, slot) in slots.iter().enumerate() {
            let region = self
                .mem()
                .find_region(GuestAddress(slot.start))
                .ok_or_else(|| VmmError::GuestMemory { bytes: slot.len, why: "slot not allocated".into() })?;
            let host = region
                .get_host_address(MemoryRegionAddress(0))
                .map_err(|e| VmmError::GuestMemory { bytes: slot.len, why: e.to_string() })?;
            let kvm_slot = kvm_userspace_memory_region {
                slot: i as u32,
                flags: if slot.readonly { KVM_MEM_READONLY } else { 0 },
                guest_phys_addr: slot.start,
                memory_size: slot.len,
                userspace_addr: host as u64,
            };
            // SAFETY: `host..host+len` is an mmap owned by the guest
            // memory, which lives as long as the VM (both are owned by
            // `Vm`, memory dropped after the VM fd), and the slot does not
            // overlap another.
            unsafe { vm.set_user_memory_region(kvm_slot) }.map_err(VmmError::kvm("set_user_memory_region"))?;
        }
        Ok(())
    }
}
