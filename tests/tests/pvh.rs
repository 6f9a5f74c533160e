//! Xen PVH guests built instruction by instruction (`tests::pvh_asm`): the
//! 32-bit entry and calling convention, a 64-bit guest switching to long
//! mode and using the 64-bit convention, and hostile arguments (hypercall
//! page MSR, `add_to_physmap`, HVM params, structures straddling RAM's
//! end): errors for the guest, no panic in the VMM.

use pv_abi::errno::*;
use pv_abi::hvm::cpuid::XEN_HYPERCALL_MSR;
use std::path::Path;
use tests::pvh_asm::*;
use tests::{boot_vm, Run};
use vmm::{Kernel, Outcome, Vm, VmConfig};
use xen_domain::pvh::PvhLayout;

const MEM: u64 = 16 << 20;
const POWEROFF_OK: Outcome = Outcome::XenShutdown { reason: 0 };

fn run(dir: &Path, asm: &Asm, elf64: bool) -> (Run, tests::RanVm) {
    let path = dir.join("guest.elf");
    std::fs::write(&path, pvh_elf(asm, elf64)).unwrap();
    let mut cfg = VmConfig::bundled("hello", "");
    cfg.kernel = Kernel::File(path);
    cfg.mem_bytes = MEM;
    boot_vm(cfg)
}

fn result(vm: &Vm, slot: u32) -> i32 {
    vm.dom.ram.read_obj::<i32>(u64::from(RESULTS + slot * 4)).unwrap()
}

fn err(e: i64) -> i32 {
    -(e as i32)
}

// Hypercall numbers and commands used below.
const MEMORY_OP: u32 = 12;
const XEN_VERSION: u32 = 17;
const GRANT_TABLE_OP: u32 = 20;
const EVENT_CHANNEL_OP: u32 = 32;
const HVM_OP: u32 = 34;

/// The common body: asks for the hypercall page, then exercises `memory_op`,
/// `hvm_op`, `xen_version`, `grant_table_op` and `event_channel_op` with
/// good and bad arguments. Structure layouts follow the mode (`compat`).
fn body(a: &mut Asm, compat: bool) {
    let layout = PvhLayout::new(MEM);
    let hole = (MEM >> 12) as u32;
    let s = SCRATCH;
    // memory_map: {nr_entries, buffer} at s, entries at s+0x100.
    a.poke(s, 16).poke(s + 4, s + 0x100).poke(s + 8, if compat { 0 } else { s + 0x100 }).poke(s + 12, 0);
    if !compat {
        a.poke(s + 4, 0);
    }
    a.hypercall(MEMORY_OP, &[9, s], 0);
    a.load_eax(s).store_eax(RESULTS + 4);
    // get_param(STORE_PFN) and a bad index.
    let p = s + 0x400;
    a.poke(p, 0x7ff0).poke(p + 4, 1).poke(p + 8, 0).poke(p + 12, 0);
    a.hypercall(HVM_OP, &[1, p], 2).load_eax(p + 8).store_eax(RESULTS + 3 * 4);
    a.poke(p + 4, 1000).hypercall(HVM_OP, &[1, p], 4);
    a.poke(p + 4, 17).hypercall(HVM_OP, &[0, p], 5); // set CONSOLE_PFN: refused
                                                     // add_to_physmap(shared_info) at the hole, over a VMM page, in RAM,
                                                     // above the hole, and from a structure straddling the end of RAM.
    let x = s + 0x500;
    let atp = |a: &mut Asm, at: u32, space: u32, idx: u32, gpfn: u32| {
        a.poke(at, 0x7ff0).poke(at + 4, space);
        if compat {
            a.poke(at + 8, idx).poke(at + 12, gpfn);
        } else {
            a.poke(at + 8, idx).poke(at + 12, 0).poke(at + 16, gpfn).poke(at + 20, 0);
        }
    };
    atp(a, x, 0, 0, (layout.vmm_base >> 12) as u32);
    a.hypercall(MEMORY_OP, &[7, x], 6);
    atp(a, x, 0, 0, 0x200);
    a.hypercall(MEMORY_OP, &[7, x], 7);
    atp(a, x, 0, 0, 0xfee00);
    a.hypercall(MEMORY_OP, &[7, x], 8);
    a.hypercall(MEMORY_OP, &[7, MEM as u32 - 8], 9);
    atp(a, x, 0, 0, hole);
    a.hypercall(MEMORY_OP, &[7, x], 10);
    // The guest sees the pvclock scale through the placed page.
    a.load_eax((hole << 12) + 32 + 24).store_eax(RESULTS + 11 * 4);
    // A grant frame next to it, then setup_table returns where it is.
    atp(a, x, 1, 0, hole + 1);
    a.hypercall(MEMORY_OP, &[7, x], 12);
    let g = s + 0x600;
    a.poke(g, 0x7ff0).poke(g + 4, 1).poke(g + 8, 0x7fff).poke(g + 12, s + 0x700).poke(g + 16, 0).poke(g + 20, 0);
    if !compat {
        a.poke(g + 16, s + 0x700).poke(g + 12, 0);
    }
    a.hypercall(GRANT_TABLE_OP, &[2, g, 1], 13).load_eax(g + 8).store_eax(RESULTS + 14 * 4);
    a.load_eax(s + 0x700).store_eax(RESULTS + 15 * 4);
    // xen_version(get_features) and alloc_unbound with DOMID_SELF.
    a.poke(s + 0x800, 0).hypercall(XEN_VERSION, &[6, s + 0x800], 16).load_eax(s + 0x804).store_eax(RESULTS + 17 * 4);
    a.poke(s + 0x900, 0x7ff0).poke(s + 0x904, 0).hypercall(EVENT_CHANNEL_OP, &[6, s + 0x900], 18);
    a.load_eax(s + 0x904).store_eax(RESULTS + 19 * 4);
    // remove_from_physmap of the grant frame, then of a frame holding nothing.
    let r = s + 0xa00;
    let rfp = |a: &mut Asm, gpfn: u32| {
        a.poke(r, 0x7ff0);
        if compat {
            a.poke(r + 4, gpfn);
        } else {
            a.poke(r + 8, gpfn).poke(r + 12, 0);
        }
    };
    rfp(a, hole + 1);
    a.hypercall(MEMORY_OP, &[15, r], 20);
    a.hypercall(MEMORY_OP, &[15, r], 21);
    a.hypercall(60, &[], 22);
    a.hypercall(MEMORY_OP, &[13, s], 23); // set_memory_map: refused
}

