//! Snapshot/restore of a domain on the fake platform: the state survives
//! a round trip unchanged, the guest-visible behaviour continues after a
//! restore (pending events, FIFO queues, timers), and a tampered state
//! is an error, never a panic. The references are Xen's save/restore
//! records (`xen/include/public/arch-x86/hvm/save.h`,
//! `tools/libs/guest/xg_sr_*.c`) for what a domain's state is, and the
//! hypercall sources named at each assertion for how it must behave.

use super::*;
use crate::event_channel::state::{PortKind, PortSave};
use crate::fake::{Call, TestDomain, TEST_ARG, TEST_RAM};
use pv_abi::event_channel::*;
use pv_abi::hypercall::nr;
use pv_abi::layout::{KERNEL_BASE, PAGE_SIZE};
use pv_abi::start_info::paging_mode;
use std::sync::Arc;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// A guest page for `vcpu_info` of vCPU 1 and the grant-table frame.
const VCPU_INFO_1: u64 = KERNEL_BASE + 0x40;
const GRANT_FRAME: u64 = KERNEL_BASE + 0x1000;

fn op(t: &mut TestDomain, cmd: u32) -> i64 {
    t.call(nr::EVENT_CHANNEL_OP, [u64::from(cmd), TEST_ARG, 0, 0, 0])
}

fn alloc(t: &mut TestDomain) -> u32 {
    t.put(TEST_ARG, &EvtchnAllocUnbound { dom: DOMID_SELF, remote_dom: DOMID_VMM, port: 0 });
    assert_eq!(op(t, EVTCHNOP_ALLOC_UNBOUND), 0);
    t.get::<EvtchnAllocUnbound>(TEST_ARG).port
}

fn ipi(t: &mut TestDomain, vcpu: u32) -> u32 {
    t.put(TEST_ARG, &[vcpu, 0]);
    assert_eq!(op(t, EVTCHNOP_BIND_IPI), 0);
    t.get::<[u32; 2]>(TEST_ARG)[1]
}

fn wake() -> Arc<EventFd> {
    Arc::new(EventFd::new(EFD_NONBLOCK).unwrap())
}

/// A domain of `vcpus` vCPUs, as the VMM builds one for the config.
fn domain(vcpus: u32) -> TestDomain {
    let mut t = TestDomain::new(paging_mode::NATIVE);
    t.dom.vcpus = Arc::new(crate::vcpus::VcpuSet::new(vcpus));
    t.dom.evtchn.set_vcpus(vcpus);
    t
}

/// Copies guest memory from `src` to `dst`: what the VMM's snapshot
/// carries besides the domain state.
fn copy_memory(src: &TestDomain, dst: &TestDomain) {
    for page in (0..TEST_RAM).step_by(PAGE_SIZE as usize) {
        let bytes = src.dom.ram.read_vec(page, PAGE_SIZE).unwrap();
        dst.dom.ram.write(page, &bytes).unwrap();
    }
}

/// A busy 2-vCPU guest: an unbound port, a back-end port, a loopback
/// pair, an IPI for vCPU 1, VIRQ_TIMER on both vCPUs, a grant table,
/// vCPU 1 initialised and its `vcpu_info` moved, a runstate area.
fn busy_guest() -> (TestDomain, Vec<u32>) {
    let mut t = domain(2);
    let unbound = alloc(&mut t);
    let backend = alloc(&mut t);
    t.dom.evtchn.bind_guest_port(backend, wake()).unwrap();
    let lo = alloc(&mut t);
    t.put(TEST_ARG, &EvtchnAllocUnbound { dom: DOMID_SELF, remote_dom: DOMID_SELF, port: 0 });
    assert_eq!(op(&mut t, EVTCHNOP_ALLOC_UNBOUND), 0);
    let lo_a = t.get::<EvtchnAllocUnbound>(TEST_ARG).port;
    t.put(TEST_ARG, &EvtchnBindInterdomain { remote_dom: DOMID_SELF, _pad: 0, remote_port: lo_a, local_port: 0 });
    assert_eq!(op(&mut t, EVTCHNOP_BIND_INTERDOMAIN), 0);
    let lo_b = t.get::<EvtchnBindInterdomain>(TEST_ARG).local_port;
    let i = ipi(&mut t, 1);
    let v0 = t.dom.evtchn.bind_virq(0, 0).unwrap();
    let v1 = t.dom.evtchn.bind_virq(0, 1).unwrap();
    t.dom.grants.setup(&[GRANT_FRAME / PAGE_SIZE]).unwrap();
    let ctx = crate::hvm_context::VcpuContext { rip: 0x1234, ..Default::default() };
    t.dom.vcpus.initialise(1, ctx).unwrap();
    t.dom.evtchn.register_vcpu_info(1, VCPU_INFO_1).unwrap();
    t.dom.vcpus.set_runstate_area(0, KERNEL_BASE + 0x800, false);
    t.dom.vcpus.set_runstate(0, pv_abi::hypercall::vcpu_op::RUNSTATE_BLOCKED, 5_000);
    (t, vec![unbound, backend, lo, lo_a, lo_b, i, v0, v1])
}

