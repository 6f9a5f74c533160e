//! The timers' part of a snapshot ([`TimerState`]): each vCPU's one-shot
//! deadline and periodic timer, and the domain-watchdog expiry the timer
//! thread kicks at, as time *remaining* when saved, so they fire the same
//! time after the restore as they had left before the snapshot.

use super::{Timer, VcpuTimer};
use crate::vcpus::MAX_VCPUS;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// One vCPU's timers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuTimerSave {
    /// The one-shot timer: ns left until it fires (0: due).
    pub singleshot_ns: Option<u64>,
    /// The periodic timer: period and ns left until the next event.
    pub periodic_ns: Option<(u64, u64)>,
}

/// The timers of a domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerState {
    /// Per vCPU, by id.
    pub vcpus: Vec<VcpuTimerSave>,
}

/// Why a timer state was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimerStateError {
    /// Timers for more vCPUs than the domain has.
    #[error("timers for {0} vCPUs")]
    TooManyVcpus(usize),
    /// A period of 0 or a time too far ahead to represent.
    #[error("vCPU {0}: timer out of range")]
    OutOfRange(u32),
}

/// Longest time ahead a restored timer may be (`set_timer_op` treats more
/// than 2^50 ns as bogus too).
const MAX_AHEAD_NS: u64 = 1 << 50;

fn left(at: Instant, now: Instant) -> u64 {
    at.saturating_duration_since(now).as_nanos().min(u128::from(u64::MAX)) as u64
}

impl Timer {
    /// The state to snapshot.
    pub fn save_state(&self) -> TimerState {
        let now = Instant::now();
        let st = self.shared.0.lock().unwrap_or_else(|p| p.into_inner());
        let vcpus = (st.vcpus.iter())
            .map(|t| VcpuTimerSave {
                singleshot_ns: t.deadline.map(|d| left(d, now)),
                periodic_ns: t.periodic.map(|(p, next)| (p.as_nanos() as u64, left(next, now))),
            })
            .collect();
        TimerState { vcpus }
    }

    /// Checks `s` for a domain of `nr_vcpus` vCPUs.
    pub fn check_state(s: &TimerState, nr_vcpus: u32) -> Result<(), TimerStateError> {
        if s.vcpus.len() > nr_vcpus.min(MAX_VCPUS) as usize {
            return Err(TimerStateError::TooManyVcpus(s.vcpus.len()));
        }
        for (id, v) in s.vcpus.iter().enumerate() {
            let bad_period = v.periodic_ns.is_some_and(|(p, n)| p == 0 || p > MAX_AHEAD_NS || n > MAX_AHEAD_NS);
            if bad_period || v.singleshot_ns.is_some_and(|n| n > MAX_AHEAD_NS) {
                return Err(TimerStateError::OutOfRange(id as u32));
            }
        }
        Ok(())
    }

    /// Re-arms every timer of `s` (checked) from now; timers not in `s`
    /// are cancelled. The domain watchdog is re-armed separately.
    pub fn restore_state(&self, s: &TimerState, nr_vcpus: u32) -> Result<(), TimerStateError> {
        Self::check_state(s, nr_vcpus)?;
        let now = Instant::now();
        let ns = Duration::from_nanos;
        self.update(|st| {
            st.vcpus = (s.vcpus.iter())
                .map(|v| VcpuTimer {
                    deadline: v.singleshot_ns.map(|n| now + ns(n)),
                    periodic: v.periodic_ns.map(|(p, n)| (ns(p), now + ns(n))),
                })
                .collect();
        });
        Ok(())
    }
}
