//! SMP PVH guests built instruction by instruction (`tests::pvh_asm`):
//! vCPU 0 brings vCPU 1 up with `VCPUOP_initialise` (Xen's
//! `vcpu_hvm_context`, 32- and 64-bit) and `VCPUOP_up`, vCPU 1 makes a
//! hypercall of its own, vCPU 0 takes it down and up again (it resumes
//! where it stopped), and the refusals come back as Xen's errnos.

use pv_abi::errno::*;
use tests::pvh_asm::*;
use tests::smp_asm::*;
use tests::{boot_vm, Run};
use vmm::{Kernel, Outcome, Vm, VmConfig};

fn result(vm: &Vm, slot: u32) -> i32 {
    vm.dom.ram.read_obj::<i32>(u64::from(RESULTS + slot * 4)).unwrap()
}

fn err(e: i64) -> i32 {
    -(e as i32)
}

/// Boots the PVH guest `a` (64-bit when `long`) with `vcpus` vCPUs and
/// 16 MiB, to its end.
fn boot_asm(a: &Asm, long: bool, vcpus: u32) -> (Run, tests::RanVm) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("smp.elf");
    std::fs::write(&path, pvh_elf(a, long)).unwrap();
    let mut cfg = VmConfig::bundled("hello", "");
    cfg.kernel = Kernel::File(path);
    cfg.mem_bytes = 16 << 20;
    cfg.vcpus = vcpus;
    boot_vm(cfg)
}

fn run(long: bool, vcpus: u32) -> (Run, tests::RanVm) {
    boot_asm(&guest(long), long, vcpus)
}

fn check(long: bool) {
    let (run, vm) = run(long, 3);
    assert_eq!(run.outcome, Outcome::XenShutdown { reason: 0 }, "{}", run.console);
    // `common_vcpu_op` (xen/common/domain.c): up before initialise.
    assert_eq!(result(&vm, 0), err(EINVAL), "up of an uninitialised vCPU");
    // `arch_initialise_vcpu` (xen/arch/x86/domain.c) / `arch_set_info_hvm_guest`.
    assert_eq!(result(&vm, 1), 0, "initialise");
    assert_eq!(result(&vm, 2), 0, "initialise leaves the vCPU down (is_up 0)");
    assert_eq!(result(&vm, 3), err(EEXIST), "second initialise");
    assert_eq!(result(&vm, 4), 0, "up");
    assert_eq!(result(&vm, 10), 1, "vCPU 1's own hypercall: it is up");
    assert_eq!(result(&vm, 5), 0, "down");
    assert_eq!(result(&vm, 6), 0, "is_up after down");
    assert_eq!(result(&vm, 7), 0, "up again");
    let entries = vm.dom.ram.read_obj::<u32>(u64::from(ENTRIES)).unwrap();
    assert_eq!(entries, 1, "up after down resumes vCPU 1 where it stopped, not at its entry");
    // `arch_set_info_hvm_guest` (xen/arch/x86/hvm/domain.c): pad, mode.
    assert_eq!(result(&vm, 8), err(EINVAL), "non-zero pad");
    assert_eq!(result(&vm, 9), err(EINVAL), "unknown mode");
    // `do_vcpu_op` (xen/arch/x86/domain.c): `domain_vcpu()` is NULL.
    assert_eq!(result(&vm, 11), err(ENOENT), "vCPU 3 of 3");
    let per_vcpu = vm.vcpu_stats();
    assert_eq!(per_vcpu.len(), 3);
    assert_eq!(per_vcpu[1].hypercalls(u64::from(VCPU_OP)), 1, "vCPU 1 made one vcpu_op");
    assert_eq!(per_vcpu[2].total_exits(), 0, "vCPU 2 never ran");
    assert_eq!(run.stats.hypercalls(u64::from(VCPU_OP)), 12, "totals count every vCPU");
}

#[test]
fn a_32_bit_pvh_guest_brings_up_a_second_vcpu_with_vcpu_hvm_context() {
    check(false);
}

#[test]
fn a_64_bit_pvh_guest_brings_up_a_second_vcpu_with_vcpu_hvm_context() {
    check(true);
}

