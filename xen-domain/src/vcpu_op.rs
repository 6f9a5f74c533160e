//! `vcpu_op` (Xen's `xen/common/domain.c` `common_vcpu_op`,
//! `xen/arch/x86/domain.c` `do_vcpu_op`, `xen/include/public/vcpu.h`):
//! bringing secondary vCPUs up and down (`VCPUOP_initialise` with a
//! `vcpu_hvm_context`, `up`, `down`, `is_up`, over
//! [`crate::vcpus::VcpuSet`]), the runstate (`get_runstate_info`,
//! `register_runstate_memory_area`), moving a `vcpu_info` out of the
//! shared-info page (`register_vcpu_info`) and, for PVH guests, each
//! vCPU's single-shot and periodic timers.
//!
//! Our own (non-PVH) guests get the same bring-up as a documented project
//! extension (docs/smp.md): `VCPUOP_initialise` takes Xen's
//! `vcpu_hvm_context` in its 64-bit mode only (they run in long mode), and
//! in the validated paging modes (`trapped`, `pv`) its CR3 must be a
//! pinned L4 or the VMM's boot tables, as Xen's `arch_set_info_guest()`
//! makes a PV vCPU's CR3 take the root page-table type. They have no Xen
//! clock, so the timer commands stay `-ENOSYS` for them (their per-vCPU
//! timer is the vCPU's own local-APIC timer).

use crate::domain::{Domain, HcResult};
use crate::runstate::{runstate_setter, write_runstate_area};
use crate::sched_op::arm;
use pv_abi::errno::{EBUSY, EINVAL, ENOENT, ENOSYS, ENXIO};
use pv_abi::hvm::vcpu_hvm::VcpuHvmContext;
use pv_abi::hvm::VIRQ_TIMER;
use pv_abi::hypercall::vcpu_op;
use pv_abi::hypercall::vcpu_op::{CompatVcpuRunstateInfo, VcpuRegisterRunstateMemoryArea, VcpuRegisterVcpuInfo};
use pv_abi::start_info::paging_mode;
use std::time::Duration;

/// Shortest period `VCPUOP_set_periodic_timer` accepts (Xen's
/// `MILLISECS(1)`).
pub const MIN_PERIOD_NS: u64 = 1_000_000;
/// Longest period (Xen's `STIME_DELTA_MAX`, the largest `s_time_t`).
pub const MAX_PERIOD_NS: u64 = i64::MAX as u64;

/// `vcpu_op(cmd, vcpu, arg)`.
pub fn vcpu_op(dom: &mut Domain, a: &[u64; 5]) -> HcResult {
    // `do_vcpu_op`: a vCPU the domain does not have.
    let Some(id) = u32::try_from(a[1]).ok().filter(|&id| id < dom.vcpus.count()) else {
        return Err(ENOENT);
    };
    match a[0] {
        vcpu_op::INITIALISE => initialise(dom, id, a[2]),
        vcpu_op::UP => up(dom, id),
        vcpu_op::DOWN => down(dom, id),
        vcpu_op::IS_UP => dom.vcpus.is_up(id).map(u64::from),
        vcpu_op::GET_RUNSTATE_INFO => get_runstate_info(dom, id, a[2]),
        vcpu_op::REGISTER_RUNSTATE_MEMORY_AREA => register_runstate_area(dom, id, a[2]),
        vcpu_op::REGISTER_VCPU_INFO => register_vcpu_info(dom, id, a[2]),
        // Our own guests have no Xen clock: no Xen timers (module docs).
        _ if dom.pvh.is_none() => Err(ENOSYS),
        // `common_vcpu_op`: the single-shot timer is the caller's own.
        vcpu_op::SET_SINGLESHOT_TIMER | vcpu_op::STOP_SINGLESHOT_TIMER if id != dom.current => Err(EINVAL),
        vcpu_op::SET_SINGLESHOT_TIMER => set_singleshot(dom, a[2]),
        vcpu_op::STOP_SINGLESHOT_TIMER => arm(dom, 0).map(|()| 0),
        vcpu_op::SET_PERIODIC_TIMER => {
            // struct vcpu_set_periodic_timer { uint64_t period_ns; }
            let raw = dom.ram.read_vec(a[2], 8)?;
            let period = u64::from_le_bytes(raw[..].try_into().expect("8 bytes"));
            if !(MIN_PERIOD_NS..=MAX_PERIOD_NS).contains(&period) {
                return Err(EINVAL);
            }
            set_periodic(dom, id, Some(Duration::from_nanos(period)));
            Ok(0)
        }
        vcpu_op::STOP_PERIODIC_TIMER => {
            set_periodic(dom, id, None);
            Ok(0)
        }
        _ => Err(ENOSYS),
    }
}

/// `VCPUOP_initialise` (`arch_initialise_vcpu`): reads the
/// `vcpu_hvm_context` (`-EFAULT`), checks it (`-EINVAL`,
/// `arch_set_info_hvm_guest`; for our own guests also
/// [`check_own_guest_context`]) and records it unless the vCPU is already
/// initialised (`-EEXIST`; the check comes after the copy, as in Xen).
fn initialise(dom: &mut Domain, id: u32, arg: u64) -> HcResult {
    let ctx: VcpuHvmContext = dom.ram.read_obj(arg)?;
    let state = crate::hvm_context::from_hvm_context(&ctx);
    if dom.vcpus.is_initialised(id) {
        return Err(pv_abi::errno::EEXIST);
    }
    let state = state?;
    if dom.pvh.is_none() {
        check_own_guest_context(dom, id, &state)?;
    }
    dom.vcpus.initialise(id, state).map(|()| 0)
}

