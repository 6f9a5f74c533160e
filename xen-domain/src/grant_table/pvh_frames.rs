//! `grant_table_op` for PVH guests: Xen's model, where the table frames
//! belong to the hypervisor (here: VMM pages at the top of RAM) and the
//! guest maps them with `XENMEM_add_to_physmap`. `setup_table` sizes the
//! table and returns the frames; `set_version` (1 only), `get_version`
//! and `dump_table` are answered; everything else is the common
//! implementation ([`super::op`]).

use super::mapper::MAX_GRANT_FRAMES;
use crate::domain::{Domain, HcResult};
use crate::domid::is_self;
use pv_abi::errno::EINVAL;
use pv_abi::grant_table::*;
use pv_abi::layout::PAGE_SIZE;

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

/// `grant_table_op(cmd, uop, count)` for a PVH guest: `None` for the
/// operations the common implementation answers.
pub fn grant_table_op(dom: &mut Domain, a: &[u64; 5]) -> Option<HcResult> {
    let (cmd, uop, count) = (a[0], a[1], a[2]);
    Some(match u32::try_from(cmd).unwrap_or(u32::MAX) {
        GNTTABOP_SETUP_TABLE if count == 1 => setup_table(dom, uop),
        GNTTABOP_SET_VERSION if count == 1 => set_version(dom, uop),
        GNTTABOP_GET_VERSION if count == 1 => get_version(dom, uop),
        GNTTABOP_DUMP_TABLE if count == 1 => dump_table(dom, uop),
        GNTTABOP_SETUP_TABLE | GNTTABOP_SET_VERSION | GNTTABOP_GET_VERSION | GNTTABOP_DUMP_TABLE => Err(EINVAL),
        _ => return None,
    })
}

fn set_version(dom: &mut Domain, uop: u64) -> HcResult {
    let mut op: GnttabSetVersion = dom.ram.read_obj(uop)?;
    let ok = op.version <= 1;
    op.version = 1;
    dom.ram.copy_obj_to_guest(uop, &op)?;
    if ok {
        Ok(0)
    } else {
        Err(EINVAL)
    }
}

fn get_version(dom: &mut Domain, uop: u64) -> HcResult {
    let mut op: GnttabGetVersion = dom.ram.read_obj(uop)?;
    if !is_self(op.dom) {
        return Err(pv_abi::errno::ESRCH);
    }
    op.version = 1;
    dom.ram.copy_obj_to_guest(uop, &op)?;
    Ok(0)
}

fn dump_table(dom: &mut Domain, uop: u64) -> HcResult {
    let mut op: GnttabDumpTable = dom.ram.read_obj(uop)?;
    op.status = if is_self(op.dom) { GNTST_OKAY } else { GNTST_BAD_DOMAIN };
    dom.ram.copy_obj_to_guest(uop, &op)?;
    Ok(0)
}

/// The frame number the guest knows table frame `i` by: where it placed
/// it, else the VMM page.
fn frame_number(dom: &Domain, i: u32) -> u64 {
    let pvh = dom.pvh.as_ref().expect("PVH guest");
    pvh.placed[1 + i as usize].unwrap_or(pvh.layout.grant_frame(i) / PAGE_SIZE)
}

fn setup_table(dom: &mut Domain, uop: u64) -> HcResult {
    let (d, nr, list, compat) = if dom.compat {
        let op: CompatGnttabSetupTable = dom.ram.read_obj(uop)?;
        (op.dom, op.nr_frames, u64::from(op.frame_list), true)
    } else {
        let op: GnttabSetupTable = dom.ram.read_obj(uop)?;
        (op.dom, op.nr_frames, op.frame_list, false)
    };
    let status = if !is_self(d) {
        GNTST_BAD_DOMAIN
    } else if nr == 0 || nr > MAX_GRANT_FRAMES || grow(dom, nr).is_err() {
        GNTST_GENERAL_ERROR
    } else {
        let frames: Vec<u64> = (0..nr).map(|i| frame_number(dom, i)).collect();
        let bytes: Vec<u8> = if compat {
            frames.iter().flat_map(|f| (*f as u32).to_le_bytes()).collect()
        } else {
            frames.iter().flat_map(|f| f.to_le_bytes()).collect()
        };
        match dom.ram.copy_to_guest(list, &bytes) {
            Ok(()) => GNTST_OKAY,
            Err(_) => GNTST_BAD_VIRT_ADDR,
        }
    };
    // `status` sits at offset 8 in both layouts.
    dom.ram.copy_to_guest(uop + 8, &status.to_le_bytes())?;
    Ok(0)
}
