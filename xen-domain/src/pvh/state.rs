//! A Xen PVH guest's part of a snapshot ([`PvhSave`]): the hypercall
//! page, HVM parameters and upcall routing, where the guest placed the
//! shared-info page and the grant frames, the pvclock, the timers, the
//! reservation (which frames hold a page, the counters), the memory map,
//! the shutdown code and the domain watchdogs.
//!
//! A restore replays what the guest's hypercalls did to the machine:
//! each placed page is placed again and the upcall route set again
//! through the [`crate::platform::Platform`] of the restored VM.

use super::{PvhState, HOLE_END, PLACEABLE};
use crate::grant_table::mapper::MAX_GRANT_FRAMES;
use crate::timer::state::{TimerState, TimerStateError};
use pv_abi::hypercall::sched_op::NR_DOMAIN_WATCHDOG_TIMERS;
use pv_abi::layout::PAGE_SIZE;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// The pvclock (`tsc_to_system_mul`, `tsc_shift`, the seqlock version)
/// and the system time when saved. The TSC offset is the machine's: the
/// VMM builds the restored domain's clock from the guest TSC it restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockSave {
    /// `tsc_to_system_mul`.
    pub mul: u32,
    /// `tsc_shift`.
    pub shift: i8,
    /// The last published version.
    pub version: u32,
    /// Xen system time (ns since boot) at the snapshot.
    pub system_time_ns: u64,
}

/// Xen's `tot_pages`, `max_pages`, `max_mapped_pfn` and which guest
/// frames hold no page (one bit per frame below the VMM pages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationSave {
    /// Pages the domain owns.
    pub tot_pages: u64,
    /// The toolstack's maximum.
    pub max_pages: u64,
    /// The highest frame ever mapped.
    pub max_gpfn: u64,
    /// Bit set: no page at that frame.
    pub empty: Vec<u64>,
}

/// The PVH state of a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PvhSave {
    /// Guest RAM in bytes (fixes where the VMM pages are).
    pub mem_bytes: u64,
    /// The hypercall page, once the guest asked for it.
    pub hypercall_page: Option<u64>,
    /// `HVM_PARAM_CALLBACK_IRQ`.
    pub callback_irq: u64,
    /// `HVMOP_set_evtchn_upcall_vector`.
    pub upcall_vector: Option<u8>,
    /// `HVM_PARAM_CONSOLE_EVTCHN`.
    pub console_evtchn: u32,
    /// `HVM_PARAM_STORE_EVTCHN`.
    pub store_evtchn: u32,
    /// Guest frame each placeable page (0: shared info, 1 + i: grant
    /// frame i) is mapped at.
    pub placed: Vec<Option<u64>>,
    /// Frames of the VMM-owned grant table in use.
    pub grant_frames: u32,
    /// The pvclock.
    pub clock: ClockSave,
    /// The vCPUs' timers (`None`: the VMM gave the domain none).
    pub timers: Option<TimerState>,
    /// The reservation.
    pub reservation: ReservationSave,
    /// `XENMEM_memory_map`'s answer: (start, length, type).
    pub memory_map: Vec<(u64, u64, u32)>,
    /// `SCHEDOP_shutdown_code`.
    pub shutdown_code: Option<u8>,
    /// Each domain-watchdog slot: ns left until it fires.
    pub watchdogs_ns: Vec<Option<u64>>,
}

