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
        let si = p.layout.shared_info();
        let ram = dom.ram.clone();
        // The vCPU's mode now fixes the page's layout (see `set_compat_layout`).
        dom.evtchn.set_compat_layout(dom.compat);
        let layout = dom.evtchn.layout();
        pvh(dom).clock.publish(&ram, si, layout)?;
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
