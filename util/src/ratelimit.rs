//! Rate-limited logging of guest-caused events.
//!
//! A guest controls how often its requests are refused, so a back end must
//! not log every refusal: each device keeps a [`LogLimiter`] and logs
//! through [`limited_warn!`](crate::limited_warn): at most
//! [`LogLimiter::BURST`] lines per [`LogLimiter::WINDOW`], then silence;
//! the first line let through after a silence is preceded by one line
//! saying how many were suppressed.
//!
//! A device whose guest can connect and disconnect (every xenbus device)
//! keeps its budget in a [`SharedLogLimiter`] made once for the device's
//! life; each connection logs through a clone of it, so reconnecting does
//! not buy the guest a fresh allowance.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Admits at most `burst` log lines per `window`.
#[derive(Debug)]
pub struct LogLimiter {
    burst: u32,
    window: Duration,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter::new(Self::BURST, Self::WINDOW)
    }
}

impl LogLimiter {
    /// Lines per window by default (as Linux's `printk_ratelimit`).
    pub const BURST: u32 = 10;
    /// The default window.
    pub const WINDOW: Duration = Duration::from_secs(5);

    /// A limiter admitting `burst` lines per `window`.
    pub const fn new(burst: u32, window: Duration) -> Self {
        LogLimiter { burst, window, window_start: None, in_window: 0, suppressed: 0 }
    }

    /// Whether to log one more line now: `Some(k)` if so, `k` being the
    /// lines suppressed since the last one admitted; `None` to stay silent.
    pub fn check(&mut self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    /// [`check`](Self::check) at time `now`.
    pub fn check_at(&mut self, now: Instant) -> Option<u64> {
        let start = *self.window_start.get_or_insert(now);
        if now.saturating_duration_since(start) >= self.window {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window < self.burst {
            self.in_window += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }

    /// Lines suppressed and not yet reported.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

/// One log budget shared by every clone: the device owns it for its whole
/// life and each connection logs through a clone.
#[derive(Debug, Clone, Default)]
pub struct SharedLogLimiter(Arc<Mutex<LogLimiter>>);

impl SharedLogLimiter {
    /// A shared budget of `burst` lines per `window`.
    pub fn new(burst: u32, window: Duration) -> Self {
        SharedLogLimiter(Arc::new(Mutex::new(LogLimiter::new(burst, window))))
    }

    /// [`LogLimiter::check`] on the shared budget.
    pub fn check(&self) -> Option<u64> {
        self.lock().check()
    }

    /// [`LogLimiter::check_at`] on the shared budget.
    pub fn check_at(&self, now: Instant) -> Option<u64> {
        self.lock().check_at(now)
    }

    /// Lines suppressed and not yet reported.
    pub fn suppressed(&self) -> u64 {
        self.lock().suppressed()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogLimiter> {
        // A limiter is two counters and a time: whatever a panic left there
        // is still a usable budget.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `tracing::warn!` through a [`LogLimiter`] or a [`SharedLogLimiter`]: `limited_warn!(limiter, ...)`
/// with `warn!`'s arguments after the limiter.
#[macro_export]
macro_rules! limited_warn {
    ($limiter:expr, $($arg:tt)+) => {
        if let Some(suppressed) = $limiter.check() {
            if suppressed > 0 {
                $crate::__tracing::warn!(suppressed, "{suppressed} similar guest-caused messages suppressed");
            }
            $crate::__tracing::warn!($($arg)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_silence_then_one_summary() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(3, Duration::from_secs(5));
        let admitted: Vec<_> = (0..100).map(|_| l.check_at(t0)).collect();
        assert_eq!(admitted.iter().filter(|a| a.is_some()).count(), 3);
        assert_eq!(l.suppressed(), 97);
        assert_eq!(l.check_at(t0 + Duration::from_secs(1)), None, "same window");
        assert_eq!(l.check_at(t0 + Duration::from_secs(6)), Some(98), "next window reports the count once");
        assert_eq!(l.check_at(t0 + Duration::from_secs(6)), Some(0));
    }

    #[test]
    fn clones_of_a_shared_limiter_spend_one_budget() {
        let t0 = Instant::now();
        let device = SharedLogLimiter::new(3, Duration::from_secs(5));
        // Each "connection" logs through its own clone, one after another.
        let admitted: usize = (0..10)
            .map(|_| {
                let conn = device.clone();
                (0..10).filter(|_| conn.check_at(t0).is_some()).count()
            })
            .sum();
        assert_eq!(admitted, 3, "one budget for the device, not one per clone");
        assert_eq!(device.suppressed(), 97);
    }
}