/// Our own guests' extra rules for a new vCPU's state (module docs): long
/// mode (`-EINVAL` otherwise: the 32-bit layout is refused); CR3 inside
/// RAM; in the validated paging modes CR3 a pinned L4 (then recorded as
/// the vCPU's base, so it cannot be unpinned under it) or the VMM's boot
/// tables (the domain builder's, which the guest cannot write without the
/// validator either), else `-EINVAL` as `arch_set_info_guest()` when the
/// page cannot become a root page table.
fn check_own_guest_context(dom: &mut Domain, id: u32, c: &crate::hvm_context::VcpuContext) -> Result<(), i64> {
    let cr3 = c.cr3 & pv_abi::mmu::pte::ADDR_MASK;
    if c.efer & crate::hvm_context::EFER_LMA == 0 || dom.ram.read_obj::<u64>(cr3).is_err() {
        return Err(EINVAL);
    }
    if dom.paging.mode == paging_mode::NATIVE || cr3 == pv_abi::layout::BOOT_PML4 {
        return Ok(());
    }
    if !dom.paging.is_pinned_l4(cr3) {
        return Err(EINVAL);
    }
    dom.paging.set_base(id, cr3);
    Ok(())
}

/// `VCPUOP_up`: starts `id` (runstate running from now on).
fn up(dom: &mut Domain, id: u32) -> HcResult {
    let was_up = dom.vcpus.is_up(id)?;
    dom.vcpus.up(id)?;
    if !was_up {
        runstate_setter(dom, id)(vcpu_op::RUNSTATE_RUNNING);
    }
    Ok(0)
}

/// `VCPUOP_down`: stops `id` (runstate offline), or, if it is the last
/// vCPU up, shuts the domain down (`SHUTDOWN_poweroff`) and returns 0.
fn down(dom: &mut Domain, id: u32) -> HcResult {
    let was_up = dom.vcpus.is_up(id)?;
    if dom.vcpus.down(id)? {
        crate::sched_op::domain_shutdown(dom, pv_abi::hypercall::sched_op::SHUTDOWN_POWEROFF as u8);
    } else if was_up {
        runstate_setter(dom, id)(vcpu_op::RUNSTATE_OFFLINE);
    }
    Ok(0)
}

/// Xen's system time now (ns since boot; 0 without a PVH clock).
fn now_ns(dom: &Domain) -> u64 {
    dom.pvh.as_ref().map_or(0, |p| p.clock.now_ns())
}

/// `VCPUOP_get_runstate_info` (`vcpu_runstate_get()`): `id`'s runstate,
/// the current state's time counted up to now; `-EFAULT` if it cannot be
/// copied out (44 bytes for a 32-bit caller, `compat_vcpu_op()`).
fn get_runstate_info(dom: &mut Domain, id: u32, arg: u64) -> HcResult {
    let r = dom.vcpus.runstate(id, now_ns(dom)).ok_or(ENOENT)?;
    if dom.compat {
        dom.ram.copy_obj_to_guest(arg, &CompatVcpuRunstateInfo::from(r))?;
    } else {
        dom.ram.copy_obj_to_guest(arg, &r)?;
    }
    Ok(0)
}

/// `VCPUOP_register_runstate_memory_area`: records the guest address
/// (a 32-bit handle for a 32-bit caller; 0 unregisters) and writes the
/// runstate there now. Only reading the argument can fail (`-EFAULT`):
/// for an HVM caller `guest_handle_okay()` always holds and the copy's
/// result is ignored.
fn register_runstate_area(dom: &mut Domain, id: u32, arg: u64) -> HcResult {
    let a: VcpuRegisterRunstateMemoryArea = dom.ram.read_obj(arg)?;
    let addr = if dom.compat { a.addr & 0xffff_ffff } else { a.addr };
    dom.vcpus.set_runstate_area(id, addr, dom.compat);
    let r = dom.vcpus.runstate(id, now_ns(dom)).ok_or(ENOENT)?;
    write_runstate_area(&dom.ram, (addr, dom.compat), r);
    Ok(0)
}

/// `VCPUOP_register_vcpu_info` (`common_vcpu_op()` + `map_guest_area()`,
/// `xen/common/domain.c`): `{u64 mfn; u32 offset; u32 rsvd}`. An offset
/// leaving the frame (or an address overflowing) is `-EINVAL`; a second
/// registration `-EBUSY`; a `vcpu_info` crossing the page or misaligned
/// (8 bytes, 4 with the x86_32 shared-info layout) `-ENXIO`; a frame
/// without a RAM page `-EINVAL` (`check_get_page_from_gfn()`).
fn register_vcpu_info(dom: &mut Domain, id: u32, arg: u64) -> HcResult {
    const PAGE: u64 = 4096;
    let a: VcpuRegisterVcpuInfo = dom.ram.read_obj(arg)?;
    let gaddr = (a.mfn << 12).wrapping_add(u64::from(a.offset));
    if gaddr == u64::MAX || gaddr >> 12 != a.mfn {
        return Err(EINVAL);
    }
    // Preliminary check, as Xen's; `register_vcpu_info` checks again.
    if dom.evtchn.vcpu_info_registered(id) {
        return Err(EBUSY);
    }
    let size = std::mem::size_of::<pv_abi::shared_info::VcpuInfo>() as u64;
    let align = dom.evtchn.layout().word_bytes as u64;
    if gaddr / PAGE != (gaddr + size - 1) / PAGE || gaddr % align != 0 {
        return Err(ENXIO);
    }
    if !is_ram_page(dom, a.mfn) {
        return Err(EINVAL);
    }
    dom.evtchn.register_vcpu_info(id, gaddr)?;
    // `force_update_vcpu_system_time()`: vCPU 0's pvclock at its new home.
    if id == 0 && dom.pvh.is_some() {
        crate::sched_op::publish_clock(dom)?;
    }
    Ok(0)
}

