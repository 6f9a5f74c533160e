//! The only module that executes privileged or port-I/O instructions
//! (besides the interrupt entry stubs, which live with the IDT in
//! `interrupts` because they name the handlers above this module).
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
    // contract) and the argument registers (declared clobbered).
    unsafe {
        asm!(
            "out {port}, al",
            port = const HYPERCALL_PORT,
            inlateout("rax") nr as i64 => ret,
            // Clobbered: a continuation re-enters with updated arguments.
            inlateout("rdi") a1 => _,
            inlateout("rsi") a2 => _,
            inlateout("rdx") a3 => _,
            inlateout("r10") a4 => _,
            inlateout("r8") a5 => _,
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

/// Rings the event-channel doorbell for `port`: a 32-bit `out` the VMM
/// matches in the kernel with an ioeventfd (no userspace exit).
#[inline(always)]
pub fn doorbell(port: u32) {
    // SAFETY: an `out` to the doorbell port only notifies the VMM.
    unsafe {
        asm!("out dx, eax", in("dx") pv_abi::hypercall::DOORBELL_PORT, in("eax") port, options(nomem, nostack, preserves_flags));
    }
}

/// Disables interrupts.
#[inline(always)]
pub fn cli() {
    // SAFETY: masks interrupts on this vCPU; no memory effects.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

/// Enables interrupts.
#[inline(always)]
pub fn sti() {
    // SAFETY: unmasks interrupts; handlers are installed before this is used.
    unsafe { asm!("sti", options(nomem, nostack)) };
}

/// Enables interrupts and halts until one arrives, atomically (`sti`
/// delays interrupts by one instruction, so none is lost in between).
#[inline(always)]
pub fn sti_hlt() {
    // SAFETY: waits for an interrupt; handlers are installed.
    unsafe { asm!("sti", "hlt", options(nomem, nostack)) };
}

/// Spin-loop hint.
#[inline(always)]
pub fn pause() {
    core::hint::spin_loop();
}

/// Loads the IDT register with `base` and `limit`.
pub fn lidt(base: u64, limit: u16) {
    let mut idtr = [0u8; 10];
    idtr[..2].copy_from_slice(&limit.to_le_bytes());
    idtr[2..].copy_from_slice(&base.to_le_bytes());
    // SAFETY: the caller passes a table of valid gates that lives forever
    // (a static); `lidt` only reads the 10-byte descriptor.
    unsafe { asm!("lidt [{}]", in(reg) idtr.as_ptr(), options(readonly, nostack, preserves_flags)) };
}

/// Writes a local-APIC register (xAPIC MMIO, identity mapped uncached).
pub fn lapic_write(reg: u32, value: u32) {
    let p = (pv_abi::layout::LAPIC_BASE + reg as u64) as *mut u32;
    // SAFETY: the boot identity map covers the APIC page; `reg` is a
    // register offset below 0x400, 16-byte aligned by the callers.
    unsafe { core::ptr::write_volatile(p, value) };
}

/// Reads a local-APIC register.
pub fn lapic_read(reg: u32) -> u32 {
    let p = (pv_abi::layout::LAPIC_BASE + reg as u64) as *const u32;
    // SAFETY: as for `lapic_write`.
    unsafe { core::ptr::read_volatile(p) }
}

/// A `'static` atomic view of a word in a VMM-shared page.
///
/// # Safety
/// `gpa` must be an identity-mapped, naturally aligned address inside a
/// page the VMM assigned to this guest for its whole life (shared-info,
/// rings, the grant table).
pub unsafe fn shared_u64(gpa: u64) -> &'static core::sync::atomic::AtomicU64 {
    // SAFETY: per the contract, the address is valid, aligned and lives forever;
    // AtomicU64 tolerates concurrent access by the VMM.
    unsafe { &*(gpa as *const core::sync::atomic::AtomicU64) }
}

/// A `'static` atomic 32-bit word in a VMM-shared page.
///
/// # Safety
/// As for [`shared_u64`] (4-byte alignment).
pub unsafe fn shared_u32(gpa: u64) -> &'static core::sync::atomic::AtomicU32 {
    // SAFETY: as for `shared_u64`.
    unsafe { &*(gpa as *const core::sync::atomic::AtomicU32) }
}

/// A `'static` atomic byte in a VMM-shared page.
///
/// # Safety
/// As for [`shared_u64`].
pub unsafe fn shared_u8(gpa: u64) -> &'static core::sync::atomic::AtomicU8 {
    // SAFETY: as for `shared_u64`.
    unsafe { &*(gpa as *const core::sync::atomic::AtomicU8) }
}