/// `evtchn_bind_ipi()` + `evtchn_send()` (`xen/common/event_channel.c`)
/// with the callback vector (`HVM_PARAM_CALLBACK_IRQ`, per domain), both
/// ways: an IPI port bound for vCPU 1 sets vCPU 1's `upcall_pending` and
/// interrupts vCPU 1 only (vCPU 0 has interrupts off then); vCPU 1 then
/// sends on a port bound for vCPU 0, which takes that interrupt.
/// Where `ipi_guest(true)` moves vCPU 1's `vcpu_info` (guest RAM, 64-byte
/// aligned) and puts vCPU 1's runstate before up and after the IPIs.
const VINFO: u32 = SCRATCH + 0x400;
const RUNSTATE_BEFORE: u32 = SCRATCH + 0x500;
const RUNSTATE_AFTER: u32 = SCRATCH + 0x540;

/// The IPI guest; with `register_vcpu_info`, vCPU 0 first moves vCPU 1's
/// `vcpu_info` to [`VINFO`] (`VCPUOP_register_vcpu_info`, result slot 7)
/// and acknowledges the spurious event the move raises, and reads vCPU
/// 1's runstate before up and after the IPIs (slots 8, 9).
/// With `upcall_vectors`, each vCPU enables its x2APIC and vCPU 0 gives
/// both vCPUs [`IRQ_VECTOR`] with `HVMOP_set_evtchn_upcall_vector`
/// (result slots 1 and 7) instead of the domain's callback vector.
fn ipi_guest(register_vcpu_info: bool, upcall_vectors: bool) -> (Run, tests::RanVm) {
    const EVENT_CHANNEL_OP: u32 = 32;
    const HVM_OP: u32 = 34;
    let long = true;
    let mut a = Asm::default();
    a.setup_descriptors().wrmsr(pv_abi::hvm::cpuid::XEN_HYPERCALL_MSR, u64::from(HCALL_PAGE));
    a.enter_long_mode().irq_handler_64();
    // vCPU 1: load the GDT (Xen starts it with selector-0 segments and no
    // GDT) and the 64-bit IDT, say ready, take the interrupt, say done.
    let entry = a.behind_jump(|a| {
        a.raw(&[0x0f, 0x01, 0x14, 0x25]).raw(&(GDT + 0x40).to_le_bytes()); // lgdt [gdtr]
                                                                           // Reload CS from it (push 0x08; push next; retfq): the interrupt's
                                                                           // iretq needs a real code selector.
        let next = a.here() + 9;
        a.raw(&[0x6a, 0x08, 0x68]).raw(&next.to_le_bytes()).raw(&[0x48, 0xcb]);
        a.raw(&[0x0f, 0x01, 0x1c, 0x25]).raw(&(GDT + 0x60).to_le_bytes()); // lidt [idtr64]
        if upcall_vectors {
            enable_x2apic(a);
        }
        a.poke(READY, 1).wait_for_irq();
        a.hypercall(EVENT_CHANNEL_OP, &[4, SCRATCH + 0x30], 5); // send to vCPU 0
        a.poke(DONE, 1).halt_forever();
    });
    // vCPU 0 (interrupts stay off here): bind_ipi(vcpu 1), callback vector, bring vCPU 1 up.
    let s = SCRATCH;
    if register_vcpu_info {
        // struct vcpu_register_vcpu_info { u64 mfn; u32 offset; u32 rsvd; }
        let r = s + 0x200;
        a.poke(r, VINFO >> 12).poke(r + 4, 0).poke(r + 8, VINFO & 0xfff).poke(r + 12, 0);
        a.hypercall(VCPU_OP, &[10, 1, r], 7);
        // The guest consumes the spurious event: upcall_pending, selector.
        a.poke(VINFO, 0).poke(VINFO + 8, 0).poke(VINFO + 12, 0);
        a.hypercall(VCPU_OP, &[4, 1, RUNSTATE_BEFORE], 8);
    }
    a.poke(s, 1).poke(s + 4, 0).hypercall(EVENT_CHANNEL_OP, &[7, s], 0);
    a.poke(s + 0x20, 0).poke(s + 0x24, 0).hypercall(EVENT_CHANNEL_OP, &[7, s + 0x20], 6); // bind_ipi(vcpu 0)
    a.load_eax(s + 0x24).store_eax(s + 0x30);
    let p = s + 0x100;
    if upcall_vectors {
        // struct xen_hvm_evtchn_upcall_vector { u32 vcpu; u8 vector; }
        enable_x2apic(&mut a);
        a.poke(p, 0).poke(p + 4, u32::from(IRQ_VECTOR)).hypercall(HVM_OP, &[23, p], 1);
        a.poke(p + 8, 1).poke(p + 12, u32::from(IRQ_VECTOR)).hypercall(HVM_OP, &[23, p + 8], 7);
    } else {
        a.poke(p, 0x7ff0).poke(p + 4, 0).poke(p + 8, u32::from(IRQ_VECTOR)).poke(p + 12, 0x0200_0000);
        a.hypercall(HVM_OP, &[0, p], 1);
    }
    write_context(&mut a, long, entry);
    a.hypercall(VCPU_OP, &[INITIALISE, 1, CTX], 2).hypercall(VCPU_OP, &[UP, 1, 0], 3);
    spin_until_set(&mut a, READY, long);
    a.load_eax(s + 4).store_eax(s + 0x10).hypercall(EVENT_CHANNEL_OP, &[4, s + 0x10], 4); // send
                                                                                          // sti; until [IRQ_COUNT] >= 2 (vCPU 1's interrupt, then ours); cli.
    a.raw(&[0xfb, 0x83, 0x3c, 0x25]).raw(&IRQ_COUNT.to_le_bytes()).raw(&[0x02, 0x72, 0xf6, 0xfa]);
    spin_until_set(&mut a, DONE, long);
    if register_vcpu_info {
        a.hypercall(VCPU_OP, &[4, 1, RUNSTATE_AFTER], 9);
    }
    a.poweroff(0);
    boot_asm(&a, long, 2)
}

