//! Guest RAM: allocation, KVM memory slots, and checked access.
//!
//! Every access the VMM makes on behalf of the guest goes through
//! [`GuestRam`]: the range is checked (overflow and bounds) first, then the
//! bytes are copied with `vm-memory`; no reference into guest memory outlives
//! the call.

use crate::error::VmmError;
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;
use pv_abi::pod::{self, Pod};
use vm_memory::{
    AtomicInteger, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress,
    VolatileMemory,
};

/// A guest address range that failed the checks: the hypercall gets `-EFAULT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("guest range {gpa:#x}+{len:#x} is not inside guest RAM")]
pub struct BadGuestRange {
    /// Start the guest named.
    pub gpa: u64,
    /// Length it named.
    pub len: u64,
}

/// One KVM memory slot's worth of guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Guest-physical start.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// Mapped read-only: guest writes exit as MMIO.
    pub readonly: bool,
}

/// Guest RAM at guest-physical `0..size`. Cloning shares the mapping.
#[derive(Debug, Clone)]
pub struct GuestRam {
    mem: GuestMemoryMmap,
    size: u64,
    /// Ranges hypercall outputs may not touch (`guest_out`).
    protected: std::sync::Arc<crate::guest_out::ProtectedRanges>,
}

impl GuestRam {
    /// Allocates RAM as the given contiguous slots (which must tile
    /// `0..size` in order).
    pub fn new(slots: &[Slot]) -> Result<Self, VmmError> {
        let size = slots.iter().map(|s| s.len).sum::<u64>();
        let ranges: Vec<(GuestAddress, usize)> =
            slots.iter().map(|s| (GuestAddress(s.start), s.len as usize)).collect();
        let mem = GuestMemoryMmap::from_ranges(&ranges)
            .map_err(|e| VmmError::GuestMemory { bytes: size, why: e.to_string() })?;
        Ok(GuestRam { mem, size, protected: Default::default() })
    }

    /// Registers each slot with KVM (slot numbers from 0).
    pub fn register(&self, vm: &VmFd, slots: &[Slot]) -> Result<(), VmmError> {
        for (i, slot) in slots.iter().enumerate() {
            let region = self
                .mem
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
            // SAFETY: `host..host+len` is an mmap owned by `self.mem`, which
            // lives as long as the VM (both are owned by `Vm`, memory
            // dropped after the VM fd), and the slot does not overlap another.
            unsafe { vm.set_user_memory_region(kvm_slot) }.map_err(VmmError::kvm("set_user_memory_region"))?;
        }
        Ok(())
    }

    pub(crate) fn protected(&self) -> &crate::guest_out::ProtectedRanges {
        &self.protected
    }

    /// RAM size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The underlying `vm-memory` object (for loaders and back-ends).
    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Checks that `gpa..gpa+len` lies inside RAM without overflow.
    pub fn check(&self, gpa: u64, len: u64) -> Result<(), BadGuestRange> {
        match gpa.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(BadGuestRange { gpa, len }),
        }
    }

    /// The host address of guest-physical `gpa` (for aliasing a RAM page
    /// into another KVM slot).
    pub fn host_address(&self, gpa: u64) -> Option<*mut u8> {
        self.check(gpa, 1).ok()?;
        self.mem.get_host_address(GuestAddress(gpa)).ok()
    }

    /// Copies `len` guest bytes at `gpa` out of guest memory.
    pub fn read_vec(&self, gpa: u64, len: u64) -> Result<Vec<u8>, BadGuestRange> {
        self.check(gpa, len)?;
        let mut buf = vec![0u8; len as usize];
        self.mem.read_slice(&mut buf, GuestAddress(gpa)).map_err(|_| BadGuestRange { gpa, len })?;
        Ok(buf)
    }

    /// Copies guest bytes at `gpa` into `buf`.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), BadGuestRange> {
        let len = buf.len() as u64;
        self.check(gpa, len)?;
        self.mem.read_slice(buf, GuestAddress(gpa)).map_err(|_| BadGuestRange { gpa, len })
    }

    /// Copies `buf` into guest memory at `gpa`.
    pub fn write(&self, gpa: u64, buf: &[u8]) -> Result<(), BadGuestRange> {
        let len = buf.len() as u64;
        self.check(gpa, len)?;
        self.mem.write_slice(buf, GuestAddress(gpa)).map_err(|_| BadGuestRange { gpa, len })
    }

    /// Runs `f` on an atomic integer inside guest memory at `gpa` (which
    /// must be naturally aligned): the shared-memory protocols (event
    /// bitmaps, grant flags) need real atomic read-modify-write on pages
    /// the guest is using concurrently.
    pub fn with_atomic<T: AtomicInteger, R>(&self, gpa: u64, f: impl FnOnce(&T) -> R) -> Result<R, BadGuestRange> {
        let len = std::mem::size_of::<T>() as u64;
        self.check(gpa, len)?;
        let bad = BadGuestRange { gpa, len };
        let slice = self.mem.get_slice(GuestAddress(gpa), len as usize).map_err(|_| bad)?;
        let atomic = slice.get_atomic_ref::<T>(0).map_err(|_| bad)?;
        Ok(f(atomic))
    }

    /// Reads a wire structure (a copy) from guest memory.
    pub fn read_obj<T: Pod>(&self, gpa: u64) -> Result<T, BadGuestRange> {
        let bytes = self.read_vec(gpa, std::mem::size_of::<T>() as u64)?;
        pod::from_bytes(&bytes).ok_or(BadGuestRange { gpa, len: bytes.len() as u64 })
    }

    /// Writes a wire structure to guest memory.
    pub fn write_obj<T: Pod>(&self, gpa: u64, v: &T) -> Result<(), BadGuestRange> {
        self.write(gpa, pod::as_bytes(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_out_of_range_and_overflow() {
        let ram = GuestRam::new(&[
            Slot { start: 0, len: 0x10000, readonly: false },
            Slot { start: 0x10000, len: 0x10000, readonly: false },
        ])
        .unwrap();
        assert_eq!(ram.size(), 0x20000);
        assert!(ram.check(0x1fff0, 0x10).is_ok());
        assert!(ram.check(0x1fff0, 0x11).is_err());
        assert!(ram.check(u64::MAX - 4, 8).is_err());
        assert!(ram.read_vec(0x20000, 1).is_err());
        // A read spanning the two regions works.
        ram.write(0xfffe, &[1, 2, 3, 4]).unwrap();
        assert_eq!(ram.read_vec(0xfffe, 4).unwrap(), vec![1, 2, 3, 4]);
        ram.write_obj(0x100, &0xdead_beef_u64).unwrap();
        assert_eq!(ram.read_obj::<u64>(0x100).unwrap(), 0xdead_beef);
        assert!(ram.read_obj::<u64>(0x1fffc).is_err());
    }
}
