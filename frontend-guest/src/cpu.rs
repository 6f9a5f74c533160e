//! Per-CPU areas: one [`PerCpu`] per vCPU, found through the GS base
//! (`gs:[0]` is the running vCPU's id), as Linux's per-CPU segment. The
//! boot stub's Rust entry points vCPU 0's GS base at its area
//! ([`enter`]); each secondary vCPU does the same for itself as it comes up
//! (`smp`). Guests that ignore SMP only ever see vCPU 0.
//!
//! Layering: below `evtchn` (whose upcall handler asks which vCPU it runs
//! on) and `smp`; only `arch` below it.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};

/// Most vCPUs the guest library handles (the VMM's limit, and the legacy
/// `vcpu_info` slots of the shared-info page).
pub const MAX_CPUS: usize = 32;

/// One vCPU's area. The id must stay the first field (`gs:[0]`).
#[repr(C, align(64))]
pub struct PerCpu {
    /// This vCPU's id (read through `gs:[0]`).
    id: AtomicU32,
    /// Set when the vCPU runs guest code of ours.
    pub online: AtomicBool,
    /// Set when the vCPU finished the work `smp::start` gave it.
    pub done: AtomicBool,
    /// Upcall interrupts taken on this vCPU.
    pub upcalls: AtomicU64,
    /// Local-APIC timer interrupts taken on this vCPU (`smp::arm_timer`).
    pub timer_ticks: AtomicU64,
    /// Units of work a demo counted on this vCPU.
    pub work: AtomicU64,
    /// IPIs this vCPU answered (a demo's count).
    pub ipis: AtomicU64,
    /// Local-APIC IPIs taken on this vCPU (`smp::send_lapic_ipi`).
    pub lapic_ipis: AtomicU64,
}

impl PerCpu {
    const fn new() -> Self {
        PerCpu {
            id: AtomicU32::new(0),
            online: AtomicBool::new(false),
            done: AtomicBool::new(false),
            upcalls: AtomicU64::new(0),
            timer_ticks: AtomicU64::new(0),
            work: AtomicU64::new(0),
            ipis: AtomicU64::new(0),
            lapic_ipis: AtomicU64::new(0),
        }
    }
}

static PERCPU: [PerCpu; MAX_CPUS] = [const { PerCpu::new() }; MAX_CPUS];

/// Makes the running vCPU `cpu` (0..[`MAX_CPUS`], clamped): points its GS
/// base at its area. Called once per vCPU, first thing.
pub fn enter(cpu: u32) {
    let cpu = (cpu as usize).min(MAX_CPUS - 1);
    PERCPU[cpu].id.store(cpu as u32, SeqCst);
    crate::arch::wrmsr(crate::arch::MSR_GS_BASE, &PERCPU[cpu] as *const PerCpu as u64);
}

/// The running vCPU's id.
#[inline(always)]
pub fn id() -> u32 {
    #[cfg(target_os = "none")]
    {
        crate::arch::gs_read_u32_0()
    }
    // On the host (unit tests) there is one CPU of ours.
    #[cfg(not(target_os = "none"))]
    {
        0
    }
}

/// The running vCPU's area.
pub fn this() -> &'static PerCpu {
    get(id())
}

/// vCPU `cpu`'s area (the last one for an id out of range).
pub fn get(cpu: u32) -> &'static PerCpu {
    &PERCPU[(cpu as usize).min(MAX_CPUS - 1)]
}
