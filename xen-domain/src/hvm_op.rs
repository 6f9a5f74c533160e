//! `hvm_op` (Xen's `xen/arch/x86/hvm/hvm.c` `do_hvm_op`,
//! `xen/include/public/hvm/hvm_op.h` and `params.h`): HVM parameters and
//! the per-vCPU upcall vector, for PVH guests.

use crate::domain::{Domain, HcResult};
use crate::domid::is_self;
use pv_abi::errno::{EINVAL, ENOSYS, EPERM, ESRCH};
use pv_abi::hvm::hvm_op::*;
use pv_abi::layout::PAGE_SIZE;

/// `hvm_op(cmd, arg)`.
pub fn hvm_op(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    if dom.pvh.is_none() {
        return Err(ENOSYS);
    }
    match a[0] {
        GET_PARAM => {
            let mut p: HvmParam = dom.ram.read_obj(a[1])?;
            p.value = get_param(dom, &p)?;
            dom.ram.copy_obj_to_guest(a[1], &p)?;
            Ok(0)
        }
        SET_PARAM => {
            let p: HvmParam = dom.ram.read_obj(a[1])?;
            set_param(dom, &p).map(|()| 0)
        }
        SET_EVTCHN_UPCALL_VECTOR => {
            let v: EvtchnUpcallVector = dom.ram.read_obj(a[1])?;
            if v.vcpu != 0 {
                return Err(pv_abi::errno::ENOENT);
            }
            if v.vector < 0x10 {
                return Err(EINVAL);
            }
            dom.evtchn.platform().set_upcall_vector(v.vector).map_err(|_| pv_abi::errno::EIO)?;
            dom.evtchn.set_compat_layout(dom.compat);
            dom.pvh.as_mut().expect("checked").upcall_vector = Some(v.vector);
            Ok(0)
        }
        _ => Err(ENOSYS),
    }
}

fn check(p: &HvmParam) -> Result<(), i64> {
    if !is_self(p.domid) {
        return Err(ESRCH);
    }
    if p.index >= NR_PARAMS {
        return Err(EINVAL);
    }
    Ok(())
}

fn get_param(dom: &Domain, p: &HvmParam) -> Result<u64, i64> {
    check(p)?;
    let pvh = dom.pvh.as_ref().expect("checked");
    Ok(match p.index {
        PARAM_CALLBACK_IRQ => pvh.callback_irq,
        PARAM_STORE_PFN => pvh.layout.store() / PAGE_SIZE,
        PARAM_STORE_EVTCHN => pvh.store_evtchn.into(),
        PARAM_CONSOLE_PFN => pvh.layout.console() / PAGE_SIZE,
        PARAM_CONSOLE_EVTCHN => pvh.console_evtchn.into(),
        _ => 0,
    })
}

fn set_param(dom: &mut Domain, p: &HvmParam) -> Result<(), i64> {
    check(p)?;
    let pvh = dom.pvh.as_mut().expect("checked");
    match p.index {
        PARAM_CALLBACK_IRQ => {
            let kind = p.value >> CALLBACK_TYPE_SHIFT;
            // Only the vector type (or 0 = off) is delivered here.
            if p.value != 0 && (kind != CALLBACK_TYPE_VECTOR || (p.value & 0xff) < 0x10) {
                return Err(EINVAL);
            }
            pvh.callback_irq = p.value;
            // 0 (off) goes back to the upcall vector routing.
            dom.evtchn.platform().set_callback_vector(p.value as u8);
            dom.evtchn.set_compat_layout(dom.compat);
            Ok(())
        }
        PARAM_STORE_PFN | PARAM_STORE_EVTCHN | PARAM_CONSOLE_PFN | PARAM_CONSOLE_EVTCHN => Err(EPERM),
        _ => Err(EINVAL),
    }
}