fn check_body(vm: &Vm) {
    let layout = PvhLayout::new(MEM);
    assert_eq!(result(vm, 0), 0, "memory_map");
    assert_eq!(result(vm, 1), 5, "memory map entries");
    let e: pv_abi::hvm::E820Entry = vm.dom.ram.read_obj(u64::from(SCRATCH + 0x100 + 3 * 20)).unwrap();
    assert_eq!(({ e.addr }, { e.kind }), (layout.vmm_base, 2), "the VMM's pages are reserved");
    assert_eq!((result(vm, 2), result(vm, 3) as u64), (0, layout.store() >> 12), "STORE_PFN");
    assert_eq!(result(vm, 4), err(EINVAL), "bad param index");
    assert_eq!(result(vm, 5), err(EPERM), "console pfn is read-only");
    // `xenmem_add_to_physmap_one()` (xen/arch/x86/mm/p2m.c): the VMM's own
    // pages and the APIC range are refused as Xen refuses `p2m_mmio_direct`
    // (-EPERM); over guest RAM the page is freed and the frame placed.
    assert_eq!(result(vm, 6), err(EPERM), "over the VMM's own page");
    assert_eq!(result(vm, 7), 0, "over guest RAM");
    assert_eq!(result(vm, 8), err(EPERM), "the APIC range");
    assert_eq!(result(vm, 9), err(EFAULT), "argument straddling RAM's end");
    assert_eq!(result(vm, 10), 0, "shared info placed in the hole");
    assert_ne!(result(vm, 11), 0, "tsc_to_system_mul visible through the placed page");
    assert_eq!(result(vm, 12), 0, "grant frame placed");
    assert_eq!((result(vm, 13), result(vm, 14) as i16), (0, 0), "setup_table");
    assert_eq!(result(vm, 15) as u64, (MEM >> 12) + 1, "setup_table names the placed frame");
    assert_eq!(result(vm, 16), 0);
    assert_eq!(result(vm, 17) as u32, pv_abi::hvm::xen_version::PVH_FEATURES, "real XENFEAT bits");
    // do_xen_version(): the PV-only writable_descriptor_tables (1) and
    // supervisor_mode_kernel (3) are never set for an HVM domain.
    assert_eq!(result(vm, 17) & 0b1010, 0, "no PV-only XENFEAT bits");
    assert_eq!(result(vm, 18), 0, "alloc_unbound(DOMID_SELF)");
    assert!(result(vm, 19) > 0, "a port");
    // xen/common/memory.c: an empty gfn → -ENOENT.
    assert_eq!((result(vm, 20), result(vm, 21)), (0, err(ENOENT)), "remove_from_physmap");
    assert_eq!(result(vm, 22), err(ENOSYS));
    // The struct at SCRATCH starts with 16 (nr_entries of the memory-map
    // call), read as domid 16, which does not exist (XSM_TARGET, -ESRCH).
    assert_eq!(result(vm, 23), err(ESRCH), "set_memory_map for an unknown domain");
}