/// Whether guest frame `mfn` is a RAM page of the guest
/// (`check_get_page_from_gfn()`): a PVH guest's reservation; for our own
/// guests their RAM from `KERNEL_BASE` up, outside the page-table pool.
fn is_ram_page(dom: &Domain, mfn: u64) -> bool {
    match &dom.pvh {
        Some(pvh) => pvh.reservation.has_page(mfn),
        None => mfn.checked_mul(4096).is_some_and(|gpa| {
            gpa >= pv_abi::layout::KERNEL_BASE && !dom.paging.in_pool(gpa) && dom.ram.read_obj::<u8>(gpa).is_ok()
        }),
    }
}

/// `VCPUOP_set_singleshot_timer`: `{u64 timeout_abs_ns; u32 flags}`, 16
/// bytes (12 in the compat layout, where the `u64` is 4-byte aligned).
fn set_singleshot(dom: &mut Domain, arg: u64) -> HcResult {
    let raw = dom.ram.read_vec(arg, if dom.compat { 12 } else { 16 })?;
    let ns = u64::from_le_bytes(raw[..8].try_into().expect("8 bytes"));
    let now = dom.pvh.as_ref().map(|p| p.clock.now_ns()).unwrap_or(0);
    if ns >= now {
        return arm(dom, ns.max(1)).map(|()| 0);
    }
    // `vcpu.h` lets the hypervisor refuse a past deadline under
    // `VCPU_SSHOTTMR_future` (older Xen's `-ETIME`); current Xen's
    // `common_vcpu_op()` ignores the flag, and so do we.
    // `common_vcpu_op`: an expired deadline stops the timer and sends the
    // event now (`send_timer_event`).
    arm(dom, 0)?;
    if let Err(e) = dom.evtchn.notify_vcpu_virq(VIRQ_TIMER, dom.current) {
        tracing::debug!("vcpu_op: cannot raise VIRQ_TIMER: {e}");
    }
    Ok(0)
}

