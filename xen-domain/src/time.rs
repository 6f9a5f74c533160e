//! Time for PVH guests: the pvclock `vcpu_time_info` in `vcpu_info[0]` of
//! the shared-info page (system time in ns since boot = scaled TSC) and the
//! wall clock.

use crate::guest_memory::{BadGuestRange, GuestRam};
use pv_abi::shared_info::{EvtchnLayout, VcpuTimeInfo, PVCLOCK_TSC_STABLE};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Offset of `vcpu_info[0].time` in the shared-info page (the same in the
/// 32- and 64-bit layouts).
const TIME_OFFSET: u64 = std::mem::offset_of!(pv_abi::shared_info::VcpuInfo, time) as u64;

/// The guest's pvclock: TSC rate as Xen's scale (`mul_frac`, `shift`) and
/// the offset of the guest's TSC from the host's.
#[derive(Debug, Clone, Copy)]
pub struct PvClock {
    /// `tsc_to_system_mul`.
    pub mul: u32,
    /// `tsc_shift`.
    pub shift: i8,
    /// Guest TSC minus host TSC.
    pub tsc_offset: u64,
    /// System time 0.
    pub boot: Instant,
    version: u32,
}

/// Xen's `set_time_scale`: `ns = ((tsc << shift) * mul) >> 32` (a negative
/// shift shifts right).
pub fn time_scale(tsc_hz: u64) -> (u32, i8) {
    const NS: u64 = 1_000_000_000;
    let (mut tps, mut shift) = (tsc_hz.max(1), 0i8);
    while tps > 2 * NS {
        tps >>= 1;
        shift -= 1;
    }
    let mut tps32 = tps as u32;
    while u64::from(tps32) <= NS {
        tps32 <<= 1;
        shift += 1;
    }
    (((NS << 32) / u64::from(tps32)) as u32, shift)
}

/// The host's TSC.
pub fn host_tsc() -> u64 {
    // SAFETY: `rdtsc` has no memory effects; every x86-64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

impl PvClock {
    /// A clock for a guest whose TSC runs at `tsc_khz` and reads `guest_tsc`
    /// now.
    pub fn new(tsc_khz: u32, guest_tsc: u64) -> Self {
        let (mul, shift) = time_scale(u64::from(tsc_khz) * 1000);
        PvClock { mul, shift, tsc_offset: guest_tsc.wrapping_sub(host_tsc()), boot: Instant::now(), version: 0 }
    }

    /// The seqlock version last published.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// A restore: system time continues at `system_time_ns` from now,
    /// the next publication follows `version`.
    pub fn restore(&mut self, version: u32, system_time_ns: u64) {
        let back = std::time::Duration::from_nanos(system_time_ns);
        // An Instant that far back may not exist (early after host boot):
        // then the clock starts at the earliest one it can.
        self.boot = Instant::now().checked_sub(back).unwrap_or_else(Instant::now);
        self.version = version & !1;
    }

    /// Nanoseconds since boot (Xen system time).
    pub fn now_ns(&self) -> u64 {
        self.boot.elapsed().as_nanos() as u64
    }

    /// Converts a TSC delta to nanoseconds with this scale, as the guest does.
    pub fn scale(&self, delta: u64) -> u64 {
        let d = if self.shift >= 0 { delta << self.shift } else { delta >> -self.shift };
        ((u128::from(d) * u128::from(self.mul)) >> 32) as u64
    }

    /// Writes the current time (the host TSC now is `host_tsc`) into the
    /// `vcpu_info` at `vcpu_info` (vCPU 0's: in the shared-info page or
    /// where the guest registered it; seqlock: odd version while
    /// writing), and the wall clock into the shared-info page at
    /// `shared_info` where its layout `l` has it (x86-64 or x86_32).
    pub fn publish(
        &mut self,
        ram: &GuestRam,
        (shared_info, vcpu_info): (u64, u64),
        l: &EvtchnLayout,
        host_tsc: u64,
    ) -> Result<(), BadGuestRange> {
        self.version = self.version.wrapping_add(2);
        let mut t = VcpuTimeInfo {
            version: self.version.wrapping_sub(1),
            tsc_timestamp: host_tsc.wrapping_add(self.tsc_offset),
            system_time: self.now_ns(),
            tsc_to_system_mul: self.mul,
            tsc_shift: self.shift,
            flags: PVCLOCK_TSC_STABLE,
            ..Default::default()
        };
        ram.write(vcpu_info + TIME_OFFSET, &t.version.to_le_bytes())?;
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        ram.write_obj(vcpu_info + TIME_OFFSET, &t)?;
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        t.version = self.version;
        ram.write(vcpu_info + TIME_OFFSET, &t.version.to_le_bytes())?;
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let boot_wall = wall.saturating_sub(self.boot.elapsed());
        let secs = boot_wall.as_secs();
        let wc: [u32; 3] = [self.version, secs as u32, boot_wall.subsec_nanos()];
        ram.write_obj(shared_info + l.wc_version as u64, &wc)?;
        ram.write(shared_info + l.wc_sec_hi as u64, &((secs >> 32) as u32).to_le_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_converts_ticks_to_ns() {
        for hz in [1_000_000_000u64, 2_400_000_000, 3_000_000, 100_000_000_000] {
            let (mul, shift) = time_scale(hz);
            let c = PvClock { mul, shift, tsc_offset: 0, boot: Instant::now(), version: 0 };
            let ns = c.scale(hz); // one second of ticks
            assert!(ns.abs_diff(1_000_000_000) < 1_000, "{hz} Hz gives {ns} ns");
        }
    }
}
