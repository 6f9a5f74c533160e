//! A clock and a one-shot wake-up timer for the guest, which has no PIT,
//! HPET or Xen timer: what a TCP/IP stack needs for its retransmission
//! and ARP timers.
//!
//! * [`now_us`]: the time-stamp counter scaled to microseconds. The scale
//!   is calibrated once by [`init`] against the local APIC timer, which
//!   KVM counts at 1 GHz with divide-by-1 (its emulated APIC bus cycle is
//!   1 ns). Without x2APIC the TSC is assumed to run at 1 GHz.
//! * [`arm_wakeup`]: a one-shot x2APIC timer interrupt at the event-channel
//!   upcall vector, so a `sti; hlt` wait wakes by then. The upcall handler
//!   finds no pending port and just EOIs it.

use crate::arch;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

const LVT_TIMER: u32 = 0x832;
const TIMER_INITIAL: u32 = 0x838;
const TIMER_CURRENT: u32 = 0x839;
const TIMER_DIVIDE: u32 = 0x83e;
const DIVIDE_BY_1: u64 = 0b1011;
const LVT_MASKED: u64 = 1 << 16;
/// APIC timer ticks per microsecond (KVM: 1 ns per tick).
const APIC_TICKS_PER_US: u64 = 1000;
/// Ticks the calibration waits for (2 ms).
const CALIBRATION_TICKS: u64 = 2_000_000;

static TSC_PER_US: AtomicU64 = AtomicU64::new(1000);
static TIMER: AtomicBool = AtomicBool::new(false);
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// Calibrates the clock and enables the wake-up timer (needs the x2APIC
/// mode `evtchn::init` turns on). Returns whether the timer is usable.
pub fn init() -> bool {
    EPOCH.store(arch::rdtsc(), Relaxed);
    if !arch::has_x2apic() {
        return false;
    }
    arch::wrmsr(LVT_TIMER, LVT_MASKED | crate::interrupts::UPCALL_VECTOR as u64);
    arch::wrmsr(TIMER_DIVIDE, DIVIDE_BY_1);
    arch::wrmsr(TIMER_INITIAL, u32::MAX as u64);
    let (t0, c0) = (arch::rdtsc(), arch::rdmsr(TIMER_CURRENT));
    let mut c1 = c0;
    while c0.saturating_sub(c1) < CALIBRATION_TICKS && c1 != 0 {
        c1 = arch::rdmsr(TIMER_CURRENT);
    }
    let t1 = arch::rdtsc();
    arch::wrmsr(TIMER_INITIAL, 0);
    let ticks = c0.saturating_sub(c1).max(1);
    let per_us = (t1.wrapping_sub(t0) as u128 * APIC_TICKS_PER_US as u128 / ticks as u128) as u64;
    TSC_PER_US.store(per_us.max(1), Relaxed);
    // One-shot, unmasked, at the upcall vector.
    arch::wrmsr(LVT_TIMER, crate::interrupts::UPCALL_VECTOR as u64);
    TIMER.store(true, Relaxed);
    true
}

/// Microseconds since [`init`].
pub fn now_us() -> u64 {
    arch::rdtsc().wrapping_sub(EPOCH.load(Relaxed)) / TSC_PER_US.load(Relaxed)
}

/// TSC ticks per microsecond, as calibrated.
pub fn tsc_per_us() -> u64 {
    TSC_PER_US.load(Relaxed)
}

/// Raises one upcall-vector interrupt `us` microseconds from now
/// (replacing any earlier one; 0 disarms). Does nothing without a timer.
pub fn arm_wakeup(us: u64) {
    if TIMER.load(Relaxed) {
        let ticks = us.saturating_mul(APIC_TICKS_PER_US).min(u32::MAX as u64);
        arch::wrmsr(TIMER_INITIAL, ticks);
    }
}