/// Restores `s` into a fresh domain of `vcpus` vCPUs holding `src`'s memory.
fn restored(src: &TestDomain, s: &DomainState, vcpus: u32) -> TestDomain {
    let mut t = domain(vcpus);
    copy_memory(src, &t);
    t.dom.restore_state(s).expect("restore");
    t
}

/// The state survives save, serialisation, restore and save again
/// unchanged: every port (`evtchn_status` of each), the grant frames,
/// the vCPUs' flags, pending context, runstate and `vcpu_info` place.
#[test]
fn a_round_trip_gives_the_same_state() {
    let (t, _) = busy_guest();
    let s = t.dom.save_state();
    assert_eq!(s.version, DOMAIN_STATE_VERSION);
    assert_eq!(s.evtchn.ports.len(), 8);
    assert_eq!(s.grants.frames, [GRANT_FRAME]);
    assert!(s.vcpus.vcpus[1].initialised && s.vcpus.vcpus[1].pending.is_some());
    assert_eq!(s.vcpus.vcpus[1].vcpu_info, Some(VCPU_INFO_1));
    let json = serde_json::to_vec(&s).unwrap();
    let back: DomainState = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, s);
    let r = restored(&t, &back, 2);
    assert_eq!(r.dom.save_state(), s);
    assert_eq!(r.dom.grants.nr_frames(), 1);
    assert_eq!(r.dom.evtchn.vcpu_info(1), Some(VCPU_INFO_1));
    // The back-end port waits for its back end; the others are as they were.
    assert_eq!(r.dom.evtchn.detached_ports(), [s.evtchn.ports[1].port]);
}

/// `EVTCHNOP_status` (`xen/common/event_channel.c` `evtchn_status()`)
/// answers the same for every port after a restore, the detached back-end
/// port included (still `EVTCHNSTAT_interdomain` to domain 0).
#[test]
fn every_port_reports_the_same_status_after_a_restore() {
    let (mut t, ports) = busy_guest();
    let s = t.dom.save_state();
    let mut r = restored(&t, &s, 2);
    for port in ports {
        for d in [&mut t, &mut r] {
            d.put(TEST_ARG, &EvtchnStatus { dom: DOMID_SELF, port, ..Default::default() });
            assert_eq!(op(d, EVTCHNOP_STATUS), 0);
        }
        let (a, b): (EvtchnStatus, EvtchnStatus) = (t.get(TEST_ARG), r.get(TEST_ARG));
        assert_eq!((a.status, a.vcpu), (b.status, b.vcpu), "port {port}");
        // SAFETY: both are plain-old-data views of the same 8 bytes.
        assert_eq!(unsafe { a.u.interdomain.port }, unsafe { b.u.interdomain.port }, "port {port}");
    }
}

