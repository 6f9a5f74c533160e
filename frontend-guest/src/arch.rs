//! The only module that executes privileged or port-I/O instructions.
//!
//! Everything here is x86_64 and meaningful only inside the guest; the
//! functions compile on the host so the rest of the library can be unit
//! tested, but calling them there would fault.

use core::arch::asm;
use pv_abi::hypercall::{HYPERCALL_PORT, UART_COM1_PORT};

/// Makes a hypercall: number in `rax`, up to five arguments in
/// `rdi, rsi, rdx, r10, r8`, result in `rax` (see `pv_abi::hypercall`).
///
/// # Safety
/// Pointer arguments must name guest memory valid for what the hypercall
/// reads or writes there.
#[inline(always)]
pub unsafe fn hypercall(nr: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let ret: i64;
    // SAFETY: an `out` to the hypercall port traps to the VMM, which only
    // changes `rax` and the memory named by the arguments (the caller's
    // contract); all argument registers are declared as inputs.
    unsafe {
        asm!(
            "out {port}, al",
            port = const HYPERCALL_PORT,
            inlateout("rax") nr as i64 => ret,
            in("rdi") a1,
            in("rsi") a2,
            in("rdx") a3,
            in("r10") a4,
            in("r8") a5,
            options(nostack, preserves_flags),
        );
    }
    ret
}

/// Writes one byte to the emulated UART's transmit register (one trap).
#[inline(always)]
pub fn uart_putc(byte: u8) {
    // SAFETY: writing COM1's transmit register only makes the VMM emit the
    // byte; it has no effect on guest memory or state.
    unsafe {
        asm!("out dx, al", in("dx") UART_COM1_PORT, in("al") byte, options(nomem, nostack, preserves_flags));
    }
}

/// Loads an empty IDT and raises an exception: with nowhere to deliver it
/// the CPU triple-faults, which KVM reports as a shutdown exit.
pub fn triple_fault() -> ! {
    let idtr = [0u16; 5];
    // SAFETY: deliberately crashes the vCPU; nothing after runs.
    unsafe {
        asm!("lidt [{}]", "ud2", in(reg) idtr.as_ptr(), options(noreturn, nostack));
    }
}

/// Halts forever with interrupts disabled (last resort after a failed
/// shutdown hypercall).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: `cli; hlt` stops this vCPU; no memory is touched.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Reads the 8 bytes at virtual address `addr` (volatile: the VMM or the
/// page walker may change them behind the compiler's back).
///
/// # Safety
/// `addr` must be 8-byte aligned and mapped readable.
#[inline(always)]
pub unsafe fn read_u64(addr: u64) -> u64 {
    // SAFETY: the caller guarantees `addr` is aligned and mapped.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}

/// Writes 8 bytes at virtual address `addr` with one `mov` (volatile, so
/// a write to a trapped page-table pool is exactly one MMIO exit).
///
/// # Safety
/// `addr` must be 8-byte aligned and mapped writable, and nothing the
/// compiler relies on may live there.
#[inline(always)]
pub unsafe fn write_u64(addr: u64, val: u64) {
    // SAFETY: the caller guarantees `addr` is aligned, mapped and free.
    unsafe { core::ptr::write_volatile(addr as *mut u64, val) }
}

/// Writes 4 bytes at virtual address `addr` (a partial page-table entry
/// write, for the trapped-mode tests).
///
/// # Safety
/// As [`write_u64`], 4-byte aligned.
#[inline(always)]
pub unsafe fn write_u32(addr: u64, val: u32) {
    // SAFETY: the caller guarantees `addr` is aligned, mapped and free.
    unsafe { core::ptr::write_volatile(addr as *mut u32, val) }
}

/// The current CR3 (the guest-physical address of the active L4).
#[inline(always)]
pub fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Loads CR3 (switches page tables and flushes the TLB).
///
/// # Safety
/// `l4` must be a complete L4 table that maps the running code, its stack
/// and everything the guest touches afterwards.
#[inline(always)]
pub unsafe fn write_cr3(l4: u64) {
    // SAFETY: the caller guarantees the new tables map everything in use;
    // the asm clobbers memory so no access is reordered across the switch.
    unsafe { asm!("mov cr3, {}", in(reg) l4, options(nostack, preserves_flags)) };
}

/// Flushes this vCPU's TLB (reloads CR3 with its current value).
#[inline(always)]
pub fn flush_tlb() {
    // SAFETY: reloading the current CR3 keeps the same tables; it only
    // drops cached translations.
    unsafe { write_cr3(read_cr3()) };
}

/// Drops the TLB entry of one linear address.
#[inline(always)]
pub fn invlpg(va: u64) {
    // SAFETY: `invlpg` only drops a cached translation; memory is clobbered
    // so later accesses re-walk the tables.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) };
}
