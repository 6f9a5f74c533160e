//! Event-channel ownership: a back end closes and notifies only through
//! the binding it made, so one device's teardown cannot break another
//! that reuses the port number after the guest closed it.

use backend::xenbus::EvtchnBinder;
use kvm_ioctls::IoEventAddress;
use pv_abi::event_channel::*;
use pv_abi::hypercall::DOORBELL_PORT;
use pv_abi::layout::SHARED_INFO;
use pv_abi::shared_info::{evtchn_word_bit, SharedInfo};
use std::sync::Arc;
use vmm::devices::EvtchnAdapter;
use vmm::kvm_platform::KvmPlatform;
use vmm::memory::{GuestRam, RegisterSlots, Slot};
use vmm::seccomp::ThreadKind::{self, Device, Vcpu};
use vmm_sys_util::eventfd::EventFd;
use xen_domain::event_channel::EventChannels;

const ARG: u64 = 0x20_0000;

struct Host {
    vm: Arc<kvm_ioctls::VmFd>,
    ram: GuestRam,
    ev: Arc<EventChannels>,
}

fn host() -> Host {
    let kvm = vmm::builder::open_kvm().expect("/dev/kvm");
    let vm = Arc::new(kvm.create_vm().unwrap());
    let slots = [Slot { start: 0, len: 4 << 20, readonly: false }];
    let ram = GuestRam::new(&slots).unwrap();
    ram.register(&vm, &slots).unwrap();
    vm.create_irq_chip().unwrap();
    let platform = Arc::new(KvmPlatform::new(vm.clone(), ram.clone()).unwrap());
    let ev = Arc::new(EventChannels::new(platform, ram.clone(), SHARED_INFO).unwrap());
    Host { vm, ram, ev }
}

impl Host {
    /// The guest's `EVTCHNOP_alloc_unbound` (remote domain 0): the port.
    fn guest_alloc(&self) -> u32 {
        let a = EvtchnAllocUnbound { dom: DOMID_SELF, remote_dom: DOMID_VMM, port: 0 };
        self.ram.write(ARG, pv_bytes(&a)).unwrap();
        assert_eq!(self.ev.hypercall(EVTCHNOP_ALLOC_UNBOUND.into(), ARG), Ok(0));
        let mut out = [0u8; 8];
        self.ram.read(ARG, &mut out).unwrap();
        u32::from_le_bytes(out[4..8].try_into().unwrap())
    }

    fn guest_close(&self, port: u32) {
        self.ram.write(ARG, &port.to_le_bytes()).unwrap();
        assert_eq!(self.ev.hypercall(EVTCHNOP_CLOSE.into(), ARG), Ok(0));
    }

    fn pending(&self, port: u32) -> bool {
        let (word, bit) = evtchn_word_bit(port).unwrap();
        let mut w = [0u8; 8];
        self.ram.read(SHARED_INFO + SharedInfo::pending_word_offset(word) as u64, &mut w).unwrap();
        u64::from_le_bytes(w) & (1 << bit) != 0
    }

    /// Whether an ioeventfd for `wake` on doorbell `port` is registered
    /// (KVM refuses a duplicate registration with EEXIST).
    fn doorbell_registered(&self, port: u32, wake: &EventFd) -> bool {
        let addr = IoEventAddress::Pio(DOORBELL_PORT as u64);
        match self.vm.register_ioevent(wake, &addr, port) {
            Ok(()) => {
                self.vm.unregister_ioevent(wake, &addr, port).unwrap();
                false
            }
            Err(e) => {
                assert_eq!(e.errno(), libc::EEXIST, "{e}");
                true
            }
        }
    }
}

fn pv_bytes(a: &EvtchnAllocUnbound) -> &[u8] {
    // SAFETY: `EvtchnAllocUnbound` is `repr(C)`, 8 bytes, no padding.
    unsafe { std::slice::from_raw_parts(a as *const _ as *const u8, 8) }
}

/// Runs `f` on a thread under `kind`'s seccomp filter, as the VMM runs
/// the guest's hypercalls (vCPU thread) and a back end's binding calls
/// (its device thread); the test's own probes stay on the unconfined
/// test thread.
fn on<T: Send>(kind: ThreadKind, f: impl FnOnce() -> T + Send) -> T {
    vmm::seccomp::run_confined(kind, f).expect("seccomp filter")
}

#[test]
fn a_closed_and_rebound_port_is_not_torn_down_by_its_previous_owner() {
    let h = host();
    let (disk1, disk2) = (EvtchnAdapter::new(h.ev.clone()), EvtchnAdapter::new(h.ev.clone()));
    let (wake1, wake2) = (Arc::new(EventFd::new(0).unwrap()), Arc::new(EventFd::new(0).unwrap()));
    let port = on(Vcpu, || h.guest_alloc());
    let notify1 = on(Device, || disk1.bind(port, wake1.clone()).unwrap());
    assert!(h.doorbell_registered(port, &wake1));
    // The guest closes the port; a second disk gets the same number.
    on(Vcpu, || h.guest_close(port));
    assert!(!h.doorbell_registered(port, &wake1));
    assert_eq!(on(Vcpu, || h.guest_alloc()), port);
    let notify2 = on(Device, || disk2.bind(port, wake2.clone()).unwrap());
    // The first disk's stale notifier raises nothing on the second's port...
    on(Device, || notify1.notify());
    assert!(!h.pending(port), "a stale binding notified the new owner's port");
    // ...and its teardown leaves the second disk's binding and doorbell.
    on(Device, || disk1.close(port));
    assert!(h.doorbell_registered(port, &wake2), "first disk's teardown unregistered the second's doorbell");
    assert_eq!(h.ev.binding(port).map(|b| b.port), Some(port));
    on(Device, || notify2.notify());
    assert!(h.pending(port));
    // The owner's own teardown does close it.
    on(Device, || disk2.close(port));
    assert!(!h.doorbell_registered(port, &wake2));
    assert_eq!(h.ev.binding(port), None);
}