/// An event pending (masked) at the snapshot is delivered after the
/// restore when the guest unmasks it (`evtchn_2l_unmask()`: pending and
/// unmasked raises `upcall_pending` and the upcall); a guest send on the
/// detached back-end port reaches the back end when it re-attaches.
#[test]
fn a_pending_event_is_delivered_after_a_restore() {
    let mut t = domain(1);
    let port = alloc(&mut t);
    let b = t.dom.evtchn.bind_guest_port(port, wake()).unwrap();
    let mask = pv_abi::layout::SHARED_INFO + pv_abi::shared_info::LAYOUT_64.mask as u64;
    t.put(mask, &(1u64 << port));
    assert_eq!(t.dom.evtchn.notify_binding(b), Ok(false), "masked: no upcall");
    let s = t.dom.save_state();
    let mut r = restored(&t, &s, 1);
    assert!(r.dom.evtchn.is_pending(port), "the pending bit is guest memory");
    // The guest sends while its back end is not attached yet.
    r.put(TEST_ARG, &EvtchnSend { port });
    assert_eq!(op(&mut r, EVTCHNOP_SEND), 0);
    let w = wake();
    let nb = r.dom.evtchn.reattach(port, w.clone()).unwrap();
    assert_eq!(w.read().unwrap(), 1, "the send made while detached");
    assert_ne!(nb, b, "a new binding generation");
    assert_eq!(r.platform.doorbells(), [port]);
    r.put(TEST_ARG, &EvtchnUnmask { port });
    assert_eq!(op(&mut r, EVTCHNOP_UNMASK), 0);
    assert_eq!(r.platform.calls().last(), Some(&Call::RaiseUpcall(0)));
    assert!(r.dom.evtchn.reattach(port, wake()).is_err(), "attached already");
    assert_eq!(r.dom.evtchn.binding(port), Some(nb));
}

/// The state refuses a restore into another configuration and every
/// inconsistency a tampered file could carry, without panicking.
#[test]
fn inconsistent_states_are_refused() {
    let (t, _) = busy_guest();
    let s = t.dom.save_state();
    let refuse = |s: &DomainState, vcpus: u32| {
        let mut d = domain(vcpus);
        copy_memory(&t, &d);
        d.dom.restore_state(s).expect_err("refused")
    };
    assert_eq!(refuse(&s, 3), StateError::Vcpus(VcpuStateError::Count { saved: 2, here: 3 }));
    let mut bad = s.clone();
    bad.version = 2;
    assert_eq!(refuse(&bad, 2), StateError::Version(2));
    let mut bad = s.clone();
    bad.evtchn.ports.push(PortSave { port: MAX_PORTS, notify_vcpu: 0, kind: PortKind::Ipi });
    assert_eq!(refuse(&bad, 2), StateError::Evtchn(EvtchnStateError::BadPort(MAX_PORTS)));
    let mut bad = s.clone();
    bad.evtchn.ports[0].notify_vcpu = 2;
    assert!(matches!(refuse(&bad, 2), StateError::Evtchn(EvtchnStateError::BadVcpu { vcpu: 2, .. })));
    let mut bad = s.clone();
    let lo = bad.evtchn.ports.iter_mut().find(|p| matches!(p.kind, PortKind::Loopback { .. })).unwrap();
    lo.kind = PortKind::Loopback { peer: 1 };
    assert!(matches!(refuse(&bad, 2), StateError::Evtchn(EvtchnStateError::BadBinding(_))));
    let mut bad = s.clone();
    bad.grants.frames = vec![TEST_RAM];
    assert_eq!(refuse(&bad, 2), StateError::Grants(GrantStateError::BadFrame(TEST_RAM)));
    let mut bad = s.clone();
    bad.vcpus.vcpus[1].vcpu_info = Some(TEST_RAM - 8);
    assert_eq!(refuse(&bad, 2), StateError::VcpuInfo(1));
    let mut bad = s.clone();
    bad.vcpus.vcpus[0].initialised = false;
    assert_eq!(refuse(&bad, 2), StateError::Vcpus(VcpuStateError::Inconsistent(0)));
    let mut bad = s.clone();
    bad.ram_bytes *= 2;
    assert!(matches!(refuse(&bad, 2), StateError::RamSize { .. }));
}

