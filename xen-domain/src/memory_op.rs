//! `memory_op` for PVH guests (Xen's `xen/common/memory.c` and
//! `xen/arch/x86/mm.c`, `xen/include/public/memory.h`): reservations, the
//! memory map, and placing the shared-info page and grant frames in the
//! guest's physical map.

use crate::domain::{Domain, HcResult};
use crate::domid::is_self;
use crate::grant_table::mapper::MAX_GRANT_FRAMES;
use crate::grant_table::pvh_frames;
use crate::pvh::{PvhState, HOLE_END};
use pv_abi::errno::{EINVAL, ENOSYS, EPERM, ESRCH};
use pv_abi::hvm::memory_op::*;
use pv_abi::hvm::E820Entry;
use pv_abi::layout::PAGE_SIZE;

/// `memory_op(cmd, arg)`.
pub fn memory_op(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    if dom.pvh.is_none() {
        return Err(ENOSYS);
    }
    let (cmd, arg) = (a[0] & CMD_MASK, a[1]);
    match cmd {
        CURRENT_RESERVATION | MAXIMUM_RESERVATION => {
            let domid: u16 = dom.ram.read_obj(arg)?;
            if !is_self(domid) {
                return Err(ESRCH);
            }
            Ok(dom.ram.size() / PAGE_SIZE)
        }
        MEMORY_MAP => memory_map(dom, arg),
        ADD_TO_PHYSMAP => add_to_physmap(dom, arg),
        REMOVE_FROM_PHYSMAP => remove_from_physmap(dom, arg),
        SET_MEMORY_MAP => Err(EPERM),
        _ => Err(ENOSYS),
    }
}

fn pvh(dom: &mut Domain) -> &mut PvhState {
    dom.pvh.as_mut().expect("checked by memory_op")
}

fn memory_map(dom: &mut Domain, arg: u64) -> HcResult {
    let (nr, buffer) = if dom.compat {
        let m: CompatMemoryMap = dom.ram.read_obj(arg)?;
        (m.nr_entries, u64::from(m.buffer))
    } else {
        let m: MemoryMap = dom.ram.read_obj(arg)?;
        (m.nr_entries, m.buffer)
    };
    let map = pvh(dom).layout.memory_map();
    let n = map.len().min(nr as usize);
    let bytes: Vec<u8> = map[..n]
        .iter()
        .flat_map(|&(addr, size, kind)| pv_abi::pod::as_bytes(&E820Entry { addr, size, kind }).to_vec())
        .collect();
    dom.ram.copy_to_guest(buffer, &bytes)?;
    dom.ram.copy_to_guest(arg, &(n as u32).to_le_bytes())?;
    Ok(0)
}

/// A frame the guest may place a VMM page at: in the hole between RAM and
/// the local APIC region.
fn placeable(dom: &Domain, gpfn: u64) -> bool {
    gpfn.checked_mul(PAGE_SIZE).is_some_and(|gpa| gpa >= dom.ram.size() && gpa < HOLE_END)
}

fn add_to_physmap(dom: &mut Domain, arg: u64) -> HcResult {
    let (domid, space, idx, gpfn) = if dom.compat {
        let x: CompatAddToPhysmap = dom.ram.read_obj(arg)?;
        (x.domid, x.space, u64::from(x.idx), u64::from(x.gpfn))
    } else {
        let x: AddToPhysmap = dom.ram.read_obj(arg)?;
        (x.domid, x.space, x.idx, x.gpfn)
    };
    if !is_self(domid) {
        return Err(ESRCH);
    }
    let slot = match space {
        XENMAPSPACE_SHARED_INFO if idx == 0 => 0,
        XENMAPSPACE_GRANT_TABLE if idx < u64::from(MAX_GRANT_FRAMES) => 1 + idx as usize,
        XENMAPSPACE_SHARED_INFO | XENMAPSPACE_GRANT_TABLE => return Err(EINVAL),
        _ => return Err(ENOSYS),
    };
    if !placeable(dom, gpfn) {
        tracing::debug!(gpfn, "add_to_physmap outside the hole refused");
        return Err(EINVAL);
    }
    if slot > 0 {
        pvh_frames::grow(dom, idx as u32 + 1)?;
    }
    let p = pvh(dom);
    if let Some(other) = p.placed_at(gpfn).filter(|&o| o != slot) {
        p.set_placement(other, None).map_err(|_| EINVAL)?;
    }
    p.set_placement(slot, Some(gpfn)).map_err(|e| {
        tracing::warn!(gpfn, error = %e, "KVM refused the placement");
        EINVAL
    })?;
    if slot == 0 {
        let ram = dom.ram.clone();
        // The vCPU's mode now fixes the page's layout (see `set_compat_layout`).
        dom.evtchn.set_compat_layout(dom.compat);
        let layout = dom.evtchn.layout();
        pvh(dom).publish_clock(&ram, layout)?;
    }
    Ok(0)
}