#[test]
fn pvh_32_bit_guest_uses_the_hypercall_page_and_survives_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let layout = PvhLayout::new(MEM);
    let mut a = Asm::default();
    a.setup_descriptors();
    // Bad hypercall-page addresses: each wrmsr takes #GP (skipped by the handler).
    a.wrmsr(XEN_HYPERCALL_MSR, u64::from(HCALL_PAGE) + 1);
    a.wrmsr(XEN_HYPERCALL_MSR, MEM + 0x1000);
    a.wrmsr(XEN_HYPERCALL_MSR, layout.store());
    a.wrmsr(XEN_HYPERCALL_MSR, u64::from(HCALL_PAGE));
    body(&mut a, true);
    a.poweroff(0);
    let (run, vm) = run(dir.path(), &a, false);
    assert_eq!(run.outcome, POWEROFF_OK, "{}", run.console);
    assert_eq!(vm.dom.ram.read_obj::<u32>(u64::from(GP_COUNT)).unwrap(), 3, "three refused MSR writes");
    check_body(&vm);
    assert_eq!(run.stats.exits(vmm::stats::ExitKind::Msr), 4);
}

#[test]
fn pvh_64_bit_guest_uses_the_64_bit_convention() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Asm::default();
    a.setup_descriptors().wrmsr(XEN_HYPERCALL_MSR, u64::from(HCALL_PAGE)).enter_long_mode();
    body(&mut a, false);
    a.poweroff(0);
    let (run, vm) = run(dir.path(), &a, true);
    assert_eq!(run.outcome, POWEROFF_OK, "{}", run.console);
    check_body(&vm);
}

/// `VIRQ_TIMER` bound with `EVTCHNOP_bind_virq`, raised by `set_timer_op`
/// and by the `vcpu_op` single-shot timer, waited for with `SCHEDOP_poll`;
/// pvclock system time advancing; the upcall vector and callback
/// parameter. Uses `compat` layouts when `compat`.
fn timer_body(a: &mut Asm, compat: bool) {
    let hole = MEM as u32;
    let s = SCRATCH;
    a.load_eax(hole + 48).store_eax(RESULTS + 30 * 4);
    let b = s + 0xb00;
    a.poke(b, 0).poke(b + 4, 0).poke(b + 8, 0);
    a.hypercall(EVENT_CHANNEL_OP, &[1, b], 31).load_eax(b + 8).store_eax(RESULTS + 32 * 4);
    a.poke(s + 0xb40, 0).poke(s + 0xb44, 0).hypercall(EVENT_CHANNEL_OP, &[1, s + 0xb40], 33);
    a.hypercall(15, &[1, 0], 34); // set_timer_op(1 ns): already due
    let ps = s + 0xc00;
    if compat {
        a.poke(ps, b + 8).poke(ps + 4, 1).poke(ps + 8, 0).poke(ps + 12, 0);
    } else {
        a.poke(ps, b + 8).poke(ps + 4, 0).poke(ps + 8, 1).poke(ps + 12, 0).poke(ps + 16, 0).poke(ps + 20, 0);
    }
    a.hypercall(29, &[3, ps], 35).load_eax(hole + 2048).store_eax(RESULTS + 36 * 4);
    a.poke(hole + 2048, 0);
    let v = s + 0xd00;
    // VCPUOP_set_singleshot_timer is 8 (xen/include/public/vcpu.h).
    a.poke(v, 1).poke(v + 4, 0).poke(v + 8, 1).poke(v + 12, 0).hypercall(24, &[8, 0, v], 37); // past + FUTURE
    a.poke(v + 8, 0).hypercall(24, &[8, 0, v], 38);
    a.hypercall(29, &[3, ps], 39).load_eax(hole + 2048).store_eax(RESULTS + 40 * 4);
    a.load_eax(hole + 48).store_eax(RESULTS + 41 * 4);
    let st = s + 0xe00;
    a.poke(st, 0x7ff0).load_eax(b + 8).store_eax(st + 4).hypercall(EVENT_CHANNEL_OP, &[5, st], 42);
    a.load_eax(st + 8).store_eax(RESULTS + 43 * 4).load_eax(st + 16).store_eax(RESULTS + 44 * 4);
    let u = s + 0xe40;
    a.poke(u, 0).poke(u + 4, 0xf3).hypercall(HVM_OP, &[23, u], 45);
    a.poke(u + 4, 5).hypercall(HVM_OP, &[23, u], 46);
    let p = s + 0xe80;
    a.poke(p, 0x7ff0).poke(p + 4, 0).poke(p + 8, 0xf3).poke(p + 12, 0x0200_0000).hypercall(HVM_OP, &[0, p], 47);
    a.poke(p + 8, 0).poke(p + 12, 0).hypercall(HVM_OP, &[1, p], 48).load_eax(p + 8).store_eax(RESULTS + 49 * 4);
    // VCPUOP_set_periodic_timer (6) with a 1 ns period: below 1 ms, -EINVAL
    // (xen/common/domain.c common_vcpu_op); stop_periodic_timer (7): 0.
    a.hypercall(24, &[6, 0, v], 50).hypercall(24, &[7, 0, 0], 51);
}

