//! `grant_table_op` for PVH guests: Xen's model, where the table frames
//! belong to the hypervisor (here: VMM pages at the top of RAM) and the
//! guest maps them with `XENMEM_add_to_physmap`. The table starts with
//! `INITIAL_NR_GRANT_FRAMES`; `setup_table` grows it and returns where the
//! guest placed each frame; `set_version` (1 only: no grant v2) and
//! `get_version` are answered; everything else is the common
//! implementation ([`super::op`]).

use super::mapper::MAX_GRANT_FRAMES;
use super::target::target_status;
use crate::domain::{Domain, HcResult};
use pv_abi::errno::{EINVAL, ENOSYS, EPERM, ESRCH};
use pv_abi::grant_table::*;
use std::mem::offset_of;

/// Grows the VMM-owned table to at least `n` frames.
pub fn grow(dom: &mut Domain, n: u32) -> Result<(), i64> {
    let pvh = dom.pvh.as_mut().ok_or(EINVAL)?;
    if n <= pvh.grant_frames {
        return Ok(());
    }
    if n > MAX_GRANT_FRAMES {
        return Err(EINVAL);
    }
    let gpas: Vec<u64> = (0..n).map(|i| pvh.layout.grant_frame(i)).collect();
    dom.grants.setup_owned(&gpas).map_err(|_| EINVAL)?;
    pvh.grant_frames = n;
    Ok(())
}

/// Frames every grant table starts with (`INITIAL_NR_GRANT_FRAMES`,
/// `xen/arch/x86/include/asm/grant_table.h`; `grant_table_init()`).
pub const INITIAL_NR_GRANT_FRAMES: u32 = 1;

/// What `setup_table` reports for a frame the guest has not placed:
/// `mfn_to_gfn()` of a page with no gfn, `INVALID_M2P_ENTRY`.
pub const INVALID_M2P_ENTRY: u64 = !0;

/// `grant_table_op(cmd, uop, count)` for a PVH guest (`cmd` one of those
/// `hvm_grant_table_op()` passes, `count` checked): `None` for the
/// operations the common implementation answers.
pub fn grant_table_op(dom: &mut Domain, cmd: u32, uop: u64, count: u64) -> Option<HcResult> {
    // The table exists from domain creation with its initial frames.
    if let Err(e) = grow(dom, INITIAL_NR_GRANT_FRAMES) {
        return Some(Err(e));
    }
    Some(match cmd {
        GNTTABOP_SETUP_TABLE if count == 1 => setup_table(dom, uop),
        GNTTABOP_SETUP_TABLE => Err(EINVAL),
        // `gnttab_set_version()` / `gnttab_get_version()` ignore `count`.
        GNTTABOP_SET_VERSION => set_version(dom, uop),
        GNTTABOP_GET_VERSION => get_version(dom, uop),
        _ => return None,
    })
}

/// `gnttab_set_version()` with grant v2 unavailable (`max_version` 1):
/// 1 is fine, 2 is `-ENOSYS` ("behave as before set_version was
/// introduced"), anything else `-EINVAL`; the version in force is
/// written back in every case.
fn set_version(dom: &mut Domain, uop: u64) -> HcResult {
    let mut op: GnttabSetVersion = dom.ram.read_obj(uop)?;
    let r = match op.version {
        1 => Ok(0),
        2 => Err(ENOSYS),
        _ => Err(EINVAL),
    };
    op.version = 1;
    dom.ram.copy_obj_to_guest(uop, &op)?;
    r
}

/// `gnttab_get_version()`: XSM_TARGET errnos, only `version` written.
fn get_version(dom: &mut Domain, uop: u64) -> HcResult {
    let op: GnttabGetVersion = dom.ram.read_obj(uop)?;
    match target_status(op.dom) {
        None => {}
        Some(GNTST_BAD_DOMAIN) => return Err(ESRCH),
        Some(_) => return Err(EPERM),
    }
    dom.ram.copy_obj_to_guest(uop + offset_of!(GnttabGetVersion, version) as u64, &1u32)?;
    Ok(0)
}

/// The frame number the guest knows table frame `i` by: where it placed
/// it, else `INVALID_M2P_ENTRY` (never the VMM page behind it).
fn frame_number(dom: &Domain, i: u32) -> u64 {
    let pvh = dom.pvh.as_ref().expect("PVH guest");
    pvh.placed[1 + i as usize].unwrap_or(INVALID_M2P_ENTRY)
}

/// `gnttab_setup_table()` (and `xen/common/compat/grant_table.c` for a
/// 32-bit guest): grows the table to `nr_frames` and writes each frame's
/// gfn, stopping at the first that cannot be written
/// (`GNTST_bad_virt_addr`) or, for a 32-bit guest, does not fit 32 bits
/// (`GNTST_address_too_big`).
fn setup_table(dom: &mut Domain, uop: u64) -> HcResult {
    let (d, nr, list, width) = if dom.compat {
        let op: CompatGnttabSetupTable = dom.ram.read_obj(uop)?;
        (op.dom, op.nr_frames, u64::from(op.frame_list), 4)
    } else {
        let op: GnttabSetupTable = dom.ram.read_obj(uop)?;
        (op.dom, op.nr_frames, op.frame_list, 8)
    };
    let status = if let Some(st) = target_status(d) {
        st
    } else if nr > MAX_GRANT_FRAMES || grow(dom, nr).is_err() {
        GNTST_GENERAL_ERROR
    } else {
        write_frames(dom, nr, list, width)
    };
    // `status` sits at offset 8 in both layouts.
    dom.ram.copy_to_guest(uop + 8, &status.to_le_bytes())?;
    Ok(0)
}

fn write_frames(dom: &Domain, nr: u32, list: u64, width: u64) -> i16 {
    for i in 0..nr {
        let gfn = frame_number(dom, i);
        let at = list.wrapping_add(u64::from(i) * width);
        let written = if width == 4 {
            let Ok(gfn) = u32::try_from(gfn) else { return GNTST_ADDRESS_TOO_BIG };
            dom.ram.copy_to_guest(at, &gfn.to_le_bytes())
        } else {
            dom.ram.copy_to_guest(at, &gfn.to_le_bytes())
        };
        if written.is_err() {
            return GNTST_BAD_VIRT_ADDR;
        }
    }
    GNTST_OKAY
}
