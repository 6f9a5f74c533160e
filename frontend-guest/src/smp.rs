//! SMP for our guests: bringing the secondary vCPUs up from vCPU 0 (Xen's
//! `VCPUOP_initialise` + `VCPUOP_up`, as Linux's `xen_pv_cpu_up()`), a
//! spinlock, IPIs over event channels (`EVTCHNOP_bind_ipi`) and each
//! vCPU's own timer (its local-APIC timer: our guests have no Xen clock).
//!
//! Every vCPU runs on vCPU 0's page tables (its CR3 at [`start`], which in
//! the validated paging modes must be the boot tables or a pinned L4),
//! loads vCPU 0's GDT and IDT, points its GS base at its per-CPU area
//! ([`crate::cpu`]), enables its local APIC and runs the work function it
//! was given; then it idles with interrupts on, so IPIs still reach it.
//! Upcalls reach each vCPU through its own APIC and `vcpu_info` slot
//! ([`crate::evtchn`]). Guests that never call [`start`] stay on vCPU 0.
//!
//! Only one vCPU at a time may print (the console ring has one
//! producer): take [`CONSOLE`] around prints made off vCPU 0.

use crate::arch;
use crate::cpu::{self, MAX_CPUS};
use crate::hypercall::{vcpu_op, Errno};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use pv_abi::errno::{ENOENT, ENOMEM};
use pv_abi::hvm::vcpu_hvm::{VcpuHvmContext, VcpuHvmX86_64, MODE_64B};
use pv_abi::hypercall::vcpu_op as cmd;

