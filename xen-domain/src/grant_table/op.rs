//! `grant_table_op`: the guest's side of the grant table. The table itself
//! and the mapper back-ends use are [`super::mapper`]; a Xen PVH guest's
//! own answers are [`super::pvh_frames`].
//!
//! Departure from Xen: Xen allocates the table frames and `setup_table`
//! returns their numbers; here the guest owns its table (DESIGN.md), so
//! `frame_list` is an IN array of the guest frames it allocated.

use super::mapper::{GrantError, GrantMapping, MAX_GRANT_FRAMES};
use crate::domain::{Domain, HcResult};
use crate::domid::is_self;
use pv_abi::errno::{EINVAL, ENOSYS};
use pv_abi::grant_table::*;
use pv_abi::layout::PAGE_SIZE;
use std::mem::{offset_of, size_of};

/// Most operations accepted in one `GNTTABOP_copy` call.
pub const MAX_COPY_OPS: u64 = 512;

/// `grant_table_op(cmd, uop, count)`: a PVH guest's own operations
/// ([`super::pvh_frames`]), else the common ones.
pub fn grant_table_op(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    if dom.pvh.is_some() {
        if let Some(r) = super::pvh_frames::grant_table_op(dom, a) {
            return r;
        }
    }
    let (cmd, uop, count) = (a[0], a[1], a[2]);
    match u32::try_from(cmd).map_err(|_| ENOSYS)? {
        GNTTABOP_SETUP_TABLE if count == 1 => setup_table(dom, uop),
        GNTTABOP_QUERY_SIZE if count == 1 => query_size(dom, uop),
        GNTTABOP_SETUP_TABLE | GNTTABOP_QUERY_SIZE => Err(EINVAL),
        GNTTABOP_COPY => copy(dom, uop, count),
        GNTTABOP_MAP_GRANT_REF | GNTTABOP_UNMAP_GRANT_REF => Err(ENOSYS),
        _ => Err(ENOSYS),
    }
}

/// `GNTTABOP_setup_table`: registers the guest's own table frames.
fn setup_table(dom: &mut Domain, uop: u64) -> HcResult {
    let mut op: GnttabSetupTable = dom.ram.read_obj(uop)?;
    op.status = if !is_self(op.dom) {
        GNTST_BAD_DOMAIN
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
    if is_self(op.dom) {
        op.nr_frames = dom.grants.nr_frames();
        op.max_nr_frames = MAX_GRANT_FRAMES;
        op.status = GNTST_OKAY;
    } else {
        op.status = GNTST_BAD_DOMAIN;
    }
    dom.ram.copy_obj_to_guest(uop, &op)?;
    Ok(0)
}

/// `GNTTABOP_copy`: each [`GnttabCopy`] is copied in, run, and its
/// `status` written back; a failed element does not stop the batch.
fn copy(dom: &mut Domain, uop: u64, count: u64) -> HcResult {
    const CMD: u64 = GNTTABOP_COPY as u64;
    if count > MAX_COPY_OPS {
        return Err(EINVAL);
    }
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
    if !is_self(ptr.domid) {
        return Err(GrantError::NotPermitted(0));
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
    use crate::fake::{TestDomain, TEST_ARG, TEST_POOL};
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
        assert_eq!(op(&mut t, GNTTABOP_COPY, MAX_COPY_OPS + 1), -EINVAL);
        for cmd in [GNTTABOP_MAP_GRANT_REF, GNTTABOP_UNMAP_GRANT_REF, 4, 99] {
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

    #[test]
    fn pvh_guests_get_vmm_owned_frames_and_version_1_only() {
        let mut t = TestDomain::pvh();
        let layout = t.dom.pvh.as_ref().unwrap().layout;
        t.put(
            TEST_ARG,
            &GnttabSetupTable { dom: DOMID_SELF, nr_frames: 2, frame_list: FRAME_LIST, ..Default::default() },
        );
        assert_eq!(op(&mut t, GNTTABOP_SETUP_TABLE, 1), 0);
        assert_eq!(t.get::<GnttabSetupTable>(TEST_ARG).status, GNTST_OKAY);
        assert_eq!(
            t.get::<[u64; 2]>(FRAME_LIST),
            [layout.grant_frame(0) / PAGE_SIZE, layout.grant_frame(1) / PAGE_SIZE]
        );
        assert_eq!(t.dom.grants.nr_frames(), 2);
        t.put(TEST_ARG, &GnttabSetVersion { version: 2 });
        assert_eq!(op(&mut t, GNTTABOP_SET_VERSION, 1), -EINVAL);
        assert_eq!(t.get::<GnttabSetVersion>(TEST_ARG).version, 1, "the version in force is written back");
        t.put(TEST_ARG, &GnttabGetVersion { dom: 5, ..Default::default() });
        assert_eq!(op(&mut t, GNTTABOP_GET_VERSION, 1), -pv_abi::errno::ESRCH);
        // The frame list may not point into the VMM's pages.
        let list = layout.vmm_base;
        t.put(TEST_ARG, &GnttabSetupTable { dom: DOMID_SELF, nr_frames: 1, frame_list: list, ..Default::default() });
        assert_eq!(op(&mut t, GNTTABOP_SETUP_TABLE, 1), 0);
        assert_eq!(t.get::<GnttabSetupTable>(TEST_ARG).status, GNTST_BAD_VIRT_ADDR);
    }
}
