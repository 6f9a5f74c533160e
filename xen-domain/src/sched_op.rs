//! `sched_op` and `set_timer_op` (Xen's `xen/common/sched/core.c`,
//! `xen/include/public/sched.h`): yield, block, shutdown, and for PVH
//! guests `SCHEDOP_poll` and the one-shot timer.
//!
//! `SCHEDOP_poll` and `SCHEDOP_block` wait on the vCPU thread, at most
//! [`MAX_POLL_WAIT`] per exit: a poll still waiting then ends the exit with
//! a continuation of itself (the guest re-enters it, so the vCPU loop checks
//! the run-time limit between exits), and a wait that did block spends the
//! exit's work budget, so a multicall of polls continues after that entry
//! in a new exit instead of blocking for every entry in one.

use crate::domain::{DeferredWait, Domain, HcResult, Shutdown};
use pv_abi::errno::{EINVAL, ENOSPC, ENOSYS, EPERM, ESRCH};
use pv_abi::event_channel::MAX_PORTS;
use pv_abi::hypercall::sched_op;
use pv_abi::shared_info::SharedInfo;
use std::time::{Duration, Instant};

/// Most ports one `SCHEDOP_poll` may name (Xen's limit in `do_poll`).
pub const MAX_POLL_PORTS: u32 = 128;
/// Longest a single `SCHEDOP_poll` or `SCHEDOP_block` exit waits: bounded
/// time per exit, so the run-time limit is checked at least this often.
pub const MAX_POLL_WAIT: Duration = Duration::from_millis(50);
/// How often a waiting poll or block looks at the shared-info page.
const POLL_STEP: Duration = Duration::from_micros(100);

/// `sched_op(cmd, arg)`.
pub fn sched_op(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    match a[0] {
        sched_op::POLL if dom.pvh.is_some() => poll(dom, a),
        sched_op::BLOCK if dom.pvh.is_some() => block(dom),
        // Our own guests block in their own `sti; hlt` (handled in the
        // kernel with the in-kernel irqchip), so these return at once.
        sched_op::YIELD | sched_op::BLOCK => Ok(0),
        sched_op::SHUTDOWN => {
            let arg: sched_op::SchedShutdown = dom.ram.read_obj(a[1])?;
            if dom.pvh.is_some() {
                // Xen's `do_sched_op()` passes `(u8)reason` to
                // `domain_shutdown()` and reads nothing else: `rdx` is
                // not part of the call.
                domain_shutdown(dom, arg.reason as u8);
            } else {
                // Our own guests: the status extension (exit status in `rdx`).
                dom.shutdown = Some(Shutdown { reason: arg.reason, code: a[2] as u32 });
            }
            Ok(0)
        }
        sched_op::SHUTDOWN_CODE if dom.pvh.is_some() => shutdown_code(dom, a),
        sched_op::REMOTE_SHUTDOWN if dom.pvh.is_some() => remote_shutdown(dom, a),
        sched_op::WATCHDOG if dom.pvh.is_some() => watchdog(dom, a),
        // `do_sched_op()`: only the hardware domain may pin; the check
        // comes before the argument is read.
        sched_op::PIN_OVERRIDE if dom.pvh.is_some() => Err(EPERM),
        _ => Err(ENOSYS),
    }
}

/// `SCHEDOP_shutdown_code` (`do_sched_op()`): records `(u8)reason` if no
/// code is recorded yet; the domain keeps running. Returns 0.
fn shutdown_code(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    let arg: sched_op::SchedShutdown = dom.ram.read_obj(a[1])?;
    if let Some(pvh) = dom.pvh.as_mut() {
        pvh.shutdown_code.get_or_insert(arg.reason as u8);
    }
    Ok(0)
}

/// `SCHEDOP_remote_shutdown` (`do_sched_op()`): an unknown domain is
/// `-ESRCH` (`rcu_lock_domain_by_id()`, which does not resolve
/// `DOMID_SELF`); for any existing one, domain 0 or the caller itself,
/// `xsm_schedop_shutdown(XSM_DM_PRIV)` refuses a domU with `-EPERM`.
fn remote_shutdown(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    let arg: sched_op::SchedRemoteShutdown = dom.ram.read_obj(a[1])?;
    match arg.domain_id {
        0 | crate::domid::GUEST_DOMID => Err(EPERM),
        _ => Err(ESRCH),
    }
}

/// `SCHEDOP_watchdog` (`domain_watchdog()` in `xen/common/sched/core.c`):
/// id 0 takes the first free slot, arms it `timeout` seconds from now (0:
/// at once) and returns its id (slot + 1), `-ENOSPC` if both are in use;
/// id > [`NR_DOMAIN_WATCHDOG_TIMERS`](sched_op::NR_DOMAIN_WATCHDOG_TIMERS)
/// or a free slot's id is `-EINVAL`; timeout 0 destroys the watchdog,
/// any other re-arms it. Expiry shuts the domain down with
/// `SHUTDOWN_watchdog` ([`watchdog_expired`]).
fn watchdog(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    let arg: sched_op::SchedWatchdog = dom.ram.read_obj(a[1])?;
    let pvh = dom.pvh.as_mut().ok_or(ENOSYS)?;
    if arg.id > sched_op::NR_DOMAIN_WATCHDOG_TIMERS {
        return Err(EINVAL);
    }
    // Seconds up to u32::MAX fit an `Instant` on Linux; a wrap would only
    // mean "never", which `checked_add` gives.
    let expiry = Instant::now().checked_add(Duration::from_secs(u64::from(arg.timeout)));
    let ret = if arg.id == 0 {
        let slot = pvh.watchdogs.iter().position(Option::is_none).ok_or(ENOSPC)?;
        pvh.watchdogs[slot] = Some(expiry.unwrap_or_else(far_future));
        slot as u64 + 1
    } else {
        let slot = &mut pvh.watchdogs[arg.id as usize - 1];
        if slot.is_none() {
            return Err(EINVAL);
        }
        *slot = (arg.timeout != 0).then(|| expiry.unwrap_or_else(far_future));
        0
    };
    if let Some(t) = &pvh.timer {
        t.set_watchdog(pvh.watchdogs.iter().flatten().min().copied());
    }
    Ok(ret)
}