/// A vCPU the guest initialised but had not brought up when the
/// snapshot was taken comes up after the restore with the register state
/// `VCPUOP_initialise` gave it (`xen/common/domain.c` `VCPUOP_up`; the
/// context is loaded at the first `up`), and its runstate times continue.
#[test]
fn an_initialised_vcpu_comes_up_with_its_context_after_a_restore() {
    let (t, _) = busy_guest();
    let s = t.dom.save_state();
    let r = restored(&t, &s, 2);
    assert!(r.dom.vcpus.is_initialised(1) && r.dom.vcpus.is_down(1));
    r.dom.vcpus.up(1).unwrap();
    let woken = r.dom.vcpus.wait_up(1, std::time::Duration::from_millis(1), || false);
    let ctx = crate::hvm_context::VcpuContext { rip: 0x1234, ..Default::default() };
    assert_eq!(woken, Some(crate::vcpus::Woken::Load(ctx)));
    let rs = r.dom.vcpus.runstate(0, 5_000).unwrap();
    assert_eq!(rs.state, pv_abi::hypercall::vcpu_op::RUNSTATE_BLOCKED);
    assert_eq!(rs.time, t.dom.vcpus.runstate(0, 5_000).unwrap().time);
}

/// Domain-0 ports (the back end allocates, the guest binds with
/// `EVTCHNOP_bind_interdomain`, `xen/common/event_channel.c`
/// `evtchn_bind_interdomain()`) survive a restore: one bound before the
/// snapshot comes back to its owner with `reattach_dom0`, and one the
/// guest binds only after the restore reaches the owner's new eventfd.
#[test]
fn domain_0_ports_come_back_to_their_owner() {
    let mut t = domain(1);
    let bound = t.dom.evtchn.alloc_dom0_unbound(crate::domid::GUEST_DOMID, wake()).unwrap();
    let later = t.dom.evtchn.alloc_dom0_unbound(crate::domid::GUEST_DOMID, wake()).unwrap();
    let bind = |t: &mut TestDomain, remote_port: u32| {
        t.put(TEST_ARG, &EvtchnBindInterdomain { remote_dom: DOMID_VMM, _pad: 0, remote_port, local_port: 0 });
        assert_eq!(op(t, EVTCHNOP_BIND_INTERDOMAIN), 0);
        t.get::<EvtchnBindInterdomain>(TEST_ARG).local_port
    };
    let local = bind(&mut t, bound);
    let s = t.dom.save_state();
    let mut r = restored(&t, &s, 1);
    assert_eq!(r.dom.evtchn.dom0_peer(bound), Some(local));
    let local_later = bind(&mut r, later);
    let (w1, w2) = (wake(), wake());
    r.dom.evtchn.reattach_dom0(bound, w1.clone()).unwrap();
    r.dom.evtchn.reattach_dom0(later, w2.clone()).unwrap();
    for (port, w) in [(local, &w1), (local_later, &w2)] {
        r.put(TEST_ARG, &EvtchnSend { port });
        assert_eq!(op(&mut r, EVTCHNOP_SEND), 0);
        assert_eq!(w.read().unwrap(), 1, "the owner's eventfd for port {port}");
    }
    let mut doorbells = r.platform.doorbells();
    doorbells.sort_unstable();
    assert_eq!(doorbells, [local, local_later]);
    // Domain 0 sends back through its port to the guest's.
    assert_eq!(r.dom.evtchn.notify_dom0_port(bound), Ok(false), "already pending since the bind");
    assert!(r.dom.evtchn.is_pending(local));
}

/// The FIFO ABI's guest pages for [`fifo_queue_continues_after_a_restore`].
const CB_GFN: u64 = 0x180;
const ARRAY_GFN: u64 = 0x190;

