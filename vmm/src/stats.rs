//! Exit accounting: why the vCPU left the guest, and which hypercalls it made.

use std::fmt;

/// Hypercall numbers counted one by one (the dispatch table's size);
/// every other number the guest puts in `rax` shares one "other" bucket,
/// so the counters stay a fixed size whatever the guest does.
pub const HYPERCALL_BUCKETS: usize = xen_domain::hypercall::TABLE_SIZE;

/// Why a vCPU exited to the VMM (our classification of `KVM_EXIT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExitKind {
    /// `out` to the hypercall port.
    Hypercall,
    /// `out`/`in` on the emulated UART.
    Uart,
    /// A doorbell `out` no ioeventfd matched (handled as a send).
    Doorbell,
    /// Any other port I/O.
    OtherIo,
    /// An MMIO read or write.
    Mmio,
    /// `hlt` with no in-kernel irqchip handling it.
    Hlt,
    /// Triple fault or other shutdown.
    Shutdown,
    /// Internal error, failed entry, unsupported exit.
    Error,
    /// Interrupted by a signal (`EINTR`).
    Interrupted,
    /// A filtered `rdmsr`/`wrmsr` (the Xen hypercall-page MSR).
    Msr,
}

impl ExitKind {
    /// Every kind, in report order.
    pub const ALL: [ExitKind; 10] = [
        ExitKind::Hypercall,
        ExitKind::Uart,
        ExitKind::Doorbell,
        ExitKind::OtherIo,
        ExitKind::Mmio,
        ExitKind::Hlt,
        ExitKind::Shutdown,
        ExitKind::Error,
        ExitKind::Interrupted,
        ExitKind::Msr,
    ];

    /// Short name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            ExitKind::Hypercall => "io:hypercall",
            ExitKind::Uart => "io:uart",
            ExitKind::Doorbell => "io:doorbell",
            ExitKind::OtherIo => "io:other",
            ExitKind::Mmio => "mmio",
            ExitKind::Hlt => "hlt",
            ExitKind::Shutdown => "shutdown",
            ExitKind::Error => "error",
            ExitKind::Interrupted => "interrupted",
            ExitKind::Msr => "msr",
        }
    }
}

/// Counters kept by the vCPU loop (fixed size: nothing the guest does
/// grows them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitMetrics {
    exits: [u64; ExitKind::ALL.len()],
    hypercalls: [u64; HYPERCALL_BUCKETS],
    other_hypercalls: u64,
    /// Guest instructions from KVM's `insn_emulation` stat, if available.
    pub guest_instructions: Option<u64>,
    /// KVM's own count of all exits (including those handled in the kernel).
    pub kvm_exits: Option<u64>,
}

impl Default for ExitMetrics {
    fn default() -> Self {
        ExitMetrics {
            exits: [0; ExitKind::ALL.len()],
            hypercalls: [0; HYPERCALL_BUCKETS],
            other_hypercalls: 0,
            guest_instructions: None,
            kvm_exits: None,
        }
    }
}

fn bucket(nr: u64) -> Option<usize> {
    usize::try_from(nr).ok().filter(|&i| i < HYPERCALL_BUCKETS)
}

impl ExitMetrics {
    /// Counts one exit.
    #[inline]
    pub fn exit(&mut self, kind: ExitKind) {
        self.exits[kind as usize] += 1;
    }

    /// Counts one hypercall by number.
    #[inline]
    pub fn hypercall(&mut self, nr: u64) {
        match bucket(nr) {
            Some(i) => self.hypercalls[i] += 1,
            None => self.other_hypercalls += 1,
        }
    }

    /// Exits of one kind so far.
    pub fn exits(&self, kind: ExitKind) -> u64 {
        self.exits[kind as usize]
    }

    /// All exits to userspace so far.
    pub fn total_exits(&self) -> u64 {
        self.exits.iter().sum()
    }

    /// Hypercalls with number `nr` so far; for a number of
    /// [`HYPERCALL_BUCKETS`] or more, all such calls (the "other" bucket).
    pub fn hypercalls(&self, nr: u64) -> u64 {
        bucket(nr).map_or(self.other_hypercalls, |i| self.hypercalls[i])
    }