/// An expiry no run reaches (for a timeout `Instant` cannot hold).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(u64::from(u32::MAX))
}

/// Called by the vCPU loop after each exit: if a domain watchdog has
/// expired (and the domain is not already shutting down), shuts the domain
/// down with `SHUTDOWN_watchdog`, or the code `SCHEDOP_shutdown_code`
/// recorded, as `domain_watchdog_timeout()` → `domain_shutdown()` do.
/// Returns whether it did.
pub fn watchdog_expired(dom: &mut Domain) -> bool {
    let Some(pvh) = dom.pvh.as_mut() else { return false };
    // Called after every exit: no clock read unless a watchdog is armed.
    if dom.shutdown.is_some() || pvh.watchdogs.iter().all(Option::is_none) {
        return false;
    }
    let now = Instant::now();
    let Some(id) = pvh.watchdogs.iter().position(|w| w.is_some_and(|w| now >= w)) else {
        return false;
    };
    tracing::warn!(id = id + 1, "Watchdog timer {} fired for the guest", id + 1);
    pvh.watchdogs = Default::default();
    domain_shutdown(dom, sched_op::SHUTDOWN_WATCHDOG as u8);
    true
}

/// Xen's `domain_shutdown()` (`xen/common/domain.c`) for a PVH guest, the
/// one place every shutdown goes through (`SCHEDOP_shutdown`, the last
/// `VCPUOP_down`, a watchdog): a code recorded by `SCHEDOP_shutdown_code`
/// is reported instead of `reason`.
pub(crate) fn domain_shutdown(dom: &mut Domain, reason: u8) {
    let reason = dom.pvh.as_ref().and_then(|p| p.shutdown_code).unwrap_or(reason);
    dom.shutdown = Some(Shutdown { reason: u32::from(reason), code: 0 });
}

/// What happens to a Xen (PVH) guest after `SCHEDOP_shutdown`: the
/// toolstack's answer (`handle_domain_death()` in `tools/xl/xl_vmcontrol.c`
/// with the `tools/xl/xl_parse.c` defaults), for a VMM without a toolstack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XenShutdown {
    /// `SHUTDOWN_poweroff` (0): `on_poweroff=destroy`, a clean end (exit 0).
    Poweroff,
    /// `SHUTDOWN_reboot` (1): `on_reboot=restart`; the VMM restarts or
    /// exits as configured.
    Reboot,
    /// `SHUTDOWN_suspend` (2): xl keeps the domain suspended and waits for
    /// a save or resume; with neither, the VMM stops (a failure).
    Suspend,
    /// `SHUTDOWN_crash` (3): `on_crash=destroy`, a failure.
    Crash,
    /// `SHUTDOWN_watchdog` (4): `on_watchdog=destroy`, a failure.
    Watchdog,
    /// `SHUTDOWN_soft_reset` (5): `on_soft_reset=soft-reset`, which needs a
    /// soft reset this VMM does not implement: a failure.
    SoftReset,
    /// Any other reason: xl destroys the domain ("Unknown shutdown reason
    /// code N. Destroying domain."), a failure.
    Unknown(u8),
}

impl XenShutdown {
    /// The toolstack's action for `reason`, truncated to 8 bits as
    /// `do_sched_op()` does (reason 256 is poweroff).
    pub fn from_reason(reason: u32) -> Self {
        match reason as u8 {
            0 => XenShutdown::Poweroff,
            1 => XenShutdown::Reboot,
            2 => XenShutdown::Suspend,
            3 => XenShutdown::Crash,
            4 => XenShutdown::Watchdog,
            5 => XenShutdown::SoftReset,
            n => XenShutdown::Unknown(n),
        }
    }

    /// Xen's name for the reason (`SHUTDOWN_*` in `xen/include/public/sched.h`).
    pub fn name(self) -> &'static str {
        match self {
            XenShutdown::Poweroff => "poweroff",
            XenShutdown::Reboot => "reboot",
            XenShutdown::Suspend => "suspend",
            XenShutdown::Crash => "crash",
            XenShutdown::Watchdog => "watchdog",
            XenShutdown::SoftReset => "soft_reset",
            XenShutdown::Unknown(_) => "unknown",
        }
    }

    /// The VMM's exit status when it stops here: 0 for poweroff and for a
    /// reboot the user asked to end the run (`--on-reboot exit`), 1 for
    /// every reason xl treats as the end of a failed domain.
    pub fn exit_status(self) -> i32 {
        match self {
            XenShutdown::Poweroff | XenShutdown::Reboot => 0,
            _ => 1,
        }
    }

    /// The one-line reason for a failure status, or `None` for a clean end.
    pub fn error(self) -> Option<String> {
        match self {
            XenShutdown::Poweroff | XenShutdown::Reboot => None,
            XenShutdown::Suspend => Some(
                "domain has suspended; no save is in progress and a suspended domain cannot be resumed here: stopping"
                    .into(),
            ),
            XenShutdown::Crash => Some("guest crashed (SHUTDOWN_crash): destroying domain".into()),
            XenShutdown::Watchdog => Some("guest watchdog fired (SHUTDOWN_watchdog): destroying domain".into()),
            XenShutdown::SoftReset => {
                Some("guest asked for a soft reset (SHUTDOWN_soft_reset), which is not implemented: stopping".into())
            }
            XenShutdown::Unknown(n) => Some(format!("Unknown shutdown reason code {n}. Destroying domain.")),
        }
    }
}

