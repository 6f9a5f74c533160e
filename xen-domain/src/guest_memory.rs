//! Guest RAM and checked access to it, and the one checked path for
//! hypercall outputs (Xen's `copy_to_guest`).
//!
//! Every access the hypervisor makes on behalf of the guest goes through
//! [`GuestRam`]: the range is checked (overflow and bounds) first, then the
//! bytes are copied with `vm-memory`; no reference into guest memory
//! outlives the call. (Registering the RAM with KVM is the `vmm` crate's.)
//!
//! Every value a hypercall hands back through a guest pointer (`done` and
//! `pdone` counts, `xen_version` results, event-channel and grant-table
//! output structs, multicall results and continuation arguments) is
//! written with [`GuestRam::copy_to_guest`]. Besides the RAM bounds it
//! refuses ranges the guest could not write itself:
//!
//! - the page-table pool in `trapped` and `pv` modes (a read-only memslot:
//!   every guest write to it must pass the direct-paging validator, and an
//!   output aimed at a pinned table would install an entry `mmu_update`
//!   refuses);
//! - the VMM's reserved low pages `0..START_INFO` (the null page, the boot
//!   page tables and the boot GDT), or a PVH guest's VMM pages.
//!
//! A refused output is `-EFAULT`, as Xen's `copy_to_guest` faults on a
//! page-table page. The VMM's own writes (boot, loader, the validator
//! applying an accepted entry, shared-memory protocols) use
//! [`GuestRam::write`] and are not outputs.

use pv_abi::errno::EFAULT;
use pv_abi::pod::{self, Pod};
use std::ops::Range;
use std::sync::{Arc, OnceLock};
use vm_memory::{AtomicInteger, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileMemory};

/// A guest address range that failed the checks: the hypercall gets `-EFAULT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("guest range {gpa:#x}+{len:#x} is not inside guest RAM")]
pub struct BadGuestRange {
    /// Start the guest named.
    pub gpa: u64,
    /// Length it named.
    pub len: u64,
}

impl From<BadGuestRange> for i64 {
    fn from(_: BadGuestRange) -> i64 {
        EFAULT
    }
}

/// Guest RAM could not be allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot allocate {bytes} bytes of guest memory: {why}")]
pub struct GuestMemoryError {
    /// Size requested.
    pub bytes: u64,
    /// Why.
    pub why: String,
}

/// One contiguous piece of guest RAM (one KVM memory slot in `vmm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Guest-physical start.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// Mapped read-only: guest writes exit as MMIO.
    pub readonly: bool,
}

/// Ranges hypercall outputs may not touch (set once when the VM is built).
pub type ProtectedRanges = OnceLock<Vec<Range<u64>>>;

/// The VMM's reserved low pages: null page, boot page tables, boot GDT.
pub const RESERVED_LOW: Range<u64> = 0..pv_abi::layout::START_INFO;

/// Guest RAM at guest-physical `0..size`. Cloning shares the mapping.
#[derive(Debug, Clone)]
pub struct GuestRam {
    mem: GuestMemoryMmap,
    size: u64,
    /// Ranges hypercall outputs may not touch.
    protected: Arc<ProtectedRanges>,
}

impl GuestRam {
    /// Allocates RAM as the given contiguous slots (which must tile
    /// `0..size` in order).
    pub fn new(slots: &[Slot]) -> Result<Self, GuestMemoryError> {
        let size = slots.iter().map(|s| s.len).sum::<u64>();
        let ranges: Vec<(GuestAddress, usize)> =
            slots.iter().map(|s| (GuestAddress(s.start), s.len as usize)).collect();
        let mem =
            GuestMemoryMmap::from_ranges(&ranges).map_err(|e| GuestMemoryError { bytes: size, why: e.to_string() })?;
        Ok(GuestRam { mem, size, protected: Default::default() })
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

    /// Reads a wire structure (a copy) from guest memory, with no heap
    /// allocation.
    pub fn read_obj<T: Pod>(&self, gpa: u64) -> Result<T, BadGuestRange> {
        let mut v: T = pod::zeroed();
        self.read(gpa, pod::as_bytes_mut(&mut v))?;
        Ok(v)
    }

    /// Writes a wire structure to guest memory.
    pub fn write_obj<T: Pod>(&self, gpa: u64, v: &T) -> Result<(), BadGuestRange> {
        self.write(gpa, pod::as_bytes(v))
    }

    /// Declares the ranges outputs must not touch (first call wins; every
    /// clone of this `GuestRam` sees them).
    pub fn protect_outputs(&self, ranges: Vec<Range<u64>>) {
        if self.protected.set(ranges).is_err() {
            tracing::warn!("output protection already set");
        }
    }

    /// Whether an output at `gpa..gpa+len` is allowed (inside RAM and
    /// clear of every protected range).
    pub fn check_output(&self, gpa: u64, len: u64) -> Result<(), BadGuestRange> {
        self.check(gpa, len)?;
        let end = gpa + len;
        let hit = self.protected.get().is_some_and(|rs| rs.iter().any(|r| gpa < r.end && r.start < end));
        if hit {
            tracing::debug!(gpa, len, "hypercall output aimed at a protected page");
            return Err(BadGuestRange { gpa, len });
        }
        Ok(())
    }

    /// Copies a hypercall output to the guest at `gpa` (checked as
    /// [`check_output`](Self::check_output)).
    pub fn copy_to_guest(&self, gpa: u64, buf: &[u8]) -> Result<(), BadGuestRange> {
        self.check_output(gpa, buf.len() as u64)?;
        self.write(gpa, buf)
    }

    /// Copies a wire structure to the guest as a hypercall output.
    pub fn copy_obj_to_guest<T: Pod>(&self, gpa: u64, v: &T) -> Result<(), BadGuestRange> {
        self.copy_to_guest(gpa, pod::as_bytes(v))
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

    #[test]
    fn outputs_into_protected_ranges_fault_and_write_nothing() {
        let ram = GuestRam::new(&[Slot { start: 0, len: 0x40000, readonly: false }]).unwrap();
        ram.protect_outputs(vec![RESERVED_LOW, 0x30000..0x40000]);
        assert!(ram.copy_obj_to_guest(0x20000, &7u32).is_ok());
        for gpa in [0, 0x1000, 0x7ffc, 0x30000, 0x2fffe, 0x3fff8] {
            assert!(ram.copy_obj_to_guest(gpa, &0xffff_ffff_u32).is_err(), "{gpa:#x}");
            assert_ne!(ram.read_obj::<u32>(gpa).unwrap(), 0xffff_ffff, "{gpa:#x} written");
        }
        assert!(ram.copy_obj_to_guest(0x40000, &1u8).is_err());
        assert!(ram.copy_obj_to_guest(0x8000, &1u8).is_ok());
    }
}
