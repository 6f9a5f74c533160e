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

/// Against `xen/include/public/vcpu.h` (`VCPU_SSHOTTMR_future`: `-ETIME`
/// for a deadline already passed) and `xen/common/domain.c` (`do_vcpu_op`:
/// `-ENOENT` for a vCPU the domain does not have, `-ENOSYS` for unknown
/// commands).
#[cfg(test)]
mod tests {
    use crate::fake::{TestDomain, TEST_ARG};
    use pv_abi::errno::{EFAULT, ENOENT, ENOSYS, ETIME};
    use pv_abi::hypercall::{nr, vcpu_op};
    use pv_abi::start_info::paging_mode;

    /// The command this implementation runs the one-shot timer under
    /// (module docs).
    const SINGLESHOT: u64 = vcpu_op::SET_PERIODIC_TIMER;

    fn timer_arg(t: &TestDomain, ns: u64, flags: u32) {
        t.put(TEST_ARG, &ns);
        t.put(TEST_ARG + 8, &flags);
    }

    #[test]
    fn our_own_guests_have_no_vcpu_op() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        assert_eq!(t.call(nr::VCPU_OP, [SINGLESHOT, 0, TEST_ARG, 0, 0]), -ENOSYS);
    }

    #[test]
    fn only_vcpu_0_exists() {
        let mut t = TestDomain::pvh();
        timer_arg(&t, 1 << 40, 0);
        for vcpu in [1, 2, u64::MAX] {
            assert_eq!(t.call(nr::VCPU_OP, [SINGLESHOT, vcpu, TEST_ARG, 0, 0]), -ENOENT, "vcpu {vcpu}");
        }
    }

    #[test]
    fn a_past_deadline_with_the_future_flag_is_etime() {
        let mut t = TestDomain::pvh();
        std::thread::sleep(std::time::Duration::from_millis(1));
        timer_arg(&t, 1, vcpu_op::SSHOTTMR_FUTURE);
        assert_eq!(t.call(nr::VCPU_OP, [SINGLESHOT, 0, TEST_ARG, 0, 0]), -ETIME);
        // Without the flag the same deadline fires at once.
        timer_arg(&t, 1, 0);
        assert_eq!(t.call(nr::VCPU_OP, [SINGLESHOT, 0, TEST_ARG, 0, 0]), 0);
    }

    #[test]
    fn an_unreadable_argument_is_efault() {
        let mut t = TestDomain::pvh();
        let end = crate::fake::TEST_RAM - 8;
        assert_eq!(t.call(nr::VCPU_OP, [SINGLESHOT, 0, end, 0, 0]), -EFAULT);
        assert_eq!(t.call(nr::VCPU_OP, [SINGLESHOT, 0, u64::MAX - 4, 0, 0]), -EFAULT);
    }

    #[test]
    fn stop_cancels_and_unknown_commands_are_enosys() {
        let mut t = TestDomain::pvh();
        assert_eq!(t.call(nr::VCPU_OP, [vcpu_op::STOP_PERIODIC_TIMER, 0, 0, 0, 0]), 0);
        for cmd in [0, 1, 11, u64::MAX] {
            assert_eq!(t.call(nr::VCPU_OP, [cmd, 0, TEST_ARG, 0, 0]), -ENOSYS, "cmd {cmd}");
        }
    }
}