/// Reads `n` little-endian bytes at `i` of `raw` as an integer.
fn le(raw: &[u8], i: usize, n: usize) -> u64 {
    raw[i..i + n].iter().rev().fold(0, |v, b| (v << 8) | u64::from(*b))
}

/// `SCHEDOP_poll` (`do_poll()`): `{handle ports; u32 nr_ports; u64
/// timeout}`, 24 bytes (16 in the compat layout). More than
/// [`MAX_POLL_PORTS`] ports or an invalid port is `-EINVAL`; returns 0 at
/// once if an event is deliverable or a named port is pending, else when
/// one is or `timeout` (absolute system time, 0: none) passes.
fn poll(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    let arg = a[1];
    let (ports_at, nr, timeout) = if dom.compat {
        let raw = dom.ram.read_vec(arg, 16)?;
        (le(&raw, 0, 4), le(&raw, 4, 4) as u32, le(&raw, 8, 8))
    } else {
        let raw = dom.ram.read_vec(arg, 24)?;
        (le(&raw, 0, 8), le(&raw, 8, 8) as u32, le(&raw, 16, 8))
    };
    if nr > MAX_POLL_PORTS {
        return Err(EINVAL);
    }
    let raw = dom.ram.read_vec(ports_at, u64::from(nr) * 4)?;
    let ports: Vec<u32> = raw.chunks_exact(4).map(|c| le(c, 0, 4) as u32).collect();
    // `evtchn_port_poll()`: a port beyond the domain's ports.
    if ports.iter().any(|&p| p >= MAX_PORTS) {
        return Err(EINVAL);
    }
    let pvh = dom.pvh.as_ref().ok_or(ENOSYS)?;
    let deadline = (timeout != 0).then(|| pvh.clock.boot + Duration::from_nanos(timeout));
    let deliverable = events_deliverable(dom);
    let ev = dom.evtchn.clone();
    let woken = move || deliverable() || ports.iter().any(|&p| ev.is_pending(p));
    match blocked_wait(dom, deadline, woken) {
        Wait::Ready => {}
        Wait::Blocked => dom.work_left = 0,
        Wait::Again => {
            dom.work_left = 0;
            dom.create_continuation(*a);
        }
    }
    publish_clock(dom)?;
    Ok(0)
}

/// `SCHEDOP_block` for a PVH guest (`vcpu_block_enable_events()`): clears
/// `evtchn_upcall_mask`, then returns once an event is deliverable. After
/// [`MAX_POLL_WAIT`] without one it returns 0 anyway (a spurious wake-up,
/// which a guest's idle loop re-checks), rather than re-entering through a
/// continuation: an upcall injected between the two exits would be taken
/// by the guest's handler and the re-entered block would miss it.
fn block(dom: &mut Domain) -> HcResult {
    if dom.pvh.is_none() {
        return Err(ENOSYS);
    }
    // The calling vCPU's `vcpu_info` (`current`), wherever it lives.
    let info = dom.evtchn.vcpu_info(dom.current).ok_or(EINVAL)?;
    dom.ram.write_obj(info + SharedInfo::upcall_mask_offset(0) as u64, &0u8)?;
    if blocked_wait(dom, None, events_deliverable(dom)) != Wait::Ready {
        dom.work_left = 0;
    }
    publish_clock(dom)?;
    Ok(0)
}

/// [`wait`] with the calling vCPU's runstate `RUNSTATE_blocked` while
/// it waits (Xen's `vcpu_block()`/`vcpu_wake()` runstate changes), back
/// to running when the wait ends: here, or in the vCPU loop for a
/// deferred wait.
fn blocked_wait(dom: &mut Domain, deadline: Option<Instant>, woken: impl Fn() -> bool + Send + 'static) -> Wait {
    use pv_abi::hypercall::vcpu_op::{RUNSTATE_BLOCKED, RUNSTATE_RUNNING};
    let set = crate::runstate::runstate_setter(dom, dom.current);
    set(RUNSTATE_BLOCKED);
    let w = wait(dom, deadline, woken);
    match dom.deferred_wait.as_mut() {
        Some(d) => d.set_then(Box::new(move || set(RUNSTATE_RUNNING))),
        None => set(RUNSTATE_RUNNING),
    }
    w
}

/// How a bounded wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// The condition held (or the deadline had passed) at once.
    Ready,
    /// It came true, or the deadline passed, after waiting.
    Blocked,
    /// Still false after [`MAX_POLL_WAIT`].
    Again,
}