/// A FIFO queue continues across a restore (`xen/common/event_fifo.c`
/// `evtchn_fifo_set_pending()`: an event is linked at the *tail* of its
/// queue, the old tail's LINK set to it): an event queued before the
/// snapshot stays the head, and one raised after is linked behind it,
/// which needs the queue's tail the VMM kept.
#[test]
fn a_fifo_queue_continues_after_a_restore() {
    let mut t = domain(1);
    t.put(TEST_ARG, &EvtchnInitControl { control_gfn: CB_GFN, offset: 0, vcpu: 0, ..Default::default() });
    assert_eq!(op(&mut t, EVTCHNOP_INIT_CONTROL), 0);
    t.put(TEST_ARG, &EvtchnExpandArray { array_gfn: ARRAY_GFN });
    assert_eq!(op(&mut t, EVTCHNOP_EXPAND_ARRAY), 0);
    let (a, b) = (alloc(&mut t), alloc(&mut t));
    let ba = t.dom.evtchn.bind_guest_port(a, wake()).unwrap();
    t.dom.evtchn.bind_guest_port(b, wake()).unwrap();
    // `set_priority` (a non-default queue) survives too.
    t.put(TEST_ARG, &EvtchnSetPriority { port: b, priority: 3 });
    assert_eq!(op(&mut t, EVTCHNOP_SET_PRIORITY), 0);
    t.put(TEST_ARG, &EvtchnSetPriority { port: a, priority: 3 });
    assert_eq!(op(&mut t, EVTCHNOP_SET_PRIORITY), 0);
    assert_eq!(t.dom.evtchn.notify_binding(ba), Ok(true));
    let s = t.dom.save_state();
    let fifo = s.evtchn.fifo.as_ref().expect("FIFO saved");
    assert_eq!(fifo.vcpus[0].tail[3], a);
    let r = restored(&t, &s, 1);
    assert!(r.dom.evtchn.uses_fifo());
    r.dom.evtchn.reattach(a, wake()).unwrap();
    let bb = r.dom.evtchn.reattach(b, wake()).unwrap();
    assert_eq!(r.dom.evtchn.notify_binding(bb), Ok(false), "queue not empty: no new ready edge");
    let cb: EvtchnFifoControlBlock = r.get(CB_GFN * PAGE_SIZE);
    assert_eq!(cb.head[3], a, "the head is still the event queued before");
    let word_a: u32 = r.get(ARRAY_GFN * PAGE_SIZE + u64::from(a) * 4);
    assert_eq!(word_a & EVTCHN_FIFO_LINK_MASK, b, "b linked behind a");
    assert_eq!(cb.ready, 1 << 3);
}

/// A Xen PVH guest with the timer thread the VMM gives it.
fn pvh_with_timer() -> TestDomain {
    let mut t = TestDomain::pvh();
    let timer = crate::timer::Timer::start(t.dom.evtchn.clone(), || {}).unwrap();
    t.dom.pvh.as_mut().unwrap().timer = Some(timer);
    t
}

/// A one-shot timer armed before the snapshot fires after the restore
/// (`xen/common/sched/core.c`: the vCPU's `singleshot_timer` raises
/// `VIRQ_TIMER` when it expires), on the restored domain's own timer
/// thread; the saved time left is at most what was armed.
#[test]
fn a_timer_armed_before_fires_after_a_restore() {
    let t = pvh_with_timer();
    let port = t.dom.evtchn.bind_virq(pv_abi::hvm::VIRQ_TIMER, 0).unwrap();
    let armed = std::time::Duration::from_millis(300);
    let timer = t.dom.pvh.as_ref().unwrap().timer.as_ref().unwrap();
    timer.set_for(0, Some(std::time::Instant::now() + armed));
    timer.set_periodic_for(0, Some(std::time::Duration::from_secs(3600)));
    let s = t.dom.save_state();
    // The source's timer thread stops: only the restored one can fire.
    drop(t);
    let timers = s.pvh.as_ref().unwrap().timers.as_ref().unwrap();
    let left = timers.vcpus[0].singleshot_ns.expect("armed");
    assert!(left <= armed.as_nanos() as u64);
    assert_eq!(timers.vcpus[0].periodic_ns.map(|p| p.0), Some(3_600_000_000_000));
    let mut r = pvh_with_timer();
    r.dom.restore_state(&s).unwrap();
    // A liveness guard (a lost timer would hang the test), not a timing
    // assertion.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !r.dom.evtchn.is_pending(port) && std::time::Instant::now() < give_up {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(r.dom.evtchn.is_pending(port), "VIRQ_TIMER raised by the restored timer");
}

