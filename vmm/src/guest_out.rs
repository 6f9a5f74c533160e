//! The one write path for hypercall outputs (Xen's `copy_to_guest`).
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
//!   page tables and the boot GDT).
//!
//! A refused output is `-EFAULT`, as Xen's `copy_to_guest` faults on a
//! page-table page. The VMM's own writes (boot, loader, the validator
//! applying an accepted entry, shared-memory protocols) use
//! [`GuestRam::write`] and are not outputs.

use crate::memory::{BadGuestRange, GuestRam};
use pv_abi::pod::{self, Pod};
use std::ops::Range;
use std::sync::OnceLock;

/// Ranges hypercall outputs may not touch (set once when the VM is built).
pub type ProtectedRanges = OnceLock<Vec<Range<u64>>>;

/// The VMM's reserved low pages: null page, boot page tables, boot GDT.
pub const RESERVED_LOW: Range<u64> = 0..pv_abi::layout::START_INFO;

impl GuestRam {
    /// Declares the ranges outputs must not touch (first call wins; every
    /// clone of this `GuestRam` sees them).
    pub fn protect_outputs(&self, ranges: Vec<Range<u64>>) {
        if self.protected().set(ranges).is_err() {
            tracing::warn!("output protection already set");
        }
    }

    /// Whether an output at `gpa..gpa+len` is allowed (inside RAM and
    /// clear of every protected range).
    pub fn check_output(&self, gpa: u64, len: u64) -> Result<(), BadGuestRange> {
        self.check(gpa, len)?;
        let end = gpa + len;
        let hit = self.protected().get().is_some_and(|rs| rs.iter().any(|r| gpa < r.end && r.start < end));
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
    use crate::memory::{GuestRam, Slot};

    #[test]
    fn outputs_into_protected_ranges_fault_and_write_nothing() {
        let ram = GuestRam::new(&[Slot { start: 0, len: 0x40000, readonly: false }]).unwrap();
        ram.protect_outputs(vec![super::RESERVED_LOW, 0x30000..0x40000]);
        assert!(ram.copy_obj_to_guest(0x20000, &7u32).is_ok());
        for gpa in [0, 0x1000, 0x7ffc, 0x30000, 0x2fffe, 0x3fff8] {
            assert!(ram.copy_obj_to_guest(gpa, &0xffff_ffff_u32).is_err(), "{gpa:#x}");
            assert_ne!(ram.read_obj::<u32>(gpa).unwrap(), 0xffff_ffff, "{gpa:#x} written");
        }
        assert!(ram.copy_obj_to_guest(0x40000, &1u8).is_err());
        assert!(ram.copy_obj_to_guest(0x8000, &1u8).is_ok());
    }
}