/// Waits on the vCPU thread until `woken` or `deadline`, at most
/// [`MAX_POLL_WAIT`]. With [`Domain::defer_waits`] (several vCPUs share
/// the domain lock) a wait that would sleep is handed to the vCPU loop
/// instead ([`DeferredWait`]) and reported as [`Wait::Again`].
fn wait(dom: &mut Domain, deadline: Option<Instant>, woken: impl Fn() -> bool + Send + 'static) -> Wait {
    let start = Instant::now();
    let cap = start + MAX_POLL_WAIT;
    if dom.defer_waits {
        if woken() || deadline.is_some_and(|d| start >= d) {
            return Wait::Ready;
        }
        dom.deferred_wait = Some(DeferredWait::new(Box::new(woken), deadline, cap));
        return Wait::Again;
    }
    let mut waited = false;
    loop {
        let now = Instant::now();
        if woken() || deadline.is_some_and(|d| now >= d) {
            return if waited { Wait::Blocked } else { Wait::Ready };
        }
        if now >= cap {
            return Wait::Again;
        }
        waited = true;
        std::thread::sleep(POLL_STEP);
    }
}

/// Xen's `local_events_need_delivery()` for the calling vCPU, as a check
/// that needs no domain: its `evtchn_upcall_pending` is set and its
/// `evtchn_upcall_mask` clear.
fn events_deliverable(dom: &Domain) -> impl Fn() -> bool + Send + 'static {
    // The calling vCPU's `vcpu_info`, looked up at each check: another
    // vCPU may move it (`VCPUOP_register_vcpu_info`) during the wait.
    let (ev, vcpu, pvh) = (dom.evtchn.clone(), dom.current, dom.pvh.is_some());
    let ram = dom.ram.clone();
    move || {
        let at = ev.vcpu_info(vcpu).filter(|_| pvh);
        at.is_some_and(|at| matches!(ram.read_obj::<[u8; 2]>(at), Ok([pending, 0]) if pending != 0))
    }
}

/// Refreshes the pvclock in the shared-info page, if the guest placed it.
pub(crate) fn publish_clock(dom: &mut Domain) -> Result<(), i64> {
    let layout = dom.evtchn.layout();
    let vcpu_info = dom.evtchn.vcpu_info(0);
    let Some(pvh) = dom.pvh.as_mut() else { return Ok(()) };
    if pvh.placed[0].is_some() {
        pvh.publish_clock(&dom.ram, layout, vcpu_info)?;
    }
    Ok(())
}

/// Arms the one-shot timer at absolute system time `ns` (0 cancels) and
/// refreshes the pvclock.
pub fn arm(dom: &mut Domain, ns: u64) -> Result<(), i64> {
    let pvh = dom.pvh.as_mut().ok_or(ENOSYS)?;
    let deadline = (ns != 0).then(|| pvh.clock.boot + Duration::from_nanos(ns));
    // The calling vCPU's one-shot timer.
    if let Some(t) = &pvh.timer {
        t.set_for(dom.current, deadline);
    }
    publish_clock(dom)
}

/// How far ahead `set_timer_op` fires for a timeout it distrusts (Xen's
/// `MILLISECS(100)`).
pub const HUGE_TIMEOUT_DELAY_NS: u64 = 100_000_000;

/// `set_timer_op(timeout)`: absolute system time in ns (64-bit: `rdi`;
/// 32-bit: low half in `ebx`, high in `ecx`); 0 cancels. As Xen's
/// `do_set_timer_op()`, a negative timeout or one more than 2^50 ns ahead
/// (Linux's wrapped jiffies) fires in 100 ms instead.
pub fn set_timer_op(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    let ns = if dom.compat { a[0] | (a[1] << 32) } else { a[0] };
    let now = dom.pvh.as_ref().ok_or(ENOSYS)?.clock.now_ns();
    let offset = (ns as i64).wrapping_sub(now as i64);
    let huge = (ns as i64) < 0 || (offset > 0 && (offset >> 50) as u32 != 0);
    if huge {
        tracing::debug!(timeout = ns, "set_timer_op: huge timeout, firing in 100 ms");
    }
    arm(dom, if huge { now + HUGE_TIMEOUT_DELAY_NS } else { ns }).map(|()| 0)
}

/// Against `xen/include/public/sched.h` (`SCHEDOP_*`, `struct
/// sched_shutdown`, `struct sched_poll`) and `xen/common/sched/core.c`
/// (`do_sched_op`: `-ENOSYS` for unknown commands; `do_poll`: at most 128
/// ports and only valid ones, else `-EINVAL`, an early return when events
/// need delivery, else a block until an event or the timeout;
/// `vcpu_block_enable_events`: the upcall mask cleared before blocking;
/// `do_set_timer_op`: huge or negative timeouts fire in 100 ms).
#[cfg(test)]
mod tests {
    use crate::fake::{TestDomain, TEST_ARG, TEST_POOL};
    use pv_abi::errno::{EFAULT, EINVAL, ENOSPC, ENOSYS, EPERM, ESRCH};
    use pv_abi::event_channel::DOMID_SELF;
    use pv_abi::hypercall::nr;
    use pv_abi::hypercall::sched_op::{
        SchedPinOverride, SchedRemoteShutdown, SchedShutdown, SchedWatchdog, BLOCK, PIN_OVERRIDE, POLL,
        REMOTE_SHUTDOWN, SHUTDOWN, SHUTDOWN_CODE, SHUTDOWN_CRASH, SHUTDOWN_REBOOT, SHUTDOWN_WATCHDOG, WATCHDOG, YIELD,
    };
    use pv_abi::start_info::paging_mode;

