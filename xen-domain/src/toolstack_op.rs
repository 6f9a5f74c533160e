//! `sysctl` and `domctl` as a guest sees them (Xen's `xen/common/sysctl.c`
//! `do_sysctl` and `xen/common/domctl.c` `do_domctl`): the toolstack's
//! operations, which Xen refuses to an unprivileged domain after reading
//! the argument (`-EFAULT`) and checking its interface version
//! (`-EACCES`); the XSM check then answers `-EPERM`. Guests probe them to
//! learn what they may do (XTF's `livepatch-priv-check` expects exactly
//! this order), so `-ENOSYS` would tell them something Xen never says.

use crate::domain::{Domain, HcResult};
use pv_abi::errno::{EACCES, EPERM};
use pv_abi::hypercall::toolstack::{DOMCTL_INTERFACE_VERSION, SYSCTL_INTERFACE_VERSION};

/// `sysctl(arg)`: `struct xen_sysctl { uint32_t cmd, interface_version; ... }`.
pub fn sysctl(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    refuse(dom, a[0], SYSCTL_INTERFACE_VERSION)
}

/// `domctl(arg)`: `struct xen_domctl { uint32_t cmd, interface_version; ... }`.
pub fn domctl(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    refuse(dom, a[0], DOMCTL_INTERFACE_VERSION)
}

/// Reads the (cmd, interface_version) head of the argument and refuses.
fn refuse(dom: &mut Domain, arg: u64, version: u32) -> HcResult {
    let head: [u32; 2] = dom.ram.read_obj(arg)?;
    if head[1] != version {
        return Err(EACCES);
    }
    tracing::debug!(cmd = head[0], "toolstack operation refused to the guest");
    Err(EPERM)
}

/// Against `xen/common/sysctl.c` and `xen/common/domctl.c`: the copy from
/// the guest first (`-EFAULT`), then `interface_version` (`-EACCES`), then
/// the XSM permission check (`-EPERM` for a domU).
#[cfg(test)]
mod tests {
    use crate::fake::{TestDomain, TEST_ARG};
    use pv_abi::errno::{EACCES, EFAULT, EPERM};
    use pv_abi::hypercall::nr;
    use pv_abi::hypercall::toolstack::{DOMCTL_INTERFACE_VERSION, SYSCTL_INTERFACE_VERSION};
    use pv_abi::start_info::paging_mode;

    #[test]
    fn a_wrong_interface_version_is_eacces_before_the_permission_check() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        for (op, version) in [(nr::SYSCTL, SYSCTL_INTERFACE_VERSION), (nr::DOMCTL, DOMCTL_INTERFACE_VERSION)] {
            t.put(TEST_ARG, &[1u32, version - 1]);
            assert_eq!(t.call(op, [TEST_ARG, 0, 0, 0, 0]), -EACCES, "op {op}");
            t.put(TEST_ARG, &[1u32, version]);
            assert_eq!(t.call(op, [TEST_ARG, 0, 0, 0, 0]), -EPERM, "op {op}");
        }
    }

    #[test]
    fn an_argument_outside_ram_is_efault() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        assert_eq!(t.call(nr::SYSCTL, [u64::MAX - 3, 0, 0, 0, 0]), -EFAULT);
        assert_eq!(t.call(nr::DOMCTL, [u64::MAX - 3, 0, 0, 0, 0]), -EFAULT);
    }
}