fn check_timer_body(vm: &Vm) {
    assert_eq!(result(vm, 31), 0, "bind_virq");
    let port = result(vm, 32);
    assert!(port > 0 && port < 32, "port {port}");
    assert_eq!(result(vm, 33), err(EEXIST), "VIRQ_TIMER binds once");
    assert_eq!((result(vm, 34), result(vm, 35)), (0, 0), "set_timer_op, poll");
    assert_ne!(result(vm, 36) & (1 << port), 0, "set_timer_op raised VIRQ_TIMER");
    // xen/common/domain.c common_vcpu_op(): VCPU_SSHOTTMR_future is ignored,
    // a past deadline sends the event at once and returns 0.
    assert_eq!(result(vm, 37), 0, "VCPU_SSHOTTMR_future in the past: 0 (the flag is ignored)");
    assert_eq!((result(vm, 38), result(vm, 39)), (0, 0), "single-shot timer, poll");
    assert_ne!(result(vm, 40) & (1 << port), 0, "the single-shot timer raised VIRQ_TIMER");
    assert!(result(vm, 41) as u32 > result(vm, 30) as u32, "pvclock system time advanced");
    assert_eq!((result(vm, 42), result(vm, 43), result(vm, 44)), (0, 4, 0), "status: EVTCHNSTAT_virq, VIRQ_TIMER");
    assert_eq!((result(vm, 45), result(vm, 46)), (0, err(EINVAL)), "upcall vector");
    assert_eq!((result(vm, 47), result(vm, 48), result(vm, 49)), (0, 0, 0xf3), "callback vector param");
    assert_eq!((result(vm, 50), result(vm, 51)), (err(EINVAL), 0), "periodic timer: 1 ns period, stop");
}

#[test]
fn pvh_timer_raises_virq_timer_and_pvclock_advances() {
    for long in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Asm::default();
        a.setup_descriptors().wrmsr(XEN_HYPERCALL_MSR, u64::from(HCALL_PAGE));
        if long {
            a.enter_long_mode();
        }
        body(&mut a, !long);
        timer_body(&mut a, !long);
        a.poweroff(0);
        let (run, vm) = run(dir.path(), &a, long);
        assert_eq!(run.outcome, POWEROFF_OK, "{}", run.console);
        check_body(&vm);
        check_timer_body(&vm);
    }
}

/// Xen's global callback vector: with `HVM_PARAM_CALLBACK_IRQ` of type
/// vector, `VIRQ_TIMER` from the timer thread is injected at that vector
/// (split irqchip, `KVM_INTERRUPT`, vCPU kicked out of `KVM_RUN`); the
/// guest's handler returns with `iretq` and no EOI.
#[test]
fn pvh_callback_vector_delivers_virq_timer_to_the_guest_handler() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Asm::default();
    a.setup_descriptors().wrmsr(XEN_HYPERCALL_MSR, u64::from(HCALL_PAGE)).enter_long_mode().irq_handler_64();
    let s = SCRATCH;
    a.poke(s, 0).poke(s + 4, 0).poke(s + 8, 0).hypercall(EVENT_CHANNEL_OP, &[1, s], 0); // bind_virq(VIRQ_TIMER)
    let p = s + 0x100;
    a.poke(p, 0x7ff0).poke(p + 4, 0).poke(p + 8, u32::from(IRQ_VECTOR)).poke(p + 12, 0x0200_0000);
    a.hypercall(HVM_OP, &[0, p], 1); // CALLBACK_IRQ = vector type
    a.hypercall(15, &[1], 2); // set_timer_op(1 ns): due now
    a.wait_for_irq();
    a.poweroff(0);
    let (run, vm) = run(dir.path(), &a, true);
    assert_eq!(run.outcome, POWEROFF_OK, "{}", run.console);
    assert_eq!((result(&vm, 0), result(&vm, 1), result(&vm, 2)), (0, 0, 0));
    assert!(vm.dom.ram.read_obj::<u32>(u64::from(IRQ_COUNT)).unwrap() >= 1, "the handler ran");
    let si = PvhLayout::new(MEM).shared_info();
    assert_eq!(vm.dom.ram.read_obj::<u8>(si).unwrap(), 1, "vcpu_info[0].evtchn_upcall_pending set");
}