    #[test]
    fn yield_and_block_return_at_once() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        assert_eq!(t.call(nr::SCHED_OP, [YIELD, 0, 0, 0, 0]), 0);
        assert_eq!(t.call(nr::SCHED_OP, [BLOCK, 0, 0, 0, 0]), 0);
        assert_eq!(t.dom.shutdown, None);
    }

    #[test]
    fn shutdown_records_the_reason_and_the_exit_code() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        t.put(TEST_ARG, &SchedShutdown { reason: SHUTDOWN_CRASH });
        assert_eq!(t.call(nr::SCHED_OP, [SHUTDOWN, TEST_ARG, 42, 0, 0]), 0);
        assert_eq!(t.dom.shutdown, Some(super::Shutdown { reason: SHUTDOWN_CRASH, code: 42 }));
    }

    /// `xen/common/sched/core.c` `do_sched_op()`: `domain_shutdown(d,
    /// (u8)sched_shutdown.reason)`; no other register is read.
    #[test]
    fn pvh_shutdown_keeps_only_the_low_byte_of_the_reason() {
        let mut t = TestDomain::pvh();
        t.put(TEST_ARG, &SchedShutdown { reason: 0x100 | SHUTDOWN_CRASH });
        assert_eq!(t.call(nr::SCHED_OP, [SHUTDOWN, TEST_ARG, 0xdead_beef, 0, 0]), 0);
        assert_eq!(t.dom.shutdown, Some(super::Shutdown { reason: SHUTDOWN_CRASH, code: 0 }));
        let mut t = TestDomain::pvh();
        t.put(TEST_ARG, &SchedShutdown { reason: 256 });
        assert_eq!(t.call(nr::SCHED_OP, [SHUTDOWN, TEST_ARG, 42, 0, 0]), 0);
        assert_eq!(t.dom.shutdown, Some(super::Shutdown { reason: 0, code: 0 }), "256 is poweroff");
    }

    /// `tools/xl/xl_vmcontrol.c` `handle_domain_death()` with the
    /// `tools/xl/xl_parse.c` defaults (`on_poweroff=destroy`,
    /// `on_reboot=restart`, `on_crash=destroy`, `on_watchdog=destroy`,
    /// `on_soft_reset=soft-reset`; unknown codes destroy) and the reason
    /// values of `xen/include/public/sched.h`.
    #[test]
    fn xen_reasons_map_to_the_toolstack_action() {
        use super::XenShutdown as X;
        let cases = [
            (0, X::Poweroff, 0),
            (1, X::Reboot, 0),
            (2, X::Suspend, 1),
            (3, X::Crash, 1),
            (4, X::Watchdog, 1),
            (5, X::SoftReset, 1),
            (6, X::Unknown(6), 1),
            (255, X::Unknown(255), 1),
            (0x100, X::Poweroff, 0),
            (0x103, X::Crash, 1),
        ];
        for (reason, action, status) in cases {
            let a = X::from_reason(reason);
            assert_eq!(a, action, "reason {reason:#x}");
            assert_eq!(a.exit_status(), status, "reason {reason:#x}");
            assert_eq!(a.error().is_some(), status != 0, "reason {reason:#x}");
        }
        assert_eq!(X::Unknown(9).error().unwrap(), "Unknown shutdown reason code 9. Destroying domain.");
        assert_eq!(X::SoftReset.name(), "soft_reset");
    }

    #[test]
    fn shutdown_with_an_unreadable_argument_is_efault_and_keeps_running() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        assert_eq!(t.call(nr::SCHED_OP, [SHUTDOWN, crate::fake::TEST_RAM - 2, 0, 0, 0]), -EFAULT);
        assert_eq!(t.call(nr::SCHED_OP, [SHUTDOWN, u64::MAX, 0, 0, 0]), -EFAULT);
        assert_eq!(t.dom.shutdown, None);
        // An input may come from the read-only pool: only outputs are refused there.
        let mut pv = TestDomain::new(paging_mode::PV);
        assert_eq!(pv.call(nr::SCHED_OP, [SHUTDOWN, TEST_POOL, 0, 0, 0]), 0);
    }

    /// `xen/common/sched/core.c` `do_sched_op()`: `SCHEDOP_shutdown_code`
    /// records `(u8)reason` once (later calls keep the first) and returns 0
    /// without stopping the domain; `domain_shutdown()`
    /// (`xen/common/domain.c`) then reports the recorded code, not the
    /// reason `SCHEDOP_shutdown` passes.
    #[test]
    fn shutdown_code_is_recorded_once_and_reported_by_the_shutdown() {
        let mut t = TestDomain::pvh();
        t.put(TEST_ARG, &SchedShutdown { reason: 0x100 | SHUTDOWN_REBOOT });
        assert_eq!(t.call(nr::SCHED_OP, [SHUTDOWN_CODE, TEST_ARG, 0, 0, 0]), 0);
        assert_eq!(t.dom.shutdown, None, "the domain keeps running");
        t.put(TEST_ARG, &SchedShutdown { reason: SHUTDOWN_CRASH });
        assert_eq!(t.call(nr::SCHED_OP, [SHUTDOWN_CODE, TEST_ARG, 0, 0, 0]), 0);
        t.put(TEST_ARG, &SchedShutdown { reason: 0 });
        assert_eq!(t.call(nr::SCHED_OP, [SHUTDOWN, TEST_ARG, 0, 0, 0]), 0);
        assert_eq!(t.dom.shutdown, Some(super::Shutdown { reason: SHUTDOWN_REBOOT, code: 0 }));
        // An unreadable argument: -EFAULT (copy_from_guest).
        let mut t = TestDomain::pvh();
        assert_eq!(t.call(nr::SCHED_OP, [SHUTDOWN_CODE, u64::MAX - 1, 0, 0, 0]), -EFAULT);
    }

    /// `do_sched_op()`: `SCHEDOP_remote_shutdown` names a domain by id
    /// (`rcu_lock_domain_by_id()`: unknown, including `DOMID_SELF`, is
    /// `-ESRCH`); `xsm_schedop_shutdown(XSM_DM_PRIV)` refuses a domU for
    /// any existing domain, itself included (`xen/include/xsm/dummy.h`);
    /// `SCHEDOP_pin_override` is `-EPERM` unless hardware domain.
    #[test]
    fn remote_shutdown_and_pin_override_are_refused_as_xen_refuses_a_domu() {
        let mut t = TestDomain::pvh();
        for (dom, want) in [(0u16, -EPERM), (1, -EPERM), (2, -ESRCH), (DOMID_SELF, -ESRCH)] {
            t.put(TEST_ARG, &SchedRemoteShutdown { domain_id: dom, _pad: 0, reason: 0 });
            assert_eq!(t.call(nr::SCHED_OP, [REMOTE_SHUTDOWN, TEST_ARG, 0, 0, 0]), want, "domain {dom}");
        }
        assert_eq!(t.dom.shutdown, None);
        t.put(TEST_ARG, &SchedPinOverride { pcpu: 0 });
        assert_eq!(t.call(nr::SCHED_OP, [PIN_OVERRIDE, TEST_ARG, 0, 0, 0]), -EPERM);
        assert_eq!(t.call(nr::SCHED_OP, [PIN_OVERRIDE, u64::MAX - 1, 0, 0, 0]), -EPERM, "checked before the read");
    }

    fn wd(t: &mut TestDomain, id: u32, timeout: u32) -> i64 {
        t.put(TEST_ARG, &SchedWatchdog { id, timeout });
        t.call(nr::SCHED_OP, [WATCHDOG, TEST_ARG, 0, 0, 0])
    }

    /// `domain_watchdog()` (`xen/common/sched/core.c`): id 0 creates (ids
    /// 1 and 2, then `-ENOSPC`); an id above `NR_DOMAIN_WATCHDOG_TIMERS`
    /// or of a free slot is `-EINVAL`; timeout 0 destroys; re-arming
    /// returns 0; an expiry shuts the domain down with `SHUTDOWN_watchdog`
    /// (`domain_watchdog_timeout()`).
    #[test]
    fn watchdogs_are_created_rearmed_destroyed_and_shut_the_domain_down() {
        let mut t = TestDomain::pvh();
        assert_eq!(wd(&mut t, 3, 10), -EINVAL, "id beyond the two slots");
        assert_eq!(wd(&mut t, 1, 10), -EINVAL, "not created");
        assert_eq!(wd(&mut t, 0, 100), 1);
        assert_eq!(wd(&mut t, 0, 100), 2);
        assert_eq!(wd(&mut t, 0, 100), -ENOSPC);
        assert_eq!(wd(&mut t, 2, 0), 0, "destroyed");
        assert_eq!(wd(&mut t, 2, 5), -EINVAL, "gone");
        assert_eq!(wd(&mut t, 0, 100), 2, "the slot is free again");
        assert_eq!(wd(&mut t, 1, 200), 0, "re-armed");
        assert!(!super::watchdog_expired(&mut t.dom), "nothing due");
        assert_eq!(t.dom.shutdown, None);
        // Re-arming with a passed expiry (timeout 0 at creation fires at
        // once, as Xen's `set_timer(NOW() + SECONDS(0))`).
        assert_eq!(wd(&mut t, 2, 0), 0);
        assert_eq!(wd(&mut t, 0, 0), 2);
        assert!(super::watchdog_expired(&mut t.dom));
        assert_eq!(t.dom.shutdown, Some(super::Shutdown { reason: SHUTDOWN_WATCHDOG, code: 0 }));
        assert!(!super::watchdog_expired(&mut t.dom), "once");
    }

    /// Our own guests (own ABI): the four commands stay `-ENOSYS`.
    #[test]
    fn the_xen_only_commands_are_enosys_for_our_own_guests() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        t.put(TEST_ARG, &SchedWatchdog { id: 0, timeout: 1 });
        for cmd in [REMOTE_SHUTDOWN, SHUTDOWN_CODE, WATCHDOG, PIN_OVERRIDE] {
            assert_eq!(t.call(nr::SCHED_OP, [cmd, TEST_ARG, 0, 0, 0]), -ENOSYS, "cmd {cmd}");
        }
    }

    #[test]
    fn unknown_commands_and_poll_for_our_own_guests_are_enosys() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        for cmd in [POLL, 8, 99, u64::MAX] {
            assert_eq!(t.call(nr::SCHED_OP, [cmd, TEST_ARG, 0, 0, 0]), -ENOSYS, "cmd {cmd}");
        }
        assert_eq!(t.call(nr::SET_TIMER_OP, [1, 0, 0, 0, 0]), -ENOSYS);
    }

    /// `struct sched_poll` (64-bit): ports handle, nr_ports, timeout.
    fn poll_arg(t: &TestDomain, ports: &[u32], timeout: u64) {
        let list = TEST_ARG + 0x100;
        for (i, p) in ports.iter().enumerate() {
            t.put(list + 4 * i as u64, p);
        }
        t.put(TEST_ARG, &[list, ports.len() as u64, timeout]);
    }

    #[test]
    fn poll_refuses_more_than_128_ports() {
        let mut t = TestDomain::pvh();
        poll_arg(&t, &[], 0);
        t.put(TEST_ARG + 8, &(super::MAX_POLL_PORTS as u64 + 1));
        assert_eq!(t.call(nr::SCHED_OP, [POLL, TEST_ARG, 0, 0, 0]), -EINVAL);
        assert_eq!(t.call(nr::SCHED_OP, [POLL, crate::fake::TEST_RAM, 0, 0, 0]), -EFAULT);
    }

    #[test]
    fn poll_returns_for_a_pending_port_or_a_passed_timeout() {
        let mut t = TestDomain::pvh();
        let port = t.dom.evtchn.bind_virq(pv_abi::hvm::VIRQ_TIMER, 0).unwrap();
        // A timeout of 1 ns after boot has passed: no wait.
        poll_arg(&t, &[port], 1);
        assert_eq!(t.call(nr::SCHED_OP, [POLL, TEST_ARG, 0, 0, 0]), 0);
        t.dom.evtchn.notify_virq(pv_abi::hvm::VIRQ_TIMER).unwrap();
        poll_arg(&t, &[port], 0);
        assert_eq!(t.call(nr::SCHED_OP, [POLL, TEST_ARG, 0, 0, 0]), 0);
        assert!(t.dom.evtchn.is_pending(port));
    }

    /// Sets vCPU 0's `evtchn_upcall_pending` and `evtchn_upcall_mask`.
    fn upcall(t: &TestDomain, pending: u8, mask: u8) {
        let si = t.dom.pvh.as_ref().unwrap().layout.shared_info();
        t.put(si, &[pending, mask]);
    }

    /// `do_poll()`: `evtchn_port_poll()` refuses a port the domain cannot have.
    #[test]
    fn poll_refuses_invalid_ports() {
        let mut t = TestDomain::pvh();
        poll_arg(&t, &[1, pv_abi::event_channel::MAX_PORTS], 1);
        assert_eq!(t.call(nr::SCHED_OP, [POLL, TEST_ARG, 0, 0, 0]), -EINVAL);
        poll_arg(&t, &[u32::MAX], 1);
        assert_eq!(t.call(nr::SCHED_OP, [POLL, TEST_ARG, 0, 0, 0]), -EINVAL);
    }

    /// `do_poll()`: `local_events_need_delivery()` ends the poll at once,
    /// even for ports not named; a masked upcall does not.
    #[test]
    fn poll_returns_at_once_when_an_event_is_deliverable() {
        let mut t = TestDomain::pvh();
        poll_arg(&t, &[5], 0);
        upcall(&t, 1, 0);
        assert_eq!(t.call(nr::SCHED_OP, [POLL, TEST_ARG, 0, 0, 0]), 0);
        assert_eq!(t.dom.continuation, None, "no wait");
        assert_eq!(t.dom.work_left, crate::preempt::WORK_PER_EXIT, "nothing blocked");
        upcall(&t, 1, 1);
        assert_eq!(t.call(nr::SCHED_OP, [POLL, TEST_ARG, 0, 0, 0]), 0);
        assert!(t.dom.continuation.is_some(), "a masked upcall does not wake the poll");
    }

    /// `do_poll()` blocks until an event or the timeout: with neither, the
    /// exit ends with the poll continued (the guest re-enters it) and the
    /// exit's budget spent.
    #[test]
    fn poll_with_nothing_pending_continues_itself() {
        let mut t = TestDomain::pvh();
        poll_arg(&t, &[5], 1 << 62);
        assert_eq!(t.call(nr::SCHED_OP, [POLL, TEST_ARG, 0, 0, 0]), 0);
        assert_eq!(t.dom.continuation, Some([POLL, TEST_ARG, 0, 0, 0]));
        assert_eq!(t.dom.work_left, 0);
        // With no timeout at all, likewise.
        poll_arg(&t, &[], 0);
        assert_eq!(t.call(nr::SCHED_OP, [POLL, TEST_ARG, 0, 0, 0]), 0);
        assert_eq!(t.dom.continuation, Some([POLL, TEST_ARG, 0, 0, 0]));
    }

    /// A multicall of 256 polls with far timeouts: one exit waits once and
    /// ends with the multicall continued at the waiting entry; a poll whose
    /// timeout passed while it waited ends the exit after that entry.
    #[test]
    fn a_multicall_of_blocking_polls_ends_the_exit_after_one_wait() {
        use pv_abi::multicall::MulticallEntry;
        let mut t = TestDomain::pvh();
        let size = std::mem::size_of::<MulticallEntry>() as u64;
        let list = TEST_ARG + 0x1000;
        poll_arg(&t, &[5], 1 << 62);
        for i in 0..256 {
            t.put(list + i * size, &MulticallEntry::new(nr::SCHED_OP, [POLL, TEST_ARG, 0, 0, 0, 0]));
        }
        assert_eq!(t.call(nr::MULTICALL, [list, 256, 0, 0, 0]), 0);
        assert_eq!(t.dom.continuation, Some([list, 256, 0, 0, 0]), "continued at entry 0");
        // The first poll times out 2 ms from now: the exit ends after it.
        let now = t.dom.pvh.as_ref().unwrap().clock.now_ns();
        poll_arg(&t, &[5], now + 2_000_000);
        assert_eq!(t.call(nr::MULTICALL, [list, 256, 0, 0, 0]), 0);
        assert_eq!(t.dom.continuation, Some([list + size, 255, 0, 0, 0]), "continued at entry 1");
        assert_eq!(t.get::<MulticallEntry>(list).result, 0, "entry 0 done");
    }

    /// `vcpu_block_enable_events()`: the mask is cleared, and a pending
    /// upcall returns at once.
    #[test]
    fn block_clears_the_upcall_mask_and_returns_for_a_pending_event() {
        let mut t = TestDomain::pvh();
        upcall(&t, 1, 1);
        assert_eq!(t.call(nr::SCHED_OP, [BLOCK, 0, 0, 0, 0]), 0);
        let si = t.dom.pvh.as_ref().unwrap().layout.shared_info();
        assert_eq!(t.get::<[u8; 2]>(si), [1, 0], "mask cleared, pending kept");
        assert_eq!(t.dom.work_left, crate::preempt::WORK_PER_EXIT, "no wait");
        // Nothing pending: it waits (and spends the exit), then returns.
        upcall(&t, 0, 1);
        assert_eq!(t.call(nr::SCHED_OP, [BLOCK, 0, 0, 0, 0]), 0);
        assert_eq!((t.get::<[u8; 2]>(si), t.dom.work_left), ([0, 0], 0));
    }

    /// With several vCPUs (`defer_waits`) `SCHEDOP_block`
    /// (`vcpu_block_enable_events()`, `xen/common/sched/core.c`) and
    /// `SCHEDOP_poll` (`do_poll()`) do not sleep in the handler, under the
    /// domain lock: block returns 0 and leaves the wait to the vCPU loop,
    /// which ends at the calling vCPU's next event; poll leaves the wait
    /// and re-enters itself; nothing is deferred when an event is there.
    #[test]
    fn with_several_vcpus_block_and_poll_wait_outside_the_handler() {
        let mut t = TestDomain::pvh();
        t.dom.defer_waits = true;
        t.dom.current = 1;
        upcall(&t, 0, 1);
        let si = t.dom.pvh.as_ref().unwrap().layout.shared_info();
        // vCPU 0's event does not wake vCPU 1.
        t.dom.ram.write_obj(si, &[1u8, 0]).unwrap();
        assert_eq!(t.call(nr::SCHED_OP, [BLOCK, 0, 0, 0, 0]), 0);
        let w = t.dom.deferred_wait.take().expect("the wait is left to the vCPU loop");
        assert_eq!(t.get::<[u8; 2]>(si + 64), [0, 0], "vCPU 1's mask cleared");
        let ram = t.dom.ram.clone();
        let waker = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(5));
            ram.write_obj(si + 64, &1u8).unwrap();
        });
        w.wait();
        waker.join().unwrap();
        assert_eq!(t.get::<u8>(si + 64), 1, "woken by vCPU 1's event (or the 50 ms cap)");
        // Pending for vCPU 1 now: no deferral.
        assert_eq!(t.call(nr::SCHED_OP, [BLOCK, 0, 0, 0, 0]), 0);
        assert!(t.dom.deferred_wait.is_none());
        // A poll on a port that is not pending: deferred and continued.
        t.dom.ram.write_obj(si + 64, &0u8).unwrap();
        poll_arg(&t, &[5], 0);
        assert_eq!(t.call(nr::SCHED_OP, [POLL, TEST_ARG, 0, 0, 0]), 0);
        assert!(t.dom.deferred_wait.is_some());
        assert!(t.dom.continuation.is_some() || t.dom.work_left == 0, "re-entered after the wait");
    }

    /// `do_set_timer_op()` (`xen/common/sched/core.c`): a negative timeout
    /// or one more than 2^50 ns ahead fires in 100 ms, not never.
    #[test]
    fn set_timer_op_fires_soon_for_negative_or_huge_timeouts() {
        for (timeout, compat) in [(1u64 << 63, false), (1 << 62, false), (u64::MAX, true)] {
            let mut t = TestDomain::pvh();
            let timer = crate::timer::Timer::start(t.dom.evtchn.clone(), || {}).unwrap();
            t.dom.pvh.as_mut().unwrap().timer = Some(timer);
            let port = t.dom.evtchn.bind_virq(pv_abi::hvm::VIRQ_TIMER, 0).unwrap();
            t.dom.compat = compat;
            let args = if compat { [timeout & 0xffff_ffff, timeout >> 32, 0, 0, 0] } else { [timeout, 0, 0, 0, 0] };
            assert_eq!(t.call(nr::SET_TIMER_OP, args), 0);
            let fired = (0..5000).any(|_| {
                std::thread::sleep(std::time::Duration::from_millis(1));
                t.dom.evtchn.is_pending(port)
            });
            assert!(fired, "timeout {timeout:#x} compat {compat}");
        }
    }

    #[test]
    fn set_timer_op_arms_for_pvh_guests() {
        let mut t = TestDomain::pvh();
        assert_eq!(t.call(nr::SET_TIMER_OP, [1_000_000, 0, 0, 0, 0]), 0);
        assert_eq!(t.call(nr::SET_TIMER_OP, [0, 0, 0, 0, 0]), 0, "0 cancels");
    }
}
