//! Split-driver plumbing end to end: event channels both ways, masking,
//! grants through the mapper, the console ring, store watches, the echo
//! device's xenbus handshake, and hostile guests.

use pv_abi::hypercall::sched_op::SHUTDOWN_POWEROFF;
use std::sync::Arc;
use std::time::Duration;
use tests::{boot_vm, boot_vm_with, field};
use vmm::{DeviceSpec, Outcome, VmConfig};
use vmm_sys_util::eventfd::EventFd;

const OK: Outcome = Outcome::Shutdown { reason: SHUTDOWN_POWEROFF, code: 0 };

fn pvdev(cmdline: &str, echo: u32) -> (tests::Run, tests::RanVm) {
    boot_vm(VmConfig { devices: vec![DeviceSpec::Echo; echo as usize], ..VmConfig::bundled("pvdev", cmdline) })
}

fn echo_counters(vm: &vmm::Vm, i: usize) -> &backend::echo::EchoMetrics {
    vm.pv.metrics(pv_abi::echo::DEVICE_TYPE, i).expect("echo device i")
}

#[test]
fn events_both_ways_are_counted_on_both_sides() {
    for via in ["doorbell", "hypercall"] {
        const N: u64 = 40;
        let (run, vm) = pvdev(&format!("test=events n={N} via={via}"), 1);
        assert_eq!(run.outcome, OK, "{via}: {}", run.console);
        assert!(vm.dom.evtchn.uses_fifo(), "our guest chooses FIFO");
        // Guest side: N sent, N received through N upcalls.
        assert_eq!(field(&run.console, "events:", "sent"), Some(N), "{}", run.console);
        assert_eq!(field(&run.console, "events:", "received"), Some(N), "{}", run.console);
        assert!(field(&run.console, "events:", "upcalls").unwrap() >= N);
        // Host side: N wake-ups, N requests, N notifications back.
        let c = echo_counters(&vm, 0);
        assert_eq!((c.kicks.get(), c.requests.get(), c.notifies.get()), (N, N, N), "{via}: {c:?}");
        // The send hypercall costs an exit per event; the doorbell none.
        let sends = run.stats.hypercalls(pv_abi::hypercall::nr::EVENT_CHANNEL_OP);
        if via == "hypercall" {
            assert!(sends >= N, "{sends}");
        } else {
            assert!(sends < N, "doorbell must not use the send hypercall ({sends})");
        }
    }
}

/// Our guest on each event-channel ABI: FIFO by default (the VMM accepts
/// `EVTCHNOP_init_control`, `xen/common/event_fifo.c`), 2-level with
/// `evtchn=2l`. Loopback events both ways counted once, a masked port
/// silent then delivered once on unmask, `set_priority` as Xen answers per
/// ABI, close (`xen/common/event_channel.c` `evtchn_close()`: the peer
/// unbound, the closed port's pending event dropped).
#[test]
fn our_guest_on_fifo_and_on_2_level_event_channels() {
    for (cmdline, abi) in [("test=abi n=8", "fifo"), ("test=abi n=8 evtchn=2l", "2-level")] {
        let (run, vm) = pvdev(cmdline, 0);
        assert_eq!(run.outcome, OK, "{abi}: {}", run.console);
        assert!(run.console.contains(&format!("abi: evtchn={abi}\n")), "{}", run.console);
        assert_eq!(vm.dom.evtchn.uses_fifo(), abi == "fifo");
        assert_eq!(field(&run.console, "abi: n=", "a-received"), Some(8), "{}", run.console);
        assert_eq!(field(&run.console, "abi: n=", "b-received"), Some(8), "{}", run.console);
        assert!(!run.console.contains("FAILED"), "{abi}: {}", run.console);
        assert_eq!(run.console.matches(": ok").count(), 15, "{abi}: {}", run.console);
    }
}

