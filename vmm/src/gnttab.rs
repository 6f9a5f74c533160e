//! `grant_table_op`: the guest's side of the grant table. The table itself
//! and the mapper back-ends use are `backend::grant`.
//!
//! Departure from Xen: Xen allocates the table frames and `setup_table`
//! returns their numbers; here the guest owns its table (DESIGN.md), so
//! `frame_list` is an IN array of the guest frames it allocated.

use crate::domain::Domain;
use crate::hypercall::HcResult;
use backend::grant::{GrantError, MAX_GRANT_FRAMES};
use pv_abi::errno::{EINVAL, ENOSYS};
use pv_abi::event_channel::DOMID_SELF;
use pv_abi::grant_table::*;
use pv_abi::layout::PAGE_SIZE;

/// Most operations accepted in one `GNTTABOP_copy` call.
pub const MAX_COPY_OPS: u64 = 512;
const COPY_OP_SIZE: u64 = 40;

fn is_self(dom: u16) -> bool {
    dom == DOMID_SELF || dom == crate::evtchn::GUEST_DOMID
}

/// `grant_table_op(cmd, uop, count)`.
pub fn grant_table_op(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    let (cmd, uop, count) = (a[0], a[1], a[2]);
    match u32::try_from(cmd).map_err(|_| ENOSYS)? {
        GNTTABOP_SETUP_TABLE => {
            if count != 1 {
                return Err(EINVAL);
            }
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
        GNTTABOP_QUERY_SIZE => {
            if count != 1 {
                return Err(EINVAL);
            }
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
        GNTTABOP_COPY => {
            if count > MAX_COPY_OPS {
                return Err(EINVAL);
            }
            dom.ram.check_output(uop, count * COPY_OP_SIZE)?;
            for i in 0..count {
                let at = uop + i * COPY_OP_SIZE;
                if dom.preempt_check(i) {
                    // Xen's continuation: the same op over the rest.
                    dom.create_continuation([cmd, at, count - i, a[3], a[4]]);
                    return Ok(0);
                }
                dom.charge(crate::preempt::COPY_UNITS);
                let mut raw = [0u8; COPY_OP_SIZE as usize];
                dom.ram.read(at, &mut raw)?;
                let status = match copy_one(dom, &raw) {
                    Ok(()) => GNTST_OKAY,
                    Err(e) => {
                        tracing::debug!("gnttab copy: {e}");
                        e.gntst()
                    }
                };
                dom.ram.copy_to_guest(at + 36, &status.to_le_bytes())?;
            }
            Ok(0)
        }
        GNTTABOP_MAP_GRANT_REF | GNTTABOP_UNMAP_GRANT_REF => Err(ENOSYS),
        _ => Err(ENOSYS),
    }
}

/// One side of a copy, resolved: either a live grant mapping or a checked
/// guest-physical address in the guest's own RAM.
enum Side {
    Grant(backend::grant::GrantMapping, u64),
    Frame(u64),
}

fn resolve(dom: &Domain, raw: &[u8], is_gref: bool, len: u64, write: bool) -> Result<Side, GrantError> {
    let u = u64::from_le_bytes(raw[0..8].try_into().expect("8 bytes"));
    let domid = u16::from_le_bytes([raw[8], raw[9]]);
    let offset = u16::from_le_bytes([raw[10], raw[11]]) as u64;
    if !is_self(domid) {
        return Err(GrantError::NotPermitted(0));
    }
    if offset + len > PAGE_SIZE {
        return Err(GrantError::OutOfPage { offset, len });
    }
    if is_gref {
        let m = dom.grants.map(u as u32, write)?;
        Ok(Side::Grant(m, offset))
    } else {
        let gpa = u.checked_mul(PAGE_SIZE).ok_or(GrantError::BadFrame(0, u))?;
        dom.grants.check_frame_range(gpa, offset, len).map(Side::Frame)
    }
}

fn copy_one(dom: &Domain, raw: &[u8; 40]) -> Result<(), GrantError> {
    let len = u16::from_le_bytes([raw[32], raw[33]]) as u64;
    let flags = u16::from_le_bytes([raw[34], raw[35]]);
    let src = resolve(dom, &raw[0..16], flags & GNTCOPY_SOURCE_GREF != 0, len, false)?;
    let dst = resolve(dom, &raw[16..32], flags & GNTCOPY_DEST_GREF != 0, len, true)?;
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
