//! `memory_op` for PVH guests (Xen's `xen/common/memory.c` and
//! `xen/arch/x86/mm.c`, `xen/include/public/memory.h`): reservations, the
//! memory map, and placing the shared-info page and grant frames in the
//! guest's physical map.

use crate::domain::{Domain, HcResult};
use crate::domid::is_self;
use crate::grant_table::mapper::MAX_GRANT_FRAMES;
use crate::grant_table::pvh_frames;
use crate::pvh::{PvhState, HOLE_END};
use pv_abi::errno::{EACCES, EINVAL, ENOENT, ENOSYS, EPERM, ESRCH};
use pv_abi::event_channel::DomId;
use pv_abi::hvm::memory_op::*;
use pv_abi::hvm::E820Entry;
use pv_abi::layout::PAGE_SIZE;

/// `XENMEM_increase_reservation`.
pub const INCREASE_RESERVATION: u64 = 0;
/// `XENMEM_decrease_reservation`.
pub const DECREASE_RESERVATION: u64 = 1;
/// `XENMEM_populate_physmap`.
pub const POPULATE_PHYSMAP: u64 = 6;
/// `MEMOP_EXTENT_SHIFT`: the continuation's start extent sits above it in `cmd`.
pub const MEMOP_EXTENT_SHIFT: u32 = 6;
/// The largest `extent_order` a domU may ask for (`CONFIG_DOMU_MAX_ORDER`, x86).
pub const DOMU_MAX_ORDER: u32 = 9;
/// `E820MAX` (`xen/arch/x86/include/asm/e820.h`): the most entries
/// `XENMEM_set_memory_map` takes.
pub const E820MAX: u32 = 1024;
/// `XENMEM_maximum_gpfn`.
pub const MAXIMUM_GPFN: u64 = 14;
/// `XENMEM_maximum_ram_page`.
pub const MAXIMUM_RAM_PAGE: u64 = 2;
/// `XENMAPSPACE_gmfn`: move the domain's own RAM page `idx` to `gpfn`.
const XENMAPSPACE_GMFN: u32 = 2;
/// `XENMAPSPACE_gmfn_range`.
const XENMAPSPACE_GMFN_RANGE: u32 = 3;
/// `XENMAPSPACE_gmfn_foreign`.
const XENMAPSPACE_GMFN_FOREIGN: u32 = 4;
/// `XENMAPSPACE_dev_mmio`.
const XENMAPSPACE_DEV_MMIO: u32 = 5;

/// `struct xen_memory_reservation` (64-bit layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryReservation {
    /// Guest handle of the `xen_pfn_t` extent list.
    pub extent_start: u64,
    /// Number of extents.
    pub nr_extents: u64,
    /// log2 of the pages per extent.
    pub extent_order: u32,
    /// `XENMEMF_*`.
    pub mem_flags: u32,
    /// Domain.
    pub domid: DomId,
    /// Padding.
    pub _pad: [u16; 3],
}
// SAFETY: plain integers, no padding holes beyond the explicit `_pad`.
unsafe impl pv_abi::Pod for MemoryReservation {}

/// `struct compat_memory_reservation` (32-bit guests).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompatMemoryReservation {
    /// Guest handle of the 32-bit `xen_pfn_t` extent list.
    pub extent_start: u32,
    /// Number of extents.
    pub nr_extents: u32,
    /// log2 of the pages per extent.
    pub extent_order: u32,
    /// `XENMEMF_*`.
    pub mem_flags: u32,
    /// Domain.
    pub domid: DomId,
    /// Padding.
    pub _pad: u16,
}
// SAFETY: plain integers, explicit padding.
unsafe impl pv_abi::Pod for CompatMemoryReservation {}

/// `memory_op(cmd, arg)`.
pub fn memory_op(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    if dom.pvh.is_none() {
        return Err(ENOSYS);
    }
    let (cmd, arg) = (a[0] & CMD_MASK, a[1]);
    match cmd {
        INCREASE_RESERVATION | DECREASE_RESERVATION | POPULATE_PHYSMAP => {
            Ok(reservation_op(dom, cmd, a[0] >> MEMOP_EXTENT_SHIFT, arg))
        }
        CURRENT_RESERVATION | MAXIMUM_RESERVATION => {
            let domid: u16 = dom.ram.read_obj(arg)?;
            check_domid(domid)?;
            let r = &pvh(dom).reservation;
            Ok(if cmd == CURRENT_RESERVATION { r.tot_pages } else { r.max_pages })
        }
        // `do_memory_op()`: `max_page`, one past the highest machine frame
        // (any caller; a start extent is `-EINVAL`). The machine a domain
        // here sees is its own RAM block, VMM pages included.
        MAXIMUM_RAM_PAGE if a[0] >> MEMOP_EXTENT_SHIFT != 0 => Err(EINVAL),
        MAXIMUM_RAM_PAGE => Ok(pvh(dom).layout.mem_bytes / PAGE_SIZE),
        MAXIMUM_GPFN => {
            let domid: u16 = dom.ram.read_obj(arg)?;
            check_domid(domid)?;
            Ok(pvh(dom).reservation.max_gpfn)
        }
        MEMORY_MAP => memory_map(dom, arg),
        ADD_TO_PHYSMAP => add_to_physmap(dom, a[0], arg),
        REMOVE_FROM_PHYSMAP => remove_from_physmap(dom, arg),
        SET_MEMORY_MAP => set_memory_map(dom, arg),
        _ => Err(ENOSYS),
    }
}

