//! The IDT: exception gates that report and crash cleanly, and the upcall
//! gate that the VMM's event-channel MSI targets, with their entry stubs.
//!
//! Layering: `arch` (instructions) and `hypercall` sit below, `evtchn`
//! (whose upcall handler the upcall stub calls) below this module; nothing
//! below imports it. `rt` loads the IDT ([`init`]) before `evtchn::init`
//! enables interrupts.

use crate::arch;
use core::sync::atomic::{AtomicU64, Ordering};
use pv_abi::layout::SELECTOR_CODE64;

pub use pv_abi::event_channel::UPCALL_VECTOR;

/// The IDT: 256 gates of 16 bytes, each as two words, so it can be a plain
/// (atomic, hence safely mutable) static.
#[repr(C, align(4096))]
struct Idt([AtomicU64; 512]);

static IDT: Idt = Idt([const { AtomicU64::new(0) }; 512]);

/// A present 64-bit interrupt gate (DPL 0) to `handler`.
pub fn gate(handler: u64) -> (u64, u64) {
    let low = (handler & 0xffff)
        | ((SELECTOR_CODE64 as u64) << 16)
        | (0x8e << 40) // present, DPL 0, 64-bit interrupt gate
        | (((handler >> 16) & 0xffff) << 48);
    (low, handler >> 32)
}

fn set_gate(vector: u8, handler: u64) {
    let (lo, hi) = gate(handler);
    IDT.0[vector as usize * 2].store(lo, Ordering::Relaxed);
    IDT.0[vector as usize * 2 + 1].store(hi, Ordering::Relaxed);
}

/// Defines an interrupt entry stub `$name` for a device or upcall vector:
/// it saves the caller-saved registers (9 of them, so the stack is 16-byte
/// aligned at the call), calls the `extern "C"` Rust handler `$handler`
/// and returns with `iretq`. One definition for every vector the guest
/// takes, so the register discipline is written once.
macro_rules! interrupt_entry {
    ($name:literal, $handler:path) => {
        core::arch::global_asm!(
            ".section .text",
            concat!(".global ", $name),
            concat!($name, ":"),
            "    push rax", "push rcx", "push rdx", "push rsi", "push rdi",
            "    push r8", "push r9", "push r10", "push r11",
            "    cld",
            "    call {handler}",
            "    pop r11", "pop r10", "pop r9", "pop r8",
            "    pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rax",
            "    iretq",
            handler = sym $handler,
        );
    };
}
pub(crate) use interrupt_entry;

interrupt_entry!("pv_upcall_entry", crate::evtchn::pv_upcall_handler);

// Exceptions push their vector (and a dummy error code where the CPU
// pushes none) and report.
core::arch::global_asm!(
    ".section .text",
    ".global pv_exception_common",
    "pv_exception_common:",
    "    mov rdi, [rsp]",
    "    mov rsi, [rsp + 8]",
    "    mov rdx, [rsp + 16]",
    "    and rsp, -16",
    "    call {exception}",
    "    ud2",
    exception = sym pv_exception_handler,
);

// 32 exception stubs, 16 bytes apart from `pv_exc_0`, so the IDT can be
// filled by arithmetic. Vectors whose exceptions push an error code
// (8, 10-14, 17, 21, 29, 30) skip the dummy push.
core::arch::global_asm!(
    ".section .text",
    ".balign 16",
    ".global pv_exc_0",
    "pv_exc_0:",
    ".set vec, 0",
    ".rept 32",
    "    .balign 16",
    "    .if (vec-8)*(vec-10)*(vec-11)*(vec-12)*(vec-13)*(vec-14)*(vec-17)*(vec-21)*(vec-29)*(vec-30)",
    "    push 0",
    "    .endif",
    "    push vec",
    "    jmp pv_exception_common",
    "    .set vec, vec+1",
    ".endr",
);

extern "C" {
    fn pv_exc_0();
    fn pv_upcall_entry();
}

/// Address of the entry stub for exception `vector` (0..32).
pub fn exception_entry(vector: u8) -> u64 {
    pv_exc_0 as *const () as u64 + 16 * (vector as u64 & 31)
}

/// Address of the upcall entry stub.
pub fn upcall_entry() -> u64 {
    pv_upcall_entry as *const () as u64
}

/// Installs an interrupt gate for `vector` (32 and up) to the entry stub
/// at `handler` (which must save registers and end with `iretq`).
pub fn install(vector: u8, handler: u64) {
    if vector >= 32 {
        set_gate(vector, handler);
    }
}

/// Installs the exception and upcall gates and loads the IDT.
pub fn init() {
    for v in 0..32u8 {
        set_gate(v, exception_entry(v));
    }
    set_gate(UPCALL_VECTOR, upcall_entry());
    arch::lidt(IDT.0.as_ptr() as u64, (512 * 8 - 1) as u16);
}

/// Called by the exception stubs: report and stop the domain as crashed.
/// The stubs always leave vector, error code (0 if the CPU pushed none) and
/// then the CPU's frame (rip first) on the stack.
pub extern "C" fn pv_exception_handler(vector: u64, error: u64, rip: u64) -> ! {
    crate::println!("guest exception {} at rip {:#x} (error code {:#x})", vector, rip, error);
    crate::hypercall::shutdown(pv_abi::hypercall::sched_op::SHUTDOWN_CRASH, 128 + vector as u32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn gate_encodes_handler_and_selector() {
        let (lo, hi) = super::gate(0x1234_5678_9abc_def0);
        assert_eq!(lo & 0xffff, 0xdef0);
        assert_eq!((lo >> 16) & 0xffff, 0x08);
        assert_eq!((lo >> 40) & 0xff, 0x8e);
        assert_eq!(lo >> 48, 0x9abc);
        assert_eq!(hi, 0x1234_5678);
    }
}