/// A Xen PVH guest's placements, callback vector, reservation and
/// watchdog survive a round trip, and the restore places the pages and
/// routes the callback on the new machine again (what
/// `XENMEM_add_to_physmap` and `HVM_PARAM_CALLBACK_IRQ` did,
/// `xen/arch/x86/mm/p2m.c`, `xen/arch/x86/hvm/irq.c`).
#[test]
fn a_pvh_guest_round_trips_and_is_replaced_on_the_new_machine() {
    use pv_abi::hvm::hvm_op::{HvmParam, CALLBACK_TYPE_SHIFT, CALLBACK_TYPE_VECTOR, PARAM_CALLBACK_IRQ, SET_PARAM};
    use pv_abi::hvm::memory_op::{AddToPhysmap, ADD_TO_PHYSMAP, XENMAPSPACE_GRANT_TABLE, XENMAPSPACE_SHARED_INFO};
    use pv_abi::hypercall::sched_op::{SchedWatchdog, WATCHDOG};
    const HOLE_PFN: u64 = 0x8_0000;
    let mut t = TestDomain::pvh();
    let add = |t: &mut TestDomain, space, idx, gpfn| {
        t.put(TEST_ARG, &AddToPhysmap { domid: DOMID_SELF, size: 0, space, idx, gpfn });
        assert_eq!(t.call(nr::MEMORY_OP, [ADD_TO_PHYSMAP, TEST_ARG, 0, 0, 0]), 0);
    };
    add(&mut t, XENMAPSPACE_SHARED_INFO, 0, HOLE_PFN);
    add(&mut t, XENMAPSPACE_GRANT_TABLE, 1, 0x200);
    let value = (CALLBACK_TYPE_VECTOR << CALLBACK_TYPE_SHIFT) | 0xf3;
    t.put(TEST_ARG, &HvmParam { domid: DOMID_SELF, _pad: 0, index: PARAM_CALLBACK_IRQ, value });
    assert_eq!(t.call(nr::HVM_OP, [SET_PARAM, TEST_ARG, 0, 0, 0]), 0);
    t.put(TEST_ARG, &SchedWatchdog { id: 0, timeout: 100 });
    assert_eq!(t.call(nr::SCHED_OP, [WATCHDOG, TEST_ARG, 0, 0, 0]), 1);
    let s = t.dom.save_state();
    let p = s.pvh.as_ref().unwrap();
    assert_eq!((p.placed[0], p.placed[2]), (Some(HOLE_PFN), Some(0x200)));
    assert_eq!(s.grants.frames.len(), 2, "grant frame 1 grew the VMM-owned table");
    let r = {
        let mut r = TestDomain::pvh();
        copy_memory(&t, &r);
        r.dom.restore_state(&s).unwrap();
        r
    };
    let calls = r.platform.calls();
    let layout = r.dom.pvh.as_ref().unwrap().layout;
    assert!(calls.contains(&Call::PlacePage(0, layout.shared_info(), HOLE_PFN)), "{calls:?}");
    assert!(calls.contains(&Call::PlacePage(2, layout.grant_frame(1), 0x200)), "{calls:?}");
    assert_eq!(calls.last(), Some(&Call::SetCallbackVector(0xf3)));
    let mut again = r.dom.save_state();
    let q = again.pvh.as_mut().unwrap();
    // Time moved on between the two saves: the clock and the watchdog's
    // time left are compared for direction only.
    assert!(q.clock.system_time_ns >= p.clock.system_time_ns);
    assert!(q.watchdogs_ns[0].unwrap() <= p.watchdogs_ns[0].unwrap());
    q.clock.system_time_ns = p.clock.system_time_ns;
    q.watchdogs_ns = p.watchdogs_ns.clone();
    assert_eq!(again, s);
    // Into a guest of the other kind, or with a placement over a VMM page: refused.
    let mut own = domain(1);
    assert!(matches!(own.dom.restore_state(&s), Err(StateError::GuestKind { .. })));
    let mut bad = s.clone();
    bad.pvh.as_mut().unwrap().placed[0] = Some(layout.vmm_base / PAGE_SIZE);
    let mut r2 = TestDomain::pvh();
    assert_eq!(r2.dom.restore_state(&bad), Err(StateError::Pvh(PvhStateError::Placement(0))));
    let mut bad = s.clone();
    bad.pvh.as_mut().unwrap().grant_frames = 3;
    assert!(matches!(TestDomain::pvh().dom.restore_state(&bad), Err(StateError::GrantModel(_))));
}

