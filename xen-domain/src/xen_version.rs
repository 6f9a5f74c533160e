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

/// Against `xen/include/public/version.h` (`XENVER_*`, `struct
/// xen_feature_info`, the string sizes) and `xen/common/kernel.c`
/// (`do_xen_version`: `-ENOSYS` for unknown commands, `-EFAULT` when the
/// output cannot be copied).
#[cfg(test)]
mod tests {
    use crate::fake::{TestDomain, TEST_ARG, TEST_POOL};
    use pv_abi::errno::{EFAULT, ENOSYS};
    use pv_abi::hvm::xen_version as xv;
    use pv_abi::hypercall::xen_version::{FeatureInfo, GET_FEATURES, VERSION};
    use pv_abi::hypercall::{nr, ABI_VERSION};
    use pv_abi::start_info::paging_mode;

    #[test]
    fn version_is_the_abi_version_for_our_guests_and_4_17_for_pvh() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        assert_eq!(t.call(nr::XEN_VERSION, [VERSION, 0, 0, 0, 0]), i64::from(ABI_VERSION));
        let mut p = TestDomain::pvh();
        assert_eq!(p.call(nr::XEN_VERSION, [VERSION, 0, 0, 0, 0]), (4 << 16) | 17);
    }

    #[test]
    fn get_features_fills_submap_0_and_zeroes_the_rest() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        t.put(TEST_ARG, &FeatureInfo { submap_idx: 0, submap: 0xdead });
        assert_eq!(t.call(nr::XEN_VERSION, [GET_FEATURES, TEST_ARG, 0, 0, 0]), 0);
        assert_eq!(t.get::<FeatureInfo>(TEST_ARG).submap, t.dom.features);
        t.put(TEST_ARG, &FeatureInfo { submap_idx: 1, submap: 0xdead });
        assert_eq!(t.call(nr::XEN_VERSION, [GET_FEATURES, TEST_ARG, 0, 0, 0]), 0);
        assert_eq!(t.get::<FeatureInfo>(TEST_ARG).submap, 0);
        let mut p = TestDomain::pvh();
        p.put(TEST_ARG, &FeatureInfo { submap_idx: 0, submap: 0 });
        assert_eq!(p.call(nr::XEN_VERSION, [GET_FEATURES, TEST_ARG, 0, 0, 0]), 0);
        assert_eq!(p.get::<FeatureInfo>(TEST_ARG).submap, xv::PVH_FEATURES);
    }

    #[test]
    fn outputs_into_protected_pages_are_efault_and_unwritten() {
        let mut t = TestDomain::new(paging_mode::PV);
        assert_eq!(t.call(nr::XEN_VERSION, [GET_FEATURES, 0x1000, 0, 0, 0]), -EFAULT);
        assert_eq!(t.get::<FeatureInfo>(0x1000), FeatureInfo::default());
        assert_eq!(t.call(nr::XEN_VERSION, [GET_FEATURES, TEST_POOL, 0, 0, 0]), -EFAULT);
        let mut p = TestDomain::pvh();
        let vmm = p.dom.pvh.as_ref().unwrap().layout.vmm_base;
        assert_eq!(p.call(nr::XEN_VERSION, [xv::EXTRAVERSION, vmm, 0, 0, 0]), -EFAULT);
        assert_eq!(p.call(nr::XEN_VERSION, [xv::CAPABILITIES, crate::fake::TEST_RAM - 8, 0, 0, 0]), -EFAULT);
    }

    #[test]
    fn pvh_strings_are_nul_terminated_in_their_buffers() {
        let mut p = TestDomain::pvh();
        p.dom.ram.write(TEST_ARG, &[0xff; 64]).unwrap();
        assert_eq!(p.call(nr::XEN_VERSION, [xv::EXTRAVERSION, TEST_ARG, 0, 0, 0]), 0);
        let text = p.dom.ram.read_vec(TEST_ARG, 16).unwrap();
        assert_eq!(&text[..8], b".0-pvkvm");
        assert!(text[8..].iter().all(|&b| b == 0));
        assert_eq!(p.dom.ram.read_vec(TEST_ARG + 16, 1).unwrap(), [0xff], "nothing beyond the 16 bytes");
        assert_eq!(p.call(nr::XEN_VERSION, [xv::PAGESIZE, 0, 0, 0, 0]), 4096);
    }

    #[test]
    fn unknown_commands_are_enosys() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        let mut p = TestDomain::pvh();
        for cmd in [1, 5, 7, 99, u64::MAX] {
            assert_eq!(t.call(nr::XEN_VERSION, [cmd, TEST_ARG, 0, 0, 0]), -ENOSYS, "cmd {cmd}");
        }
        assert_eq!(p.call(nr::XEN_VERSION, [99, TEST_ARG, 0, 0, 0]), -ENOSYS);
    }
}