/// Turns the running vCPU's local APIC on in x2APIC mode (`IA32_APIC_BASE`
/// enable + x2APIC bits, then the spurious-vector register's enable bit):
/// an upcall-vector MSI is delivered through it.
fn enable_x2apic(a: &mut Asm) {
    a.wrmsr(0x1b, 0xfee0_0000 | (1 << 11) | (1 << 10)).wrmsr(0x80f, 0x1ff);
}

/// Runs [`ipi_guest`] and checks what both its variants share: a clean
/// `SCHEDOP_shutdown`, its first `slots` results 0 (`what` names them),
/// each vCPU's handler run once. Returns the VM and its shared-info page.
fn ipi_guest_ran(register_vcpu_info: bool, slots: u32, what: &str) -> (tests::RanVm, u64) {
    ipi_guest_checked(ipi_guest(register_vcpu_info, false), slots, what)
}

fn ipi_guest_checked((run, vm): (Run, tests::RanVm), slots: u32, what: &str) -> (tests::RanVm, u64) {
    assert_eq!(run.outcome, Outcome::XenShutdown { reason: 0 }, "{}", run.console);
    let results: Vec<i32> = (0..slots).map(|i| result(&vm, i)).collect();
    assert_eq!(results, vec![0; slots as usize], "{what}");
    assert_eq!(vm.dom.ram.read_obj::<u32>(u64::from(IRQ_COUNT)).unwrap(), 2, "each vCPU's handler ran once");
    (vm, xen_domain::pvh::PvhLayout::new(16 << 20).shared_info())
}

#[test]
fn ipis_between_vcpu_0_and_vcpu_1_both_ways() {
    let (vm, si) = ipi_guest_ran(false, 7, "bind_ipi x2, param, initialise, up, send x2");
    // `vcpu_info` is 64 bytes (xen/include/public/xen.h).
    assert_eq!(vm.dom.ram.read_obj::<u8>(si + 64).unwrap(), 1, "vcpu_info[1].evtchn_upcall_pending");
    assert_eq!(vm.dom.ram.read_obj::<u8>(si).unwrap(), 1, "vcpu_info[0].evtchn_upcall_pending (the reply)");
    let upcalls = vm.dom.evtchn.counters.upcalls.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(upcalls, 2, "one upcall each way, none lost or doubled");
}