    /// Adds `other`'s counts to these (totals over vCPUs); KVM's counters
    /// add where both have them.
    pub fn add(&mut self, other: &ExitMetrics) {
        self.exits.iter_mut().zip(other.exits).for_each(|(a, b)| *a += b);
        self.hypercalls.iter_mut().zip(other.hypercalls).for_each(|(a, b)| *a += b);
        self.other_hypercalls += other.other_hypercalls;
        let sum = |a: Option<u64>, b: Option<u64>| Some(a? + b.unwrap_or(0));
        self.guest_instructions = sum(self.guest_instructions, other.guest_instructions);
        self.kvm_exits = sum(self.kvm_exits, other.kvm_exits);
    }

    /// One line for `--stats`' per-vCPU part: exits, hypercalls, KVM's
    /// exits and guest instructions where known.
    pub fn summary(&self) -> String {
        let hypercalls: u64 = self.hypercalls.iter().sum::<u64>() + self.other_hypercalls;
        let mut line = format!("exits={} hypercalls={hypercalls}", self.total_exits());
        if let Some(n) = self.kvm_exits {
            line += &format!(" kvm_exits={n}");
        }
        if let Some(n) = self.guest_instructions {
            line += &format!(" guest_instructions={n}");
        }
        line
    }

    /// Hypercalls with a number of [`HYPERCALL_BUCKETS`] or more.
    pub fn other_hypercalls(&self) -> u64 {
        self.other_hypercalls
    }
}

impl fmt::Display for ExitMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "exits to the VMM: {}", self.total_exits())?;
        for kind in ExitKind::ALL {
            let n = self.exits(kind);
            if n > 0 {
                writeln!(f, "  {:<14} {n}", kind.name())?;
            }
        }
        if self.hypercalls.iter().any(|&n| n > 0) || self.other_hypercalls > 0 {
            writeln!(f, "hypercalls:")?;
            for (nr, &n) in self.hypercalls.iter().enumerate().filter(|(_, &n)| n > 0) {
                writeln!(f, "  {:<14} {n}", format!("{}({nr})", pv_abi::hypercall::nr::name(nr as u64)))?;
            }
            if self.other_hypercalls > 0 {
                writeln!(f, "  {:<14} {}", format!("other(>={HYPERCALL_BUCKETS})"), self.other_hypercalls)?;
            }
        }
        if let Some(n) = self.kvm_exits {
            writeln!(f, "KVM exits (incl. in-kernel): {n}")?;
        }
        match self.guest_instructions {
            Some(n) => writeln!(f, "guest instructions (insn_emulation): {n}"),
            None => writeln!(f, "guest instructions: not reported by this host's KVM"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_vcpu_counters_add_up_to_the_totals() {
        let mut a = ExitMetrics { guest_instructions: Some(10), ..Default::default() };
        a.exit(ExitKind::Hypercall);
        a.hypercall(24);
        let mut b = ExitMetrics { guest_instructions: Some(5), ..Default::default() };
        b.exit(ExitKind::Hypercall);
        b.exit(ExitKind::Mmio);
        b.hypercall(24);
        b.hypercall(9999);
        assert_eq!(b.summary(), "exits=2 hypercalls=2 guest_instructions=5");
        a.add(&b);
        assert_eq!((a.total_exits(), a.hypercalls(24), a.other_hypercalls()), (3, 2, 1));
        assert_eq!(a.guest_instructions, Some(15));
        assert_eq!(a.summary(), "exits=3 hypercalls=3 guest_instructions=15");
    }

    #[test]
    fn distinct_guest_numbers_do_not_grow_the_counters() {
        let mut s = ExitMetrics::default();
        let before = format!("{s}").len();
        for i in 0..100_000u64 {
            s.hypercall(1000 + i * 0x9e37_79b9);
        }
        s.hypercall(u64::MAX);
        s.hypercall(17);
        let report = format!("{s}");
        // At most one line per bucket plus "other": bounded, whatever rax held.
        assert!(report.lines().count() <= HYPERCALL_BUCKETS + 8, "{} lines", report.lines().count());
        assert!(report.len() < before + 64 * (HYPERCALL_BUCKETS + 2), "{} bytes", report.len());
        assert_eq!(s.hypercalls(17), 1);
        assert_eq!(s.other_hypercalls(), 100_001);
        assert_eq!(s.other_hypercalls() + (0..HYPERCALL_BUCKETS as u64).map(|n| s.hypercalls(n)).sum::<u64>(), 100_002);
        assert!(report.contains("other(>=64)"), "{report}");
    }
}
