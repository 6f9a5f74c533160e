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
