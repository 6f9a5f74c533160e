//! The IDT: exception gates that report and crash cleanly, and the upcall
//! gate that the VMM's event-channel MSI targets.

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

/// Installs the exception and upcall gates and loads the IDT.
pub fn init() {
    for v in 0..32u8 {
        set_gate(v, arch::exception_entry(v));
    }
    set_gate(UPCALL_VECTOR, arch::upcall_entry());
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
