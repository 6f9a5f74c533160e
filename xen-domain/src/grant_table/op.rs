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
