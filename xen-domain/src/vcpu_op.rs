//! `vcpu_op` (Xen's `xen/common/domain.c` `do_vcpu_op`,
//! `xen/include/public/vcpu.h`): the one-shot timer of vCPU 0, for PVH
//! guests.

use crate::domain::{Domain, HcResult};
use crate::sched_op::arm;
use pv_abi::errno::{ENOENT, ENOSYS, ETIME};
use pv_abi::hypercall::vcpu_op;

/// `vcpu_op(cmd, vcpu, arg)`.
///
/// Not Xen's numbering yet: commands 6 and 7 (Xen's
/// `VCPUOP_set_periodic_timer`/`stop_periodic_timer`) run the one-shot
/// timer Xen numbers 8 and 9; the conformance issue changes this.
pub fn vcpu_op(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    if dom.pvh.is_none() {
        return Err(ENOSYS);
    }
    if a[1] != 0 {
        return Err(ENOENT);
    }
    match a[0] {
        vcpu_op::SET_PERIODIC_TIMER => {
            // {u64 timeout_abs_ns; u32 flags} in both layouts.
            let raw = dom.ram.read_vec(a[2], 12)?;
            let ns = u64::from_le_bytes(raw[..8].try_into().expect("8 bytes"));
            let flags = u32::from_le_bytes(raw[8..].try_into().expect("4 bytes"));
            let now = dom.pvh.as_ref().map(|p| p.clock.now_ns()).unwrap_or(0);
            if flags & vcpu_op::SSHOTTMR_FUTURE != 0 && ns < now {
                return Err(ETIME);
            }
            arm(dom, ns.max(1)).map(|()| 0)
        }
        vcpu_op::STOP_PERIODIC_TIMER => arm(dom, 0).map(|()| 0),
        _ => Err(ENOSYS),
    }
}