/// The echo device's events both ways (through a back end) and the masked
/// port, with the guest forced onto 2-level (the other tests here run
/// with the default, FIFO).
#[test]
fn echo_events_and_masking_on_2_level() {
    let (run, vm) = pvdev("test=events n=8 evtchn=2l", 1);
    assert_eq!(run.outcome, OK, "{}", run.console);
    assert!(!vm.dom.evtchn.uses_fifo());
    assert_eq!(field(&run.console, "events:", "received"), Some(8), "{}", run.console);
    assert_eq!(echo_counters(&vm, 0).notifies.get(), 8);
    let (run, _vm) = pvdev("test=mask evtchn=2l", 1);
    assert!(
        run.console.contains("answered=true silent-while-masked=true pending=true delivered-on-unmask=1"),
        "{}",
        run.console
    );
}

#[test]
fn a_steady_stream_sends_far_fewer_notifications_than_requests() {
    const N: u64 = 1000;
    let (run, vm) = pvdev(&format!("test=stream n={N}"), 1);
    assert_eq!(run.outcome, OK, "{}", run.console);
    let sent = field(&run.console, "stream:", "sent").unwrap();
    let received = field(&run.console, "stream:", "received").unwrap();
    let c = echo_counters(&vm, 0);
    assert_eq!(c.requests.get(), N);
    assert_eq!(c.errors.get(), 0);
    assert!(sent * 8 <= N, "guest->host notifications {sent} for {N} requests");
    let notifies = c.notifies.get();
    assert!(notifies * 8 <= N && received <= notifies, "host->guest {notifies} for {N}");
}

#[test]
fn a_masked_port_gets_no_upcall_until_unmask_then_exactly_one() {
    let (run, _vm) = pvdev("test=mask", 1);
    assert!(
        run.console.contains("answered=true silent-while-masked=true pending=true delivered-on-unmask=1"),
        "{}",
        run.console
    );
    assert_eq!(run.outcome, OK);
}

#[test]
fn grants_are_enforced_by_the_mapper() {
    let (run, vm) = pvdev("test=grants", 1);
    assert_eq!(run.console.matches(": ok").count(), 11, "{}", run.console);
    assert!(!run.console.contains("FAILED"), "{}", run.console);
    assert_eq!(run.outcome, OK);
    // Only the ring stays mapped while connected.
    assert_eq!(vm.dom.grants.mapped_refs(), 1);
}

#[test]
fn console_ring_carries_guest_output_without_exits() {
    let (run, _vm) = boot_vm(VmConfig::bundled("hello", "exit=0 ring-check"));
    assert_eq!(run.console, "Hello from the PV guest (64 MiB RAM)\ncmdline: exit=0 ring-check\n");
    assert_eq!(run.stats.hypercalls(pv_abi::hypercall::nr::CONSOLE_IO), 0, "output went through the ring");
}

#[test]
fn store_watch_fires_when_its_path_is_written() {
    let (run, vm) = pvdev("test=store", 0);
    assert!(run.console.contains("store: watch fired path=data/greeting token=tok1"), "{}", run.console);
    assert!(run.console.contains("store: read back hello"));
    assert_eq!(vm.store.read_string("/local/domain/1/data/greeting").unwrap(), "hello");
}

#[test]
fn a_device_from_the_generic_table_entry_works_like_echo_n() {
    // `--device echo` goes through the same table and constructor as `--echo 1`.
    let devices = vec![DeviceSpec::from("echo".parse::<backend::xenbus::DeviceArg>().unwrap())];
    let (run, vm) = boot_vm(VmConfig { devices, ..VmConfig::bundled("pvdev", "test=events n=3") });
    assert_eq!(run.outcome, OK, "{}", run.console);
    assert_eq!(echo_counters(&vm, 0).requests.get(), 3);
    assert_eq!(vm.pv.get(pv_abi::echo::DEVICE_TYPE, 0).unwrap().paths.back, "/local/domain/0/backend/echo/1/0");
}

