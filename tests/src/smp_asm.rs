//! An SMP PVH guest built instruction by instruction ([`crate::pvh_asm`]):
//! vCPU 0 brings vCPU 1 up with `VCPUOP_initialise` (Xen's
//! `vcpu_hvm_context`, `xen/include/public/hvm/hvm_vcpu.h`) and
//! `VCPUOP_up`, takes it down and up again, and tries the refusals;
//! results land in [`RESULTS`] slots (see [`guest`]). Used by
//! `tests/tests/smp.rs` and the CLI's `vmm-cli/tests/smp_cli.rs`.

use crate::pvh_asm::*;
use pv_abi::hvm::cpuid::XEN_HYPERCALL_MSR;

/// `__HYPERVISOR_vcpu_op`.
pub const VCPU_OP: u32 = 24;
/// `VCPUOP_initialise`.
pub const INITIALISE: u32 = 0;
/// `VCPUOP_up`.
pub const UP: u32 = 1;
/// `VCPUOP_down`.
pub const DOWN: u32 = 2;
/// `VCPUOP_is_up`.
pub const IS_UP: u32 = 3;
/// vCPU 1 counts its entries at its start address here.
pub const ENTRIES: u32 = RESULTS + 0x200;
/// vCPU 0 sets this while vCPU 1 is down.
pub const GO: u32 = RESULTS + 0x204;
/// vCPU 1 sets this once it saw `GO`.
pub const DONE: u32 = RESULTS + 0x208;
/// vCPU 1 sets this after its own hypercall.
pub const READY: u32 = RESULTS + 0x20c;
/// Where the `vcpu_hvm_context` is built.
pub const CTX: u32 = SCRATCH + 0x800;
/// vCPU 1's stack top.
pub const AP_STACK: u32 = 0x8_0000;

/// Spins until the dword at `addr` is non-zero.
pub fn spin_until_set(a: &mut Asm, addr: u32, long: bool) {
    if long {
        a.raw(&[0x83, 0x3c, 0x25]).raw(&addr.to_le_bytes()).raw(&[0x00, 0x74, 0xf6]);
    } else {
        a.raw(&[0x83, 0x3d]).raw(&addr.to_le_bytes()).raw(&[0x00, 0x74, 0xf7]);
    }
}

/// vCPU 1's code: count the entry, ask `VCPUOP_is_up` about itself
/// (result slot 10), set `READY`, wait for `GO`, set `DONE`, halt. Emitted behind a
/// jump; returns its address.
pub fn ap_code(a: &mut Asm, long: bool) -> u32 {
    a.behind_jump(|a| {
        // inc dword [ENTRIES]
        if long {
            a.raw(&[0xff, 0x04, 0x25]).raw(&ENTRIES.to_le_bytes());
        } else {
            a.raw(&[0xff, 0x05]).raw(&ENTRIES.to_le_bytes());
        }
        a.hypercall(VCPU_OP, &[IS_UP, 1, 0], 10);
        a.poke(READY, 1);
        spin_until_set(a, GO, long);
        a.poke(DONE, 1).halt_forever();
    })
}

/// The `vcpu_hvm_context` for vCPU 1 at [`CTX`] (`hvm_vcpu.h` offsets;
/// the image starts zeroed): flat 32-bit protected mode, or 64-bit mode
/// on the image's identity map.
pub fn write_context(a: &mut Asm, long: bool, entry: u32) {
    let r = CTX + 8; // cpu_regs
    if long {
        a.poke(CTX, 1); // VCPU_HVM_MODE_64B
        a.poke(r + 32, AP_STACK).poke(r + 64, entry).poke(r + 72, 2);
        a.poke(r + 80, 0x8000_0001).poke(r + 88, PML4).poke(r + 96, 0x20).poke(r + 104, 0x100);
    } else {
        a.poke(CTX, 0); // VCPU_HVM_MODE_32B
        a.poke(r + 16, AP_STACK).poke(r + 32, entry).poke(r + 36, 2).poke(r + 40, 1);
        for limit in [84, 88, 92, 96] {
            a.poke(r + limit, 0xffff_ffff);
        }
        a.poke(r + 100, 0x67);
        a.poke(r + 104, 0xc9b | (0xc93 << 16)).poke(r + 108, 0xc93 | (0xc93 << 16)).poke(r + 112, 0x8b);
    }
}

