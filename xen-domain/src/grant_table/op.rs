//! `grant_table_op`: the guest's side of the grant table. The table itself
//! and the mapper back-ends use are [`super::mapper`]; a Xen PVH guest's
//! own answers are [`super::pvh_frames`].
//!
//! Departure from Xen: Xen allocates the table frames and `setup_table`
//! returns their numbers; here the guest owns its table (DESIGN.md), so
//! `frame_list` is an IN array of the guest frames it allocated.

use super::mapper::{GrantError, GrantMapping, MAX_GRANT_FRAMES};
pub use super::target::target_status;
use crate::domain::{Domain, HcResult};
use pv_abi::errno::{EINVAL, ENOSYS};
use pv_abi::event_channel::{DOMID_SELF, DOMID_VMM};
use pv_abi::grant_table::*;
use pv_abi::layout::PAGE_SIZE;
use std::mem::{offset_of, size_of};

/// `GNTTABOP_swap_grant_ref` (`xen/include/public/grant_table.h`).
pub const GNTTABOP_SWAP_GRANT_REF: u32 = 11;
/// `GNTTABOP_cache_flush` (Arm only: `CONFIG_HAS_GRANT_CACHE_FLUSH`).
pub const GNTTABOP_CACHE_FLUSH: u32 = 12;
/// `GNTMAP_device_map` / `GNTMAP_host_map` / `GNTMAP_application_map` /
/// `GNTMAP_contains_pte` flag bits of `gnttab_map_grant_ref.flags`.
const GNTMAP_DEVICE_MAP: u32 = 1 << 0;
const GNTMAP_HOST_MAP: u32 = 1 << 1;
const GNTMAP_APPLICATION_MAP: u32 = 1 << 3;
const GNTMAP_CONTAINS_PTE: u32 = 1 << 4;
/// Entries of domain 0's table as a guest sees it: one v1 frame
/// (`INITIAL_NR_GRANT_FRAMES`), none of them granted to the guest.
const DOM0_GRANT_ENTRIES: u32 = 512;

/// The commands `hvm_grant_table_op()` (`xen/arch/x86/hvm/hypercall.c`)
/// passes for an HVM/PVH guest; every other one is `-ENOSYS`.
const PVH_COMMANDS: [u32; 8] = [
    GNTTABOP_QUERY_SIZE,
    GNTTABOP_SETUP_TABLE,
    GNTTABOP_SET_VERSION,
    GNTTABOP_GET_VERSION,
    GNTTABOP_COPY,
    GNTTABOP_MAP_GRANT_REF,
    GNTTABOP_UNMAP_GRANT_REF,
    GNTTABOP_SWAP_GRANT_REF,
];

/// `grant_table_op(cmd, uop, count)`: a PVH guest's own operations
/// ([`super::pvh_frames`]), else the common ones.
pub fn grant_table_op(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    let cmd = u32::try_from(a[0]).map_err(|_| ENOSYS)?;
    if dom.pvh.is_some() && !PVH_COMMANDS.contains(&cmd) {
        return Err(ENOSYS);
    }
    // `do_grant_table_op()`: `count` is an `unsigned int`, negative as an
    // `int` is `-EINVAL`.
    let uop = a[1];
    let count = a[2] as u32;
    if (count as i32) < 0 {
        return Err(EINVAL);
    }
    let count = u64::from(count);
    if dom.pvh.is_some() {
        if let Some(r) = super::pvh_frames::grant_table_op(dom, cmd, uop, count) {
            return r;
        }
    }
    match cmd {
        GNTTABOP_SETUP_TABLE if count == 1 => setup_table(dom, uop),
        GNTTABOP_QUERY_SIZE if count == 1 => query_size(dom, uop),
        GNTTABOP_SETUP_TABLE | GNTTABOP_QUERY_SIZE => Err(EINVAL),
        GNTTABOP_COPY => copy(dom, uop, count),
        GNTTABOP_MAP_GRANT_REF | GNTTABOP_UNMAP_GRANT_REF | GNTTABOP_SWAP_GRANT_REF => per_op(dom, cmd, uop, count),
        _ => Err(ENOSYS),
    }
}