#[test]
fn echo_device_reaches_connected_on_both_sides() {
    let (run, vm) = pvdev("test=events n=3", 1);
    assert_eq!(run.outcome, OK);
    let paths = vm.pv.get(pv_abi::echo::DEVICE_TYPE, 0).unwrap().paths.clone();
    assert_eq!(vm.store.read_string(&format!("{}/state", paths.back)).unwrap(), "4");
    assert_eq!(vm.store.read_string(&format!("{}/state", paths.front)).unwrap(), "4");
    assert_eq!(vm.store.read_string(&format!("{}/feature-xor", paths.back)).unwrap(), "1");
}

#[test]
fn hostile_guest_gets_errors_and_other_devices_keep_working() {
    let (run, vm) = pvdev("test=hostile", 2);
    assert!(!run.console.contains("FAILED"), "{}", run.console);
    assert_eq!(run.console.matches(": ok").count(), 15, "{}", run.console);
    assert_eq!(run.outcome, OK);
    assert_eq!(echo_counters(&vm, 1).ring_errors.get(), 1, "the corrupt ring stopped device 1");
    assert_eq!(echo_counters(&vm, 0).requests.get(), 1);
}

#[test]
fn grant_copy_moves_bytes_between_frames_and_grants_and_refuses_the_rest() {
    let (run, vm) = pvdev("test=gntcopy", 0);
    assert!(!run.console.contains("FAILED"), "{}", run.console);
    assert_eq!(run.console.matches(": ok").count(), 12, "{}", run.console);
    assert_eq!(run.outcome, OK);
    // The destination page as the host sees it: the three copies filled
    // bytes 0..256 with the source pattern; the refused ones wrote nothing.
    let dest = field(&run.console, "gntcopy: dest=", "dest").expect("dest page printed");
    let mut page = vec![0u8; 4096];
    vm.dom.ram.read(dest, &mut page).unwrap();
    let pattern: Vec<u8> = (0..256u32).map(|i| (i as u8).wrapping_mul(7).wrapping_add(1)).collect();
    assert_eq!(&page[..256], &pattern[..]);
    assert!(page[256..].iter().all(|&b| b == 0), "a refused copy wrote to the page");
    // Every grant the copies mapped was released.
    assert_eq!(vm.dom.grants.mapped_refs(), 0);
}

#[test]
fn a_guest_binds_a_port_domain0_allocated_and_events_flow_both_ways() {
    let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
    let mut dom0 = None;
    let (run, vm) = boot_vm_with(VmConfig::bundled("pvdev", "test=bindinter"), |vm| {
        let evtchn = vm.dom.evtchn.clone();
        let port = evtchn.alloc_dom0_unbound(xen_domain::domid::GUEST_DOMID, wake.clone()).unwrap();
        vm.store.write_str("/local/domain/1/data/dom0-port", &port.to_string()).unwrap();
        let wake = wake.clone();
        // Domain 0's end: answer the guest's first send on the same channel
        // (bounded, so a guest that never sends fails the test, not hangs it).
        let answer = std::thread::spawn(move || {
            for _ in 0..60_000 {
                if wake.read().is_ok() {
                    return (evtchn.dom0_peer(port), evtchn.notify_dom0_port(port).is_ok());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            (None, false)
        });
        dom0 = Some((port, answer));
    });
    let (port, answer) = dom0.unwrap();
    let (peer, notified) = answer.join().unwrap();
    assert!(!run.console.contains("FAILED"), "{}", run.console);
    assert_eq!(run.console.matches(": ok").count(), 6, "{}", run.console);
    assert_eq!(run.outcome, OK);
    // The guest's port domain 0 saw bound is the one the guest got, and
    // the guest names domain 0's port as its remote end.
    assert_eq!(peer.map(u64::from), field(&run.console, "bindinter: local", "local-port"));
    assert_eq!(field(&run.console, "bindinter: local", "remote-port"), Some(u64::from(port)));
    assert!(notified);
    // The guest closed its end: domain 0's port is unbound again.
    assert_eq!(vm.dom.evtchn.dom0_peer(port), None);
    assert!(vm.dom.evtchn.notify_dom0_port(port).is_ok_and(|raised| !raised));
}