/// A 32-bit PVH guest gets Xen's x86_32 shared-info layout (chosen by the
/// vCPU's mode when it places the page): it masks `VIRQ_TIMER`'s port in
/// the 32-bit `evtchn_mask`, and the timer's event stays pending without
/// selector bit or upcall; `EVTCHNOP_unmask` then raises exactly one
/// upcall, with the 32-bit selector (one bit per 32-bit word) at offset 4.
/// The wall clock is where the 32-bit layout has it.
#[test]
fn pvh_32_bit_guest_masks_and_unmasks_through_the_x86_32_shared_info_layout() {
    use pv_abi::shared_info::LAYOUT_X86_32 as L32;
    let dir = tempfile::tempdir().unwrap();
    let mut a = Asm::default();
    a.setup_descriptors().wrmsr(XEN_HYPERCALL_MSR, u64::from(HCALL_PAGE));
    let (s, hole) = (SCRATCH, MEM as u32);
    let si = |off: usize| hole + off as u32;
    // add_to_physmap(shared_info) at the hole (compat struct), bind_virq(VIRQ_TIMER).
    a.poke(s, 0x7ff0).poke(s + 4, 0).poke(s + 8, 0).poke(s + 12, hole >> 12).hypercall(MEMORY_OP, &[7, s], 0);
    let b = s + 0x100;
    a.poke(b, 0).poke(b + 4, 0).poke(b + 8, 0).hypercall(EVENT_CHANNEL_OP, &[1, b], 1);
    // Mask the port in the 32-bit evtchn_mask, fire the timer, poll for it.
    a.load_eax(b + 8).bts_eax(si(L32.mask));
    a.hypercall(15, &[1, 0], 2);
    let ps = s + 0x200;
    a.poke(ps, b + 8).poke(ps + 4, 1).poke(ps + 8, 0).poke(ps + 12, 0).hypercall(29, &[3, ps], 3);
    let record = |a: &mut Asm, first: u32| {
        for (i, off) in [0, L32.pending_sel, L32.pending, L32.mask].into_iter().enumerate() {
            a.load_eax(si(off)).store_eax(RESULTS + (first + i as u32) * 4);
        }
    };
    record(&mut a, 10);
    // Unmask: the pending event is delivered now.
    a.load_eax(b + 8).store_eax(s + 0x300).hypercall(EVENT_CHANNEL_OP, &[9, s + 0x300], 4);
    record(&mut a, 20);
    a.poweroff(0);
    let (run, vm) = run(dir.path(), &a, false);
    assert_eq!(run.outcome, POWEROFF_OK, "{}", run.console);
    assert_eq!((result(&vm, 0), result(&vm, 1), result(&vm, 2), result(&vm, 3)), (0, 0, 0, 0));
    let port = vm.dom.ram.read_obj::<u32>(u64::from(b + 8)).unwrap();
    assert!((1..32).contains(&port), "port {port} in word 0");
    let bit = 1u32 << port;
    let r = |slot: u32| result(&vm, slot) as u32;
    assert_eq!(r(10) & 0xff, 0, "no upcall_pending while masked");
    assert_eq!(r(11), 0, "no selector bit while masked");
    assert_ne!(r(12) & bit, 0, "pending in the 32-bit evtchn_pending");
    assert_ne!(r(13) & bit, 0, "masked in the 32-bit evtchn_mask");
    assert_eq!(result(&vm, 4), 0, "EVTCHNOP_unmask");
    assert_eq!(r(20) & 0xff, 1, "upcall_pending after unmask");
    assert_eq!(r(21), 1, "selector bit 0 (32-bit word 0) at offset 4");
    assert_ne!(r(22) & bit, 0, "still pending (the guest clears it)");
    assert_eq!(r(23) & bit, 0, "unmasked");
    let upcalls = vm.dom.evtchn.counters.upcalls.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(upcalls, 1, "exactly one upcall, after the unmask");
    let page = PvhLayout::new(MEM).shared_info();
    let word = |off: usize| vm.dom.ram.read_obj::<u32>(page + off as u64).unwrap();
    assert_eq!(word(8), 0, "nothing at the 64-bit selector's place");
    assert_ne!(word(L32.wc_version + 4), 0, "wc_sec in the 32-bit layout");
    assert_eq!(word(pv_abi::shared_info::LAYOUT_64.wc_version + 4), 0, "nothing at the 64-bit wall clock");
}

/// A guest whose `XEN_ELFNOTE_PHYS32_ENTRY` note is only in a `SHT_NOTE`
/// section (no `PT_NOTE` program header) boots, as under Xen, whose libelf
/// falls back to sections (`xen/common/libelf/libelf-dominfo.c`,
/// `elf_xen_parse`); without any note, a 32-bit image is refused with an
/// error naming the missing note.
#[test]
fn pvh_note_only_in_a_section_boots_and_a_missing_note_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Asm::default();
    a.setup_descriptors().wrmsr(XEN_HYPERCALL_MSR, u64::from(HCALL_PAGE));
    a.poweroff(0);
    for elf64 in [false, true] {
        let path = dir.path().join("guest.elf");
        std::fs::write(&path, pvh_elf_note_in_section(&a, elf64)).unwrap();
        let mut cfg = VmConfig::bundled("hello", "");
        cfg.kernel = Kernel::File(path.clone());
        cfg.mem_bytes = MEM;
        let (run, _vm) = boot_vm(cfg);
        assert_eq!(run.outcome, POWEROFF_OK, "elf64 {elf64}: {}", run.console);
    }
    // The 32-bit image with the section's type cleared has no note (and a
    // 64-bit one would be taken for one of our own guests).
    let mut img = pvh_elf_note_in_section(&a, false);
    let shoff = u32::from_le_bytes(img[32..36].try_into().unwrap()) as usize;
    img[shoff + 40 + 4] = 1; // SHT_PROGBITS
    let path = dir.path().join("no-note.elf");
    std::fs::write(&path, img).unwrap();
    let mut cfg = VmConfig::bundled("hello", "");
    cfg.kernel = Kernel::File(path);
    let err = Vm::new(&cfg).err().expect("a 32-bit image without the note is refused").to_string();
    assert!(err.contains("32-bit ELF without a Xen PVH entry note"), "{err}");
    assert!(!err.contains("not a 64-bit"), "{err}");
}