/// The guest: vCPU 0 runs the checks in result slots 0..=9 and 11 and
/// powers off; vCPU 1 is [`ap_code`].
pub fn guest(long: bool) -> Asm {
    let mut a = Asm::default();
    a.setup_descriptors().wrmsr(XEN_HYPERCALL_MSR, u64::from(HCALL_PAGE));
    if long {
        a.enter_long_mode();
    }
    let entry = ap_code(&mut a, long);
    write_context(&mut a, long, entry);
    a.hypercall(VCPU_OP, &[UP, 1, 0], 0);
    a.hypercall(VCPU_OP, &[INITIALISE, 1, CTX], 1);
    a.hypercall(VCPU_OP, &[IS_UP, 1, 0], 2);
    a.hypercall(VCPU_OP, &[INITIALISE, 1, CTX], 3);
    a.hypercall(VCPU_OP, &[UP, 1, 0], 4);
    // Not ENTRIES: a vCPU taken down in the middle of its hypercall
    // finishes it (and then sees itself down, as on Xen).
    spin_until_set(&mut a, READY, long);
    a.hypercall(VCPU_OP, &[DOWN, 1, 0], 5);
    a.hypercall(VCPU_OP, &[IS_UP, 1, 0], 6);
    a.poke(GO, 1);
    a.hypercall(VCPU_OP, &[UP, 1, 0], 7);
    spin_until_set(&mut a, DONE, long);
    // vCPU 2 (of 3) is uninitialised: a bad context is checked for it.
    a.poke(CTX + 4, 1); // pad
    a.hypercall(VCPU_OP, &[INITIALISE, 2, CTX], 8);
    a.poke(CTX + 4, 0).poke(CTX, 7); // mode
    a.hypercall(VCPU_OP, &[INITIALISE, 2, CTX], 9);
    a.hypercall(VCPU_OP, &[INITIALISE, 3, CTX], 11);
    a.poweroff(0);
    a
}

/// A hypercall flood from every vCPU (64-bit): vCPU 0 brings up vCPUs
/// `1..vcpus`, each on a stack of its own, then every vCPU calls
/// `xen_version` in a loop forever. Only the run-time limit ends it.
pub fn flood_guest(vcpus: u32) -> Asm {
    let long = true;
    let mut a = Asm::default();
    a.setup_descriptors().wrmsr(XEN_HYPERCALL_MSR, u64::from(HCALL_PAGE)).enter_long_mode();
    let flood = a.behind_jump(|a| {
        let flood = a.here();
        a.hypercall(17, &[0, 0], 12).jmp(flood);
    });
    write_context(&mut a, long, flood);
    for id in 1..vcpus {
        // `VCPUOP_initialise` copies the context: change the stack between calls.
        a.poke(CTX + 8 + 32, AP_STACK - id * 0x1000);
        a.hypercall(VCPU_OP, &[INITIALISE, id, CTX], 13).hypercall(VCPU_OP, &[UP, id, 0], 14);
    }
    a.jmp(flood);
    a
}

/// Where [`roll_call_guest`]'s vCPUs each set their word (vCPU `n` at
/// `ROLL_CALL + 4 * n`).
pub const ROLL_CALL: u32 = RESULTS + 0x400;

/// Every vCPU answers (64-bit): vCPU 0 brings up vCPUs `1..vcpus`, each
/// told its word in `rsi` through its `vcpu_hvm_context`; each sets its
/// word to 1 and halts; vCPU 0 waits for every word, records
/// `VCPUOP_is_up` of each in result slot `20 + n`, sets its own word and
/// powers off.
pub fn roll_call_guest(vcpus: u32) -> Asm {
    let long = true;
    let mut a = Asm::default();
    a.setup_descriptors().wrmsr(XEN_HYPERCALL_MSR, u64::from(HCALL_PAGE)).enter_long_mode();
    let entry = a.behind_jump(|a| {
        a.raw(&[0xc7, 0x06, 1, 0, 0, 0]).halt_forever(); // mov dword [rsi], 1
    });
    write_context(&mut a, long, entry);
    for id in 1..vcpus {
        a.poke(CTX + 8 + 48, ROLL_CALL + 4 * id); // cpu_regs.x86_64.rsi
        a.hypercall(VCPU_OP, &[INITIALISE, id, CTX], 13).hypercall(VCPU_OP, &[UP, id, 0], 14);
    }
    for id in 1..vcpus {
        spin_until_set(&mut a, ROLL_CALL + 4 * id, long);
        a.hypercall(VCPU_OP, &[IS_UP, id, 0], 20 + id);
    }
    a.poke(ROLL_CALL, 1).poweroff(0);
    a
}
