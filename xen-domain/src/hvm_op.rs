//! `hvm_op` (Xen's `xen/arch/x86/hvm/hvm.c` `do_hvm_op`,
//! `xen/include/public/hvm/hvm_op.h` and `params.h`): HVM parameters and
//! the per-vCPU upcall vector, for PVH guests.

use crate::domain::{Domain, HcResult};
use crate::domid::is_self;
use pv_abi::errno::{EEXIST, EINVAL, ENOSYS, EPERM, ESRCH};
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
        // `do_hvm_op()`: `gxt.now = NOW()`, the system time the pvclock
        // gives (ns since boot), for any HVM guest.
        GET_TIME => {
            let now = dom.pvh.as_ref().expect("checked").clock.now_ns();
            dom.ram.copy_obj_to_guest(a[1], &now)?;
            Ok(0)
        }
        SET_EVTCHN_UPCALL_VECTOR => {
            let v: EvtchnUpcallVector = dom.ram.read_obj(a[1])?;
            // `hvmop_set_evtchn_upcall_vector()`: the vector, then the vCPU.
            if v.vector < 0x10 {
                return Err(EINVAL);
            }
            if v.vcpu >= dom.vcpus.count() {
                return Err(pv_abi::errno::ENOENT);
            }
            dom.evtchn.platform().set_upcall_vector(v.vcpu, v.vector).map_err(|_| pv_abi::errno::EIO)?;
            dom.evtchn.set_compat_layout(dom.compat);
            // The field keeps vCPU 0's vector (what the toolstack reports);
            // the others' live in the platform's routes.
            let pvh = dom.pvh.as_mut().expect("checked");
            if v.vcpu == 0 {
                pvh.upcall_vector = Some(v.vector);
            }
            // `v.vcpu` < the vCPU count (at most `MAX_VCPUS`), checked above.
            let i = v.vcpu as usize;
            if pvh.upcall_vectors.len() <= i {
                pvh.upcall_vectors.resize(i + 1, None);
            }
            pvh.upcall_vectors[i] = Some(v.vector);
            Ok(0)
        }
        _ => Err(ENOSYS),
    }
}

/// `hvmop_get_param()` / `hvmop_set_param()`: the index is checked before
/// the domain.
fn check(p: &HvmParam) -> Result<(), i64> {
    if p.index >= NR_PARAMS {
        return Err(EINVAL);
    }
    if !is_self(p.domid) {
        return Err(ESRCH);
    }
    Ok(())
}

/// Parameters `hvm_allow_get_param()` lets a guest read that we keep no
/// value for (`VM86_TSS` 15, `ACPI_IOPORTS_LOCATION` 19,
/// `VM_GENERATION_ID_ADDR` 34, `ALTP2M` 35, `X87_FIP_WIDTH` 36,
/// `VM86_TSS_SIZED` 37): they read as 0, the value a toolstack that never
/// set them leaves.
const READABLE_UNSET: [u32; 6] = [15, 19, 34, 35, 36, 37];

fn get_param(dom: &Domain, p: &HvmParam) -> Result<u64, i64> {
    check(p)?;
    let pvh = dom.pvh.as_ref().expect("checked");
    Ok(match p.index {
        PARAM_CALLBACK_IRQ => pvh.callback_irq,
        PARAM_STORE_PFN => pvh.layout.store() / PAGE_SIZE,
        PARAM_STORE_EVTCHN => pvh.store_evtchn.into(),
        PARAM_CONSOLE_PFN => pvh.layout.console() / PAGE_SIZE,
        PARAM_CONSOLE_EVTCHN => pvh.console_evtchn.into(),
        i if READABLE_UNSET.contains(&i) => 0,
        // `hvm_allow_get_param()`: "The following parameters are deprecated."
        i if DEPRECATED_PARAMS.contains(&i) => return Err(EINVAL),
        // "The remaining parameters should not be read by the guest."
        _ => return Err(EPERM),
    })
}

fn set_param(dom: &mut Domain, p: &HvmParam) -> Result<(), i64> {
    check(p)?;
    let pvh = dom.pvh.as_mut().expect("checked");
    match p.index {
        PARAM_CALLBACK_IRQ => {
            // `hvm_set_callback_via()` takes every value. Only the vector
            // type is delivered here: a GSI or PCI INTx callback needs the
            // emulated IO-APIC/PIC a PVH domain lacks (Xen's PVH does not
            // deliver them either), and a vector below 0x10 is an exception
            // vector. Those are stored, answered by get_param, and silent.
            let kind = p.value >> CALLBACK_TYPE_SHIFT;
            let vector = p.value as u8;
            let deliver = kind == CALLBACK_TYPE_VECTOR && vector >= 0x10;
            if p.value != 0 && !deliver {
                tracing::debug!(value = p.value, "HVM_PARAM_CALLBACK_IRQ stored, not delivered");
            }
            pvh.callback_irq = p.value;
            // 0 (off) goes back to the upcall vector routing.
            dom.evtchn.platform().set_callback_vector(if deliver { vector } else { 0 });
            dom.evtchn.set_compat_layout(dom.compat);
            Ok(())
        }
        // `hvm_allow_set_param()`: the guest may set these; they are values
        // only (nothing is rebound).
        PARAM_STORE_EVTCHN => {
            pvh.store_evtchn = p.value as u32;
            Ok(())
        }
        PARAM_CONSOLE_EVTCHN => {
            pvh.console_evtchn = p.value as u32;
            Ok(())
        }
        // `hvm_allow_set_param()`: "The following parameters are read-only."
        PARAM_ALTP2M => Err(EEXIST),
        // "The following parameters are deprecated."
        i if DEPRECATED_PARAMS.contains(&i) => Err(EINVAL),
        // "The remaining parameters should not be set by the guest."
        _ => Err(EPERM),
    }
}

