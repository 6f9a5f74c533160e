//! Which guest pages changed since they were sent.
//!
//! Two sources, because KVM sees only one kind of write:
//!
//! * the guest's own writes: KVM's dirty log, switched on per memory slot
//!   with `KVM_MEM_LOG_DIRTY_PAGES` and read (and cleared) with
//!   `KVM_GET_DIRTY_LOG` once per pre-copy round ([`DirtyLog`]);
//! * the VMM's writes (back ends filling a read request's pages, ring
//!   responses, hypercall handlers updating `shared_info`, `vcpu_info`,
//!   runstate areas, event arrays, grant status; virtio used rings; the
//!   trapped page-table pool, a read-only slot the log does not cover):
//!   they go through the VMM's mapping of guest RAM, which KVM does not
//!   log. [`PageHashes`] keeps a 64-bit hash of every page as it was
//!   sent; at the switch-over, with the vCPUs paused and the devices
//!   idle, every page whose hash changed is sent again. That covers every
//!   write path at once (no write path has to remember to mark a page),
//!   at the price of hashing guest RAM once during the downtime.

use crate::memory::{GuestRam, Slot};
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;
use std::sync::Arc;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use super::stream::PAGE_SIZE;

/// The dirty log of a VM's RAM slots.
pub struct DirtyLog {
    vm: Arc<VmFd>,
    /// `(KVM slot number, slot, host address)`; writable slots only.
    slots: Vec<(u32, Slot, u64)>,
}

impl DirtyLog {
    /// The log over `slots` (numbered from 0 in order, as
    /// [`crate::memory::RegisterSlots`] registered them). Read-only slots
    /// are left out: the guest cannot write them.
    pub fn new(vm: Arc<VmFd>, ram: &GuestRam, slots: &[Slot]) -> Result<Self, String> {
        let mut out = Vec::new();
        for (i, s) in slots.iter().enumerate().filter(|(_, s)| !s.readonly) {
            let region = ram.mem().find_region(GuestAddress(s.start)).ok_or("a RAM slot has no memory")?;
            let host = region.get_host_address(MemoryRegionAddress(0)).map_err(|e| e.to_string())?;
            out.push((i as u32, *s, host as u64));
        }
        Ok(DirtyLog { vm, slots: out })
    }

    fn set(&self, flags: u32) -> Result<(), String> {
        for &(slot, s, host) in &self.slots {
            let region = kvm_userspace_memory_region {
                slot,
                flags: flags & !KVM_MEM_READONLY,
                guest_phys_addr: s.start,
                memory_size: s.len,
                userspace_addr: host,
            };
            // SAFETY: the same slot, address and mapping as registered
            // when the VM was built (only the flags change); the mapping
            // lives as long as the VM.
            unsafe { self.vm.set_user_memory_region(region) }
                .map_err(|e| format!("cannot switch the dirty log of slot {slot}: {e}"))?;
        }
        Ok(())
    }

    /// Starts logging (the log starts empty).
    pub fn start(&self) -> Result<(), String> {
        self.set(KVM_MEM_LOG_DIRTY_PAGES)
    }

    /// Stops logging (a failed migration: the VM runs on untracked).
    pub fn stop(&self) {
        if let Err(e) = self.set(0) {
            tracing::warn!(error = %e, "cannot stop the dirty log");
        }
    }

    /// The guest-physical addresses of the pages written since the last
    /// call (or [`start`](Self::start)); clears the log.
    pub fn take(&self) -> Result<Vec<u64>, String> {
        let mut dirty = Vec::new();
        for &(slot, s, _) in &self.slots {
            let bitmap = self
                .vm
                .get_dirty_log(slot, s.len as usize)
                .map_err(|e| format!("KVM_GET_DIRTY_LOG on slot {slot}: {e}"))?;
            for (w, &bits) in bitmap.iter().enumerate() {
                let mut b = bits;
                while b != 0 {
                    let bit = b.trailing_zeros() as u64;
                    b &= b - 1;
                    let gpa = s.start + (w as u64 * 64 + bit) * PAGE_SIZE as u64;
                    if gpa < s.start + s.len {
                        dirty.push(gpa);
                    }
                }
            }
        }
        Ok(dirty)
    }
}

/// The hash of each page as last sent (see the module comment).
pub struct PageHashes(Vec<u64>);

/// The hash of an all-zero page.
pub fn zero_hash() -> u64 {
    // Computed once: it is compared with every page sent.
    static ZERO: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ZERO.get_or_init(|| page_hash(&[0u8; PAGE_SIZE]))
}

impl PageHashes {
    /// Every page of `ram_bytes` as the destination starts: zero.
    pub fn zeroed(ram_bytes: u64) -> Self {
        PageHashes(vec![zero_hash(); (ram_bytes / PAGE_SIZE as u64) as usize])
    }

    /// Records what was sent for the page at `gpa`.
    pub fn sent(&mut self, gpa: u64, hash: u64) {
        if let Some(h) = self.0.get_mut((gpa / PAGE_SIZE as u64) as usize) {
            *h = hash;
        }
    }

    /// Whether the page at `gpa` now hashes to something else than sent.
    pub fn changed(&self, gpa: u64, hash: u64) -> bool {
        self.0.get((gpa / PAGE_SIZE as u64) as usize).is_none_or(|&h| h != hash)
    }
}

/// A 64-bit hash of one page: four xxHash64 lanes over its words, then
/// merged (xxHash64's round and merge constants). A changed page keeps
/// its hash with probability about 2^-64.
pub fn page_hash(page: &[u8]) -> u64 {
    const P1: u64 = 0x9E37_79B1_85EB_CA87;
    const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    const P4: u64 = 0x85EB_CA77_C2B2_AE63;
    let round = |acc: u64, w: u64| acc.wrapping_add(w.wrapping_mul(P2)).rotate_left(31).wrapping_mul(P1);
    let mut lanes = [P1.wrapping_add(P2), P2, 0, 0u64.wrapping_sub(P1)];
    for chunk in page.chunks_exact(32) {
        for (l, w) in lanes.iter_mut().zip(chunk.chunks_exact(8)) {
            *l = round(*l, u64::from_le_bytes(w.try_into().unwrap_or_default()));
        }
    }
    let mut h = lanes[0].rotate_left(1).wrapping_add(lanes[1].rotate_left(7));
    h = h.wrapping_add(lanes[2].rotate_left(12)).wrapping_add(lanes[3].rotate_left(18));
    for l in lanes {
        h = (h ^ round(0, l)).wrapping_mul(P1).wrapping_add(P4);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_word_changes_the_hash() {
        let mut p = vec![0u8; PAGE_SIZE];
        let zero = page_hash(&p);
        assert_eq!(zero, zero_hash());
        let mut seen = std::collections::HashSet::from([zero]);
        for i in (0..PAGE_SIZE).step_by(61) {
            p[i] ^= 0x80;
            assert!(seen.insert(page_hash(&p)), "byte {i}");
        }
    }

    #[test]
    fn hashes_start_zeroed_and_track_what_was_sent() {
        let mut h = PageHashes::zeroed(4 * PAGE_SIZE as u64);
        assert!(!h.changed(0x1000, zero_hash()));
        assert!(h.changed(0x1000, 5));
        h.sent(0x1000, 5);
        assert!(!h.changed(0x1000, 5));
        assert!(h.changed(0x100_0000, 5), "outside RAM counts as changed");
        h.sent(0x100_0000, 5);
    }
}