/// The page tables of a direct-paging guest (`paging_mode::PV`): the
/// types, pins and base survive a round trip, and a state that types a
/// frame whose contents would not validate (`MMUEXT_PIN_L1_TABLE` on a
/// writable mapping of the pool is `-EINVAL` in the validator's rules,
/// Xen's `get_page_type()` refusal) is refused.
#[test]
fn page_tables_round_trip_and_are_revalidated() {
    use crate::fake::TEST_POOL;
    use pv_abi::mmu::pte;
    let mut t = TestDomain::new(paging_mode::PV);
    let tb = [TEST_POOL, TEST_POOL + 0x1000, TEST_POOL + 0x2000, TEST_POOL + 0x3000];
    let (ram, pg) = (t.dom.ram.clone(), &mut t.dom.paging);
    pg.pin(&ram, tb[0], 4).unwrap();
    pg.update(&ram, tb[0], tb[1] | pte::P | pte::RW).unwrap();
    pg.update(&ram, tb[1], tb[2] | pte::P | pte::RW).unwrap();
    pg.update(&ram, tb[2], tb[3] | pte::P | pte::RW).unwrap();
    pg.update(&ram, tb[3] + 8, KERNEL_BASE | pte::P | pte::RW).unwrap();
    pg.new_baseptr(tb[0]).unwrap();
    let s = t.dom.save_state();
    assert_eq!(s.paging.tables, [(tb[0], 4), (tb[1], 3), (tb[2], 2), (tb[3], 1)]);
    assert_eq!((s.paging.pinned.as_slice(), s.paging.base), (&[tb[0]][..], Some(tb[0])));
    let fresh = || {
        let d = TestDomain::new(paging_mode::PV);
        copy_memory(&t, &d);
        d
    };
    let mut r = fresh();
    r.dom.restore_state(&s).unwrap();
    assert_eq!(r.dom.save_state(), s);
    assert_eq!(r.dom.paging.level_of(tb[3]), 1);
    // A hostile table: an L1 mapping the pool writable, typed in the state.
    let evil = TEST_POOL + 0x6000;
    t.put(evil, &(TEST_POOL | pte::P | pte::RW));
    let mut bad = s.clone();
    bad.paging.tables.push((evil, 1));
    let mut r = fresh();
    let e = r.dom.restore_state(&bad).unwrap_err();
    assert_eq!(
        e,
        StateError::Paging(PagingStateError::Invalid {
            frame: evil,
            level: 1,
            errno: pv_abi::mmu::mmu_err::WRITABLE_POOL
        })
    );
    assert_eq!(r.dom.paging.level_of(tb[0]), 0, "nothing restored");
    // A level that contradicts the tables above it, a base not pinned.
    let mut bad = s.clone();
    bad.paging.tables[3].1 = 2;
    assert!(matches!(fresh().dom.restore_state(&bad), Err(StateError::Paging(PagingStateError::Invalid { .. }))));
    let mut bad = s.clone();
    bad.paging.base = Some(tb[1]);
    assert_eq!(fresh().dom.restore_state(&bad), Err(StateError::Paging(PagingStateError::BadFrame(tb[1]))));
    let mut bad = s.clone();
    bad.paging.mode = paging_mode::TRAPPED;
    assert!(matches!(fresh().dom.restore_state(&bad), Err(StateError::Paging(PagingStateError::Layout { .. }))));
}