fn remove_from_physmap(dom: &mut Domain, arg: u64) -> HcResult {
    let (domid, gpfn) = if dom.compat {
        let x: CompatRemoveFromPhysmap = dom.ram.read_obj(arg)?;
        (x.domid, u64::from(x.gpfn))
    } else {
        let x: RemoveFromPhysmap = dom.ram.read_obj(arg)?;
        (x.domid, x.gpfn)
    };
    if !is_self(domid) {
        return Err(ESRCH);
    }
    let p = pvh(dom);
    let slot = p.placed_at(gpfn).ok_or(EINVAL)?;
    p.set_placement(slot, None).map_err(|_| EINVAL)?;
    Ok(0)
}

/// Against `xen/include/public/memory.h` (`XENMEM_*`, `XENMAPSPACE_*`, the
/// argument structs) and `xen/common/memory.c`, `xen/arch/x86/mm.c`
/// (`-ESRCH` for a domain the caller may not name, `-EINVAL` for a bad
/// index, `-ENOSYS` for unknown commands and spaces, `-EPERM` for
/// `XENMEM_set_memory_map` from a guest).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Call, TestDomain, TEST_ARG, TEST_RAM};
    use pv_abi::event_channel::DOMID_SELF;
    use pv_abi::hypercall::nr;
    use pv_abi::start_info::paging_mode;

    /// A guest frame in the hole above RAM.
    const HOLE_PFN: u64 = 0x8_0000;

    fn add(t: &mut TestDomain, space: u32, idx: u64, gpfn: u64) -> i64 {
        t.put(TEST_ARG, &AddToPhysmap { domid: DOMID_SELF, size: 0, space, idx, gpfn });
        t.call(nr::MEMORY_OP, [ADD_TO_PHYSMAP, TEST_ARG, 0, 0, 0])
    }

    #[test]
    fn our_own_guests_have_no_memory_op() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        assert_eq!(t.call(nr::MEMORY_OP, [CURRENT_RESERVATION, TEST_ARG, 0, 0, 0]), -ENOSYS);
    }

    #[test]
    fn reservations_count_pages_of_this_domain_only() {
        let mut t = TestDomain::pvh();
        t.put(TEST_ARG, &DOMID_SELF);
        assert_eq!(t.call(nr::MEMORY_OP, [CURRENT_RESERVATION, TEST_ARG, 0, 0, 0]), (TEST_RAM / PAGE_SIZE) as i64);
        assert_eq!(t.call(nr::MEMORY_OP, [MAXIMUM_RESERVATION, TEST_ARG, 0, 0, 0]), (TEST_RAM / PAGE_SIZE) as i64);
        t.put(TEST_ARG, &4u16);
        assert_eq!(t.call(nr::MEMORY_OP, [CURRENT_RESERVATION, TEST_ARG, 0, 0, 0]), -ESRCH);
        assert_eq!(t.call(nr::MEMORY_OP, [SET_MEMORY_MAP, TEST_ARG, 0, 0, 0]), -EPERM);
        assert_eq!(t.call(nr::MEMORY_OP, [63, TEST_ARG, 0, 0, 0]), -ENOSYS);
    }

    #[test]
    fn memory_map_writes_at_most_nr_entries_and_says_how_many() {
        let mut t = TestDomain::pvh();
        let buf = TEST_ARG + 0x100;
        t.put(TEST_ARG, &MemoryMap { nr_entries: 2, _pad: 0, buffer: buf });
        assert_eq!(t.call(nr::MEMORY_OP, [MEMORY_MAP, TEST_ARG, 0, 0, 0]), 0);
        assert_eq!(t.get::<u32>(TEST_ARG), 2);
        let e: [E820Entry; 2] = t.get(buf);
        let (addr0, kind0, kind1) = (e[0].addr, e[0].kind, e[1].kind);
        assert_eq!((addr0, kind0, kind1), (0, pv_abi::hvm::MEMMAP_RAM, pv_abi::hvm::MEMMAP_RESERVED));
        assert_eq!(t.get::<u64>(buf + 2 * 24), 0, "nothing past nr_entries");
        t.put(TEST_ARG, &MemoryMap { nr_entries: 64, _pad: 0, buffer: buf });
        assert_eq!(t.call(nr::MEMORY_OP, [MEMORY_MAP, TEST_ARG, 0, 0, 0]), 0);
        assert_eq!(t.get::<u32>(TEST_ARG), 5);
        // Into the VMM's own pages: refused.
        let vmm = t.dom.pvh.as_ref().unwrap().layout.vmm_base;
        t.put(TEST_ARG, &MemoryMap { nr_entries: 64, _pad: 0, buffer: vmm });
        assert_eq!(t.call(nr::MEMORY_OP, [MEMORY_MAP, TEST_ARG, 0, 0, 0]), -pv_abi::errno::EFAULT);
    }

    #[test]
    fn add_to_physmap_places_shared_info_through_the_platform() {
        let mut t = TestDomain::pvh();
        let si = t.dom.pvh.as_ref().unwrap().layout.shared_info();
        t.platform.set_tsc(5_000_000);
        assert_eq!(add(&mut t, XENMAPSPACE_SHARED_INFO, 0, HOLE_PFN), 0);
        assert_eq!(t.platform.calls(), vec![Call::PlacePage(0, si, HOLE_PFN)]);
        assert_eq!(t.dom.pvh.as_ref().unwrap().placed[0], Some(HOLE_PFN));
        // The pvclock was published (`xen/include/public/xen.h`,
        // `vcpu_time_info`): an even version, the platform's TSC plus the
        // guest's offset.
        let time: pv_abi::shared_info::VcpuTimeInfo = t.get(si + 32);
        let offset = t.dom.pvh.as_ref().unwrap().clock.tsc_offset;
        assert_eq!((time.version % 2, time.tsc_timestamp), (0, 5_000_000u64.wrapping_add(offset)));
        assert_ne!(time.version, 0);
        // Moving it removes the old alias first.
        assert_eq!(add(&mut t, XENMAPSPACE_SHARED_INFO, 0, HOLE_PFN + 1), 0);
        assert_eq!(t.platform.calls()[1..], [Call::RemovePage(0, HOLE_PFN), Call::PlacePage(0, si, HOLE_PFN + 1)]);
    }

    #[test]
    fn add_to_physmap_checks_space_index_frame_and_domain() {
        let mut t = TestDomain::pvh();
        assert_eq!(add(&mut t, XENMAPSPACE_SHARED_INFO, 1, HOLE_PFN), -EINVAL);
        assert_eq!(add(&mut t, XENMAPSPACE_GRANT_TABLE, u64::from(MAX_GRANT_FRAMES), HOLE_PFN), -EINVAL);
        assert_eq!(add(&mut t, 2, 0, HOLE_PFN), -ENOSYS, "XENMAPSPACE_gmfn");
        assert_eq!(add(&mut t, XENMAPSPACE_SHARED_INFO, 0, 0x100), -EINVAL, "a RAM frame");
        assert_eq!(add(&mut t, XENMAPSPACE_SHARED_INFO, 0, HOLE_END / PAGE_SIZE), -EINVAL, "the APIC range");
        assert_eq!(add(&mut t, XENMAPSPACE_SHARED_INFO, 0, u64::MAX), -EINVAL);
        t.put(TEST_ARG, &AddToPhysmap { domid: 3, size: 0, space: 0, idx: 0, gpfn: HOLE_PFN });
        assert_eq!(t.call(nr::MEMORY_OP, [ADD_TO_PHYSMAP, TEST_ARG, 0, 0, 0]), -ESRCH);
        assert!(t.platform.calls().is_empty());
    }

    #[test]
    fn a_grant_frame_placement_grows_the_table_and_a_refusal_is_einval() {
        let mut t = TestDomain::pvh();
        assert_eq!(add(&mut t, XENMAPSPACE_GRANT_TABLE, 2, HOLE_PFN), 0);
        assert_eq!(t.dom.grants.nr_frames(), 3);
        t.platform.refuse_placement(true);
        assert_eq!(add(&mut t, XENMAPSPACE_SHARED_INFO, 0, HOLE_PFN), -EINVAL);
        assert_eq!(t.dom.pvh.as_ref().unwrap().placed[0], None);
    }

    #[test]
    fn remove_from_physmap_unplaces_only_what_was_placed() {
        let mut t = TestDomain::pvh();
        let remove = |t: &mut TestDomain, gpfn| {
            t.put(TEST_ARG, &RemoveFromPhysmap { domid: DOMID_SELF, _pad: [0; 3], gpfn });
            t.call(nr::MEMORY_OP, [REMOVE_FROM_PHYSMAP, TEST_ARG, 0, 0, 0])
        };
        assert_eq!(remove(&mut t, HOLE_PFN), -EINVAL);
        assert_eq!(add(&mut t, XENMAPSPACE_SHARED_INFO, 0, HOLE_PFN), 0);
        assert_eq!(remove(&mut t, HOLE_PFN), 0);
        assert_eq!(t.platform.calls().last(), Some(&Call::RemovePage(0, HOLE_PFN)));
        assert_eq!(t.dom.pvh.as_ref().unwrap().placed[0], None);
    }
}