/// `map_grant_ref`, `unmap_grant_ref` and `swap_grant_ref` batches: one
/// status per element (`gnttab_map_grant_ref()` etc.), preempted and
/// continued like [`copy`]; `-EFAULT` only for an unreachable element.
fn per_op(dom: &mut Domain, cmd: u32, uop: u64, count: u64) -> HcResult {
    // (element size, offset of `status`) in both the native and the compat
    // layout, which agree for these three structs.
    let (size, status_at) = match cmd {
        GNTTABOP_MAP_GRANT_REF => (32, 18),
        GNTTABOP_UNMAP_GRANT_REF => (24, 20),
        _ => (12, 8),
    };
    for i in 0..count {
        let at = uop + i * size;
        if dom.preempt_check(i) {
            dom.create_continuation([u64::from(cmd), at, count - i, 0, 0]);
            return Ok(0);
        }
        dom.charge(1);
        let status = match cmd {
            GNTTABOP_MAP_GRANT_REF => map_status(dom.ram.read_obj::<[u32; 4]>(at + 8)?),
            // No mapping is ever made, so no handle is valid
            // (`unmap_common()`: `handle >= maptrack_limit`).
            GNTTABOP_UNMAP_GRANT_REF => {
                dom.ram.read_obj::<[u8; 24]>(at)?;
                GNTST_BAD_HANDLE
            }
            _ => {
                let [a, b, _]: [u32; 3] = dom.ram.read_obj(at)?;
                dom.grants.swap(a, b)
            }
        };
        dom.ram.copy_to_guest(at + status_at, &status.to_le_bytes())?;
    }
    Ok(0)
}

/// `map_grant_ref()` for one `gnttab_map_grant_ref` (`flags`, `ref`,
/// `dom`): the checks Xen makes before it would touch the p2m. Domain 0
/// grants the guest nothing, and mapping the guest's own grants into its
/// physical map is not implemented (`GNTST_general_error`, Xen's answer
/// for an entry not granted to the caller).
fn map_status([flags, gref, dom, _]: [u32; 4]) -> i16 {
    let dom = dom as u16;
    if flags & (GNTMAP_DEVICE_MAP | GNTMAP_HOST_MAP) == 0 {
        GNTST_BAD_GNTREF
    } else if flags & (GNTMAP_DEVICE_MAP | GNTMAP_APPLICATION_MAP | GNTMAP_CONTAINS_PTE) != 0 {
        // A translated (`paging_mode_external`) caller.
        GNTST_GENERAL_ERROR
    } else if dom != DOMID_VMM && dom != crate::domid::GUEST_DOMID {
        // `rcu_lock_domain_by_id()`: not `DOMID_SELF` either.
        GNTST_BAD_DOMAIN
    } else if dom == DOMID_VMM && gref >= DOM0_GRANT_ENTRIES {
        GNTST_BAD_GNTREF
    } else {
        GNTST_GENERAL_ERROR
    }
}

/// `GNTTABOP_setup_table`: registers the guest's own table frames.
fn setup_table(dom: &mut Domain, uop: u64) -> HcResult {
    let mut op: GnttabSetupTable = dom.ram.read_obj(uop)?;
    op.status = if let Some(st) = target_status(op.dom) {
        st
    } else if op.nr_frames == 0 || op.nr_frames > MAX_GRANT_FRAMES {
        GNTST_GENERAL_ERROR
    } else {
        match dom.ram.read_vec(op.frame_list, op.nr_frames as u64 * 8) {
            Err(_) => GNTST_BAD_VIRT_ADDR,
            Ok(bytes) => {
                let frames: Vec<u64> =
                    bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
                match dom.grants.setup(&frames) {
                    Ok(()) => GNTST_OKAY,
                    Err(st) => st,
                }
            }
        }
    };
    dom.ram.copy_obj_to_guest(uop, &op)?;
    Ok(0)
}

/// `GNTTABOP_query_size`.
fn query_size(dom: &mut Domain, uop: u64) -> HcResult {
    let mut op: GnttabQuerySize = dom.ram.read_obj(uop)?;
    if let Some(st) = target_status(op.dom) {
        op.status = st;
    } else {
        op.nr_frames = dom.grants.nr_frames();
        op.max_nr_frames = MAX_GRANT_FRAMES;
        op.status = GNTST_OKAY;
    }
    dom.ram.copy_obj_to_guest(uop, &op)?;
    Ok(0)
}

