//! `xen_version` (Xen's `xen/common/kernel.c` `do_xen_version`,
//! `xen/include/public/version.h`): the project's ABI version and feature
//! bits for its own guests, Xen's version, strings and features for PVH
//! guests.

use crate::domain::{Domain, HcResult};
use pv_abi::errno::ENOSYS;
use pv_abi::hvm::xen_version as xv;
use pv_abi::hypercall::{xen_version, ABI_VERSION};
use pv_abi::layout::PAGE_SIZE;

/// `xen_version(cmd, arg)`.
pub fn xen_version(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    if dom.pvh.is_some() {
        return pvh_xen_version(dom, a);
    }
    match a[0] {
        xen_version::VERSION => Ok(ABI_VERSION as u64),
        xen_version::GET_FEATURES => {
            let mut info: xen_version::FeatureInfo = dom.ram.read_obj(a[1])?;
            info.submap = if info.submap_idx == 0 { dom.features } else { 0 };
            dom.ram.copy_obj_to_guest(a[1], &info)?;
            Ok(0)
        }
        _ => Err(ENOSYS),
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

/// `xen_version(cmd, arg)` as a PVH guest sees it: Xen's version and
/// strings.
fn pvh_xen_version(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    let (cmd, arg) = (a[0], a[1]);
    match cmd {
        pv_abi::hypercall::xen_version::VERSION => Ok(u64::from(xv::XEN_VERSION)),
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
    }
}
