//! Exit accounting: why the vCPU left the guest, and which hypercalls it made.

use std::collections::BTreeMap;
use std::fmt;

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

/// Counters kept by the vCPU loop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitStats {
    exits: [u64; ExitKind::ALL.len()],
    hypercalls: BTreeMap<u64, u64>,
    /// Guest instructions from KVM's `insn_emulation` stat, if available.
    pub guest_instructions: Option<u64>,
    /// KVM's own count of all exits (including those handled in the kernel).
    pub kvm_exits: Option<u64>,
}

impl ExitStats {
    /// Counts one exit.
    #[inline]
    pub fn exit(&mut self, kind: ExitKind) {
        self.exits[kind as usize] += 1;
    }

    /// Counts one hypercall by number.
    #[inline]
    pub fn hypercall(&mut self, nr: u64) {
        *self.hypercalls.entry(nr).or_insert(0) += 1;
    }

    /// Exits of one kind so far.
    pub fn exits(&self, kind: ExitKind) -> u64 {
        self.exits[kind as usize]
    }

    /// All exits to userspace so far.
    pub fn total_exits(&self) -> u64 {
        self.exits.iter().sum()
    }

    /// Hypercalls with number `nr` so far.
    pub fn hypercalls(&self, nr: u64) -> u64 {
        self.hypercalls.get(&nr).copied().unwrap_or(0)
    }
}

impl fmt::Display for ExitStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "exits to the VMM: {}", self.total_exits())?;
        for kind in ExitKind::ALL {
            let n = self.exits(kind);
            if n > 0 {
                writeln!(f, "  {:<14} {n}", kind.name())?;
            }
        }
        if !self.hypercalls.is_empty() {
            writeln!(f, "hypercalls:")?;
            for (nr, n) in &self.hypercalls {
                writeln!(f, "  {:<14} {n}", format!("{}({nr})", pv_abi::hypercall::nr::name(*nr)))?;
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
