//! `vcpu_op` (Xen's `xen/common/domain.c` `common_vcpu_op`,
//! `xen/arch/x86/domain.c` `do_vcpu_op`, `xen/include/public/vcpu.h`):
//! the single-shot and periodic timers of vCPU 0, for PVH guests.

use crate::domain::{Domain, HcResult};
use crate::sched_op::arm;
use pv_abi::errno::{EINVAL, ENOENT, ENOSYS, ETIME};
use pv_abi::hvm::VIRQ_TIMER;
use pv_abi::hypercall::vcpu_op;
use std::time::Duration;

/// Shortest period `VCPUOP_set_periodic_timer` accepts (Xen's
/// `MILLISECS(1)`).
pub const MIN_PERIOD_NS: u64 = 1_000_000;
/// Longest period (Xen's `STIME_DELTA_MAX`, the largest `s_time_t`).
pub const MAX_PERIOD_NS: u64 = i64::MAX as u64;

/// `vcpu_op(cmd, vcpu, arg)`.
pub fn vcpu_op(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    if dom.pvh.is_none() {
        return Err(ENOSYS);
    }
    // `do_vcpu_op`: a vCPU the domain does not have (one vCPU here).
    if a[1] != 0 {
        return Err(ENOENT);
    }
    match a[0] {
        vcpu_op::SET_SINGLESHOT_TIMER => set_singleshot(dom, a[2]),
        vcpu_op::STOP_SINGLESHOT_TIMER => arm(dom, 0).map(|()| 0),
        vcpu_op::SET_PERIODIC_TIMER => {
            // struct vcpu_set_periodic_timer { uint64_t period_ns; }
            let raw = dom.ram.read_vec(a[2], 8)?;
            let period = u64::from_le_bytes(raw[..].try_into().expect("8 bytes"));
            if !(MIN_PERIOD_NS..=MAX_PERIOD_NS).contains(&period) {
                return Err(EINVAL);
            }
            set_periodic(dom, Some(Duration::from_nanos(period)));
            Ok(0)
        }
        vcpu_op::STOP_PERIODIC_TIMER => {
            set_periodic(dom, None);
            Ok(0)
        }
        _ => Err(ENOSYS),
    }
}

/// `VCPUOP_set_singleshot_timer`: `{u64 timeout_abs_ns; u32 flags}`, 16
/// bytes (12 in the compat layout, where the `u64` is 4-byte aligned).
fn set_singleshot(dom: &mut Domain, arg: u64) -> HcResult {
    let raw = dom.ram.read_vec(arg, if dom.compat { 12 } else { 16 })?;
    let ns = u64::from_le_bytes(raw[..8].try_into().expect("8 bytes"));
    let flags = u32::from_le_bytes(raw[8..12].try_into().expect("4 bytes"));
    let now = dom.pvh.as_ref().map(|p| p.clock.now_ns()).unwrap_or(0);
    if ns >= now {
        return arm(dom, ns.max(1)).map(|()| 0);
    }
    // `vcpu.h` lets the hypervisor refuse a past deadline under
    // `VCPU_SSHOTTMR_future`; current Xen ignores the flag.
    if flags & vcpu_op::SSHOTTMR_FUTURE != 0 {
        return Err(ETIME);
    }
    // `common_vcpu_op`: an expired deadline stops the timer and sends the
    // event now (`send_timer_event`).
    arm(dom, 0)?;
    if let Err(e) = dom.evtchn.notify_virq(VIRQ_TIMER) {
        tracing::debug!("vcpu_op: cannot raise VIRQ_TIMER: {e}");
    }
    Ok(0)
}

fn set_periodic(dom: &mut Domain, period: Option<Duration>) {
    if let Some(t) = dom.pvh.as_ref().and_then(|p| p.timer.as_ref()) {
        t.set_periodic(period);
    }
}