/// Shared info placed over one of the guest's own RAM frames, right after
/// its image (`xenmem_add_to_physmap_one()`, `xen/arch/x86/mm/p2m.c`): the
/// RAM page is freed (`XENMEM_current_reservation` one lower), the guest
/// reads the pvclock the VMM publishes (`vcpu_time_info` in
/// `xen/include/public/xen.h`) through that frame; moved away, the frame
/// is empty (`p2m_remove_page()`: `remove_from_physmap` -ENOENT) until
/// `populate_physmap` fills it with a zeroed page; `decrease_reservation`
/// gives a page back (`xen/common/memory.c`: extents done).
fn shared_info_over_ram_body(a: &mut Asm, compat: bool) {
    let ram_gfn = (BASE + IMAGE_BYTES + 0x1000) >> 12;
    let hole = (MEM >> 12) as u32;
    let s = SCRATCH + 0x100;
    let (dom, atp, list, res, rfp) = (s, s + 0x10, s + 0x40, s + 0x60, s + 0x90);
    a.poke(dom, 0x7ff0);
    let current = |a: &mut Asm, slot: u32| {
        a.hypercall(MEMORY_OP, &[3, dom], slot);
    };
    let place = |a: &mut Asm, gpfn: u32, slot: u32| {
        a.poke(atp, 0x7ff0).poke(atp + 4, 0);
        if compat {
            a.poke(atp + 8, 0).poke(atp + 12, gpfn);
        } else {
            a.poke(atp + 8, 0).poke(atp + 12, 0).poke(atp + 16, gpfn).poke(atp + 20, 0);
        }
        a.hypercall(MEMORY_OP, &[7, atp], slot);
    };
    // xen_memory_reservation over one extent at `list`.
    let reservation = |a: &mut Asm, cmd: u32, gfn: u32, slot: u32| {
        if compat {
            a.poke(list, gfn)
                .poke(res, list)
                .poke(res + 4, 1)
                .poke(res + 8, 0)
                .poke(res + 12, 0)
                .poke(res + 16, 0x7ff0);
        } else {
            a.poke(list, gfn).poke(list + 4, 0);
            a.poke(res, list).poke(res + 4, 0).poke(res + 8, 1).poke(res + 12, 0);
            a.poke(res + 16, 0).poke(res + 20, 0).poke(res + 24, 0x7ff0);
        }
        a.hypercall(MEMORY_OP, &[cmd, res], slot);
    };
    current(a, 0);
    a.poke(ram_gfn << 12, 0xdead_beef);
    place(a, ram_gfn, 1);
    a.load_eax((ram_gfn << 12) + 32 + 24).store_eax(RESULTS + 2 * 4);
    a.load_eax((ram_gfn << 12) + 32).store_eax(RESULTS + 3 * 4);
    current(a, 4);
    place(a, hole, 5);
    a.load_eax(ram_gfn << 12).store_eax(RESULTS + 6 * 4);
    a.poke(rfp, 0x7ff0);
    if compat {
        a.poke(rfp + 4, ram_gfn);
    } else {
        a.poke(rfp + 8, ram_gfn).poke(rfp + 12, 0);
    }
    a.hypercall(MEMORY_OP, &[15, rfp], 7);
    reservation(a, 6, ram_gfn, 8);
    current(a, 9);
    reservation(a, 1, ram_gfn + 1, 10);
    current(a, 11);
}

fn check_shared_info_over_ram(vm: &Vm) {
    let before = result(vm, 0);
    assert!(before > 0, "current_reservation");
    assert_eq!(result(vm, 1), 0, "shared info placed over a RAM frame");
    assert_ne!(result(vm, 2), 0, "tsc_to_system_mul read through the frame");
    let version = result(vm, 3);
    assert!(version != 0 && version % 2 == 0, "a published pvclock version: {version}");
    assert_eq!(result(vm, 4), before - 1, "the RAM page was freed");
    assert_eq!(result(vm, 5), 0, "moved to the hole");
    // Xen's empty gfn reads all-ones; ours reads the freed (madvised) page:
    // zero, the guest's old data gone (docs/conformance.md).
    assert_eq!(result(vm, 6), 0, "the old frame holds no page");
    assert_eq!(result(vm, 7), err(ENOENT), "remove_from_physmap of the emptied frame");
    assert_eq!(result(vm, 8), 1, "populate_physmap: one extent");
    assert_eq!(result(vm, 9), before, "repopulated");
    assert_eq!(result(vm, 10), 1, "decrease_reservation: one extent");
    assert_eq!(result(vm, 11), before - 1);
    let kib = vm.store.read_string("/local/domain/1/memory/static-max").unwrap();
    assert_eq!(kib.parse::<i64>().unwrap(), i64::from(before) * 4, "memory/static-max in KiB");
}