/// A VMM-shared page as ring memory.
///
/// # Safety
/// As for [`shared_u64`]: `gpa` names a page assigned or granted for the
/// rest of the guest's life, identity mapped and page aligned.
pub unsafe fn shared_page(gpa: u64) -> ring_buffers::RawMemory {
    // SAFETY: per the contract the page is valid for 4096 bytes forever;
    // RawMemory only performs volatile copies and atomics on it.
    match unsafe { ring_buffers::RawMemory::new(gpa as *mut u8, pv_abi::layout::PAGE_SIZE as usize) } {
        Ok(m) => m,
        Err(_) => panic!("shared page {gpa:#x} is not aligned"),
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

/// The current CR0.
#[inline(always)]
pub fn read_cr0() -> u64 {
    let v: u64;
    // SAFETY: reading CR0 has no side effects.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// The current CR4.
#[inline(always)]
pub fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: reading CR4 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// `MSR_EFER`.
pub const MSR_EFER: u32 = 0xc000_0080;
/// `MSR_GS_BASE`: the base `gs:`-relative accesses add.
pub const MSR_GS_BASE: u32 = 0xc000_0101;

/// The GDT register (`sgdt`): limit and base.
pub fn sgdt() -> (u16, u64) {
    let mut d = [0u8; 10];
    // SAFETY: `sgdt` stores 10 bytes at the pointer, which names `d`.
    unsafe { asm!("sgdt [{}]", in(reg) d.as_mut_ptr(), options(nostack, preserves_flags)) };
    (u16::from_le_bytes([d[0], d[1]]), u64::from_le_bytes(d[2..].try_into().unwrap_or([0; 8])))
}

/// The IDT register (`sidt`): limit and base.
pub fn sidt() -> (u16, u64) {
    let mut d = [0u8; 10];
    // SAFETY: `sidt` stores 10 bytes at the pointer, which names `d`.
    unsafe { asm!("sidt [{}]", in(reg) d.as_mut_ptr(), options(nostack, preserves_flags)) };
    (u16::from_le_bytes([d[0], d[1]]), u64::from_le_bytes(d[2..].try_into().unwrap_or([0; 8])))
}

/// Reads the 4 bytes at `gs:[0]` (the per-CPU area's first word, see
/// `cpu`). In the guest only: on the host the GS base is not ours.
#[inline(always)]
pub fn gs_read_u32_0() -> u32 {
    let v: u32;
    // SAFETY: `cpu::enter` points the GS base at this CPU's per-CPU area
    // (a static) before anything calls this; the load has no other effect.
    unsafe { asm!("mov {:e}, gs:[0]", out(reg) v, options(nostack, readonly, preserves_flags)) };
    v
}

/// Reads a model-specific register.
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only used for architectural MSRs that exist on every x86-64
    // CPU (APIC base, EFER, GS base) or whose presence CPUID confirmed
    // (x2APIC).
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (hi as u64) << 32 | lo as u64
}

/// Writes a model-specific register.
pub fn wrmsr(msr: u32, value: u64) {
    // SAFETY: only used for the local-APIC MSRs (see `rdmsr`), which affect
    // interrupt delivery only, and the GS base (`cpu::enter`), which only
    // `gs:`-relative accesses use.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nomem, nostack, preserves_flags))
    };
}

/// Whether the CPU offers x2APIC (CPUID.1:ECX bit 21).
pub fn has_x2apic() -> bool {
    let r = core::arch::x86_64::__cpuid(1);
    r.ecx & (1 << 21) != 0
}

/// `n` null hypercalls (`xen_version(XENVER_version)`) in a five-instruction
/// loop: the smallest guest-side cost a hypercall can have, for measuring
/// the VMM's dispatch against a raw KVM exit.
pub fn null_hypercall_loop(n: u64) {
    if n == 0 {
        return;
    }
    // SAFETY: XENVER_version takes no pointer and only writes `rax`;
    // rdi/rcx/rax are declared clobbered.
    unsafe {
        asm!(
            "2:",
            "mov eax, {nr}",
            "xor edi, edi",
            "out {port}, al",
            "dec rcx",
            "jnz 2b",
            nr = const pv_abi::hypercall::nr::XEN_VERSION,
            port = const HYPERCALL_PORT,
            inout("rcx") n => _,
            out("rax") _,
            out("rdi") _,
            options(nostack),
        );
    }
}

/// Reads the time-stamp counter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: `rdtsc` only reads the counter into edx:eax.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (hi as u64) << 32 | lo as u64
}
