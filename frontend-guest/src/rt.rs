//! Guest runtime: the boot stub, the Rust entry point and the panic handler.
//!
//! The VMM enters `_start` in 64-bit mode on its identity map with the
//! start-info address in `rdi`. The stub switches to the image's own stack
//! and calls [`pv_guest_entry`], which checks start-info and runs the
//! image's `guest_main` (declared with [`guest_main!`](crate::guest_main)).

use crate::hypercall::shutdown;
use core::sync::atomic::{AtomicPtr, Ordering};
use pv_abi::hypercall::sched_op::{SHUTDOWN_CRASH, SHUTDOWN_POWEROFF};
use pv_abi::start_info::{StartInfo, START_INFO_MAGIC};

/// Size of the boot stack. 128 KiB: the `net` guest builds smoltcp's
/// interface (its IPv4 reassembly buffers inline, two of 8 KiB, and the
/// fragmentation buffer) on the stack before moving it to pages of its
/// own, and 64 KiB overflowed into the statics below the stack.
const BOOT_STACK_SIZE: usize = 128 * 1024;

/// The stack the boot stub switches to (in `.bss`, so it costs no image size).
#[repr(C, align(16))]
struct BootStack([u8; BOOT_STACK_SIZE]);
#[no_mangle]
static mut BOOT_STACK: BootStack = BootStack([0; BOOT_STACK_SIZE]);

core::arch::global_asm!(
    ".section .text.boot, \"ax\"",
    ".global _start",
    "_start:",
    "    lea rsp, [rip + {stack} + {size}]",
    "    xor ebp, ebp",
    "    call {entry}",
    "    ud2",
    stack = sym BOOT_STACK,
    size = const BOOT_STACK_SIZE,
    entry = sym pv_guest_entry,
);

static START_INFO: AtomicPtr<StartInfo> = AtomicPtr::new(core::ptr::null_mut());

/// The start-info page this guest was booted with.
pub fn start_info() -> &'static StartInfo {
    let p = START_INFO.load(Ordering::Acquire);
    assert!(!p.is_null(), "start_info() before boot");
    // SAFETY: set once at entry to the VMM-provided page, which stays
    // mapped (identity map) and is never written by the guest.
    unsafe { &*p }
}

extern "Rust" {
    fn __pv_guest_main(si: &'static StartInfo) -> i32;
}

/// Rust entry from the boot stub.
#[no_mangle]
extern "C" fn pv_guest_entry(si: *mut StartInfo) -> ! {
    // SAFETY: the VMM passes the start-info page's address, identity
    // mapped; the magic is checked before anything else is trusted.
    let si_ref: &'static StartInfo = unsafe { &*si };
    if si_ref.magic != START_INFO_MAGIC {
        let _ = crate::hypercall::console_write(b"bad start-info magic\n");
        shutdown(SHUTDOWN_CRASH, 2);
    }
    START_INFO.store(si, Ordering::Release);
    // vCPU 0's per-CPU area before anything may take an interrupt.
    crate::cpu::enter(0);
    crate::pages::init(si_ref.free_start, si_ref.free_end);
    if !crate::cmdline::words(si_ref.cmdline_bytes()).any(|(k, _)| k == b"noevents") {
        crate::interrupts::init();
        // `evtchn=2l`: stay on the 2-level ABI (to test both).
        let fifo = crate::cmdline::get(si_ref.cmdline_bytes(), "evtchn") != Some(b"2l");
        crate::evtchn::init(si_ref.shared_info, fifo);
        if si_ref.console.evtchn != 0
            && !crate::cmdline::words(si_ref.cmdline_bytes()).any(|(k, _)| k == b"hvc0=hypercall")
        {
            crate::console::use_ring(si_ref.console.gpa, si_ref.console.evtchn);
        }
        if let Err(st) = crate::grant::init() {
            crate::println!("grant table setup refused: {}", st);
        }
    }
    // SAFETY: `__pv_guest_main` is defined by the image with `guest_main!`,
    // which gives it exactly this signature.
    let code = unsafe { __pv_guest_main(si_ref) };
    shutdown(SHUTDOWN_POWEROFF, code as u32)
}

/// Declares the image's main function: `fn(&'static StartInfo) -> i32`; its
/// return value becomes the VMM's exit status.
#[macro_export]
macro_rules! guest_main {
    ($main:path) => {
        #[no_mangle]
        fn __pv_guest_main(si: &'static $crate::pv_abi::start_info::StartInfo) -> i32 {
            let f: fn(&'static $crate::pv_abi::start_info::StartInfo) -> i32 = $main;
            f(si)
        }
    };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::println!("guest panic: {}", info);
    shutdown(SHUTDOWN_CRASH, 101)
}

/// Powers the guest off cleanly (`SHUTDOWN_poweroff`, status 0) for a
/// request the VMM wrote into `control/shutdown` (the runtime's watch,
/// [`crate::xenbus::watch_shutdown`]); our guests power off for a reboot
/// request too.
pub fn obey_shutdown_request(req: crate::xenbus::ShutdownRequest) -> ! {
    crate::println!("control/shutdown: {:?} requested: powering off", req);
    shutdown(SHUTDOWN_POWEROFF, 0)
}

/// For idle and wait loops: powers off if the VMM has asked for a
/// shutdown since the last look (cheap: no store request unless the
/// watch fired).
pub fn poweroff_if_requested(store: &mut crate::xenbus::Store) {
    if let Ok(Some(req)) = crate::xenbus::shutdown_requested(store) {
        obey_shutdown_request(req)
    }
}