/// Against `xen/include/public/hvm/hvm_op.h` (`HVMOP_*`, `struct
/// xen_hvm_param`, `struct xen_hvm_evtchn_upcall_vector`),
/// `xen/include/public/hvm/params.h` (`HVM_PARAM_*`, the callback type in
/// bits 56..63) and `xen/arch/x86/hvm/hvm.c` (`-EINVAL` for an index
/// beyond `HVM_NR_PARAMS`, checked before the domain, then `-ESRCH`;
/// `-EINVAL` for an upcall vector below 0x10, checked before `-ENOENT` for a
/// vCPU the domain lacks; `-EPERM` for parameters a guest may not read or
/// set, `hvm_allow_get_param`/`hvm_allow_set_param`).
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
        // The index is checked before the domain.
        assert_eq!(param(&mut t, GET_PARAM, 4, NR_PARAMS, 0), -EINVAL);
        assert_eq!(param(&mut t, SET_PARAM, 4, NR_PARAMS, 0), -EINVAL);
        assert_eq!(param(&mut t, GET_PARAM, DOMID_SELF, NR_PARAMS, 0), -EINVAL);
        assert_eq!(param(&mut t, SET_PARAM, DOMID_SELF, NR_PARAMS, 0), -EINVAL);
        assert_eq!(param(&mut t, SET_PARAM, DOMID_SELF, PARAM_STORE_PFN, 1), -EPERM);
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

    /// `hvm_set_callback_via()` (`xen/arch/x86/hvm/irq.c`) stores every
    /// value and returns 0; GSI/INTx callbacks and vectors below 0x10 are not
    /// delivered here (the callback stays off).
    #[test]
    fn callback_types_other_than_the_vector_and_low_vectors_are_stored_not_delivered() {
        let mut t = TestDomain::pvh();
        let intx = (CALLBACK_TYPE_PCI_INTX << CALLBACK_TYPE_SHIFT) | (3 << 8) | 1;
        let low = (CALLBACK_TYPE_VECTOR << CALLBACK_TYPE_SHIFT) | 0x0f;
        for value in [5, intx, low, 7 << CALLBACK_TYPE_SHIFT] {
            assert_eq!(param(&mut t, SET_PARAM, DOMID_SELF, PARAM_CALLBACK_IRQ, value), 0, "{value:#x}");
            assert_eq!(param(&mut t, GET_PARAM, DOMID_SELF, PARAM_CALLBACK_IRQ, 0), 0);
            assert_eq!(t.get::<HvmParam>(TEST_ARG).value, value);
            assert_eq!(t.platform.calls().last(), Some(&Call::SetCallbackVector(0)), "not delivered");
        }
    }

    /// `hvm_allow_get_param()` / `hvm_allow_set_param()`
    /// (`xen/arch/x86/hvm/hvm.c`): a guest reads only the listed parameters
    /// (others `-EPERM`) and sets only the listed ones (the store and
    /// console event channels among them; the ring frames `-EPERM`).
    #[test]
    fn guests_read_and_set_only_the_parameters_xen_allows() {
        let mut t = TestDomain::pvh();
        for index in [3, 5, 9, 10, 12, 14, 38] {
            assert_eq!(param(&mut t, GET_PARAM, DOMID_SELF, index, 0), -EPERM, "get {index}");
        }
        for index in READABLE_UNSET {
            assert_eq!(param(&mut t, GET_PARAM, DOMID_SELF, index, 0), 0, "get {index}");
        }
        for index in [PARAM_STORE_PFN, PARAM_CONSOLE_PFN, 9, 38] {
            assert_eq!(param(&mut t, SET_PARAM, DOMID_SELF, index, 1), -EPERM, "set {index}");
        }
        assert_eq!(param(&mut t, SET_PARAM, DOMID_SELF, PARAM_STORE_EVTCHN, 9), 0);
        assert_eq!(param(&mut t, SET_PARAM, DOMID_SELF, PARAM_CONSOLE_EVTCHN, 11), 0);
        assert_eq!(param(&mut t, GET_PARAM, DOMID_SELF, PARAM_STORE_EVTCHN, 0), 0);
        assert_eq!(t.get::<HvmParam>(TEST_ARG).value, 9);
        assert_eq!(param(&mut t, GET_PARAM, DOMID_SELF, PARAM_CONSOLE_EVTCHN, 0), 0);
        assert_eq!(t.get::<HvmParam>(TEST_ARG).value, 11);
    }

    /// `hvm_allow_get_param()` / `hvm_allow_set_param()`
    /// (`xen/arch/x86/hvm/hvm.c`): the deprecated indices are `-EINVAL`
    /// both ways (not `-EPERM`); `HVM_PARAM_ALTP2M` reads as a value but
    /// setting it is `-EEXIST` ("read-only").
    #[test]
    fn deprecated_params_are_einval_and_altp2m_is_read_only() {
        let mut t = TestDomain::pvh();
        for index in DEPRECATED_PARAMS {
            assert_eq!(param(&mut t, GET_PARAM, DOMID_SELF, index, 0), -EINVAL, "get {index}");
            assert_eq!(param(&mut t, SET_PARAM, DOMID_SELF, index, 1), -EINVAL, "set {index}");
        }
        assert_eq!(param(&mut t, GET_PARAM, DOMID_SELF, PARAM_ALTP2M, 7), 0);
        assert_eq!(t.get::<HvmParam>(TEST_ARG).value, 0);
        assert_eq!(param(&mut t, SET_PARAM, DOMID_SELF, PARAM_ALTP2M, 1), -EEXIST);
        // The domain is still checked first (`hvmop_set_param()`).
        assert_eq!(param(&mut t, SET_PARAM, 4, PARAM_ALTP2M, 1), -ESRCH);
    }

    /// `do_hvm_op()` `HVMOP_get_time` (`xen/arch/x86/hvm/hvm.c`): `NOW()`
    /// copied out as `struct xen_hvm_get_time`; it does not go backwards;
    /// a bad handle is `-EFAULT`.
    #[test]
    fn get_time_returns_system_time_in_ns() {
        let mut t = TestDomain::pvh();
        t.put(TEST_ARG, &0u64);
        assert_eq!(t.call(nr::HVM_OP, [GET_TIME, TEST_ARG, 0, 0, 0]), 0);
        let first = t.get::<u64>(TEST_ARG);
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert_eq!(t.call(nr::HVM_OP, [GET_TIME, TEST_ARG, 0, 0, 0]), 0);
        let second = t.get::<u64>(TEST_ARG);
        assert!(second > first, "{first} then {second}");
        assert!(second <= t.dom.pvh.as_ref().unwrap().clock.now_ns());
        assert_eq!(t.call(nr::HVM_OP, [GET_TIME, crate::fake::TEST_RAM - 4, 0, 0, 0]), -pv_abi::errno::EFAULT);
    }

    /// `hvmop_set_evtchn_upcall_vector()` (`xen/arch/x86/hvm/hvm.c`): a
    /// vector below 0x10 is `-EINVAL` before the vCPU is looked up; a vCPU
    /// the domain lacks is `-ENOENT`; each vCPU has its own vector.
    #[test]
    fn the_upcall_vector_is_per_vcpu_and_from_0x10() {
        let mut t = TestDomain::pvh();
        let set = |t: &mut TestDomain, vcpu, vector| {
            t.put(TEST_ARG, &EvtchnUpcallVector { vcpu, vector, _pad: [0; 3] });
            t.call(nr::HVM_OP, [SET_EVTCHN_UPCALL_VECTOR, TEST_ARG, 0, 0, 0])
        };
        assert_eq!(set(&mut t, 1, 0xf3), -pv_abi::errno::ENOENT);
        assert_eq!(set(&mut t, 0, 0x0f), -EINVAL);
        assert_eq!(set(&mut t, 1, 0x0f), -EINVAL, "the vector is checked before the vCPU");
        assert!(t.platform.calls().is_empty());
        assert_eq!(set(&mut t, 0, 0xf3), 0);
        assert_eq!(t.platform.calls(), vec![Call::SetUpcallVector(0, 0xf3)]);
        // Per vCPU (`hvmop_set_evtchn_upcall_vector()` looks the vCPU up
        // in the domain): vCPU 1 of 2 has its own vector.
        t.dom.vcpus = std::sync::Arc::new(crate::vcpus::VcpuSet::new(2));
        t.platform.clear();
        assert_eq!(set(&mut t, 1, 0xf4), 0);
        assert_eq!(set(&mut t, 2, 0xf4), -pv_abi::errno::ENOENT);
        assert_eq!(t.platform.calls(), vec![Call::SetUpcallVector(1, 0xf4)]);
        assert_eq!(t.dom.pvh.as_ref().unwrap().upcall_vector, Some(0xf3), "vCPU 0's stays");
    }
}