/// `GNTTABOP_copy`: each [`GnttabCopy`] is copied in, run, and its
/// `status` written back; a failed element does not stop the batch. No
/// count limit: as `gnttab_copy()`, a long batch is preempted and
/// continued.
fn copy(dom: &mut Domain, uop: u64, count: u64) -> HcResult {
    const CMD: u64 = GNTTABOP_COPY as u64;
    let size = size_of::<GnttabCopy>() as u64;
    // Checked as an output: each status is written back.
    dom.ram.check_output(uop, count * size)?;
    for i in 0..count {
        let at = uop + i * size;
        if dom.preempt_check(i) {
            // Xen's continuation: the same op over the rest.
            dom.create_continuation([CMD, at, count - i, 0, 0]);
            return Ok(0);
        }
        dom.charge(crate::preempt::COPY_UNITS);
        let op: GnttabCopy = dom.ram.read_obj(at)?;
        let status = match copy_one(dom, &op) {
            Ok(()) => GNTST_OKAY,
            Err(e) => {
                tracing::debug!("gnttab copy: {e}");
                e.gntst()
            }
        };
        dom.ram.copy_to_guest(at + offset_of!(GnttabCopy, status) as u64, &status.to_le_bytes())?;
    }
    Ok(0)
}

/// One side of a copy, resolved: either a live grant mapping or a checked
/// guest-physical address in the guest's own RAM.
enum Side {
    Grant(GrantMapping, u64),
    Frame(u64),
}

fn resolve(dom: &Domain, ptr: &GnttabCopyPtr, is_gref: bool, len: u64, write: bool) -> Result<Side, GrantError> {
    let offset = ptr.offset as u64;
    // `gnttab_copy_lock_domain()`: only `DOMID_SELF` may name a frame
    // (not even the caller's numeric id); a gref side's domain must exist.
    if !is_gref && ptr.domid != DOMID_SELF {
        return Err(GrantError::NotPermitted(0));
    }
    match target_status(ptr.domid) {
        None => {}
        Some(GNTST_BAD_DOMAIN) => return Err(GrantError::BadDomain(ptr.domid)),
        Some(_) => return Err(GrantError::NotPermitted(0)),
    }
    if offset + len > PAGE_SIZE {
        return Err(GrantError::OutOfPage { offset, len });
    }
    if is_gref {
        let m = dom.grants.map(ptr.u.gref(), write)?;
        Ok(Side::Grant(m, offset))
    } else {
        let gmfn = ptr.u.gmfn();
        let gpa = gmfn.checked_mul(PAGE_SIZE).ok_or(GrantError::BadFrame(0, gmfn))?;
        dom.grants.check_frame_range(gpa, offset, len).map(Side::Frame)
    }
}

fn copy_one(dom: &Domain, op: &GnttabCopy) -> Result<(), GrantError> {
    let len = op.len as u64;
    let src = resolve(dom, &op.source, op.flags & GNTCOPY_SOURCE_GREF != 0, len, false)?;
    let dst = resolve(dom, &op.dest, op.flags & GNTCOPY_DEST_GREF != 0, len, true)?;
    let mut buf = vec![0u8; len as usize];
    match &src {
        Side::Grant(m, off) => m.read(*off, &mut buf)?,
        Side::Frame(gpa) => dom.ram.read(*gpa, &mut buf).map_err(|_| GrantError::BadFrame(0, gpa / PAGE_SIZE))?,
    }
    match &dst {
        Side::Grant(m, off) => m.write(*off, &buf)?,
        Side::Frame(gpa) => dom.ram.write(*gpa, &buf).map_err(|_| GrantError::BadFrame(0, gpa / PAGE_SIZE))?,
    }
    Ok(())
}

