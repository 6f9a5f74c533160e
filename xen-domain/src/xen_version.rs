//! `xen_version` (Xen's `xen/common/kernel.c` `do_xen_version`,
//! `xen/include/public/version.h`): the project's ABI version and feature
//! bits for its own guests, Xen's version, strings and features for PVH
//! guests.

use crate::domain::{Domain, HcResult};
use pv_abi::errno::{EINVAL, ENOBUFS, ENOSYS, EPERM};
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

/// The text behind `XENVER_extraversion` / `_capabilities` / `_changeset`
/// and their `*2` forms (the same strings, as `xen/common/kernel.c`).
const EXTRA_VERSION: &str = ".0-pvkvm";
const CAPABILITIES: &str = "hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64";
const CHANGESET: &str = concat!("pv-kvm ", env!("CARGO_PKG_VERSION"));

/// `xenver_varbuf_op()` (`xen/common/kernel.c`): a NULL handle asks for
/// the length; otherwise `struct xen_varbuf { uint32_t len; char buf[]; }`
/// gets the text, unterminated, if `len` holds it (else `-ENOBUFS`), and
/// the result is the text's length.
fn varbuf(dom: &Domain, arg: u64, text: &str) -> HcResult {
    let sz = text.len() as u64;
    if arg == 0 {
        return Ok(sz);
    }
    let len: u32 = dom.ram.read_obj(arg)?;
    if sz > u64::from(len) {
        return Err(ENOBUFS);
    }
    dom.ram.copy_to_guest(arg + 4, text.as_bytes())?;
    Ok(sz)
}