#[test]
fn pvh_32_bit_guest_places_shared_info_over_its_own_ram() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Asm::default();
    a.setup_descriptors().wrmsr(XEN_HYPERCALL_MSR, u64::from(HCALL_PAGE));
    shared_info_over_ram_body(&mut a, true);
    a.poweroff(0);
    let (run, vm) = run(dir.path(), &a, false);
    assert_eq!(run.outcome, POWEROFF_OK, "{}", run.console);
    check_shared_info_over_ram(&vm);
}

#[test]
fn pvh_64_bit_guest_places_shared_info_over_its_own_ram() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Asm::default();
    a.setup_descriptors().wrmsr(XEN_HYPERCALL_MSR, u64::from(HCALL_PAGE)).enter_long_mode();
    shared_info_over_ram_body(&mut a, false);
    a.poweroff(0);
    let (run, vm) = run(dir.path(), &a, true);
    assert_eq!(run.outcome, POWEROFF_OK, "{}", run.console);
    check_shared_info_over_ram(&vm);
}

/// `SCHEDOP_poll` blocks until an event or its timeout
/// (`xen/common/sched/core.c` `do_poll`), and a multicall
/// (`xen/common/multicall.c`; 32-bit guests use `compat_multicall_entry`)
/// of 256 polls with far timeouts keeps blocking: the run-time limit still
/// stops the guest, because a blocking poll ends its exit with a
/// continuation instead of blocking 256 times in one exit.
#[test]
fn pvh_multicall_of_blocking_polls_stops_at_the_run_time_limit() {
    use vmm::console::ConsoleOut;
    const LIST: u32 = 0x20_0000;
    for long in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Asm::default();
        a.setup_descriptors().wrmsr(XEN_HYPERCALL_MSR, u64::from(HCALL_PAGE));
        if long {
            a.enter_long_mode();
        }
        // struct sched_poll: one port (5, valid, never pending), timeout 2^62 ns.
        let (ps, port) = (SCRATCH, SCRATCH + 0x40);
        a.poke(port, 5);
        if long {
            a.poke(ps, port).poke(ps + 4, 0).poke(ps + 8, 1).poke(ps + 12, 0).poke(ps + 16, 0).poke(ps + 20, 1 << 30);
        } else {
            a.poke(ps, port).poke(ps + 4, 1).poke(ps + 8, 0).poke(ps + 12, 1 << 30);
        }
        // 256 entries {op 29, args[0] SCHEDOP_poll 3, args[1] ps} (RAM is
        // zero elsewhere): 64-byte entries (8 fields of 8 bytes), or 32-byte compat ones.
        let (w, size) = if long { (8u8, 64u8) } else { (4, 32) };
        a.raw(&[0xbf]).raw(&LIST.to_le_bytes()); // mov edi, LIST
        a.raw(&[0xb9, 0, 1, 0, 0]); // mov ecx, 256
        a.raw(&[0xc7, 0x07, 29, 0, 0, 0]); // mov dword [rdi], 29
        a.raw(&[0xc7, 0x47, 2 * w, 3, 0, 0, 0]); // mov dword [rdi + args[0]], 3
        a.raw(&[0xc7, 0x47, 3 * w]).raw(&ps.to_le_bytes()); // mov dword [rdi + args[1]], ps
        a.raw(&[0x83, 0xc7, size, 0xe2, 0xe7]); // add edi, size; loop (-25)
        a.poke(RESULTS + 4, 0x5a5a).hypercall(0, &[], 0).hypercall(13, &[LIST, 256], 1);
        a.poweroff(0);
        let path = dir.path().join("guest.elf");
        std::fs::write(&path, pvh_elf(&a, long)).unwrap();
        let (console, _buf) = ConsoleOut::capture();
        let mut cfg = VmConfig::bundled("hello", "");
        cfg.kernel = Kernel::File(path);
        cfg.mem_bytes = MEM;
        cfg.console = console;
        cfg.timeout = Some(std::time::Duration::from_secs(3));
        // Under the default filters, on a thread of its own (`on_vm_thread`).
        let (outcome, vm) = tests::on_vm_thread(move || {
            let mut vm = Vm::new(&cfg).unwrap();
            (vm.run().unwrap(), vm)
        });
        let vm = tests::RanVm::from(vm);
        assert_eq!(outcome, Outcome::Timeout, "long {long}");
        let entry = |i: u32| vm.dom.ram.read_obj::<u32>(u64::from(LIST + i * u32::from(size))).unwrap();
        assert_eq!((entry(0), entry(255)), (29, 29), "the guest built its 256 entries");
        assert_eq!(vm.dom.ram.read_obj::<i32>(u64::from(RESULTS)).unwrap(), err(ENOSYS), "ran up to the multicall");
        let returned = vm.dom.ram.read_obj::<u32>(u64::from(RESULTS + 4)).unwrap();
        assert_eq!(returned, 0x5a5a, "the multicall never returned (its polls block)");
        // Blocking ended exits with a continuation the guest re-entered,
        // rather than one exit holding the vCPU for all 256 polls.
        let multicall_exits = vm.stats().hypercalls(13);
        assert!(multicall_exits >= 2, "the multicall was continued: {multicall_exits} exits");
    }
}