/// Against `xen/include/public/grant_table.h` (`GNTTABOP_*`, the argument
/// structs, `GNTST_*`, `GTF_*`) and `xen/common/grant_table.c`
/// (`do_grant_table_op`: per-element status in `status`, `-EINVAL` for a
/// count other than 1 on `setup_table`/`query_size`, `-ENOSYS` for unknown
/// commands, `-EFAULT` when an argument cannot be copied; `gnttab_copy`:
/// `GNTST_bad_copy_arg` for a side crossing its page).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{TestDomain, TEST_ARG, TEST_POOL, TEST_RAM};
    use pv_abi::errno::EFAULT;
    use pv_abi::event_channel::{DOMID_SELF, DOMID_VMM};
    use pv_abi::hypercall::nr;
    use pv_abi::start_info::paging_mode;

    const TABLE: u64 = 0x28_0000;
    const PAGE: u64 = 0x29_0000;
    const FRAME_LIST: u64 = TEST_ARG + 0x800;

    fn op(t: &mut TestDomain, cmd: u32, count: u64) -> i64 {
        t.call(nr::GRANT_TABLE_OP, [u64::from(cmd), TEST_ARG, count, 0, 0])
    }

    /// Registers a one-frame table at [`TABLE`] with `GNTTABOP_setup_table`.
    fn setup(t: &mut TestDomain) -> i16 {
        t.put(FRAME_LIST, &(TABLE / PAGE_SIZE));
        t.put(
            TEST_ARG,
            &GnttabSetupTable { dom: DOMID_SELF, nr_frames: 1, frame_list: FRAME_LIST, ..Default::default() },
        );
        assert_eq!(op(t, GNTTABOP_SETUP_TABLE, 1), 0);
        t.get::<GnttabSetupTable>(TEST_ARG).status
    }

    fn grant(t: &TestDomain, gref: u64, frame: u64, readonly: bool) {
        t.put(TABLE + gref * 8, &GrantEntryV1::permit_access(DOMID_VMM, (frame / PAGE_SIZE) as u32, readonly));
    }

    #[test]
    fn query_size_reports_the_registered_and_the_maximum_frames() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        t.put(TEST_ARG, &GnttabQuerySize { dom: DOMID_SELF, ..Default::default() });
        assert_eq!(op(&mut t, GNTTABOP_QUERY_SIZE, 1), 0);
        let q: GnttabQuerySize = t.get(TEST_ARG);
        assert_eq!((q.nr_frames, q.max_nr_frames, q.status), (0, MAX_GRANT_FRAMES, GNTST_OKAY));
        assert_eq!(setup(&mut t), GNTST_OKAY);
        t.put(TEST_ARG, &GnttabQuerySize { dom: DOMID_SELF, ..Default::default() });
        assert_eq!(op(&mut t, GNTTABOP_QUERY_SIZE, 1), 0);
        assert_eq!(t.get::<GnttabQuerySize>(TEST_ARG).nr_frames, 1);
        t.put(TEST_ARG, &GnttabQuerySize { dom: 9, ..Default::default() });
        assert_eq!(op(&mut t, GNTTABOP_QUERY_SIZE, 1), 0);
        assert_eq!(t.get::<GnttabQuerySize>(TEST_ARG).status, GNTST_BAD_DOMAIN);
        // `gnttab_query_size()`: XSM_TARGET refuses existing domain 0.
        t.put(TEST_ARG, &GnttabQuerySize { dom: DOMID_VMM, ..Default::default() });
        assert_eq!(op(&mut t, GNTTABOP_QUERY_SIZE, 1), 0);
        assert_eq!(t.get::<GnttabQuerySize>(TEST_ARG).status, GNTST_PERMISSION_DENIED);
    }

    #[test]
    fn setup_table_statuses() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        let mut arg = GnttabSetupTable { dom: DOMID_SELF, nr_frames: 0, frame_list: FRAME_LIST, ..Default::default() };
        for (nr_frames, want) in [(0, GNTST_GENERAL_ERROR), (MAX_GRANT_FRAMES + 1, GNTST_GENERAL_ERROR)] {
            arg.nr_frames = nr_frames;
            t.put(TEST_ARG, &arg);
            assert_eq!(op(&mut t, GNTTABOP_SETUP_TABLE, 1), 0);
            assert_eq!(t.get::<GnttabSetupTable>(TEST_ARG).status, want, "{nr_frames} frames");
        }
        arg.nr_frames = 1;
        arg.frame_list = crate::fake::TEST_RAM;
        t.put(TEST_ARG, &arg);
        assert_eq!(op(&mut t, GNTTABOP_SETUP_TABLE, 1), 0);
        assert_eq!(t.get::<GnttabSetupTable>(TEST_ARG).status, GNTST_BAD_VIRT_ADDR);
        // A table frame in the pool is not usable RAM.
        t.put(FRAME_LIST, &(TEST_POOL / PAGE_SIZE));
        arg.frame_list = FRAME_LIST;
        t.put(TEST_ARG, &arg);
        assert_eq!(op(&mut t, GNTTABOP_SETUP_TABLE, 1), 0);
        assert_eq!(t.get::<GnttabSetupTable>(TEST_ARG).status, GNTST_BAD_VIRT_ADDR);
        arg.dom = 3;
        t.put(TEST_ARG, &arg);
        assert_eq!(op(&mut t, GNTTABOP_SETUP_TABLE, 1), 0);
        assert_eq!(t.get::<GnttabSetupTable>(TEST_ARG).status, GNTST_BAD_DOMAIN);
    }

    #[test]
    fn a_registered_grant_maps_for_domain_0_and_marks_the_entry_in_use() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        assert_eq!(setup(&mut t), GNTST_OKAY);
        grant(&t, 5, PAGE, false);
        let m = t.dom.grants.map(5, true).unwrap();
        let flags = GrantEntryV1::from_word(t.get(TABLE + 5 * 8)).flags;
        assert_eq!(flags & (GTF_READING | GTF_WRITING), GTF_READING | GTF_WRITING);
        m.write(0, b"via grant").unwrap();
        drop(m);
        assert_eq!(t.dom.ram.read_vec(PAGE, 9).unwrap(), b"via grant");
        assert_eq!(GrantEntryV1::from_word(t.get(TABLE + 5 * 8)).flags & (GTF_READING | GTF_WRITING), 0);
        grant(&t, 6, PAGE, true);
        assert_eq!(t.dom.grants.map(6, true).err(), Some(GrantError::ReadOnly(6)));
        assert_eq!(t.dom.grants.map(7, false).err(), Some(GrantError::NotPermitted(7)));
    }

    #[test]
    fn counts_and_commands_xen_refuses() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        assert_eq!(op(&mut t, GNTTABOP_SETUP_TABLE, 2), -EINVAL);
        assert_eq!(op(&mut t, GNTTABOP_QUERY_SIZE, 0), -EINVAL);
        // `do_grant_table_op()`: `(int)count < 0` is -EINVAL.
        assert_eq!(op(&mut t, GNTTABOP_COPY, 0xffff_ffff), -EINVAL);
        for cmd in [4, 99] {
            assert_eq!(op(&mut t, cmd, 1), -ENOSYS, "cmd {cmd}");
        }
        assert_eq!(t.call(nr::GRANT_TABLE_OP, [u64::MAX, TEST_ARG, 1, 0, 0]), -ENOSYS);
        assert_eq!(op(&mut t, GNTTABOP_COPY, 0), 0, "an empty batch");
    }

    fn copy_op(src: GnttabCopyPtr, dst: GnttabCopyPtr, len: u16, flags: u16) -> GnttabCopy {
        GnttabCopy { source: src, dest: dst, len, flags, ..Default::default() }
    }

    fn gref_ptr(gref: u32, offset: u16) -> GnttabCopyPtr {
        GnttabCopyPtr { u: GnttabCopyPtrU::from_gref(gref), domid: DOMID_SELF, offset, _pad: 0 }
    }

    fn frame_ptr(gpa: u64, offset: u16) -> GnttabCopyPtr {
        GnttabCopyPtr { u: GnttabCopyPtrU::from_gmfn(gpa / PAGE_SIZE), domid: DOMID_SELF, offset, _pad: 0 }
    }

    #[test]
    fn copy_moves_bytes_and_reports_a_status_per_element() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        assert_eq!(setup(&mut t), GNTST_OKAY);
        grant(&t, 1, PAGE, false);
        let src = 0x2a_0000;
        t.dom.ram.write(src + 16, b"payload").unwrap();
        let ops = [
            copy_op(frame_ptr(src, 16), gref_ptr(1, 100), 7, GNTCOPY_DEST_GREF),
            copy_op(frame_ptr(src, 0), gref_ptr(2, 0), 7, GNTCOPY_DEST_GREF),
            copy_op(frame_ptr(src, 4090), frame_ptr(PAGE, 0), 7, 0),
        ];
        for (i, o) in ops.iter().enumerate() {
            t.put(TEST_ARG + 40 * i as u64, o);
        }
        assert_eq!(op(&mut t, GNTTABOP_COPY, 3), 0);
        assert_eq!(t.dom.ram.read_vec(PAGE + 100, 7).unwrap(), b"payload");
        let st = |i: u64| t.get::<GnttabCopy>(TEST_ARG + 40 * i).status;
        assert_eq!((st(0), st(1), st(2)), (GNTST_OKAY, GNTST_PERMISSION_DENIED, GNTST_BAD_COPY_ARG));
    }

    #[test]
    fn a_copy_batch_aimed_at_the_pool_is_efault_and_runs_nothing() {
        let mut t = TestDomain::new(paging_mode::PV);
        assert_eq!(t.call(nr::GRANT_TABLE_OP, [u64::from(GNTTABOP_COPY), TEST_POOL, 1, 0, 0]), -EFAULT);
        assert_eq!(t.call(nr::GRANT_TABLE_OP, [u64::from(GNTTABOP_QUERY_SIZE), u64::MAX, 1, 0, 0]), -EFAULT);
    }

    fn pvh_setup(t: &mut TestDomain, dom: u16, nr_frames: u32) -> i16 {
        t.put(TEST_ARG, &GnttabSetupTable { dom, nr_frames, frame_list: FRAME_LIST, ..Default::default() });
        assert_eq!(op(t, GNTTABOP_SETUP_TABLE, 1), 0);
        t.get::<GnttabSetupTable>(TEST_ARG).status
    }

    /// `grant_table_init()` starts every table with
    /// `INITIAL_NR_GRANT_FRAMES` (1 on x86); `gnttab_setup_table()` writes
    /// `gnttab_shared_gfn()`, `INVALID_M2P_ENTRY` for an unplaced frame,
    /// and takes `nr_frames` 0 (`xen/common/grant_table.c`).
    #[test]
    fn pvh_table_starts_with_one_frame_and_reports_unplaced_frames_as_invalid() {
        let mut t = TestDomain::pvh();
        t.put(TEST_ARG, &GnttabQuerySize { dom: DOMID_SELF, ..Default::default() });
        assert_eq!(op(&mut t, GNTTABOP_QUERY_SIZE, 1), 0);
        let q: GnttabQuerySize = t.get(TEST_ARG);
        assert_eq!((q.nr_frames, q.status), (1, GNTST_OKAY));
        t.put(FRAME_LIST, &[7u64, 7]);
        assert_eq!(pvh_setup(&mut t, DOMID_SELF, 0), GNTST_OKAY);
        assert_eq!(t.get::<[u64; 2]>(FRAME_LIST), [7, 7], "nothing written for 0 frames");
        t.dom.pvh.as_mut().unwrap().set_placement(1, Some(0x123)).unwrap();
        assert_eq!(pvh_setup(&mut t, DOMID_SELF, 2), GNTST_OKAY);
        assert_eq!(t.get::<[u64; 2]>(FRAME_LIST), [0x123, super::super::pvh_frames::INVALID_M2P_ENTRY]);
        assert_eq!(t.dom.grants.nr_frames(), 2);
        assert_eq!(pvh_setup(&mut t, DOMID_VMM, 1), GNTST_PERMISSION_DENIED);
        assert_eq!(pvh_setup(&mut t, 5, 1), GNTST_BAD_DOMAIN);
        assert_eq!(pvh_setup(&mut t, DOMID_SELF, MAX_GRANT_FRAMES + 1), GNTST_GENERAL_ERROR);
        // The frame list may not point into the VMM's pages.
        let list = t.dom.pvh.as_ref().unwrap().layout.vmm_base;
        t.put(TEST_ARG, &GnttabSetupTable { dom: DOMID_SELF, nr_frames: 1, frame_list: list, ..Default::default() });
        assert_eq!(op(&mut t, GNTTABOP_SETUP_TABLE, 1), 0);
        assert_eq!(t.get::<GnttabSetupTable>(TEST_ARG).status, GNTST_BAD_VIRT_ADDR);
    }

    /// `xen/common/compat/grant_table.c`: a gfn that does not fit a
    /// 32-bit `compat_pfn_t` is `GNTST_address_too_big`; the frames before
    /// it are written.
    #[test]
    fn a_32_bit_pvh_guest_gets_address_too_big_for_an_unplaced_frame() {
        let mut t = TestDomain::pvh();
        t.dom.compat = true;
        t.dom.pvh.as_mut().unwrap().set_placement(1, Some(0x321)).unwrap();
        t.put(FRAME_LIST, &[0u32; 2]);
        let arg = CompatGnttabSetupTable {
            dom: DOMID_SELF,
            nr_frames: 2,
            frame_list: FRAME_LIST as u32,
            ..Default::default()
        };
        t.put(TEST_ARG, &arg);
        assert_eq!(op(&mut t, GNTTABOP_SETUP_TABLE, 1), 0);
        assert_eq!(t.get::<CompatGnttabSetupTable>(TEST_ARG).status, GNTST_ADDRESS_TOO_BIG);
        assert_eq!(t.get::<[u32; 2]>(FRAME_LIST), [0x321, 0]);
    }

    /// `gnttab_set_version()` without grant v2 and `gnttab_get_version()`.
    #[test]
    fn pvh_set_and_get_version_as_xen_without_grant_v2() {
        let mut t = TestDomain::pvh();
        for (version, want) in [(1, 0), (2, -pv_abi::errno::ENOSYS), (0, -EINVAL), (3, -EINVAL)] {
            t.put(TEST_ARG, &GnttabSetVersion { version });
            assert_eq!(op(&mut t, GNTTABOP_SET_VERSION, 5), want, "version {version}, count ignored");
            assert_eq!(t.get::<GnttabSetVersion>(TEST_ARG).version, 1, "the version in force is written back");
        }
        for (dom, want) in [(5, -pv_abi::errno::ESRCH), (DOMID_VMM, -pv_abi::errno::EPERM), (DOMID_SELF, 0)] {
            t.put(TEST_ARG, &GnttabGetVersion { dom, _pad: 0x7777, version: 9 });
            assert_eq!(op(&mut t, GNTTABOP_GET_VERSION, 0), want, "dom {dom}");
        }
        let g: GnttabGetVersion = t.get(TEST_ARG);
        assert_eq!((g._pad, g.version), (0x7777, 1), "only `version` is written");
    }

    /// `hvm_grant_table_op()` passes eight commands; `dump_table`,
    /// `transfer`, `cache_flush` (Arm-only) and the rest are -ENOSYS.
    #[test]
    fn pvh_commands_hvm_grant_table_op_does_not_pass_are_enosys() {
        let mut t = TestDomain::pvh();
        for cmd in [GNTTABOP_DUMP_TABLE, 4, 7, 9, GNTTABOP_CACHE_FLUSH, 14, 1 << 12 | GNTTABOP_COPY] {
            assert_eq!(op(&mut t, cmd, 1), -pv_abi::errno::ENOSYS, "cmd {cmd:#x}");
        }
    }

    /// `gnttab_copy()` has no count limit: a long batch is preempted and
    /// continued (`hypercall_create_continuation()`).
    #[test]
    fn a_long_copy_batch_is_continued_not_refused() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        let o = copy_op(frame_ptr(PAGE, 0), frame_ptr(PAGE, 8), 0, 0);
        for i in 0..600 {
            t.put(TEST_ARG + 40 * i, &o);
        }
        t.dom.start_exit();
        t.dom.work_left = 3 * crate::preempt::COPY_UNITS;
        assert_eq!(grant_table_op(&mut t.dom, &[u64::from(GNTTABOP_COPY), TEST_ARG, 600, 0, 0]), Ok(0));
        assert_eq!(t.dom.continuation, Some([u64::from(GNTTABOP_COPY), TEST_ARG + 3 * 40, 597, 0, 0]));
        assert_eq!(op(&mut t, GNTTABOP_COPY, 600), 0);
        assert!((0..600).all(|i| t.get::<GnttabCopy>(TEST_ARG + 40 * i).status == GNTST_OKAY));
    }

    /// `gnttab_copy_lock_domain()`: a frame side must say `DOMID_SELF`
    /// (the caller's numeric id is refused); a gref side's domain must
    /// exist (`GNTST_bad_domain`).
    #[test]
    fn copy_sides_name_their_domain_as_xen_requires() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        assert_eq!(setup(&mut t), GNTST_OKAY);
        let mut own_id = frame_ptr(PAGE, 0);
        own_id.domid = crate::domid::GUEST_DOMID;
        let mut unknown = gref_ptr(1, 0);
        unknown.domid = 9;
        t.put(TEST_ARG, &copy_op(own_id, frame_ptr(PAGE, 8), 4, 0));
        t.put(TEST_ARG + 40, &copy_op(unknown, frame_ptr(PAGE, 8), 4, GNTCOPY_SOURCE_GREF));
        assert_eq!(op(&mut t, GNTTABOP_COPY, 2), 0);
        let st = |i: u64| t.get::<GnttabCopy>(TEST_ARG + 40 * i).status;
        assert_eq!((st(0), st(1)), (GNTST_PERMISSION_DENIED, GNTST_BAD_DOMAIN));
    }

    /// `map_grant_ref()`, `unmap_common()`, `swap_grant_ref()`: a status
    /// per element, never a call-wide errno for a readable batch.
    #[test]
    fn map_unmap_and_swap_answer_per_element() {
        let mut t = TestDomain::pvh();
        let map = |t: &mut TestDomain, flags: u32, gref: u32, dom: u32| {
            t.put(TEST_ARG, &[0u64, u64::from(flags) | u64::from(gref) << 32, u64::from(dom), 0]);
            assert_eq!(op(t, GNTTABOP_MAP_GRANT_REF, 1), 0);
            t.get::<i16>(TEST_ARG + 18)
        };
        assert_eq!(map(&mut t, 0, 1, 0), GNTST_BAD_GNTREF, "neither host_map nor device_map");
        assert_eq!(map(&mut t, GNTMAP_HOST_MAP | GNTMAP_CONTAINS_PTE, 1, 0), GNTST_GENERAL_ERROR);
        assert_eq!(map(&mut t, GNTMAP_HOST_MAP, 1, 9), GNTST_BAD_DOMAIN);
        assert_eq!(map(&mut t, GNTMAP_HOST_MAP, 1, u32::from(DOMID_SELF)), GNTST_BAD_DOMAIN);
        assert_eq!(map(&mut t, GNTMAP_HOST_MAP, 600, 0), GNTST_BAD_GNTREF);
        assert_eq!(map(&mut t, GNTMAP_HOST_MAP, 1, 0), GNTST_GENERAL_ERROR, "domain 0 granted nothing");
        t.put(TEST_ARG, &[0u64, 0, 5]);
        assert_eq!(op(&mut t, GNTTABOP_UNMAP_GRANT_REF, 1), 0);
        assert_eq!(t.get::<i16>(TEST_ARG + 20), GNTST_BAD_HANDLE);
        // Swap two entries of the (one-frame) table.
        let table = t.dom.pvh.as_ref().unwrap().layout.grant_frame(0);
        t.put(table + 8, &11u64);
        t.put(table + 16, &22u64);
        for (a, b, want) in [(1u32, 2u32, GNTST_OKAY), (1, 1, GNTST_OKAY), (1, 512, GNTST_BAD_GNTREF)] {
            t.put(TEST_ARG, &[a, b, 0]);
            assert_eq!(op(&mut t, GNTTABOP_SWAP_GRANT_REF, 1), 0);
            assert_eq!(t.get::<i16>(TEST_ARG + 8), want, "swap {a} {b}");
        }
        assert_eq!((t.get::<u64>(table + 8), t.get::<u64>(table + 16)), (22, 11));
        assert_eq!(op(&mut t, GNTTABOP_SWAP_GRANT_REF, 0), 0, "an empty batch");
        assert_eq!(t.call(nr::GRANT_TABLE_OP, [u64::from(GNTTABOP_MAP_GRANT_REF), TEST_RAM, 1, 0, 0]), -EFAULT);
    }
}