/// A spinlock around a `T` (test-and-test-and-set; `pause` while waiting).
/// Not for upcall handlers: one interrupting its own vCPU's holder would
/// spin forever.
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out the value to one holder at a time (the
// acquire/release pair on `locked` orders its accesses), so sharing the
// lock is as safe as sending the value.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// An unlocked lock around `value`.
    pub const fn new(value: T) -> Self {
        SpinLock { locked: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    /// Waits for the lock, then holds it until the guard drops.
    pub fn lock(&self) -> SpinGuard<'_, T> {
        loop {
            if self.locked.compare_exchange_weak(false, true, SeqCst, SeqCst).is_ok() {
                return SpinGuard { lock: self };
            }
            while self.locked.load(SeqCst) {
                core::hint::spin_loop();
            }
        }
    }
}

/// Holds a [`SpinLock`]; the value through `Deref`.
pub struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> core::ops::Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while this holder owns the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> core::ops::DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`; `&mut self` makes this the only borrow.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, SeqCst);
    }
}

/// Taken around prints from several vCPUs (module docs).
pub static CONSOLE: SpinLock<()> = SpinLock::new(());

/// The local-APIC timer's vector ([`arm_timer`]).
pub const TIMER_VECTOR: u8 = 0x31;
/// The vector of IPIs sent through the local APIC ([`send_lapic_ipi`]):
/// the hardware-assisted baseline the event-channel IPIs are compared with.
pub const LAPIC_IPI_VECTOR: u8 = 0x32;

/// Pages of each secondary vCPU's stack.
const AP_STACK_PAGES: u64 = 4;

/// What the secondary vCPUs run.
static WORK: SpinLock<Option<fn(u32)>> = SpinLock::new(None);
/// vCPU 0's GDT and IDT registers, as `lgdt`/`lidt` read them (limit in
/// bytes 0-1, base in 2-9), for the secondary vCPUs' entry stub.
static AP_GDTR: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static AP_IDTR: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

fn store_desc(d: &[AtomicU64; 2], (limit, base): (u16, u64)) {
    d[0].store(u64::from(limit) | (base << 16), SeqCst);
    d[1].store(base >> 48, SeqCst);
}

// A secondary vCPU enters here from `VCPUOP_initialise`'s state (long
// mode, flat segments with null selectors, `rdi` = its id, `rsp` = its
// stack): it loads vCPU 0's GDT and IDT, real selectors (an `iretq` needs
// a CS the GDT holds: far return to 0x08), then calls the Rust side.
core::arch::global_asm!(
    ".section .text",
    ".global pv_ap_entry",
    "pv_ap_entry:",
    "    lgdt [rip + {gdtr}]",
    "    lidt [rip + {idtr}]",
    "    mov eax, {data}",
    "    mov ds, eax",
    "    mov es, eax",
    "    mov ss, eax",
    "    push {code}",
    "    lea rax, [rip + 2f]",
    "    push rax",
    "    retfq",
    "2:",
    "    xor ebp, ebp",
    "    call {entry}",
    "    ud2",
    gdtr = sym AP_GDTR,
    idtr = sym AP_IDTR,
    data = const pv_abi::layout::SELECTOR_DATA,
    code = const pv_abi::layout::SELECTOR_CODE64,
    entry = sym ap_main,
);

extern "C" {
    fn pv_ap_entry();
}

crate::interrupts::interrupt_entry!("pv_timer_entry", crate::smp::timer_handler);
crate::interrupts::interrupt_entry!("pv_lapic_ipi_entry", crate::smp::lapic_ipi_handler);

extern "C" {
    fn pv_timer_entry();
    fn pv_lapic_ipi_entry();
}

/// A local-APIC IPI: counts it on the running vCPU.
pub extern "C" fn lapic_ipi_handler() {
    cpu::this().lapic_ipis.fetch_add(1, SeqCst);
    crate::evtchn::eoi();
}

/// Sends [`LAPIC_IPI_VECTOR`] to vCPU `cpu` through the local APIC's ICR
/// (fixed delivery, physical destination = APIC id = vCPU id): one x2APIC
/// MSR write, which KVM handles in the kernel (no exit to the VMM).
pub fn send_lapic_ipi(cpu: u32) {
    const ICR: u32 = 0x300;
    const ICR_HIGH: u32 = 0x310;
    if arch::has_x2apic() {
        arch::wrmsr(0x800 + (ICR >> 4), (u64::from(cpu) << 32) | u64::from(LAPIC_IPI_VECTOR));
    } else {
        crate::evtchn::apic_reg_write(ICR_HIGH, cpu << 24);
        crate::evtchn::apic_reg_write(ICR, u32::from(LAPIC_IPI_VECTOR));
    }
}

/// The local-APIC timer interrupt: counts a tick on the running vCPU.
pub extern "C" fn timer_handler() {
    cpu::this().timer_ticks.fetch_add(1, SeqCst);
    crate::evtchn::eoi();
}

/// A secondary vCPU's Rust entry (from `pv_ap_entry`).
extern "C" fn ap_main(id: u64) -> ! {
    let id = id as u32;
    cpu::enter(id);
    crate::evtchn::init_cpu();
    let this = cpu::get(id);
    this.online.store(true, SeqCst);
    let work = *WORK.lock();
    if let Some(f) = work {
        f(id);
    }
    this.done.store(true, SeqCst);
    // Idle: interrupts on, so IPIs and timers still reach this vCPU.
    loop {
        arch::sti_hlt();
    }
}

/// How many vCPUs the domain has: `VCPUOP_is_up` answers for each one
/// and `-ENOENT` past the last (`do_vcpu_op()`).
pub fn vcpus() -> u32 {
    (1..MAX_CPUS as u32)
        .find(|&id| vcpu_op::<()>(cmd::IS_UP, id, None) == Err(Errno(ENOENT)))
        .unwrap_or(MAX_CPUS as u32)
}

/// Brings vCPUs 1..`count` up, each running `work(id)`, and waits until
/// every one is online. Returns how many vCPUs run (with vCPU 0). Call
/// from vCPU 0, once, after the runtime set up event channels.
pub fn start(count: u32, work: fn(u32)) -> Result<u32, Errno> {
    let count = count.clamp(1, MAX_CPUS as u32);
    *WORK.lock() = Some(work);
    store_desc(&AP_GDTR, arch::sgdt());
    store_desc(&AP_IDTR, arch::sidt());
    crate::interrupts::install(TIMER_VECTOR, pv_timer_entry as *const () as u64);
    crate::interrupts::install(LAPIC_IPI_VECTOR, pv_lapic_ipi_entry as *const () as u64);
    for id in 1..count {
        crate::evtchn_fifo::init_cpu(id)?;
        let stack = crate::pages::alloc(AP_STACK_PAGES).ok_or(Errno(ENOMEM))?;
        let regs = VcpuHvmX86_64 {
            rip: pv_ap_entry as *const () as u64,
            rsp: stack + AP_STACK_PAGES * pv_abi::layout::PAGE_SIZE,
            rdi: u64::from(id),
            rflags: 0x2,
            cr0: arch::read_cr0(),
            cr3: arch::read_cr3(),
            cr4: arch::read_cr4(),
            efer: arch::rdmsr(arch::MSR_EFER),
            ..Default::default()
        };
        let mut ctx = VcpuHvmContext { mode: MODE_64B, pad: 0, cpu_regs: [0; 15] };
        let raw = pv_abi::pod::as_bytes(&regs);
        for (i, chunk) in raw.chunks_exact(8).enumerate() {
            ctx.cpu_regs[i] = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        }
        vcpu_op(cmd::INITIALISE, id, Some(&mut ctx))?;
        vcpu_op::<()>(cmd::UP, id, None)?;
    }
    for id in 1..count {
        while !cpu::get(id).online.load(SeqCst) {
            arch::pause();
        }
    }
    Ok(count)
}

/// Arms the running vCPU's own timer: one [`TIMER_VECTOR`] interrupt on
/// this vCPU `us` microseconds from now (KVM's APIC timer counts 1 ns a
/// tick at divide-by-1). Needs [`start`] (which installs the gate).
pub fn arm_timer(us: u64) {
    const LVT_TIMER: u32 = 0x320;
    const TIMER_INITIAL: u32 = 0x380;
    const TIMER_DIVIDE: u32 = 0x3e0;
    crate::evtchn::apic_reg_write(TIMER_DIVIDE, 0b1011);
    crate::evtchn::apic_reg_write(LVT_TIMER, u32::from(TIMER_VECTOR));
    crate::evtchn::apic_reg_write(TIMER_INITIAL, us.saturating_mul(1000).min(u64::from(u32::MAX)) as u32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_spinlock_excludes_every_other_holder() {
        let lock = Arc::new(SpinLock::new(0u64));
        let threads: std::vec::Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        // A read-modify-write that loses updates without
                        // mutual exclusion.
                        let mut g = lock.lock();
                        let v = *g;
                        std::hint::black_box(&v);
                        *g = v + 1;
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(*lock.lock(), 40_000);
    }

    #[test]
    fn descriptor_registers_are_stored_as_lgdt_reads_them() {
        let d = [AtomicU64::new(0), AtomicU64::new(0)];
        store_desc(&d, (0x17, 0x1234_5678_9abc_def0));
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&d[0].load(SeqCst).to_le_bytes());
        bytes[8..].copy_from_slice(&d[1].load(SeqCst).to_le_bytes());
        assert_eq!(&bytes[..2], &0x17u16.to_le_bytes());
        assert_eq!(&bytes[2..10], &0x1234_5678_9abc_def0u64.to_le_bytes());
    }
}