/// `xen_version(cmd, arg)` as a PVH guest sees it: Xen's version and
/// strings.
fn pvh_xen_version(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    let (cmd, arg) = (a[0], a[1]);
    match cmd {
        pv_abi::hypercall::xen_version::VERSION => Ok(u64::from(xv::XEN_VERSION)),
        xv::EXTRAVERSION => write_text(dom, arg, EXTRA_VERSION, 16),
        xv::COMPILE_INFO => {
            let mut buf = vec![0u8; xv::COMPILE_INFO_SIZE as usize];
            for (off, text) in [(0, "rustc"), (64, "pv-kvm"), (80, "pv-kvm"), (112, env!("CARGO_PKG_VERSION"))] {
                buf[off..off + text.len()].copy_from_slice(text.as_bytes());
            }
            dom.ram.copy_to_guest(arg, &buf).map(|()| 0).map_err(Into::into)
        }
        xv::CAPABILITIES => write_text(dom, arg, CAPABILITIES, 1024),
        xv::CHANGESET => write_text(dom, arg, CHANGESET, 64),
        // `xsm_xen_version()`: XSM_HOOK, any guest may ask.
        xv::EXTRAVERSION2 => varbuf(dom, arg, EXTRA_VERSION),
        xv::CAPABILITIES2 => varbuf(dom, arg, CAPABILITIES),
        xv::CHANGESET2 => varbuf(dom, arg, CHANGESET),
        // `guest_handle_is_null(arg) ? PAGE_SIZE : -EINVAL`.
        xv::PAGESIZE if arg != 0 => Err(EINVAL),
        xv::PAGESIZE => Ok(PAGE_SIZE),
        // `virt_start` is 0 for a translated guest; `xen_ulong_t` is 4
        // bytes in the compat layout.
        xv::PLATFORM_PARAMETERS => {
            dom.ram.copy_to_guest(arg, &[0u8; 8][..if dom.compat { 4 } else { 8 }])?;
            Ok(0)
        }
        // The domain handle (xl's UUID); we have none, so all zero.
        xv::GUEST_HANDLE => dom.ram.copy_to_guest(arg, &[0u8; 16]).map(|()| 0).map_err(Into::into),
        // `xsm_xen_version()` denies a domU: `xen_deny()`'s string.
        xv::COMMANDLINE => dom.ram.copy_to_guest(arg, b"<denied>\0").map(|()| 0).map_err(Into::into),
        // build_id and commandline2: XSM_PRIV, refused for a domU.
        xv::BUILD_ID | xv::COMMANDLINE2 => Err(EPERM),
        pv_abi::hypercall::xen_version::GET_FEATURES => {
            let mut info: pv_abi::hypercall::xen_version::FeatureInfo = dom.ram.read_obj(arg)?;
            // XENFEAT_NR_SUBMAPS is 1.
            if info.submap_idx != 0 {
                return Err(EINVAL);
            }
            info.submap = xv::PVH_FEATURES;
            dom.ram.copy_obj_to_guest(arg, &info)?;
            Ok(0)
        }
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
    use pv_abi::errno::{EFAULT, EINVAL, ENOBUFS, ENOSYS, EPERM};
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
    }

    /// `do_xen_version()` (`xen/common/kernel.c`), `XENVER_get_features`
    /// for an HVM domU: translated (`writable_page_tables`,
    /// `auto_translated_physmap`), `hvm_safe_pvclock`,
    /// `hvm_callback_vector`, never the PV-only `writable_descriptor_tables`
    /// (1) or `supervisor_mode_kernel` (3); `submap_idx` beyond
    /// `XENFEAT_NR_SUBMAPS` is `-EINVAL`.
    #[test]
    fn pvh_features_are_xens_hvm_bits_and_other_submaps_are_einval() {
        let mut p = TestDomain::pvh();
        p.put(TEST_ARG, &FeatureInfo { submap_idx: 0, submap: 0 });
        assert_eq!(p.call(nr::XEN_VERSION, [GET_FEATURES, TEST_ARG, 0, 0, 0]), 0);
        let got = p.get::<FeatureInfo>(TEST_ARG).submap;
        assert_eq!(got, xv::PVH_FEATURES);
        for bit in [0, 2, 8, 9, 16] {
            assert_ne!(got & (1 << bit), 0, "bit {bit}");
        }
        for bit in [1, 3, 10, 11] {
            assert_eq!(got & (1 << bit), 0, "bit {bit}");
        }
        p.put(TEST_ARG, &FeatureInfo { submap_idx: 1, submap: 0xdead });
        assert_eq!(p.call(nr::XEN_VERSION, [GET_FEATURES, TEST_ARG, 0, 0, 0]), -EINVAL);
        assert_eq!(p.get::<FeatureInfo>(TEST_ARG).submap, 0xdead, "nothing written");
    }

    /// `do_xen_version()` and `xsm_xen_version()` (`xen/include/xsm/dummy.h`)
    /// for a domU: `pagesize` with an argument is `-EINVAL`;
    /// `platform_parameters` is `{virt_start = 0}`; `guest_handle` copies 16
    /// bytes; `commandline` is `xen_deny()`'s "<denied>"; `build_id` and
    /// `commandline2` (XSM_PRIV) are `-EPERM`.
    #[test]
    fn pvh_minor_sub_ops_answer_as_xen_does_for_a_domu() {
        let mut p = TestDomain::pvh();
        assert_eq!(p.call(nr::XEN_VERSION, [xv::PAGESIZE, TEST_ARG, 0, 0, 0]), -EINVAL);
        p.dom.ram.write(TEST_ARG, &[0xff; 32]).unwrap();
        assert_eq!(p.call(nr::XEN_VERSION, [xv::PLATFORM_PARAMETERS, TEST_ARG, 0, 0, 0]), 0);
        assert_eq!(p.get::<[u8; 9]>(TEST_ARG), [0, 0, 0, 0, 0, 0, 0, 0, 0xff]);
        p.dom.ram.write(TEST_ARG, &[0xff; 32]).unwrap();
        p.dom.compat = true;
        assert_eq!(p.call(nr::XEN_VERSION, [xv::PLATFORM_PARAMETERS, TEST_ARG, 0, 0, 0]), 0);
        assert_eq!(p.get::<[u8; 5]>(TEST_ARG), [0, 0, 0, 0, 0xff], "compat xen_ulong_t is 4 bytes");
        p.dom.compat = false;
        p.dom.ram.write(TEST_ARG, &[0xff; 32]).unwrap();
        assert_eq!(p.call(nr::XEN_VERSION, [xv::GUEST_HANDLE, TEST_ARG, 0, 0, 0]), 0);
        assert_eq!(p.get::<[u8; 17]>(TEST_ARG)[15..], [0, 0xff]);
        assert_eq!(p.call(nr::XEN_VERSION, [xv::COMMANDLINE, TEST_ARG, 0, 0, 0]), 0);
        assert_eq!(&p.get::<[u8; 9]>(TEST_ARG), b"<denied>\0");
        for cmd in [xv::BUILD_ID, xv::COMMANDLINE2] {
            assert_eq!(p.call(nr::XEN_VERSION, [cmd, TEST_ARG, 0, 0, 0]), -EPERM, "cmd {cmd}");
        }
        assert_eq!(p.call(nr::XEN_VERSION, [xv::GUEST_HANDLE, crate::fake::TEST_RAM - 8, 0, 0, 0]), -EFAULT);
    }

    /// `xenver_varbuf_op()` (`xen/common/kernel.c`) behind XSM_HOOK
    /// (`xen/include/xsm/dummy.h` `xsm_xen_version()`): a NULL handle
    /// returns the length; a `len` too small is `-ENOBUFS` with nothing
    /// written; otherwise the unterminated text after `len` and its length.
    #[test]
    fn pvh_varbuf_sub_ops_return_the_length_and_the_text() {
        let mut p = TestDomain::pvh();
        for (cmd, text) in
            [(xv::EXTRAVERSION2, ".0-pvkvm"), (xv::CAPABILITIES2, "hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64")]
        {
            let n = text.len();
            assert_eq!(p.call(nr::XEN_VERSION, [cmd, 0, 0, 0, 0]), n as i64, "cmd {cmd} length");
            p.dom.ram.write(TEST_ARG, &[0xff; 128]).unwrap();
            p.put(TEST_ARG, &(n as u32 - 1));
            assert_eq!(p.call(nr::XEN_VERSION, [cmd, TEST_ARG, 0, 0, 0]), -ENOBUFS, "cmd {cmd}");
            assert_eq!(p.dom.ram.read_vec(TEST_ARG + 4, 1).unwrap(), [0xff], "nothing written");
            p.put(TEST_ARG, &(n as u32));
            assert_eq!(p.call(nr::XEN_VERSION, [cmd, TEST_ARG, 0, 0, 0]), n as i64, "cmd {cmd}");
            let got = p.dom.ram.read_vec(TEST_ARG + 4, n as u64 + 1).unwrap();
            assert_eq!(&got[..n], text.as_bytes());
            assert_eq!(got[n], 0xff, "no terminator written");
        }
        assert!(p.call(nr::XEN_VERSION, [xv::CHANGESET2, 0, 0, 0, 0]) > 0);
        assert_eq!(p.call(nr::XEN_VERSION, [xv::CHANGESET2, crate::fake::TEST_RAM - 2, 0, 0, 0]), -EFAULT);
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
        assert_eq!(p.call(nr::XEN_VERSION, [15, TEST_ARG, 0, 0, 0]), -ENOSYS);
    }
}
