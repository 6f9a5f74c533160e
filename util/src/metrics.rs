//! Per-device metrics, Firecracker style: each device owns an
//! `Arc<...Metrics>` of shared atomic counters; the device thread bumps
//! them, and `vmm run --stats`, `vmm bench` and tests read them at any time
//! without locking the device.

use std::sync::atomic::{AtomicU64, Ordering};

/// One shared counter.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.get())
    }
}

/// A device's metrics, read generically (by name) for `--stats` and
/// benchmarks; typed access is through [`as_any`](Self::as_any).
pub trait DeviceMetrics: std::any::Any + Send + Sync + std::fmt::Debug {
    /// Every counter as `(name, value)`, in declaration order.
    fn counters(&self) -> Vec<(&'static str, u64)>;
    /// For downcasting to the device's own metrics type.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// Declares a metrics struct of [`Counter`]s and its [`DeviceMetrics`]
/// implementation (see the back ends' `block/metrics.rs`).
#[macro_export]
macro_rules! device_metrics {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* $field:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Default)]
        pub struct $name { $($(#[$fm])* pub $field: $crate::metrics::Counter,)* }

        impl $crate::metrics::DeviceMetrics for $name {
            fn counters(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($field), self.$field.get())),*]
            }
            fn as_any(&self) -> &dyn std::any::Any {
                self
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    crate::device_metrics!(
        /// Test metrics.
        pub struct Two {
            /// A.
            a,
            /// B.
            b,
        }
    );

    #[test]
    fn counters_are_shared_and_listed_by_name() {
        let m = Arc::new(Two::default());
        let seen: Arc<dyn DeviceMetrics> = m.clone();
        m.a.inc();
        m.b.add(5);
        assert_eq!(seen.counters(), [("a", 1), ("b", 5)]);
        assert_eq!(seen.as_any().downcast_ref::<Two>().map(|t| t.b.get()), Some(5));
    }
}