/// Against `xen/include/public/vcpu.h` (`VCPUOP_set_periodic_timer` 6,
/// `stop_periodic_timer` 7, `set_singleshot_timer` 8,
/// `stop_singleshot_timer` 9, `struct vcpu_set_singleshot_timer`,
/// `VCPU_SSHOTTMR_future`: `-ETIME` allowed for a passed deadline),
/// `xen/common/domain.c` (`common_vcpu_op`: a period below 1 ms or above
/// `STIME_DELTA_MAX` is `-EINVAL`; an expired single-shot deadline sends
/// `VIRQ_TIMER` at once and returns 0) and `xen/arch/x86/domain.c`
/// (`do_vcpu_op`: `-ENOENT` for a vCPU the domain lacks, `-ENOSYS` for
/// unknown commands).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{TestDomain, TEST_ARG};
    use pv_abi::errno::EFAULT;
    use pv_abi::hypercall::nr;
    use pv_abi::start_info::paging_mode;
    use vcpu_op::{SET_PERIODIC_TIMER, SET_SINGLESHOT_TIMER, STOP_PERIODIC_TIMER, STOP_SINGLESHOT_TIMER};

    fn timer_arg(t: &TestDomain, ns: u64, flags: u32) {
        t.put(TEST_ARG, &ns);
        t.put(TEST_ARG + 8, &flags);
    }

    fn with_timer() -> TestDomain {
        let mut t = TestDomain::pvh();
        let timer = crate::timer::Timer::start(t.dom.evtchn.clone(), || {}).unwrap();
        t.dom.pvh.as_mut().unwrap().timer = Some(timer);
        t
    }

    /// Waits (bounded) for `port` to become pending.
    fn becomes_pending(t: &TestDomain, port: u32) -> bool {
        (0..2000).any(|_| {
            std::thread::sleep(Duration::from_millis(1));
            t.dom.evtchn.is_pending(port)
        })
    }

    #[test]
    fn our_own_guests_have_no_vcpu_op() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        assert_eq!(t.call(nr::VCPU_OP, [SET_SINGLESHOT_TIMER, 0, TEST_ARG, 0, 0]), -ENOSYS);
    }

    #[test]
    fn only_vcpu_0_exists() {
        let mut t = TestDomain::pvh();
        timer_arg(&t, 1 << 40, 0);
        for cmd in [SET_SINGLESHOT_TIMER, SET_PERIODIC_TIMER, STOP_SINGLESHOT_TIMER] {
            for vcpu in [1, 2, u64::MAX] {
                assert_eq!(t.call(nr::VCPU_OP, [cmd, vcpu, TEST_ARG, 0, 0]), -ENOENT, "cmd {cmd} vcpu {vcpu}");
            }
        }
    }

    #[test]
    fn a_past_singleshot_deadline_raises_virq_timer_now_or_is_etime_with_the_future_flag() {
        let mut t = TestDomain::pvh();
        let port = t.dom.evtchn.bind_virq(VIRQ_TIMER, 0).unwrap();
        std::thread::sleep(Duration::from_millis(1));
        timer_arg(&t, 1, vcpu_op::SSHOTTMR_FUTURE);
        assert_eq!(t.call(nr::VCPU_OP, [SET_SINGLESHOT_TIMER, 0, TEST_ARG, 0, 0]), -ETIME);
        assert!(!t.dom.evtchn.is_pending(port), "refused: no event");
        timer_arg(&t, 1, 0);
        assert_eq!(t.call(nr::VCPU_OP, [SET_SINGLESHOT_TIMER, 0, TEST_ARG, 0, 0]), 0);
        assert!(t.dom.evtchn.is_pending(port), "the event is sent at once, in the hypercall");
    }

    #[test]
    fn a_future_singleshot_deadline_fires_from_the_timer_thread_and_stop_cancels_it() {
        let mut t = with_timer();
        let port = t.dom.evtchn.bind_virq(VIRQ_TIMER, 0).unwrap();
        let now = t.dom.pvh.as_ref().unwrap().clock.now_ns();
        timer_arg(&t, now + 2_000_000, vcpu_op::SSHOTTMR_FUTURE);
        assert_eq!(t.call(nr::VCPU_OP, [SET_SINGLESHOT_TIMER, 0, TEST_ARG, 0, 0]), 0);
        assert!(becomes_pending(&t, port));
        // Armed far away, then stopped: the stop command is 9, not 7.
        let mut t = with_timer();
        let port = t.dom.evtchn.bind_virq(VIRQ_TIMER, 0).unwrap();
        timer_arg(&t, 1 << 62, 0);
        assert_eq!(t.call(nr::VCPU_OP, [SET_SINGLESHOT_TIMER, 0, TEST_ARG, 0, 0]), 0);
        assert_eq!(t.call(nr::VCPU_OP, [STOP_SINGLESHOT_TIMER, 0, 0, 0, 0]), 0);
        assert!(!t.dom.evtchn.is_pending(port));
    }

    #[test]
    fn the_periodic_timer_checks_its_period_and_ticks_until_stopped() {
        let mut t = with_timer();
        let port = t.dom.evtchn.bind_virq(VIRQ_TIMER, 0).unwrap();
        for bad in [0, 1, MIN_PERIOD_NS - 1, MAX_PERIOD_NS + 1, u64::MAX] {
            t.put(TEST_ARG, &bad);
            assert_eq!(t.call(nr::VCPU_OP, [SET_PERIODIC_TIMER, 0, TEST_ARG, 0, 0]), -EINVAL, "period {bad}");
        }
        assert!(!t.dom.evtchn.is_pending(port), "a refused period starts nothing");
        t.put(TEST_ARG, &MIN_PERIOD_NS);
        assert_eq!(t.call(nr::VCPU_OP, [SET_PERIODIC_TIMER, 0, TEST_ARG, 0, 0]), 0);
        // Several ticks: the guest clears the pending bit each time.
        let clear = |t: &TestDomain| {
            let l = t.dom.evtchn.layout();
            let si = t.dom.pvh.as_ref().unwrap().layout.shared_info();
            t.dom.ram.write_obj(si + l.pending as u64, &0u64).unwrap();
        };
        for tick in 0..3 {
            assert!(becomes_pending(&t, port), "tick {tick}");
            clear(&t);
        }
        assert_eq!(t.call(nr::VCPU_OP, [STOP_PERIODIC_TIMER, 0, 0, 0, 0]), 0);
        std::thread::sleep(Duration::from_millis(5));
        clear(&t);
        std::thread::sleep(Duration::from_millis(20));
        assert!(!t.dom.evtchn.is_pending(port), "stopped");
    }

    #[test]
    fn an_unreadable_argument_is_efault() {
        let mut t = TestDomain::pvh();
        let end = crate::fake::TEST_RAM - 8;
        assert_eq!(t.call(nr::VCPU_OP, [SET_SINGLESHOT_TIMER, 0, end, 0, 0]), -EFAULT);
        assert_eq!(t.call(nr::VCPU_OP, [SET_SINGLESHOT_TIMER, 0, u64::MAX - 4, 0, 0]), -EFAULT);
        assert_eq!(t.call(nr::VCPU_OP, [SET_PERIODIC_TIMER, 0, u64::MAX - 4, 0, 0]), -EFAULT);
    }

    #[test]
    fn stops_return_0_and_unknown_commands_are_enosys() {
        let mut t = TestDomain::pvh();
        assert_eq!(t.call(nr::VCPU_OP, [STOP_PERIODIC_TIMER, 0, 0, 0, 0]), 0);
        assert_eq!(t.call(nr::VCPU_OP, [STOP_SINGLESHOT_TIMER, 0, 0, 0, 0]), 0);
        for cmd in [0, 1, 11, u64::MAX] {
            assert_eq!(t.call(nr::VCPU_OP, [cmd, 0, TEST_ARG, 0, 0]), -ENOSYS, "cmd {cmd}");
        }
    }
}