/// vCPU `id`'s periodic timer (any vCPU may set another's, as in Xen).
fn set_periodic(dom: &mut Domain, id: u32, period: Option<Duration>) {
    if let Some(t) = dom.pvh.as_ref().and_then(|p| p.timer.as_ref()) {
        t.set_periodic_for(id, period);
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
    use pv_abi::hypercall::vcpu_op::VcpuRunstateInfo;
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

    /// Our own guests (docs/smp.md, a project extension of
    /// `xen/include/public/vcpu.h` `VCPUOP_initialise`): a 64-bit
    /// `vcpu_hvm_context` brings a vCPU up; the 32-bit layout is
    /// `-EINVAL`, as is a CR3 outside RAM (`arch_set_info_hvm_guest()`'s
    /// `get_page_from_gfn()` of CR3); timers stay `-ENOSYS` (no Xen clock).
    #[test]
    fn our_own_guests_bring_up_vcpus_with_a_64_bit_context() {
        use vcpu_op::{INITIALISE, IS_UP, UP};
        let mut t = own(paging_mode::NATIVE, 3);
        put_ctx64_cr3(&t, 0x10_0000, crate::fake::TEST_RAM);
        assert_eq!(t.call(nr::VCPU_OP, [INITIALISE, 1, TEST_ARG, 0, 0]), -EINVAL, "CR3 outside RAM");
        use crate::hvm_context::tests::{ctx32, good32};
        t.put(TEST_ARG, &ctx32(good32()));
        assert_eq!(t.call(nr::VCPU_OP, [INITIALISE, 1, TEST_ARG, 0, 0]), -EINVAL, "32-bit state");
        put_ctx64_cr3(&t, 0x10_0000, pv_abi::layout::BOOT_PML4);
        assert_eq!(t.call(nr::VCPU_OP, [INITIALISE, 1, TEST_ARG, 0, 0]), 0);
        assert_eq!(t.call(nr::VCPU_OP, [UP, 1, 0, 0, 0]), 0);
        assert_eq!(t.call(nr::VCPU_OP, [IS_UP, 1, 0, 0, 0]), 1);
        assert_eq!(t.call(nr::VCPU_OP, [IS_UP, 3, 0, 0, 0]), -ENOENT);
        for cmd in [SET_SINGLESHOT_TIMER, SET_PERIODIC_TIMER, STOP_SINGLESHOT_TIMER, STOP_PERIODIC_TIMER] {
            assert_eq!(t.call(nr::VCPU_OP, [cmd, 0, TEST_ARG, 0, 0]), -ENOSYS, "timer cmd {cmd}");
        }
    }

    /// In the validated paging modes a new vCPU's CR3 must be able to
    /// become a root page table (`arch_set_info_guest()` in
    /// `xen/arch/x86/domain.c`: `-EINVAL` otherwise): a pinned L4 (or the
    /// VMM's boot tables). The pinned L4 is then that vCPU's base and
    /// cannot be unpinned (`MMUEXT_UNPIN_TABLE` of a table in use).
    #[test]
    fn validated_modes_need_a_pinned_l4_as_cr3() {
        use crate::fake::TEST_POOL;
        use pv_abi::mmu::{mmu_err, MmuextOp, MMUEXT_PIN_L4_TABLE, MMUEXT_UNPIN_TABLE};
        for mode in [paging_mode::PV, paging_mode::TRAPPED] {
            let mut t = own(mode, 3);
            put_ctx64_cr3(&t, 0x10_0000, TEST_POOL);
            assert_eq!(t.call(nr::VCPU_OP, [vcpu_op::INITIALISE, 1, TEST_ARG, 0, 0]), -EINVAL, "not pinned");
            put_ctx64_cr3(&t, 0x10_0000, 0x30_0000);
            assert_eq!(t.call(nr::VCPU_OP, [vcpu_op::INITIALISE, 1, TEST_ARG, 0, 0]), -EINVAL, "not in the pool");
            assert!(!t.dom.vcpus.is_initialised(1), "a refused state is not kept");
            t.put(TEST_ARG + 0x100, &MmuextOp::with_mfn(MMUEXT_PIN_L4_TABLE, TEST_POOL >> 12));
            assert_eq!(t.call(nr::MMUEXT_OP, [TEST_ARG + 0x100, 1, 0, 0x7ff0, 0]), 0);
            put_ctx64_cr3(&t, 0x10_0000, TEST_POOL);
            assert_eq!(t.call(nr::VCPU_OP, [vcpu_op::INITIALISE, 1, TEST_ARG, 0, 0]), 0);
            assert_eq!((t.dom.paging.base(0), t.dom.paging.base(1)), (None, Some(TEST_POOL)));
            t.put(TEST_ARG + 0x100, &MmuextOp::with_mfn(MMUEXT_UNPIN_TABLE, TEST_POOL >> 12));
            assert_eq!(t.call(nr::MMUEXT_OP, [TEST_ARG + 0x100, 1, 0, 0x7ff0, 0]), -mmu_err::IN_USE);
            put_ctx64_cr3(&t, 0x10_0000, pv_abi::layout::BOOT_PML4);
            assert_eq!(t.call(nr::VCPU_OP, [vcpu_op::INITIALISE, 2, TEST_ARG, 0, 0]), 0, "boot tables");
        }
    }

    /// `MMUEXT_NEW_BASEPTR` (`xen/arch/x86/mm.c`, `new_guest_cr3()`)
    /// changes the calling vCPU's base only; a table any vCPU runs on
    /// stays in use.
    #[test]
    fn each_vcpu_has_its_own_base() {
        use crate::fake::TEST_POOL;
        use pv_abi::mmu::{mmu_err, MmuextOp, MMUEXT_NEW_BASEPTR, MMUEXT_PIN_L4_TABLE, MMUEXT_UNPIN_TABLE};
        let mut t = own(paging_mode::PV, 2);
        let (a, b) = (TEST_POOL, TEST_POOL + 0x1000);
        let ext = |t: &mut TestDomain, vcpu: u32, cmd: u32, gpa: u64| {
            t.dom.current = vcpu;
            t.put(TEST_ARG, &MmuextOp::with_mfn(cmd, gpa >> 12));
            t.call(nr::MMUEXT_OP, [TEST_ARG, 1, 0, 0x7ff0, 0])
        };
        assert_eq!(ext(&mut t, 0, MMUEXT_PIN_L4_TABLE, a), 0);
        assert_eq!(ext(&mut t, 0, MMUEXT_PIN_L4_TABLE, b), 0);
        assert_eq!(ext(&mut t, 0, MMUEXT_NEW_BASEPTR, a), 0);
        assert_eq!(ext(&mut t, 1, MMUEXT_NEW_BASEPTR, b), 0);
        assert_eq!((t.dom.paging.base(0), t.dom.paging.base(1)), (Some(a), Some(b)));
        assert_eq!(ext(&mut t, 0, MMUEXT_UNPIN_TABLE, b), -mmu_err::IN_USE, "vCPU 1 runs on it");
        assert_eq!(ext(&mut t, 1, MMUEXT_NEW_BASEPTR, a), 0);
        assert_eq!(ext(&mut t, 0, MMUEXT_UNPIN_TABLE, b), 0, "no vCPU runs on it now");
    }

    /// One of our own guests' domains with `n` vCPUs.
    fn own(mode: u32, n: u32) -> TestDomain {
        let mut t = TestDomain::new(mode);
        t.dom.vcpus = std::sync::Arc::new(crate::vcpus::VcpuSet::new(n));
        t
    }

    /// A 64-bit `vcpu_hvm_context` (paging on) with `cr3` at `TEST_ARG`.
    fn put_ctx64_cr3(t: &TestDomain, rip: u64, cr3: u64) {
        use pv_abi::hvm::vcpu_hvm::{VcpuHvmX86_64, MODE_64B};
        let r = VcpuHvmX86_64 { rip, cr0: (1 << 31) | 1, cr3, cr4: 1 << 5, efer: 1 << 8, ..Default::default() };
        let mut regs = [0u64; 15];
        regs[..14].copy_from_slice(&pv_abi::pod::from_bytes::<[u64; 14]>(pv_abi::pod::as_bytes(&r)).unwrap());
        t.put(TEST_ARG, &VcpuHvmContext { mode: MODE_64B, pad: 0, cpu_regs: regs });
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

    /// `common_vcpu_op()` (`xen/common/domain.c`): a deadline in the past
    /// stops the timer and sends `VIRQ_TIMER` at once, returning 0, with or
    /// without `VCPU_SSHOTTMR_future` (ignored: `public/vcpu.h` allows it).
    #[test]
    fn a_past_singleshot_deadline_raises_virq_timer_now_whatever_the_future_flag() {
        for flags in [vcpu_op::SSHOTTMR_FUTURE, 0] {
            let mut t = TestDomain::pvh();
            let port = t.dom.evtchn.bind_virq(VIRQ_TIMER, 0).unwrap();
            std::thread::sleep(Duration::from_millis(1));
            timer_arg(&t, 1, flags);
            assert_eq!(t.call(nr::VCPU_OP, [SET_SINGLESHOT_TIMER, 0, TEST_ARG, 0, 0]), 0, "flags {flags}");
            assert!(t.dom.evtchn.is_pending(port), "flags {flags}: the event is sent at once, in the hypercall");
        }
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
        for cmd in [11, 99, u64::MAX] {
            assert_eq!(t.call(nr::VCPU_OP, [cmd, 0, TEST_ARG, 0, 0]), -ENOSYS, "cmd {cmd}");
        }
    }

    fn smp(n: u32) -> TestDomain {
        let mut t = TestDomain::pvh();
        t.dom.vcpus = std::sync::Arc::new(crate::vcpus::VcpuSet::new(n));
        t
    }

    /// A 64-bit `vcpu_hvm_context` at `TEST_ARG` (`hvm_vcpu.h`).
    fn put_ctx64(t: &TestDomain, rip: u64, cr0: u64) {
        use pv_abi::hvm::vcpu_hvm::{VcpuHvmX86_64, MODE_64B};
        let r = VcpuHvmX86_64 { rip, cr0, cr3: 0x1000, cr4: 1 << 5, efer: 1 << 8, ..Default::default() };
        let mut regs = [0u64; 15];
        regs[..14].copy_from_slice(&pv_abi::pod::from_bytes::<[u64; 14]>(pv_abi::pod::as_bytes(&r)).unwrap());
        t.put(TEST_ARG, &VcpuHvmContext { mode: MODE_64B, pad: 0, cpu_regs: regs });
    }

    /// `common_vcpu_op` (`xen/common/domain.c`): each vCPU has its own
    /// timers and `VIRQ_TIMER`; the single-shot timer of another vCPU is
    /// `-EINVAL` (`v != current`), the periodic one may be set for any.
    #[test]
    fn timers_fire_on_the_vcpu_that_armed_them() {
        let mut t = with_timer();
        t.dom.vcpus = std::sync::Arc::new(crate::vcpus::VcpuSet::new(2));
        t.dom.evtchn.set_vcpus(2);
        let p0 = t.dom.evtchn.bind_virq(VIRQ_TIMER, 0).unwrap();
        let p1 = t.dom.evtchn.bind_virq(VIRQ_TIMER, 1).unwrap();
        t.dom.current = 1;
        timer_arg(&t, 1, 0);
        assert_eq!(t.call(nr::VCPU_OP, [SET_SINGLESHOT_TIMER, 0, TEST_ARG, 0, 0]), -EINVAL, "not the caller");
        assert_eq!(t.call(nr::VCPU_OP, [STOP_SINGLESHOT_TIMER, 0, 0, 0, 0]), -EINVAL);
        let now = t.dom.pvh.as_ref().unwrap().clock.now_ns();
        timer_arg(&t, now + 2_000_000, 0);
        assert_eq!(t.call(nr::VCPU_OP, [SET_SINGLESHOT_TIMER, 1, TEST_ARG, 0, 0]), 0);
        assert!(becomes_pending(&t, p1), "vCPU 1's VIRQ_TIMER");
        assert!(!t.dom.evtchn.is_pending(p0), "not vCPU 0's");
        // vCPU 0 starts vCPU 1's periodic timer... and vCPU 0 gets nothing.
        t.dom.current = 0;
        t.put(TEST_ARG, &MIN_PERIOD_NS);
        let si = t.dom.pvh.as_ref().unwrap().layout.shared_info();
        t.dom.ram.write_obj(si + t.dom.evtchn.layout().pending as u64, &0u64).unwrap();
        assert_eq!(t.call(nr::VCPU_OP, [SET_PERIODIC_TIMER, 1, TEST_ARG, 0, 0]), 0);
        assert!(becomes_pending(&t, p1));
        assert!(!t.dom.evtchn.is_pending(p0));
        assert_eq!(t.call(nr::VCPU_OP, [STOP_PERIODIC_TIMER, 1, 0, 0, 0]), 0);
    }

    /// `common_vcpu_op` / `arch_initialise_vcpu` (`xen/common/domain.c`,
    /// `xen/arch/x86/domain.c`): ids beyond the domain's vCPUs are
    /// `-ENOENT`; up before initialise `-EINVAL`; a second initialise
    /// `-EEXIST`; a bad context `-EINVAL` (`xen/arch/x86/hvm/domain.c`);
    /// an unreadable one `-EFAULT`; `is_up` answers 0/1.
    #[test]
    fn initialise_up_is_up_and_their_refusals() {
        use pv_abi::errno::{EEXIST, EFAULT};
        use vcpu_op::{INITIALISE, IS_UP, UP};
        let mut t = smp(2);
        put_ctx64(&t, 0x10_0000, (1 << 31) | 1);
        for (cmd, vcpu) in [(INITIALISE, 2), (UP, 2), (IS_UP, 32), (INITIALISE, u64::MAX), (IS_UP, 1 << 32)] {
            assert_eq!(t.call(nr::VCPU_OP, [cmd, vcpu, TEST_ARG, 0, 0]), -ENOENT, "cmd {cmd} vcpu {vcpu}");
        }
        assert_eq!(t.call(nr::VCPU_OP, [IS_UP, 0, 0, 0, 0]), 1);
        assert_eq!(t.call(nr::VCPU_OP, [IS_UP, 1, 0, 0, 0]), 0);
        assert_eq!(t.call(nr::VCPU_OP, [UP, 1, 0, 0, 0]), -EINVAL, "not initialised");
        assert_eq!(t.call(nr::VCPU_OP, [INITIALISE, 0, TEST_ARG, 0, 0]), -EEXIST, "vCPU 0 runs");
        assert_eq!(t.call(nr::VCPU_OP, [INITIALISE, 1, crate::fake::TEST_RAM - 8, 0, 0]), -EFAULT);
        put_ctx64(&t, 0x10_0000, 1);
        assert_eq!(t.call(nr::VCPU_OP, [INITIALISE, 1, TEST_ARG, 0, 0]), -EINVAL, "64-bit mode without CR0.PG");
        assert_eq!(t.call(nr::VCPU_OP, [IS_UP, 1, 0, 0, 0]), 0, "a refused context changes nothing");
        put_ctx64(&t, 0x10_0000, (1 << 31) | 1);
        assert_eq!(t.call(nr::VCPU_OP, [INITIALISE, 1, TEST_ARG, 0, 0]), 0);
        assert_eq!(t.call(nr::VCPU_OP, [INITIALISE, 1, TEST_ARG, 0, 0]), -EEXIST);
        assert_eq!(t.call(nr::VCPU_OP, [IS_UP, 1, 0, 0, 0]), 0, "initialise leaves it down");
        assert_eq!(t.call(nr::VCPU_OP, [UP, 1, 0, 0, 0]), 0);
        assert_eq!(t.call(nr::VCPU_OP, [IS_UP, 1, 0, 0, 0]), 1);
        assert_eq!(t.call(nr::VCPU_OP, [UP, 1, 0, 0, 0]), 0, "up of a running vCPU is 0");
    }

    /// `common_vcpu_op` (`xen/common/domain.c`): `VCPUOP_down` stops a
    /// vCPU; taking down the last running one is `SHUTDOWN_poweroff`.
    #[test]
    fn down_stops_a_vcpu_and_the_last_one_down_powers_off() {
        use vcpu_op::{DOWN, INITIALISE, IS_UP, UP};
        let mut t = smp(2);
        put_ctx64(&t, 0x10_0000, (1 << 31) | 1);
        assert_eq!(t.call(nr::VCPU_OP, [INITIALISE, 1, TEST_ARG, 0, 0]), 0);
        assert_eq!(t.call(nr::VCPU_OP, [UP, 1, 0, 0, 0]), 0);
        assert_eq!(t.call(nr::VCPU_OP, [DOWN, 0, 0, 0, 0]), 0);
        assert_eq!(t.call(nr::VCPU_OP, [IS_UP, 0, 0, 0, 0]), 0);
        assert!(t.dom.shutdown.is_none(), "vCPU 1 still runs");
        assert_eq!(t.call(nr::VCPU_OP, [DOWN, 1, 0, 0, 0]), 0);
        assert_eq!(t.dom.shutdown.map(|s| s.reason), Some(pv_abi::hypercall::sched_op::SHUTDOWN_POWEROFF));
        assert_eq!(t.call(nr::VCPU_OP, [IS_UP, 1, 0, 0, 0]), 1, "the last vCPU stays up");
    }

    /// `domain_shutdown()` (`xen/common/domain.c`), which the last
    /// `VCPUOP_down` calls with `SHUTDOWN_poweroff`: a code recorded by
    /// `SCHEDOP_shutdown_code` is reported instead.
    #[test]
    fn the_last_vcpu_down_reports_a_recorded_shutdown_code() {
        use pv_abi::hypercall::sched_op::{SchedShutdown, SHUTDOWN_CODE, SHUTDOWN_CRASH};
        let mut t = smp(1);
        t.put(TEST_ARG, &SchedShutdown { reason: SHUTDOWN_CRASH });
        assert_eq!(t.call(nr::SCHED_OP, [SHUTDOWN_CODE, TEST_ARG, 0, 0, 0]), 0);
        assert_eq!(t.call(nr::VCPU_OP, [vcpu_op::DOWN, 0, 0, 0, 0]), 0);
        assert_eq!(t.dom.shutdown.map(|s| s.reason), Some(SHUTDOWN_CRASH));
    }

    fn reg_info(t: &TestDomain, gfn: u64, offset: u32) {
        t.put(TEST_ARG, &VcpuRegisterVcpuInfo { mfn: gfn, offset, rsvd: 0 });
    }

    /// A free RAM frame for a `vcpu_info` (below the test arguments).
    const INFO_GFN: u64 = 0x1f0;

    /// `common_vcpu_op()` / `map_guest_area()` (`xen/common/domain.c`):
    /// an offset leaving the frame or an overflowing address `-EINVAL`;
    /// crossing the page or misaligned `-ENXIO`; no RAM page at the frame
    /// `-EINVAL` (`check_get_page_from_gfn()`, `xen/common/memory.c`);
    /// unreadable argument `-EFAULT`; a second registration `-EBUSY`.
    #[test]
    fn register_vcpu_info_refusals() {
        use pv_abi::errno::EFAULT;
        use vcpu_op::REGISTER_VCPU_INFO as REG;
        let mut t = smp(2);
        assert_eq!(t.call(nr::VCPU_OP, [REG, 0, crate::fake::TEST_RAM - 8, 0, 0]), -EFAULT);
        for (gfn, off, errno) in [
            (INFO_GFN, 4096, EINVAL),
            (1 << 52, 0, EINVAL),
            (u64::MAX >> 12, 0xfff, EINVAL),
            (INFO_GFN, 4096 - 32, ENXIO),
            (INFO_GFN, 4, ENXIO),
        ] {
            reg_info(&t, gfn, off);
            assert_eq!(t.call(nr::VCPU_OP, [REG, 0, TEST_ARG, 0, 0]), -errno, "gfn {gfn:#x} offset {off}");
        }
        let vmm_page = t.dom.pvh.as_ref().unwrap().layout.vmm_base >> 12;
        reg_info(&t, vmm_page, 0);
        assert_eq!(t.call(nr::VCPU_OP, [REG, 0, TEST_ARG, 0, 0]), -EINVAL, "not a RAM page of the guest");
        reg_info(&t, INFO_GFN, 4096 - 64);
        assert_eq!(t.call(nr::VCPU_OP, [REG, 2, TEST_ARG, 0, 0]), -ENOENT, "vCPU 2 of 2");
        assert_eq!(t.call(nr::VCPU_OP, [REG, 1, TEST_ARG, 0, 0]), 0, "the last 64 bytes of a page");
        assert_eq!(t.call(nr::VCPU_OP, [REG, 1, TEST_ARG, 0, 0]), -EBUSY, "no re-registration");
        reg_info(&t, INFO_GFN + 1, 0);
        assert_eq!(t.call(nr::VCPU_OP, [REG, 1, TEST_ARG, 0, 0]), -EBUSY, "nor a move elsewhere");
    }

    /// `vcpu_info_populate()` and `map_guest_area()`
    /// (`xen/common/domain.c`): the old `vcpu_info` is copied to the new
    /// place, every selector bit and `evtchn_upcall_pending` are set (a
    /// spurious event, so none is lost) and the vCPU gets an upcall; later
    /// events (`evtchn_2l_set_pending()`, `xen/common/event_2l.c`) mark the
    /// new `vcpu_info`, never the old slot; `SCHEDOP_block` clears the
    /// new mask (`vcpu_block_enable_events()`).
    #[test]
    fn a_registered_vcpu_info_receives_the_old_state_and_every_later_event() {
        use vcpu_op::REGISTER_VCPU_INFO as REG;
        let mut t = smp(2);
        t.dom.evtchn.set_vcpus(2);
        let si = t.dom.pvh.as_ref().unwrap().layout.shared_info();
        let old1 = si + 64;
        t.put(old1 + 1, &1u8); // vCPU 1's evtchn_upcall_mask
        t.put(old1 + 16, &0xc2c2u64); // arch.cr2
        let new = (INFO_GFN << 12) + 128;
        reg_info(&t, INFO_GFN, 128);
        let upcalls = t.platform.upcalls();
        assert_eq!(t.call(nr::VCPU_OP, [REG, 1, TEST_ARG, 0, 0]), 0);
        assert_eq!(t.get::<[u8; 2]>(new), [1, 1], "upcall_pending set, the mask copied");
        assert_eq!(t.get::<u64>(new + 8), u64::MAX, "every selector bit");
        assert_eq!(t.get::<u64>(new + 16), 0xc2c2, "the rest copied");
        assert_eq!(t.platform.upcalls(), upcalls + 1);
        assert_eq!(t.dom.evtchn.vcpu_info(1), Some(new));
        // The guest consumes the spurious event; an IPI to vCPU 1 then
        // lands in the new vcpu_info only.
        t.put(new, &[0u8, 0]);
        t.put(new + 8, &0u64);
        t.put(old1, &[0u8, 0]);
        t.put(old1 + 8, &0u64);
        t.put(TEST_ARG, &[1u32, 0]);
        assert_eq!(
            t.call(nr::EVENT_CHANNEL_OP, [pv_abi::event_channel::EVTCHNOP_BIND_IPI.into(), TEST_ARG, 0, 0, 0]),
            0
        );
        let port = t.get::<[u32; 2]>(TEST_ARG)[1];
        t.put(TEST_ARG, &port);
        assert_eq!(t.call(nr::EVENT_CHANNEL_OP, [pv_abi::event_channel::EVTCHNOP_SEND.into(), TEST_ARG, 0, 0, 0]), 0);
        assert_eq!(t.get::<u8>(new), 1, "upcall_pending in the new vcpu_info");
        assert_eq!(t.get::<u64>(new + 8), 1 << (port / 64), "its selector bit");
        assert_eq!((t.get::<u8>(old1), t.get::<u64>(old1 + 8)), (0, 0), "the old slot untouched");
        // vCPU 1 blocks: its new mask is cleared, the pending event wakes it.
        t.put(new + 1, &1u8);
        t.put(old1 + 1, &1u8);
        t.dom.current = 1;
        assert_eq!(t.call(nr::SCHED_OP, [pv_abi::hypercall::sched_op::BLOCK, 0, 0, 0, 0]), 0);
        assert_eq!(t.get::<[u8; 2]>(new), [1, 0]);
        assert_eq!(t.get::<u8>(old1 + 1), 1, "the old slot's mask is not the one cleared");
    }

    /// `vcpu_runstate_get()` / `VCPUOP_get_runstate_info`
    /// (`xen/common/domain.c`, `xen/common/sched/core.c`,
    /// `public/vcpu.h`): the running vCPU is `RUNSTATE_running`, a vCPU
    /// never brought up `RUNSTATE_offline`; up and down move it between
    /// them and charge the time spent; a 32-bit caller gets the 44-byte
    /// compat layout (`compat_vcpu_op()`); an unwritable argument is
    /// `-EFAULT`.
    #[test]
    fn get_runstate_info_follows_up_and_down() {
        use pv_abi::errno::EFAULT;
        use pv_abi::hypercall::vcpu_op::{RUNSTATE_OFFLINE, RUNSTATE_RUNNING};
        use vcpu_op::{DOWN, GET_RUNSTATE_INFO as GET, INITIALISE, UP};
        let mut t = smp(2);
        let info = |t: &mut TestDomain, id: u64| {
            assert_eq!(t.call(nr::VCPU_OP, [GET, id, TEST_ARG, 0, 0]), 0);
            t.get::<VcpuRunstateInfo>(TEST_ARG)
        };
        assert_eq!(info(&mut t, 0).state, RUNSTATE_RUNNING);
        let r1 = info(&mut t, 1);
        assert_eq!((r1.state, r1.time[0]), (RUNSTATE_OFFLINE, 0), "down since boot, never ran");
        put_ctx64(&t, 0x10_0000, (1 << 31) | 1);
        assert_eq!(t.call(nr::VCPU_OP, [INITIALISE, 1, TEST_ARG, 0, 0]), 0);
        assert_eq!(info(&mut t, 1).state, RUNSTATE_OFFLINE, "initialised but down");
        assert_eq!(t.call(nr::VCPU_OP, [UP, 1, 0, 0, 0]), 0);
        let up = info(&mut t, 1);
        assert_eq!(up.state, RUNSTATE_RUNNING);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(t.call(nr::VCPU_OP, [DOWN, 1, 0, 0, 0]), 0);
        let down = info(&mut t, 1);
        assert_eq!(down.state, RUNSTATE_OFFLINE);
        assert!(down.time[0] >= 2_000_000, "at least the 2 ms slept while up: {:?}", down.time);
        assert!(down.state_entry_time >= up.state_entry_time + 2_000_000);
        // The compat layout: 44 bytes, state_entry_time at offset 4.
        t.put(TEST_ARG, &[0xffu8; 48]);
        t.dom.compat = true;
        assert_eq!(t.call(nr::VCPU_OP, [GET, 1, TEST_ARG, 0, 0]), 0);
        let c: CompatVcpuRunstateInfo = t.get(TEST_ARG);
        assert_eq!({ c.state }, RUNSTATE_OFFLINE);
        assert_eq!({ c.state_entry_time }, down.state_entry_time);
        assert_eq!(t.get::<[u8; 4]>(TEST_ARG + 44), [0xff; 4], "nothing beyond 44 bytes");
        t.dom.compat = false;
        let vmm = t.dom.pvh.as_ref().unwrap().layout.vmm_base;
        assert_eq!(t.call(nr::VCPU_OP, [GET, 0, vmm, 0, 0]), -EFAULT);
        assert_eq!(t.call(nr::VCPU_OP, [GET, 0, u64::MAX - 8, 0, 0]), -EFAULT);
    }

    /// `VCPUOP_register_runstate_memory_area` (`common_vcpu_op()`,
    /// `update_runstate_area()`): the area gets the runstate at once and
    /// on each change (here: `SCHEDOP_block` charges `RUNSTATE_blocked`
    /// and returns to running, `xen/common/sched/core.c`); address 0 stops
    /// the updates; only an unreadable argument fails (`-EFAULT`).
    #[test]
    fn a_registered_runstate_area_is_kept_up_to_date() {
        use pv_abi::errno::EFAULT;
        use pv_abi::hypercall::vcpu_op::{RUNSTATE_BLOCKED, RUNSTATE_OFFLINE, RUNSTATE_RUNNING};
        use vcpu_op::REGISTER_RUNSTATE_MEMORY_AREA as REG;
        let mut t = smp(2);
        let area = TEST_ARG + 0x100;
        t.put(area, &[0xffu8; 48]);
        t.put(TEST_ARG, &VcpuRegisterRunstateMemoryArea { addr: area });
        assert_eq!(t.call(nr::VCPU_OP, [REG, 0, TEST_ARG, 0, 0]), 0);
        assert_eq!(t.get::<VcpuRunstateInfo>(area).state, RUNSTATE_RUNNING, "written at once");
        assert_eq!(t.call(nr::SCHED_OP, [pv_abi::hypercall::sched_op::BLOCK, 0, 0, 0, 0]), 0);
        let r = t.get::<VcpuRunstateInfo>(area);
        assert_eq!(r.state, RUNSTATE_RUNNING, "running again after the block");
        assert!(r.time[RUNSTATE_BLOCKED as usize] > 0, "the block was charged: {:?}", r.time);
        // vCPU 1 (offline) registered by vCPU 0; an unwritable area is
        // accepted (the copy's failure is ignored).
        t.put(TEST_ARG, &VcpuRegisterRunstateMemoryArea { addr: area + 64 });
        assert_eq!(t.call(nr::VCPU_OP, [REG, 1, TEST_ARG, 0, 0]), 0);
        assert_eq!(t.get::<VcpuRunstateInfo>(area + 64).state, RUNSTATE_OFFLINE);
        t.put(TEST_ARG, &VcpuRegisterRunstateMemoryArea { addr: u64::MAX - 8 });
        assert_eq!(t.call(nr::VCPU_OP, [REG, 1, TEST_ARG, 0, 0]), 0);
        // Unregistered: the next change is not written.
        t.put(TEST_ARG, &VcpuRegisterRunstateMemoryArea { addr: 0 });
        assert_eq!(t.call(nr::VCPU_OP, [REG, 0, TEST_ARG, 0, 0]), 0);
        t.put(area, &[0xeeu8; 48]);
        assert_eq!(t.call(nr::SCHED_OP, [pv_abi::hypercall::sched_op::BLOCK, 0, 0, 0, 0]), 0);
        assert_eq!(t.get::<[u8; 48]>(area), [0xee; 48]);
        assert_eq!(t.call(nr::VCPU_OP, [REG, 0, crate::fake::TEST_RAM - 4, 0, 0]), -EFAULT);
    }

    /// With several vCPUs `SCHEDOP_block` hands its wait to the vCPU loop
    /// (`DeferredWait`): the vCPU is `RUNSTATE_blocked` until that wait
    /// ends, then running again, the wait charged to `time[blocked]`
    /// (`vcpu_block()` / `vcpu_wake()`, `xen/common/sched/core.c`).
    #[test]
    fn a_deferred_block_is_blocked_until_the_vcpu_loop_ends_the_wait() {
        use pv_abi::hypercall::vcpu_op::{RUNSTATE_BLOCKED, RUNSTATE_RUNNING};
        let mut t = smp(2);
        t.dom.defer_waits = true;
        assert_eq!(t.call(nr::SCHED_OP, [pv_abi::hypercall::sched_op::BLOCK, 0, 0, 0, 0]), 0);
        let wait = t.dom.deferred_wait.take().expect("the wait is left to the vCPU loop");
        let now = t.dom.pvh.as_ref().unwrap().clock.now_ns();
        assert_eq!(t.dom.vcpus.runstate(0, now).unwrap().state, RUNSTATE_BLOCKED);
        wait.wait();
        let now = t.dom.pvh.as_ref().unwrap().clock.now_ns();
        let r = t.dom.vcpus.runstate(0, now).unwrap();
        assert_eq!(r.state, RUNSTATE_RUNNING);
        assert!(r.time[RUNSTATE_BLOCKED as usize] > 0, "{:?}", r.time);
    }
}
