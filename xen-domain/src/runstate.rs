//! A vCPU's runstate (Xen's `vcpu_runstate_change()` and
//! `update_runstate_area()`), below both hypercalls that change it:
//! `vcpu_op` (up, down, registration) and `sched_op` (block, poll).

use crate::domain::Domain;
use pv_abi::hypercall::vcpu_op::{CompatVcpuRunstateInfo, VcpuRunstateInfo};

/// A function moving vCPU `id` to a runstate at the time it is called
/// (Xen's `vcpu_runstate_change()`), and refreshing the guest's copy if
/// it registered one (`update_runstate_area()`). Owns what it needs, so
/// the vCPU loop may call it after the domain lock is released.
pub fn runstate_setter(dom: &Domain, id: u32) -> impl Fn(u32) + Send + 'static {
    let vcpus = dom.vcpus.clone();
    let ram = dom.ram.clone();
    let boot = dom.pvh.as_ref().map(|p| p.clock.boot);
    move |state| {
        let now = boot.map_or(0, |b| b.elapsed().as_nanos() as u64);
        if let Some((r, area)) = vcpus.set_runstate(id, state, now) {
            write_runstate_area(&ram, area, r);
        }
    }
}

/// Copies `r` to a registered runstate area (64-bit or compat layout);
/// as Xen's `update_runstate_area()`, a copy that fails is ignored.
pub(crate) fn write_runstate_area(
    ram: &crate::guest_memory::GuestRam,
    (addr, compat): (u64, bool),
    r: VcpuRunstateInfo,
) {
    if addr == 0 {
        return;
    }
    let done = if compat {
        ram.copy_obj_to_guest(addr, &CompatVcpuRunstateInfo::from(r))
    } else {
        ram.copy_obj_to_guest(addr, &r)
    };
    if done.is_err() {
        tracing::trace!(addr, "runstate area not writable: not updated");
    }
}