/// The same IPIs with a per-vCPU upcall vector instead of the callback
/// vector: `HVMOP_set_evtchn_upcall_vector` (`xen/arch/x86/hvm/hvm.c`)
/// sets `v->arch.hvm.evtchn_upcall_vector` for the vCPU it names, and an
/// event for that vCPU arrives as that vector at that vCPU's local APIC
/// (`vlapic_set_irq()` on `v`'s vlapic, `hvm_assert_evtchn_irq()`): vCPU 1
/// takes the IPI bound for it, vCPU 0 the answer, each exactly once.
#[test]
fn ipis_arrive_on_each_vcpus_own_upcall_vector() {
    let what = "bind_ipi x2, vector vCPU 0, initialise, up, send x2, vector vCPU 1";
    let (vm, si) = ipi_guest_checked(ipi_guest(false, true), 8, what);
    assert_eq!(vm.dom.ram.read_obj::<u8>(si + 64).unwrap(), 1, "vcpu_info[1].evtchn_upcall_pending");
    assert_eq!(vm.dom.ram.read_obj::<u8>(si).unwrap(), 1, "vcpu_info[0].evtchn_upcall_pending (the reply)");
    let upcalls = vm.dom.evtchn.counters.upcalls.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(upcalls, 2, "one upcall each way, none lost or doubled");
}

/// `VCPUOP_register_vcpu_info` (`common_vcpu_op()`, `map_guest_area()`,
/// `xen/common/domain.c`) by vCPU 0 for vCPU 1 before it comes up: the
/// IPI for vCPU 1 then marks the new `vcpu_info` (`evtchn_2l_set_pending()`
/// uses `vcpu_info(v, ...)`, `xen/common/event_2l.c`) and interrupts vCPU
/// 1; the old slot in the shared-info page stays clear.
/// `VCPUOP_get_runstate_info` (`public/vcpu.h`): vCPU 1 is
/// `RUNSTATE_offline` before up, `RUNSTATE_running` after.
#[test]
fn a_moved_vcpu_info_receives_its_vcpus_ipi_and_runstate_follows_up() {
    let what = "bind_ipi x2, param, initialise, up, send x2, register, runstate x2";
    let (vm, si) = ipi_guest_ran(true, 10, what);
    assert_eq!(vm.dom.ram.read_obj::<u8>(u64::from(VINFO)).unwrap(), 1, "the moved vcpu_info's upcall_pending");
    assert_eq!(vm.dom.ram.read_obj::<u8>(si + 64).unwrap(), 0, "the old vcpu_info[1] slot is not used");
    assert_eq!(vm.dom.ram.read_obj::<u8>(si).unwrap(), 1, "vCPU 0's vcpu_info (the reply)");
    // struct vcpu_runstate_info: int state first (RUNSTATE_offline 3, running 0).
    assert_eq!(vm.dom.ram.read_obj::<u32>(u64::from(RUNSTATE_BEFORE)).unwrap(), 3, "offline before up");
    assert_eq!(vm.dom.ram.read_obj::<u32>(u64::from(RUNSTATE_AFTER)).unwrap(), 0, "running after up");
}

/// Every vCPU runs (N = 1, 2, 4, 8): each brought up by vCPU 0 with
/// `VCPUOP_initialise`/`up` (`xen/common/domain.c`) sets its own word;
/// `VCPUOP_is_up` says 1 for each; the unused vCPUs of a larger VM never
/// run.
#[test]
fn every_vcpu_runs_with_1_2_4_and_8_vcpus() {
    for n in [1u32, 2, 4, 8] {
        let (run, vm) = boot_asm(&roll_call_guest(n), true, n);
        assert_eq!(run.outcome, Outcome::XenShutdown { reason: 0 }, "{n} vCPUs: {}", run.console);
        for id in 0..n {
            let word = vm.dom.ram.read_obj::<u32>(u64::from(ROLL_CALL + 4 * id)).unwrap();
            assert_eq!(word, 1, "vCPU {id} of {n} ran");
        }
        for id in 1..n {
            assert_eq!(result(&vm, 20 + id), 1, "VCPUOP_is_up({id}) of {n}");
        }
        assert_eq!(vm.vcpu_stats().len(), n as usize);
    }
}