/// Uses every port of a restored domain as a guest and its back ends
/// would: re-attach the detached ones, notify, send, unmask, ask the
/// status, bind a timer virq; none of it may panic.
fn exercise(d: &mut TestDomain) {
    for port in d.dom.evtchn.detached_ports() {
        let _ = d.dom.evtchn.reattach(port, wake());
    }
    for port in 1..16 {
        let _ = d.dom.evtchn.notify_guest(port);
        d.put(TEST_ARG, &EvtchnSend { port });
        op(d, EVTCHNOP_SEND);
        d.put(TEST_ARG, &EvtchnUnmask { port });
        op(d, EVTCHNOP_UNMASK);
        d.put(TEST_ARG, &EvtchnStatus { dom: DOMID_SELF, port, ..Default::default() });
        op(d, EVTCHNOP_STATUS);
    }
    for vcpu in 0..2 {
        let _ = d.dom.evtchn.notify_vcpu_virq(0, vcpu);
        let _ = d.dom.vcpus.up(vcpu);
    }
    let _ = alloc_any(d);
}

/// `EVTCHNOP_alloc_unbound` without insisting on success.
fn alloc_any(t: &mut TestDomain) -> i64 {
    t.put(TEST_ARG, &EvtchnAllocUnbound { dom: DOMID_SELF, remote_dom: DOMID_VMM, port: 0 });
    op(t, EVTCHNOP_ALLOC_UNBOUND)
}

/// Applies one mutation to a JSON tree: the `pick`-th leaf or array
/// (counting in document order) gets `value`, loses an element or gains
/// a copy of one.
fn mutate(v: &mut serde_json::Value, pick: &mut usize, kind: u8, value: u64) -> bool {
    use serde_json::Value;
    match v {
        Value::Array(a) => {
            if *pick == 0 && !a.is_empty() && kind % 3 != 0 {
                if kind % 3 == 1 {
                    a.remove(value as usize % a.len());
                } else {
                    let e = a[value as usize % a.len()].clone();
                    a.push(e);
                }
                return true;
            }
            *pick = pick.saturating_sub(1);
            a.iter_mut().any(|e| mutate(e, pick, kind, value))
        }
        Value::Object(o) => o.values_mut().any(|e| mutate(e, pick, kind, value)),
        leaf => {
            if *pick > 0 {
                *pick -= 1;
                return false;
            }
            *leaf = match leaf {
                Value::Bool(b) => Value::Bool(!*b),
                Value::Null => Value::from(value),
                // Small values land on ports, vCPUs and frames in range
                // more often; large ones test the bounds.
                _ if kind & 4 != 0 => Value::from(value % 64),
                _ if kind & 8 != 0 => Value::from(value.wrapping_mul(PAGE_SIZE) % (2 * TEST_RAM)),
                _ => Value::from(value),
            };
            true
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]

    /// A tampered state (any field changed, an element dropped or
    /// doubled) is restored or refused with an error, never a panic, and
    /// a restored one saves back to a state that restores again.
    #[test]
    fn a_mutated_state_never_panics(pick in 0usize..400, kind in 0u8..16, value in proptest::num::u64::ANY) {
        static SOURCE: std::sync::OnceLock<(Vec<u8>, serde_json::Value)> = std::sync::OnceLock::new();
        let (mem, json) = SOURCE.get_or_init(|| {
            let (t, _) = busy_guest();
            let mem = t.dom.ram.read_vec(0, TEST_RAM).unwrap_or_default();
            (mem, serde_json::to_value(t.dom.save_state()).unwrap())
        });
        let mut v = json.clone();
        let mut p = pick;
        mutate(&mut v, &mut p, kind, value);
        if let Ok(s) = serde_json::from_value::<DomainState>(v) {
            let mut d = domain(2);
            for (i, page) in mem.chunks(PAGE_SIZE as usize).enumerate() {
                d.dom.ram.write(i as u64 * PAGE_SIZE, page).unwrap();
            }
            if d.dom.restore_state(&s).is_ok() {
                exercise(&mut d);
                let again = d.dom.save_state();
                let mut e = domain(2);
                copy_memory(&d, &e);
                proptest::prop_assert!(e.dom.restore_state(&again).is_ok());
            }
        }
    }
}
