//! `multicall` (Xen's `xen/common/multicall.c`,
//! `xen/include/public/xen.h` `struct multicall_entry`): several
//! hypercalls in one exit, with Xen's semantics.
//!
//! Each entry is copied in, run through the ordinary dispatch table with
//! its first five `args`, and its `result` (the raw `rax` value) written
//! back. A failing entry does not stop the batch: the guest reads each
//! result. A nested `multicall` entry is refused with `-EINVAL` (Xen's
//! "multicall reentry is disallowed"). The call itself returns 0, `-E2BIG`
//! for more than [`MAX_MULTICALL_ENTRIES`] entries, or `-EFAULT` if the
//! array is not in guest RAM (entries before the bad one have run).

use crate::domain::{Domain, HcResult};
use pv_abi::errno::{E2BIG, EFAULT, EINVAL};
use pv_abi::hypercall::nr;
use pv_abi::multicall::{MulticallEntry, MAX_MULTICALL_ENTRIES};
use std::mem::{offset_of, size_of};

/// Runs a `multicall(entries, count)`, each entry through `dispatch`
/// (the hypercall table's: number and arguments in, raw `rax` out). Work
/// is bounded per exit ([`crate::preempt`]): the multicall is continued at
/// the first entry not finished; an entry whose own hypercall was
/// continued gets its new arguments written into its `args` and is re-run
/// from there.
pub fn do_multicall(dom: &mut Domain, a: &[u64; 5], dispatch: impl Fn(&mut Domain, u64, &[u64; 5]) -> u64) -> HcResult {
    let (array, count) = (a[0], a[1]);
    if count > MAX_MULTICALL_ENTRIES {
        return Err(E2BIG);
    }
    let size = size_of::<MulticallEntry>() as u64;
    // Checked up front (as an output: results are written back) so a bad
    // array runs nothing.
    dom.ram.check_output(array, count * size)?;
    for i in 0..count {
        let gpa = array + i * size;
        if dom.preempt_check(i) {
            dom.create_continuation([gpa, count - i, 0, 0, 0]);
            return Ok(0);
        }
        dom.charge(1);
        let entry: MulticallEntry = dom.ram.read_obj(gpa).map_err(|_| EFAULT)?;
        let result = if entry.op == nr::MULTICALL {
            tracing::debug!("nested multicall refused");
            (-EINVAL) as u64
        } else {
            let args = [entry.args[0], entry.args[1], entry.args[2], entry.args[3], entry.args[4]];
            dispatch(dom, entry.op, &args)
        };
        if let Some(args) = dom.continuation.take() {
            let at = gpa + offset_of!(MulticallEntry, args) as u64;
            let bytes: Vec<u8> = args.iter().flat_map(|v| v.to_le_bytes()).collect();
            dom.ram.copy_to_guest(at, &bytes)?;
            dom.create_continuation([gpa, count - i, 0, 0, 0]);
            return Ok(0);
        }
        dom.ram.copy_obj_to_guest(gpa + offset_of!(MulticallEntry, result) as u64, &result)?;
    }
    Ok(0)
}