/// Why a PVH state was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PvhStateError {
    /// Saved for another RAM size.
    #[error("PVH state for {saved} bytes of RAM, the domain has {here}")]
    MemSize {
        /// In the state.
        saved: u64,
        /// In this domain.
        here: u64,
    },
    /// A placement the guest could not have made (over a VMM page, above
    /// 4 GiB or the APIC range, two pages at one frame, too many).
    #[error("placed page {0}: invalid frame")]
    Placement(usize),
    /// A field out of range (named).
    #[error("PVH state: {0} out of range")]
    Range(&'static str),
    /// The timers.
    #[error(transparent)]
    Timer(#[from] TimerStateError),
    /// The machine refused to place a page or route the upcall.
    #[error(transparent)]
    Platform(#[from] crate::platform::PlatformError),
}

fn left_ns(at: Instant, now: Instant) -> u64 {
    at.saturating_duration_since(now).as_nanos().min(u128::from(u64::MAX)) as u64
}

/// Most memory-map entries (`E820MAX`, `xen/arch/x86/include/asm/e820.h`;
/// `XENMEM_set_memory_map` refuses more).
const E820MAX: usize = 1024;

/// Longest time ahead a restored watchdog may be (the hypercall takes a
/// `u32` of seconds).
const MAX_WATCHDOG_NS: u64 = u32::MAX as u64 * 1_000_000_000;

impl PvhState {
    /// The state to snapshot.
    pub fn save_state(&self) -> PvhSave {
        let now = Instant::now();
        let r = &self.reservation;
        PvhSave {
            mem_bytes: self.layout.mem_bytes,
            hypercall_page: self.hypercall_page,
            callback_irq: self.callback_irq,
            upcall_vector: self.upcall_vector,
            console_evtchn: self.console_evtchn,
            store_evtchn: self.store_evtchn,
            placed: self.placed.to_vec(),
            grant_frames: self.grant_frames,
            clock: ClockSave {
                mul: self.clock.mul,
                shift: self.clock.shift,
                version: self.clock.version(),
                system_time_ns: self.clock.now_ns(),
            },
            timers: self.timer.as_ref().map(|t| t.save_state()),
            reservation: ReservationSave {
                tot_pages: r.tot_pages,
                max_pages: r.max_pages,
                max_gpfn: r.max_gpfn,
                empty: r.empty.clone(),
            },
            memory_map: self.memory_map.clone(),
            shutdown_code: self.shutdown_code,
            watchdogs_ns: self.watchdogs.iter().map(|w| w.map(|at| left_ns(at, now))).collect(),
        }
    }

    /// Checks `s` against this domain (`nr_vcpus` vCPUs) without changing
    /// anything.
    pub fn check_state(&self, s: &PvhSave, nr_vcpus: u32) -> Result<(), PvhStateError> {
        let here = self.layout.mem_bytes;
        if s.mem_bytes != here {
            return Err(PvhStateError::MemSize { saved: s.mem_bytes, here });
        }
        if s.placed.len() != PLACEABLE {
            return Err(PvhStateError::Range("placed"));
        }
        for (i, g) in s.placed.iter().enumerate() {
            let Some(g) = *g else { continue };
            let gpa = g.saturating_mul(PAGE_SIZE);
            let twice = s.placed.iter().filter(|p| **p == Some(g)).count() > 1;
            if gpa >= HOLE_END || self.layout.is_vmm_page(gpa) || twice {
                return Err(PvhStateError::Placement(i));
            }
        }
        let range = |ok: bool, what| if ok { Ok(()) } else { Err(PvhStateError::Range(what)) };
        range(s.grant_frames <= MAX_GRANT_FRAMES, "grant_frames")?;
        range(s.hypercall_page.is_none_or(|g| g.checked_add(PAGE_SIZE).is_some_and(|e| e <= here)), "hypercall_page")?;
        range(s.reservation.empty.len() == self.reservation.empty.len(), "reservation")?;
        let max = u64::MAX / PAGE_SIZE;
        range(s.reservation.tot_pages <= self.reservation.frames + 2 && s.reservation.max_gpfn <= max, "reservation")?;
        range(s.memory_map.len() <= E820MAX, "memory_map")?;
        range(s.watchdogs_ns.len() == NR_DOMAIN_WATCHDOG_TIMERS as usize, "watchdogs")?;
        range(s.watchdogs_ns.iter().flatten().all(|&n| n <= MAX_WATCHDOG_NS), "watchdogs")?;
        range(s.clock.shift.unsigned_abs() < 32, "clock shift")?;
        if let Some(t) = &s.timers {
            crate::timer::Timer::check_state(t, nr_vcpus)?;
        }
        Ok(())
    }

    /// Puts back a checked `s` ([`check_state`](Self::check_state)):
    /// places the saved pages again, restarts the clock at the saved
    /// system time, re-arms the timers and watchdogs. The upcall route is
    /// set again by the domain's restore, which owns the event channels.
    pub fn restore_state(&mut self, s: &PvhSave, nr_vcpus: u32) -> Result<(), PvhStateError> {
        self.check_state(s, nr_vcpus)?;
        for idx in 0..PLACEABLE {
            self.set_placement(idx, None)?;
        }
        for (idx, g) in s.placed.iter().enumerate() {
            if g.is_some() {
                self.set_placement(idx, *g)?;
            }
        }
        let now = Instant::now();
        self.hypercall_page = s.hypercall_page;
        self.callback_irq = s.callback_irq;
        self.upcall_vector = s.upcall_vector;
        self.console_evtchn = s.console_evtchn;
        self.store_evtchn = s.store_evtchn;
        self.grant_frames = s.grant_frames;
        self.clock.mul = s.clock.mul;
        self.clock.shift = s.clock.shift;
        self.clock.restore(s.clock.version, s.clock.system_time_ns);
        let r = &mut self.reservation;
        r.tot_pages = s.reservation.tot_pages;
        r.max_pages = s.reservation.max_pages;
        r.max_gpfn = s.reservation.max_gpfn;
        r.empty.clone_from(&s.reservation.empty);
        self.memory_map.clone_from(&s.memory_map);
        self.shutdown_code = s.shutdown_code;
        for (slot, w) in self.watchdogs.iter_mut().zip(&s.watchdogs_ns) {
            *slot = w.map(|n| now + Duration::from_nanos(n));
        }
        if let Some(t) = &self.timer {
            t.restore_state(s.timers.as_ref().unwrap_or(&TimerState::default()), nr_vcpus)?;
            t.set_watchdog(self.watchdogs.iter().flatten().min().copied());
        }
        Ok(())
    }
}
