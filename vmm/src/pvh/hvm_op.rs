//! `hvm_op` (HVM parameters, the per-vCPU upcall vector) and `xen_version`
//! as a PVH guest sees it.

use super::memory_op::is_self;
use crate::domain::Domain;
use crate::hypercall::HcResult;
use pv_abi::errno::{EINVAL, ENOSYS, EPERM, ESRCH};
use pv_abi::hvm::hvm_op::*;
use pv_abi::hvm::xen_version as xv;
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
            dom.evtchn.set_upcall_vector(v.vector).map_err(|_| pv_abi::errno::EIO)?;
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
            pvh.callback.set_vector(p.value as u8);
            let hook: Option<crate::evtchn::UpcallHook> = (p.value != 0).then(|| {
                let line = pvh.callback.clone();
                std::sync::Arc::new(move || line.raise()) as crate::evtchn::UpcallHook
            });
            dom.evtchn.set_upcall_hook(hook);
            dom.evtchn.set_compat_layout(dom.compat);
            Ok(())
        }
        PARAM_STORE_PFN | PARAM_STORE_EVTCHN | PARAM_CONSOLE_PFN | PARAM_CONSOLE_EVTCHN => Err(EPERM),
        _ => Err(EINVAL),
    }
}

/// Copies `text` NUL-padded into a `len`-byte guest buffer.
fn write_text(dom: &Domain, at: u64, text: &str, len: usize) -> HcResult {
    let mut buf = vec![0u8; len];
    let n = text.len().min(len - 1);
    buf[..n].copy_from_slice(&text.as_bytes()[..n]);
    dom.ram.copy_to_guest(at, &buf)?;
    Ok(0)
}

/// `xen_version(cmd, arg)` for a PVH guest; `None` for the project's own
/// guests (handled by the common implementation).
pub fn xen_version(dom: &mut Domain, a: &[u64; 5]) -> Option<HcResult> {
    dom.pvh.as_ref()?;
    let (cmd, arg) = (a[0], a[1]);
    Some(match cmd {
        pv_abi::hypercall::xen_version::VERSION => Ok(u64::from(super::cpuid::XEN_VERSION)),
        xv::EXTRAVERSION => write_text(dom, arg, ".0-pvkvm", 16),
        xv::COMPILE_INFO => {
            let mut buf = vec![0u8; xv::COMPILE_INFO_SIZE as usize];
            for (off, text) in [(0, "rustc"), (64, "pv-kvm"), (80, "pv-kvm"), (112, env!("CARGO_PKG_VERSION"))] {
                buf[off..off + text.len()].copy_from_slice(text.as_bytes());
            }
            dom.ram.copy_to_guest(arg, &buf).map(|()| 0).map_err(Into::into)
        }
        xv::CAPABILITIES => write_text(dom, arg, "hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64", 1024),
        xv::CHANGESET => write_text(dom, arg, concat!("pv-kvm ", env!("CARGO_PKG_VERSION")), 64),
        xv::PAGESIZE => Ok(PAGE_SIZE),
        pv_abi::hypercall::xen_version::GET_FEATURES => (|| {
            let mut info: pv_abi::hypercall::xen_version::FeatureInfo = dom.ram.read_obj(arg)?;
            info.submap = if info.submap_idx == 0 { xv::PVH_FEATURES } else { 0 };
            dom.ram.copy_obj_to_guest(arg, &info)?;
            Ok(0)
        })(),
        _ => Err(ENOSYS),
    })
}
