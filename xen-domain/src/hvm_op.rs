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

/// Against `xen/include/public/hvm/hvm_op.h` (`HVMOP_*`, `struct
/// xen_hvm_param`, `struct xen_hvm_evtchn_upcall_vector`),
/// `xen/include/public/hvm/params.h` (`HVM_PARAM_*`, the callback type in
/// bits 56..63) and `xen/arch/x86/hvm/hvm.c` (`-ESRCH` for another
/// domain, `-EINVAL` for an index beyond `HVM_NR_PARAMS` or a vector below
/// 0x10, `-ENOENT` for a vCPU the domain lacks, `-EPERM` for parameters a
/// guest may not set).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Call, TestDomain, TEST_ARG};
    use pv_abi::event_channel::DOMID_SELF;
    use pv_abi::hypercall::nr;
    use pv_abi::start_info::paging_mode;

    fn param(t: &mut TestDomain, cmd: u64, domid: u16, index: u32, value: u64) -> i64 {
        t.put(TEST_ARG, &HvmParam { domid, _pad: 0, index, value });
        t.call(nr::HVM_OP, [cmd, TEST_ARG, 0, 0, 0])
    }

    #[test]
    fn our_own_guests_have_no_hvm_op() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        assert_eq!(param(&mut t, GET_PARAM, DOMID_SELF, PARAM_STORE_PFN, 0), -ENOSYS);
    }

    #[test]
    fn get_param_answers_the_store_and_console_rings() {
        let mut t = TestDomain::pvh();
        t.dom.pvh.as_mut().unwrap().store_evtchn = 7;
        let layout = t.dom.pvh.as_ref().unwrap().layout;
        assert_eq!(param(&mut t, GET_PARAM, DOMID_SELF, PARAM_STORE_PFN, 0), 0);
        assert_eq!(t.get::<HvmParam>(TEST_ARG).value, layout.store() / PAGE_SIZE);
        assert_eq!(param(&mut t, GET_PARAM, DOMID_SELF, PARAM_CONSOLE_PFN, 0), 0);
        assert_eq!(t.get::<HvmParam>(TEST_ARG).value, layout.console() / PAGE_SIZE);
        assert_eq!(param(&mut t, GET_PARAM, DOMID_SELF, PARAM_STORE_EVTCHN, 0), 0);
        assert_eq!(t.get::<HvmParam>(TEST_ARG).value, 7);
    }

    #[test]
    fn params_check_the_domain_and_the_index() {
        let mut t = TestDomain::pvh();
        assert_eq!(param(&mut t, GET_PARAM, 4, PARAM_STORE_PFN, 0), -ESRCH);
        assert_eq!(param(&mut t, GET_PARAM, DOMID_SELF, NR_PARAMS, 0), -EINVAL);
        assert_eq!(param(&mut t, SET_PARAM, DOMID_SELF, NR_PARAMS, 0), -EINVAL);
        assert_eq!(param(&mut t, SET_PARAM, DOMID_SELF, PARAM_STORE_PFN, 1), -EPERM);
        assert_eq!(param(&mut t, SET_PARAM, DOMID_SELF, PARAM_CONSOLE_EVTCHN, 1), -EPERM);
        assert_eq!(t.call(nr::HVM_OP, [GET_PARAM, u64::MAX - 4, 0, 0, 0]), -pv_abi::errno::EFAULT);
        assert_eq!(t.call(nr::HVM_OP, [99, TEST_ARG, 0, 0, 0]), -ENOSYS);
    }

    #[test]
    fn the_callback_vector_is_routed_through_the_platform() {
        let mut t = TestDomain::pvh();
        let vector_type = CALLBACK_TYPE_VECTOR << CALLBACK_TYPE_SHIFT;
        assert_eq!(param(&mut t, SET_PARAM, DOMID_SELF, PARAM_CALLBACK_IRQ, vector_type | 0xf3), 0);
        assert_eq!(t.platform.calls(), vec![Call::SetCallbackVector(0xf3)]);
        assert_eq!(param(&mut t, GET_PARAM, DOMID_SELF, PARAM_CALLBACK_IRQ, 0), 0);
        assert_eq!(t.get::<HvmParam>(TEST_ARG).value, vector_type | 0xf3);
        assert_eq!(param(&mut t, SET_PARAM, DOMID_SELF, PARAM_CALLBACK_IRQ, 0), 0, "off");
        assert_eq!(t.platform.calls().last(), Some(&Call::SetCallbackVector(0)));
    }

    #[test]
    fn callback_types_other_than_the_vector_and_low_vectors_are_einval() {
        let mut t = TestDomain::pvh();
        let gsi = 5; // CALLBACK_TYPE_GSI, GSI 5
        assert_eq!(param(&mut t, SET_PARAM, DOMID_SELF, PARAM_CALLBACK_IRQ, gsi), -EINVAL);
        let low = (CALLBACK_TYPE_VECTOR << CALLBACK_TYPE_SHIFT) | 0x0f;
        assert_eq!(param(&mut t, SET_PARAM, DOMID_SELF, PARAM_CALLBACK_IRQ, low), -EINVAL);
        assert!(t.platform.calls().is_empty());
    }

    #[test]
    fn the_upcall_vector_needs_vcpu_0_and_a_vector_from_0x10() {
        let mut t = TestDomain::pvh();
        let set = |t: &mut TestDomain, vcpu, vector| {
            t.put(TEST_ARG, &EvtchnUpcallVector { vcpu, vector, _pad: [0; 3] });
            t.call(nr::HVM_OP, [SET_EVTCHN_UPCALL_VECTOR, TEST_ARG, 0, 0, 0])
        };
        assert_eq!(set(&mut t, 1, 0xf3), -pv_abi::errno::ENOENT);
        assert_eq!(set(&mut t, 0, 0x0f), -EINVAL);
        assert!(t.platform.calls().is_empty());
        assert_eq!(set(&mut t, 0, 0xf3), 0);
        assert_eq!(t.platform.calls(), vec![Call::SetUpcallVector(0xf3)]);
        assert_eq!(t.dom.pvh.as_ref().unwrap().upcall_vector, Some(0xf3));
    }
}
