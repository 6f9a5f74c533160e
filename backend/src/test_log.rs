//! Test-only capture of the log lines code emits on the calling thread, as
//! the VMM would print them at its default level (`warn`): `tracing`
//! events from our code and `log` records from dependencies (virtio-queue
//! logs through `log`; the VMM's subscriber forwards those too). Hostile
//! tests assert with it that a guest cannot flood the log.

use std::cell::RefCell;
use std::fmt::Write as _;

/// Whether this module's `log` logger is the process's (one per process:
/// a test that installs its own first keeps dependency records from here).
static OWNS_LOG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

thread_local! {
    static LINES: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

fn push(line: String) {
    LINES.with(|l| {
        if let Some(v) = l.borrow_mut().as_mut() {
            v.push(line);
        }
    });
}

/// Forwards `log` records at warn or above into this thread's capture.
struct LogRecords;

impl log::Log for LogRecords {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            push(format!("{} {}: {}", r.level(), r.target(), r.args()));
        }
    }
    fn flush(&self) {}
}

/// Keeps `tracing` events at warn or above, with their fields.
struct Events;

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={v:?}", f.name());
    }
}

impl tracing::Subscriber for Events {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        *m.level() <= tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        let mut f = Fields(e.metadata().level().to_string());
        e.record(&mut f);
        push(f.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Runs `f` and returns its result with the warn-or-above lines it logged
/// on this thread.
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Vec<String>) {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // Another test's logger may be in place already (one per process):
        // then dependency records are not seen here, so each test also
        // checks the outcome itself.
        if log::set_logger(&LogRecords).is_ok() {
            log::set_max_level(log::LevelFilter::Warn);
            OWNS_LOG.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    LINES.with(|l| *l.borrow_mut() = Some(Vec::new()));
    let r = tracing::subscriber::with_default(Events, f);
    let lines = LINES.with(|l| l.borrow_mut().take()).unwrap_or_default();
    (r, lines)
}

/// The most lines one device may log in one limiter window: the burst,
/// plus one "suppressed" summary line per admitted line at worst, plus
/// slack for a window boundary crossed during the test.
pub const DEVICE_BUDGET: usize = 4 * pv_util::ratelimit::LogLimiter::BURST as usize + 4;

#[cfg(test)]
mod tests {
    #[test]
    fn captures_tracing_events_and_dependency_log_records() {
        let ((), lines) = super::capture(|| {
            tracing::warn!(device = 7, "ours");
            tracing::info!("below the default level");
            log::error!("a dependency's");
        });
        assert!(lines[0].contains("ours") && lines[0].contains("device=7"), "{lines:?}");
        if super::OWNS_LOG.load(std::sync::atomic::Ordering::SeqCst) {
            assert_eq!(lines.len(), 2, "{lines:?}");
            assert!(lines[1].contains("a dependency's"), "{lines:?}");
        } else {
            // Another test's logger won the race to install (one per
            // process): dependency records are counted there instead.
            assert_eq!(lines.len(), 1, "{lines:?}");
        }
    }
}