/// XSM_TARGET (`xen/include/xsm/dummy.h`): the caller itself, else
/// domain 0 exists (`-EPERM`) and any other id does not (`-ESRCH`).
fn check_domid(domid: DomId) -> Result<(), i64> {
    match domid {
        d if is_self(d) => Ok(()),
        0 => Err(EPERM),
        _ => Err(ESRCH),
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
    let map = &pvh(dom).memory_map;
    let n = map.len().min(nr as usize);
    let bytes: Vec<u8> = map[..n]
        .iter()
        .flat_map(|&(addr, size, kind)| pv_abi::pod::as_bytes(&E820Entry { addr, size, kind }).to_vec())
        .collect();
    dom.ram.copy_to_guest(buffer, &bytes)?;
    dom.ram.copy_to_guest(arg, &(n as u32).to_le_bytes())?;
    Ok(0)
}

/// `XENMEM_set_memory_map` (`arch_memory_op()`, `xen/arch/x86/mm.c`):
/// `struct xen_foreign_memory_map { domid; xen_memory_map map; }`; XSM_TARGET
/// lets a domain set its own; more than `E820MAX` entries → `-EINVAL`.
fn set_memory_map(dom: &mut Domain, arg: u64) -> HcResult {
    let (domid, nr, buffer) = if dom.compat {
        let domid: u16 = dom.ram.read_obj(arg)?;
        let m: CompatMemoryMap = dom.ram.read_obj(arg + 4)?;
        (domid, m.nr_entries, u64::from(m.buffer))
    } else {
        let domid: u16 = dom.ram.read_obj(arg)?;
        let m: MemoryMap = dom.ram.read_obj(arg + 8)?;
        (domid, m.nr_entries, m.buffer)
    };
    check_domid(domid)?;
    if nr > E820MAX {
        return Err(EINVAL);
    }
    let bytes = dom.ram.read_vec(buffer, u64::from(nr) * 20)?;
    let map = bytes
        .chunks_exact(20)
        .map(|c| {
            let mut e: E820Entry = pv_abi::pod::zeroed();
            pv_abi::pod::as_bytes_mut(&mut e).copy_from_slice(c);
            (e.addr, e.size, e.kind)
        })
        .collect();
    pvh(dom).memory_map = map;
    Ok(0)
}

/// Where a frame may be placed (`xenmem_add_to_physmap_one()`,
/// `xen/arch/x86/mm/p2m.c`): anywhere but the VMM's own pages and the
/// LAPIC/IO-APIC range, which Xen would find `p2m_mmio_direct` (`-EPERM`);
/// `INVALID_GFN` and frames beyond the 4 GiB the VMM maps → `-EINVAL`.
fn destination(dom: &mut Domain, gpfn: u64) -> Result<(), i64> {
    let gpa = gpfn.checked_mul(PAGE_SIZE).ok_or(EINVAL)?;
    if gpa >= 1 << 32 {
        tracing::debug!(gpfn, "add_to_physmap above 4 GiB refused");
        return Err(EINVAL);
    }
    if pvh(dom).layout.is_vmm_page(gpa) || gpa >= HOLE_END {
        tracing::debug!(gpfn, "add_to_physmap over a VMM page or the APIC range refused");
        return Err(EPERM);
    }
    Ok(())
}

/// `XENMEM_add_to_physmap`; `op` is the whole command (the continuation's
/// start extent above [`MEMOP_EXTENT_SHIFT`]).
fn add_to_physmap(dom: &mut Domain, op: u64, arg: u64) -> HcResult {
    // `do_memory_op()`: the start extent must fit `xatp.size` (16 bits).
    let start = op >> MEMOP_EXTENT_SHIFT;
    if start > u64::from(u16::MAX) {
        return Err(pv_abi::errno::EDOM);
    }
    let (domid, space, idx, gpfn, size) = if dom.compat {
        let x: CompatAddToPhysmap = dom.ram.read_obj(arg)?;
        // The compat handler widens INVALID_GFN (`xen/common/compat/memory.c`).
        let gpfn = if x.gpfn == u32::MAX { u64::MAX } else { u64::from(x.gpfn) };
        (x.domid, x.space, u64::from(x.idx), gpfn, x.size)
    } else {
        let x: AddToPhysmap = dom.ram.read_obj(arg)?;
        (x.domid, x.space, x.idx, x.gpfn, x.size)
    };
    check_domid(domid)?;
    if space == XENMAPSPACE_GMFN_RANGE {
        return move_ram_range(dom, Range { op, arg, start, idx, gpfn, size: u64::from(size) });
    }
    let slot = match space {
        XENMAPSPACE_SHARED_INFO if idx == 0 => 0,
        XENMAPSPACE_GRANT_TABLE if idx < u64::from(MAX_GRANT_FRAMES) => 1 + idx as usize,
        XENMAPSPACE_SHARED_INFO | XENMAPSPACE_GRANT_TABLE => return Err(EINVAL),
        XENMAPSPACE_GMFN => return move_ram_page(dom, idx, gpfn),
        // `gmfn_foreign` is `-ENOSYS` here in Xen too (batch only).
        XENMAPSPACE_GMFN_FOREIGN => return Err(ENOSYS),
        XENMAPSPACE_DEV_MMIO => return Err(EACCES),
        _ => return Err(EINVAL),
    };
    destination(dom, gpfn)?;
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
    p.reservation.max_gpfn = p.reservation.max_gpfn.max(gpfn);
    // A RAM page there is freed (`guest_remove_page()`): the domain owns
    // one page less; the frame stays empty after the placed page leaves.
    if p.reservation.has_page(gpfn) {
        free_page(p, gpfn);
    }
    if slot == 0 {
        let ram = dom.ram.clone();
        // The vCPU's mode now fixes the page's layout (see `set_compat_layout`).
        dom.evtchn.set_compat_layout(dom.compat);
        let layout = dom.evtchn.layout();
        let vcpu_info = dom.evtchn.vcpu_info(0);
        pvh(dom).publish_clock(&ram, layout, vcpu_info)?;
    }
    Ok(0)
}

/// `XENMAPSPACE_gmfn` (`xenmem_add_to_physmap_one()`,
/// `xen/arch/x86/mm/p2m.c`): the RAM page at `idx` moves to `gpfn`; a page
/// there before is freed (a placed frame just unhooked); `idx` is left
/// empty; the domain's page count is unchanged. A source that is not the
/// domain's RAM page (empty, a placed frame, a VMM page) is `-EACCES`.
///
/// KVM backs RAM with one memory slot, so the page's contents are copied
/// and the old frame given back to the host rather than the frame
/// remapped: the guest sees Xen's result. A destination outside the RAM
/// the VMM backs (the hole) cannot hold the page: `-ENOMEM`.
fn move_ram_page(dom: &mut Domain, idx: u64, gpfn: u64) -> HcResult {
    // `xenmem_add_to_physmap()` refuses `INVALID_GFN` before anything.
    if gpfn == u64::MAX {
        return Err(EINVAL);
    }
    let p = pvh(dom);
    if !p.reservation.has_page(idx) || p.placed_at(idx).is_some() {
        return Err(EACCES);
    }
    destination(dom, gpfn)?;
    if gpfn == idx {
        return Ok(0);
    }
    let p = pvh(dom);
    if !p.reservation.is_guest_frame(gpfn) {
        tracing::debug!(idx, gpfn, "add_to_physmap(gmfn) outside guest RAM refused");
        return Err(pv_abi::errno::ENOMEM);
    }
    if let Some(other) = p.placed_at(gpfn) {
        p.set_placement(other, None).map_err(|_| EINVAL)?;
    } else if p.reservation.has_page(gpfn) {
        free_page(p, gpfn);
    }
    let data = dom.ram.read_vec(idx * PAGE_SIZE, PAGE_SIZE)?;
    dom.ram.write(gpfn * PAGE_SIZE, &data)?;
    let p = pvh(dom);
    p.reservation.set_empty(gpfn, false);
    p.reservation.set_empty(idx, true);
    p.reservation.max_gpfn = p.reservation.max_gpfn.max(gpfn);
    if let Err(e) = p.platform().discard_page(idx) {
        tracing::warn!(gfn = idx, error = %e, "cannot give a moved page's old frame back to the host");
    }
    Ok(0)
}

/// A `XENMAPSPACE_gmfn_range` request: the command and argument (for the
/// continuation), the start extent, and the guest's `idx`, `gpfn`, `size`.
struct Range {
    op: u64,
    arg: u64,
    start: u64,
    idx: u64,
    gpfn: u64,
    size: u64,
}

/// `XENMAPSPACE_gmfn_range` (`xenmem_add_to_physmap()`,
/// `xen/common/memory.c`): `size` moves as [`move_ram_page`], from `start`
/// on; backwards when the destination overlaps above the source. The first
/// failing move's errno ends it (earlier moves stay); a spent budget
/// returns `start + done` and continues with it as the start extent.
fn move_ram_range(dom: &mut Domain, r: Range) -> HcResult {
    if r.gpfn == u64::MAX {
        return Err(EINVAL);
    }
    if r.size < r.start {
        return Err(pv_abi::errno::EILSEQ);
    }
    if r.gpfn.checked_add(r.size).is_none() || r.idx.checked_add(r.size).is_none() {
        return Err(pv_abi::errno::EOVERFLOW);
    }
    let backwards = r.gpfn > r.idx && r.gpfn < r.idx + r.size;
    let left = r.size - r.start;
    let (mut idx, mut gpfn) = if backwards {
        (r.idx + left.saturating_sub(1), r.gpfn + left.saturating_sub(1))
    } else {
        (r.idx + r.start, r.gpfn + r.start)
    };
    let mut done = 0;
    while done < left {
        move_ram_page(dom, idx, gpfn)?;
        dom.charge(1);
        done += 1;
        if backwards {
            (idx, gpfn) = (idx.wrapping_sub(1), gpfn.wrapping_sub(1));
        } else {
            (idx, gpfn) = (idx + 1, gpfn + 1);
        }
        if done < left && dom.preempt_check(done) {
            let next = r.start + done;
            dom.create_continuation([(r.op & CMD_MASK) | next << MEMOP_EXTENT_SHIFT, r.arg, 0, 0, 0]);
            return Ok(next);
        }
    }
    Ok(0)
}

/// Frees the page at guest frame `gfn` back to the host.
fn free_page(p: &mut PvhState, gfn: u64) {
    p.reservation.set_empty(gfn, true);
    p.reservation.tot_pages = p.reservation.tot_pages.saturating_sub(1);
    if let Err(e) = p.platform().discard_page(gfn) {
        tracing::warn!(gfn, error = %e, "cannot give a freed guest page back to the host");
    }
}

/// `XENMEM_remove_from_physmap` (`xen/common/memory.c`): whatever is at
/// the frame is removed (`guest_physmap_remove_page()`; a RAM page stays
/// the domain's); nothing there → `-ENOENT`.
fn remove_from_physmap(dom: &mut Domain, arg: u64) -> HcResult {
    let (domid, gpfn) = if dom.compat {
        let x: CompatRemoveFromPhysmap = dom.ram.read_obj(arg)?;
        (x.domid, u64::from(x.gpfn))
    } else {
        let x: RemoveFromPhysmap = dom.ram.read_obj(arg)?;
        (x.domid, x.gpfn)
    };
    check_domid(domid)?;
    let p = pvh(dom);
    if let Some(slot) = p.placed_at(gpfn) {
        p.set_placement(slot, None).map_err(|_| EINVAL)?;
        return Ok(0);
    }
    if gpfn.checked_mul(PAGE_SIZE).is_some_and(|gpa| p.layout.is_vmm_page(gpa)) {
        return Err(EPERM);
    }
    if !p.reservation.has_page(gpfn) {
        return Err(ENOENT);
    }
    // The page stays owned (and, under KVM, mapped: see docs/conformance.md).
    p.reservation.set_empty(gpfn, true);
    Ok(0)
}

/// The reservation ops (`do_memory_op()`, `xen/common/memory.c`): the
/// number of extents done, never an errno; a bad argument, another
/// domain, an order above [`DOMU_MAX_ORDER`] or the first failing extent
/// just stop the count. Work is charged one unit per page; a spent budget
/// continues with the start extent in `cmd` (`MEMOP_EXTENT_SHIFT`).
fn reservation_op(dom: &mut Domain, cmd: u64, start: u64, arg: u64) -> u64 {
    let (list, nr, order, domid, wide) = if dom.compat {
        match dom.ram.read_obj::<CompatMemoryReservation>(arg) {
            Ok(r) => (u64::from(r.extent_start), u64::from(r.nr_extents), r.extent_order, r.domid, 4),
            Err(_) => return start,
        }
    } else {
        match dom.ram.read_obj::<MemoryReservation>(arg) {
            Ok(r) => (r.extent_start, r.nr_extents, r.extent_order, r.domid, 8),
            Err(_) => return start,
        }
    };
    if check_domid(domid).is_err() || order > DOMU_MAX_ORDER || nr > u64::MAX >> MEMOP_EXTENT_SHIFT {
        return start;
    }
    for i in start..nr {
        if dom.preempt_check(i - start) {
            dom.create_continuation([cmd | (i << MEMOP_EXTENT_SHIFT), arg, 0, 0, 0]);
            return i;
        }
        dom.charge(1 << order);
        let ok = if cmd == INCREASE_RESERVATION {
            // A translated guest's new pages are mapped nowhere: count only.
            grow(pvh(dom), 1 << order)
        } else {
            match read_gfn(dom, list, i, wide) {
                Some(gfn) if cmd == DECREASE_RESERVATION => decrease(pvh(dom), gfn, order),
                Some(gfn) => populate(dom, gfn, order),
                None => false,
            }
        };
        if !ok {
            return i;
        }
    }
    nr.max(start)
}

fn read_gfn(dom: &Domain, list: u64, i: u64, wide: u64) -> Option<u64> {
    let at = list.checked_add(i.checked_mul(wide)?)?;
    if wide == 4 {
        dom.ram.read_obj::<u32>(at).ok().map(u64::from)
    } else {
        dom.ram.read_obj::<u64>(at).ok()
    }
}

/// Adds `n` pages to the domain's count unless that passes `max_pages`.
fn grow(p: &mut PvhState, n: u64) -> bool {
    let r = &mut p.reservation;
    match r.tot_pages.checked_add(n) {
        Some(t) if t <= r.max_pages => {
            r.tot_pages = t;
            true
        }
        _ => false,
    }
}

/// `decrease_reservation()`: every page of the extent must be there
/// (`guest_remove_page()` → `-ENOENT` stops the count).
fn decrease(p: &mut PvhState, gfn: u64, order: u32) -> bool {
    let Some(end) = gfn.checked_add(1 << order) else { return false };
    if !(gfn..end).all(|g| p.reservation.has_page(g) && p.placed_at(g).is_none()) {
        return false;
    }
    (gfn..end).for_each(|g| free_page(p, g));
    true
}

/// `populate_physmap()`: a zeroed page at every frame of the extent, within
/// `max_pages`; only frames the VMM can back (the guest's RAM frames).
fn populate(dom: &mut Domain, gfn: u64, order: u32) -> bool {
    let n = 1u64 << order;
    let Some(end) = gfn.checked_add(n) else { return false };
    let p = pvh(dom);
    if !(gfn..end).all(|g| p.reservation.is_guest_frame(g) && p.placed_at(g).is_none()) || !grow(p, n) {
        return false;
    }
    let zero = [0u8; PAGE_SIZE as usize];
    for g in gfn..end {
        pvh(dom).reservation.set_empty(g, false);
        if let Err(e) = dom.ram.write(g * PAGE_SIZE, &zero) {
            tracing::warn!(gfn = g, error = %e, "cannot scrub a populated page");
        }
    }
    true
}

/// Against `xen/include/public/memory.h` (`XENMEM_*`, `XENMAPSPACE_*`, the
/// argument structs), `xen/common/memory.c` (`do_memory_op()`, the
/// reservation ops), `xen/arch/x86/mm.c` (`arch_memory_op()`) and
/// `xen/arch/x86/mm/p2m.c` (`xenmem_add_to_physmap_one()`).
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

    /// Pages a fresh [`TestDomain::pvh`] owns: RAM below the VMM pages
    /// minus the legacy hole, plus the console and store rings.
    const OWNED: i64 = (1024 - 20 - 96) + 2;

    /// Issues memory_op `cmd` on `TEST_ARG` with this exit's budget spent:
    /// one extent is done, then the call continues through a continuation
    /// (`hypercall_create_continuation()` in `do_memory_op()`,
    /// xen/common/memory.c) whose `cmd` carries the next start extent (1).
    /// Returns that `cmd`.
    fn preempted_at_once(t: &mut TestDomain, cmd: u64) -> u64 {
        t.dom.start_exit();
        t.dom.charge(crate::preempt::WORK_PER_EXIT);
        assert_eq!(t.table.dispatch(&mut t.dom, nr::MEMORY_OP, &[cmd, TEST_ARG, 0, 0, 0]), 1);
        let cont = cmd | 1 << MEMOP_EXTENT_SHIFT;
        assert_eq!(t.dom.continuation, Some([cont, TEST_ARG, 0, 0, 0]));
        cont
    }

    fn reservation(t: &mut TestDomain, cmd: u64) -> i64 {
        t.put(TEST_ARG, &DOMID_SELF);
        t.call(nr::MEMORY_OP, [cmd, TEST_ARG, 0, 0, 0])
    }

    /// `XENMEM_{decrease,increase}_reservation`, `populate_physmap` with
    /// the extent list at `LIST`.
    fn extents(t: &mut TestDomain, cmd: u64, gfns: &[u64], nr: u64, order: u32) -> i64 {
        const LIST: u64 = TEST_ARG + 0x400;
        for (i, g) in gfns.iter().enumerate() {
            t.put(LIST + 8 * i as u64, g);
        }
        let r = MemoryReservation {
            extent_start: LIST,
            nr_extents: nr,
            extent_order: order,
            mem_flags: 0,
            domid: DOMID_SELF,
            _pad: [0; 3],
        };
        t.put(TEST_ARG, &r);
        t.call(nr::MEMORY_OP, [cmd, TEST_ARG, 0, 0, 0])
    }

    /// `do_memory_op()` (`xen/common/memory.c`): `domain_tot_pages()` and
    /// `max_pages`; XSM_TARGET: domain 0 exists (`-EPERM`), others do not.
    #[test]
    fn reservations_count_pages_of_this_domain_only() {
        let mut t = TestDomain::pvh();
        assert_eq!(reservation(&mut t, CURRENT_RESERVATION), OWNED);
        assert_eq!(reservation(&mut t, MAXIMUM_RESERVATION), OWNED);
        t.put(TEST_ARG, &4u16);
        assert_eq!(t.call(nr::MEMORY_OP, [CURRENT_RESERVATION, TEST_ARG, 0, 0, 0]), -ESRCH);
        t.put(TEST_ARG, &0u16);
        assert_eq!(t.call(nr::MEMORY_OP, [MAXIMUM_RESERVATION, TEST_ARG, 0, 0, 0]), -EPERM);
        assert_eq!(t.call(nr::MEMORY_OP, [63, TEST_ARG, 0, 0, 0]), -ENOSYS);
        // `domain_get_maximum_gpfn()`: the p2m's highest mapped frame,
        // which a placement above RAM raises and removing it does not lower.
        let last_ram = TEST_RAM / PAGE_SIZE - 1;
        assert_eq!(reservation(&mut t, MAXIMUM_GPFN), last_ram as i64);
        assert_eq!(add(&mut t, XENMAPSPACE_SHARED_INFO, 0, HOLE_PFN), 0);
        assert_eq!(remove(&mut t, HOLE_PFN), 0);
        assert_eq!(reservation(&mut t, MAXIMUM_GPFN), HOLE_PFN as i64);
    }

    /// `decrease_reservation()`, `populate_physmap()`,
    /// `increase_reservation()` (`xen/common/memory.c`): extents done, never
    /// an errno; an empty gfn (`guest_remove_page()` `-ENOENT`), reaching
    /// `max_pages`, or an order above `CONFIG_DOMU_MAX_ORDER` stop the count.
    #[test]
    fn ballooning_frees_repopulates_and_counts_pages() {
        let mut t = TestDomain::pvh();
        t.put(0x1f_0008, &0x1234u64);
        assert_eq!(
            extents(&mut t, DECREASE_RESERVATION, &[0x1f0, 0x1f1, 0xa0, 0x1f2], 4, 0),
            2,
            "stops at the legacy hole"
        );
        assert_eq!(t.platform.calls(), [Call::DiscardPage(0x1f0), Call::DiscardPage(0x1f1)]);
        assert_eq!(reservation(&mut t, CURRENT_RESERVATION), OWNED - 2);
        assert_eq!(extents(&mut t, DECREASE_RESERVATION, &[0x1f1], 1, 0), 0, "already empty");
        assert_eq!(extents(&mut t, POPULATE_PHYSMAP, &[0x1f0, 0x1f1, 0x300], 3, 0), 2, "stops at max_pages");
        assert_eq!(t.get::<u64>(0x1f_0008), 0, "a populated page is zeroed");
        assert_eq!(reservation(&mut t, CURRENT_RESERVATION), OWNED);
        assert_eq!(extents(&mut t, INCREASE_RESERVATION, &[], 1, 0), 0, "at max_pages");
        // An order-1 extent frees two pages; increase then counts them back.
        assert_eq!(extents(&mut t, DECREASE_RESERVATION, &[0x300], 1, 1), 1);
        assert_eq!(reservation(&mut t, CURRENT_RESERVATION), OWNED - 2);
        assert_eq!(extents(&mut t, INCREASE_RESERVATION, &[], 3, 0), 2);
        assert_eq!(reservation(&mut t, CURRENT_RESERVATION), OWNED);
        assert_eq!(extents(&mut t, DECREASE_RESERVATION, &[0x300], 1, DOMU_MAX_ORDER + 1), 0);
        // The VMM's own pages are not the guest's to give back.
        let vmm = t.dom.pvh.as_ref().unwrap().layout.store() / PAGE_SIZE;
        assert_eq!(extents(&mut t, DECREASE_RESERVATION, &[vmm], 1, 0), 0);
        // Another domain or an unreadable argument: 0 done, no errno.
        t.put(TEST_ARG + 24, &0u16);
        assert_eq!(t.call(nr::MEMORY_OP, [DECREASE_RESERVATION, TEST_ARG, 0, 0, 0]), 0);
        assert_eq!(t.call(nr::MEMORY_OP, [DECREASE_RESERVATION, TEST_RAM - 8, 0, 0, 0]), 0);
        assert_eq!(reservation(&mut t, CURRENT_RESERVATION), OWNED);
    }

    /// The compat layout (`compat_memory_reservation`, 32-bit `xen_pfn_t`
    /// list) and the continuation: a spent budget re-enters with the start
    /// extent above `MEMOP_EXTENT_SHIFT` in `cmd` (`do_memory_op()`).
    #[test]
    fn ballooning_from_32_bit_guests_and_across_exits() {
        let mut t = TestDomain::pvh();
        t.dom.compat = true;
        t.put(TEST_ARG + 0x400, &[0x300u32, 0x301, 0x302]);
        let r = CompatMemoryReservation {
            extent_start: TEST_ARG as u32 + 0x400,
            nr_extents: 3,
            extent_order: 0,
            mem_flags: 0,
            domid: DOMID_SELF,
            _pad: 0,
        };
        t.put(TEST_ARG, &r);
        let cont = preempted_at_once(&mut t, DECREASE_RESERVATION);
        assert_eq!(t.call(nr::MEMORY_OP, [cont, TEST_ARG, 0, 0, 0]), 3);
        assert_eq!(reservation(&mut t, CURRENT_RESERVATION), OWNED - 3);
    }

    /// `XENMEM_set_memory_map` (`arch_memory_op()`, `xen/arch/x86/mm.c`):
    /// a domain may set its own map; more than `E820MAX` entries `-EINVAL`.
    #[test]
    fn a_guest_sets_its_own_memory_map() {
        let mut t = TestDomain::pvh();
        let buf = TEST_ARG + 0x100;
        t.put(buf, &[E820Entry { addr: 0, size: 0x1000, kind: 1 }, E820Entry { addr: 0x2000, size: 0x1000, kind: 2 }]);
        t.put(TEST_ARG, &DOMID_SELF);
        t.put(TEST_ARG + 8, &MemoryMap { nr_entries: E820MAX + 1, _pad: 0, buffer: buf });
        assert_eq!(t.call(nr::MEMORY_OP, [SET_MEMORY_MAP, TEST_ARG, 0, 0, 0]), -EINVAL);
        t.put(TEST_ARG + 8, &MemoryMap { nr_entries: 2, _pad: 0, buffer: buf });
        assert_eq!(t.call(nr::MEMORY_OP, [SET_MEMORY_MAP, TEST_ARG, 0, 0, 0]), 0);
        let out = TEST_ARG + 0x200;
        t.put(TEST_ARG, &MemoryMap { nr_entries: 8, _pad: 0, buffer: out });
        assert_eq!(t.call(nr::MEMORY_OP, [MEMORY_MAP, TEST_ARG, 0, 0, 0]), 0);
        assert_eq!(t.get::<u32>(TEST_ARG), 2);
        let e: E820Entry = t.get(out + 20);
        assert_eq!(({ e.addr }, { e.kind }), (0x2000, 2));
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
        assert_eq!(add(&mut t, 4, 0, HOLE_PFN), -ENOSYS, "XENMAPSPACE_gmfn_foreign");
        assert_eq!(add(&mut t, 5, 0, HOLE_PFN), -EACCES, "XENMAPSPACE_dev_mmio");
        assert_eq!(add(&mut t, 9, 0, HOLE_PFN), -EINVAL, "unknown space");
        let store = t.dom.pvh.as_ref().unwrap().layout.store() / PAGE_SIZE;
        assert_eq!(add(&mut t, XENMAPSPACE_SHARED_INFO, 0, store), -EPERM, "the VMM's store ring");
        assert_eq!(add(&mut t, XENMAPSPACE_SHARED_INFO, 0, HOLE_END / PAGE_SIZE), -EPERM, "the APIC range");
        assert_eq!(add(&mut t, XENMAPSPACE_SHARED_INFO, 0, 1 << 20), -EINVAL, "above 4 GiB");
        assert_eq!(add(&mut t, XENMAPSPACE_SHARED_INFO, 0, u64::MAX), -EINVAL, "INVALID_GFN");
        t.put(TEST_ARG, &AddToPhysmap { domid: 3, size: 0, space: 0, idx: 0, gpfn: HOLE_PFN });
        assert_eq!(t.call(nr::MEMORY_OP, [ADD_TO_PHYSMAP, TEST_ARG, 0, 0, 0]), -ESRCH);
        t.put(TEST_ARG, &AddToPhysmap { domid: 0, size: 0, space: 0, idx: 0, gpfn: HOLE_PFN });
        assert_eq!(t.call(nr::MEMORY_OP, [ADD_TO_PHYSMAP, TEST_ARG, 0, 0, 0]), -EPERM);
        t.dom.compat = true;
        t.put(TEST_ARG, &CompatAddToPhysmap { domid: DOMID_SELF, size: 0, space: 0, idx: 0, gpfn: u32::MAX });
        assert_eq!(t.call(nr::MEMORY_OP, [ADD_TO_PHYSMAP, TEST_ARG, 0, 0, 0]), -EINVAL, "compat INVALID_GFN");
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

    fn remove(t: &mut TestDomain, gpfn: u64) -> i64 {
        t.put(TEST_ARG, &RemoveFromPhysmap { domid: DOMID_SELF, _pad: [0; 3], gpfn });
        t.call(nr::MEMORY_OP, [REMOVE_FROM_PHYSMAP, TEST_ARG, 0, 0, 0])
    }

    /// `XENMEM_remove_from_physmap` (`xen/common/memory.c`): whatever is at
    /// the gfn goes (`guest_physmap_remove_page()`; a RAM page stays owned);
    /// an empty gfn → `-ENOENT`.
    #[test]
    fn remove_from_physmap_removes_what_is_there() {
        let mut t = TestDomain::pvh();
        assert_eq!(remove(&mut t, HOLE_PFN), -ENOENT);
        assert_eq!(add(&mut t, XENMAPSPACE_SHARED_INFO, 0, HOLE_PFN), 0);
        assert_eq!(remove(&mut t, HOLE_PFN), 0);
        assert_eq!(t.platform.calls().last(), Some(&Call::RemovePage(0, HOLE_PFN)));
        assert_eq!(t.dom.pvh.as_ref().unwrap().placed[0], None);
        assert_eq!(remove(&mut t, HOLE_PFN), -ENOENT);
        assert_eq!(remove(&mut t, 0x123), 0, "a RAM page");
        assert_eq!(remove(&mut t, 0x123), -ENOENT);
        assert_eq!(reservation(&mut t, CURRENT_RESERVATION), OWNED, "still owned");
        let console = t.dom.pvh.as_ref().unwrap().layout.console() / PAGE_SIZE;
        assert_eq!(remove(&mut t, console), -EPERM, "the VMM's console ring");
    }

    /// `xenmem_add_to_physmap_one()` (`xen/arch/x86/mm/p2m.c`): a RAM page
    /// at the gfn is freed (`guest_remove_page()`, `tot_pages` − 1); moving
    /// the frame leaves the old gfn empty (`p2m_remove_page()`), which
    /// `populate_physmap` can fill again.
    #[test]
    fn shared_info_placed_over_ram_frees_the_page() {
        let mut t = TestDomain::pvh();
        let si = t.dom.pvh.as_ref().unwrap().layout.shared_info();
        assert_eq!(add(&mut t, XENMAPSPACE_SHARED_INFO, 0, 0x100), 0);
        assert_eq!(t.platform.calls(), [Call::PlacePage(0, si, 0x100), Call::DiscardPage(0x100)]);
        assert_eq!(reservation(&mut t, CURRENT_RESERVATION), OWNED - 1);
        assert_eq!(add(&mut t, XENMAPSPACE_SHARED_INFO, 0, HOLE_PFN), 0);
        assert_eq!(reservation(&mut t, CURRENT_RESERVATION), OWNED - 1, "the old gfn stays empty");
        assert_eq!(remove(&mut t, 0x100), -ENOENT);
        assert_eq!(extents(&mut t, DECREASE_RESERVATION, &[0x100], 1, 0), 0);
        assert_eq!(extents(&mut t, POPULATE_PHYSMAP, &[0x100], 1, 0), 1);
        assert_eq!(reservation(&mut t, CURRENT_RESERVATION), OWNED);
        // A grant frame over the page the shared info left: freed once only.
        assert_eq!(add(&mut t, XENMAPSPACE_GRANT_TABLE, 0, 0x101), 0);
        assert_eq!(add(&mut t, XENMAPSPACE_GRANT_TABLE, 0, 0x101), 0);
        assert_eq!(reservation(&mut t, CURRENT_RESERVATION), OWNED - 1);
        assert_eq!(extents(&mut t, POPULATE_PHYSMAP, &[0x101], 1, 0), 0, "a placed frame is not RAM");
    }

    /// `XENMAPSPACE_gmfn` (`xenmem_add_to_physmap_one()`,
    /// `xen/arch/x86/mm/p2m.c`): the page's data appears at the new gfn, the
    /// old gfn is empty (`p2m_remove_page()`: `remove_from_physmap` there is
    /// `-ENOENT`), the domain's page count is unchanged; a page at the
    /// destination is freed (`guest_remove_page()`); moving onto itself
    /// changes nothing.
    #[test]
    fn add_to_physmap_gmfn_moves_a_ram_page() {
        let mut t = TestDomain::pvh();
        t.put(0x250 * PAGE_SIZE + 8, &0x5a5a_0001u64);
        assert_eq!(extents(&mut t, DECREASE_RESERVATION, &[0x100], 1, 0), 1);
        let calls = t.platform.calls().len();
        assert_eq!(add(&mut t, XENMAPSPACE_GMFN, 0x250, 0x100), 0);
        assert_eq!(t.get::<u64>(0x100 * PAGE_SIZE + 8), 0x5a5a_0001);
        assert_eq!(t.platform.calls()[calls..], [Call::DiscardPage(0x250)], "the old frame goes back to the host");
        assert_eq!(reservation(&mut t, CURRENT_RESERVATION), OWNED - 1, "moved, not allocated");
        assert_eq!(remove(&mut t, 0x250), -ENOENT, "the old gfn is empty");
        assert_eq!(add(&mut t, XENMAPSPACE_GMFN, 0x250, 0x101), -EACCES, "nothing left to move");
        // Onto a populated frame: that page is freed.
        t.put(0x300 * PAGE_SIZE, &7u64);
        assert_eq!(add(&mut t, XENMAPSPACE_GMFN, 0x300, 0x100), 0);
        assert_eq!(t.get::<u64>(0x100 * PAGE_SIZE), 7);
        assert_eq!(reservation(&mut t, CURRENT_RESERVATION), OWNED - 2);
        assert_eq!(add(&mut t, XENMAPSPACE_GMFN, 0x100, 0x100), 0, "onto itself");
        assert_eq!(t.get::<u64>(0x100 * PAGE_SIZE), 7);
        assert_eq!(reservation(&mut t, CURRENT_RESERVATION), OWNED - 2);
        // It may be populated again at the frame it left.
        assert_eq!(extents(&mut t, POPULATE_PHYSMAP, &[0x300], 1, 0), 1);
    }

    /// `xenmem_add_to_physmap_one()` refusals for `XENMAPSPACE_gmfn`: a
    /// source that is not the domain's RAM (`p2m_ram_rw`) is `-EACCES`
    /// (an empty gfn, the legacy hole, a placed frame, the hole above RAM,
    /// the VMM's pages); `INVALID_GFN` and the APIC range as for the
    /// other spaces; a gfn outside the RAM KVM backs `-ENOMEM` (ours).
    #[test]
    fn add_to_physmap_gmfn_refuses_what_is_not_ram() {
        let mut t = TestDomain::pvh();
        let store = t.dom.pvh.as_ref().unwrap().layout.store() / PAGE_SIZE;
        assert_eq!(add(&mut t, XENMAPSPACE_SHARED_INFO, 0, HOLE_PFN), 0);
        for idx in [0xa0, HOLE_PFN, HOLE_PFN + 1, store, u64::MAX] {
            assert_eq!(add(&mut t, XENMAPSPACE_GMFN, idx, 0x100), -EACCES, "source {idx:#x}");
        }
        assert_eq!(add(&mut t, XENMAPSPACE_GMFN, 0x250, u64::MAX), -EINVAL, "INVALID_GFN");
        assert_eq!(add(&mut t, XENMAPSPACE_GMFN, 0x250, store), -EPERM, "the VMM's store ring");
        assert_eq!(add(&mut t, XENMAPSPACE_GMFN, 0x250, HOLE_END / PAGE_SIZE), -EPERM, "the APIC range");
        assert_eq!(add(&mut t, XENMAPSPACE_GMFN, 0x250, HOLE_PFN + 2), -pv_abi::errno::ENOMEM, "not backed");
        assert_eq!(reservation(&mut t, CURRENT_RESERVATION), OWNED);
        assert_eq!(remove(&mut t, 0x250), 0, "still there");
    }

    /// `do_memory_op()` `XENMEM_maximum_ram_page` (`xen/common/memory.c`):
    /// `max_page` for any caller; a continuation's start extent `-EINVAL`.
    #[test]
    fn maximum_ram_page_is_one_past_the_last_frame() {
        let mut t = TestDomain::pvh();
        assert_eq!(t.call(nr::MEMORY_OP, [MAXIMUM_RAM_PAGE, 0, 0, 0, 0]), (TEST_RAM / PAGE_SIZE) as i64);
        let cmd = MAXIMUM_RAM_PAGE | 1 << MEMOP_EXTENT_SHIFT;
        assert_eq!(t.call(nr::MEMORY_OP, [cmd, 0, 0, 0, 0]), -EINVAL);
    }

    fn add_range(t: &mut TestDomain, start: u64, idx: u64, gpfn: u64, size: u16) -> i64 {
        t.put(TEST_ARG, &AddToPhysmap { domid: DOMID_SELF, size, space: XENMAPSPACE_GMFN_RANGE, idx, gpfn });
        t.call(nr::MEMORY_OP, [ADD_TO_PHYSMAP | start << MEMOP_EXTENT_SHIFT, TEST_ARG, 0, 0, 0])
    }

    /// `XENMAPSPACE_gmfn_range` (`xenmem_add_to_physmap()`,
    /// `xen/common/memory.c`): `size` pages move; an overlap with the
    /// destination above the source is walked backwards (so no page is
    /// overwritten before it moved); the page count is unchanged.
    #[test]
    fn add_to_physmap_gmfn_range_moves_pages_even_overlapping() {
        let mut t = TestDomain::pvh();
        for i in 0..4u64 {
            t.put((0x150 + i) * PAGE_SIZE, &(0xa0 + i));
        }
        assert_eq!(extents(&mut t, DECREASE_RESERVATION, &[0x154], 1, 0), 1);
        // 0x150..0x154 -> 0x151..0x155: overlapping, destination above.
        assert_eq!(add_range(&mut t, 0, 0x150, 0x151, 4), 0);
        for i in 0..4u64 {
            assert_eq!(t.get::<u64>((0x151 + i) * PAGE_SIZE), 0xa0 + i, "page {i}");
        }
        assert_eq!(remove(&mut t, 0x150), -ENOENT, "the first frame is left empty");
        assert_eq!(reservation(&mut t, CURRENT_RESERVATION), OWNED - 1);
        // And back down (destination below: forwards).
        assert_eq!(add_range(&mut t, 0, 0x151, 0x150, 4), 0);
        for i in 0..4u64 {
            assert_eq!(t.get::<u64>((0x150 + i) * PAGE_SIZE), 0xa0 + i, "page {i}");
        }
        assert_eq!(remove(&mut t, 0x154), -ENOENT);
        // The first failure ends it with its errno; earlier moves stay.
        assert_eq!(add_range(&mut t, 0, 0x152, 0x160, 4), -EACCES, "0x154 is empty");
        assert_eq!(t.get::<u64>(0x161 * PAGE_SIZE), 0xa3);
        // The RAM pages at 0x160 and 0x161 were freed (`guest_remove_page()`).
        assert_eq!(reservation(&mut t, CURRENT_RESERVATION), OWNED - 3);
    }

    /// `do_memory_op()` / `xenmem_add_to_physmap()` refusals for
    /// `gmfn_range`: a start extent beyond 16 bits `-EDOM`, beyond `size`
    /// `-EILSEQ`, a wrapping range `-EOVERFLOW`, `INVALID_GFN` `-EINVAL`;
    /// a spent budget continues with `start + done` as the start extent.
    #[test]
    fn add_to_physmap_gmfn_range_refusals_and_continuation() {
        let mut t = TestDomain::pvh();
        assert_eq!(add_range(&mut t, 1 << 16, 0x150, 0x160, 4), -pv_abi::errno::EDOM);
        assert_eq!(add_range(&mut t, 5, 0x150, 0x160, 4), -pv_abi::errno::EILSEQ);
        assert_eq!(add_range(&mut t, 0, u64::MAX - 1, 0x160, 4), -pv_abi::errno::EOVERFLOW);
        assert_eq!(add_range(&mut t, 0, 0x150, u64::MAX, 4), -EINVAL);
        assert_eq!(add_range(&mut t, 4, 0x150, 0x160, 4), 0, "nothing left to do");
        t.put(0x152 * PAGE_SIZE, &0x77u64);
        t.put(
            TEST_ARG,
            &AddToPhysmap { domid: DOMID_SELF, size: 4, space: XENMAPSPACE_GMFN_RANGE, idx: 0x150, gpfn: 0x160 },
        );
        let cont = preempted_at_once(&mut t, ADD_TO_PHYSMAP);
        assert_eq!(t.call(nr::MEMORY_OP, [cont, TEST_ARG, 0, 0, 0]), 0);
        assert_eq!(t.get::<u64>(0x162 * PAGE_SIZE), 0x77);
        for gfn in 0x150..0x154 {
            assert_eq!(remove(&mut t, gfn), -ENOENT, "gfn {gfn:#x} moved");
        }
        // The four RAM pages at 0x160..0x164 were freed.
        assert_eq!(reservation(&mut t, CURRENT_RESERVATION), OWNED - 4);
    }
}