/// CPUID leaf 0x40000004 as `cpuid_hypervisor_leaves()`
/// (`xen/arch/x86/cpuid.c`) answers an HVM guest: subleaf 0 carries
/// `XEN_HVM_CPUID_IOMMU_MAPPINGS` (bit 2) with the vCPU-id, domid and
/// upcall-vector bits; subleaf 1 is all zero.
#[test]
fn pvh_cpuid_leaf_4_has_xens_bits_for_subleaf_0_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Asm::default();
    a.setup_descriptors();
    for (subleaf, slot) in [(0u32, 0), (1, 4)] {
        // mov eax, 0x40000004; mov ecx, subleaf; cpuid; store eax, ebx, ecx.
        a.eax(0x4000_0004).raw(&[0xb9]).raw(&subleaf.to_le_bytes()).raw(&[0x0f, 0xa2]);
        a.store_eax(RESULTS + slot * 4);
        a.raw(&[0x89, 0xd8]).store_eax(RESULTS + (slot + 1) * 4); // mov eax, ebx
        a.raw(&[0x89, 0xc8]).store_eax(RESULTS + (slot + 2) * 4); // mov eax, ecx
    }
    a.wrmsr(XEN_HYPERCALL_MSR, u64::from(HCALL_PAGE)).poweroff(0);
    let (run, vm) = run(dir.path(), &a, false);
    assert_eq!(run.outcome, POWEROFF_OK, "{}", run.console);
    let eax = result(&vm, 0) as u32;
    assert_eq!(eax & 0b101_1100, 0b101_1100, "IOMMU_MAPPINGS, VCPU_ID, DOMID, UPCALL_VECTOR: {eax:#x}");
    assert_eq!(result(&vm, 2), 1, "domid in ecx");
    assert_eq!((result(&vm, 4), result(&vm, 5), result(&vm, 6)), (0, 0, 0), "subleaf 1 is zero");
}

const SCHED_OP: u32 = 29;

/// `SCHEDOP_watchdog` (`domain_watchdog()`, `xen/common/sched/core.c`):
/// a 64-bit guest creates a one-second watchdog (id 1), then spins without
/// making a hypercall; the expiry shuts the domain down with
/// `SHUTDOWN_watchdog` (`domain_watchdog_timeout()`), which the VMM turns
/// into the toolstack's `on_watchdog=destroy` (exit status 1).
#[test]
fn pvh_watchdog_shuts_a_spinning_guest_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Asm::default();
    a.setup_descriptors().wrmsr(XEN_HYPERCALL_MSR, u64::from(HCALL_PAGE)).enter_long_mode();
    let w = SCRATCH + 0x800;
    a.poke(w, 0).poke(w + 4, 1).hypercall(SCHED_OP, &[6, w], 0);
    a.raw(&[0xeb, 0xfe]); // jmp $: no exit of its own
    let (run, vm) = run(dir.path(), &a, true);
    assert_eq!(result(&vm, 0), 1, "the first watchdog's id");
    assert_eq!(run.outcome, Outcome::XenShutdown { reason: 4 }, "{}", run.console);
    assert_eq!(run.outcome.exit_status(), 1, "xl's on_watchdog=destroy is a failure");
}

/// `do_sched_op()` (`xen/common/sched/core.c`): `SCHEDOP_shutdown_code`
/// records the crash code (0), `remote_shutdown` of domain 0 is `-EPERM`
/// (XSM_DM_PRIV), of a missing domain `-ESRCH`, `pin_override` `-EPERM`;
/// the later poweroff reports the recorded code (`domain_shutdown()`,
/// `xen/common/domain.c`). 32-bit layouts.
#[test]
fn pvh_shutdown_code_is_what_the_shutdown_reports_and_remote_ops_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Asm::default();
    a.setup_descriptors().wrmsr(XEN_HYPERCALL_MSR, u64::from(HCALL_PAGE));
    let s = SCRATCH + 0x800;
    a.poke(s, 3).hypercall(SCHED_OP, &[5, s], 0);
    a.poke(s, 0).poke(s + 4, 0).hypercall(SCHED_OP, &[4, s], 1); // domain 0
    a.poke(s, 9).hypercall(SCHED_OP, &[4, s], 2); // no domain 9
    a.poke(s, 0).hypercall(SCHED_OP, &[7, s], 3);
    a.poweroff(0);
    let (run, vm) = run(dir.path(), &a, false);
    assert_eq!(result(&vm, 0), 0, "shutdown_code");
    assert_eq!(result(&vm, 1), err(EPERM), "remote_shutdown of domain 0");
    assert_eq!(result(&vm, 2), err(ESRCH), "remote_shutdown of a missing domain");
    assert_eq!(result(&vm, 3), err(EPERM), "pin_override");
    assert_eq!(run.outcome, Outcome::XenShutdown { reason: 3 }, "the recorded crash code: {}", run.console);
}
