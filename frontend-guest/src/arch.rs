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
