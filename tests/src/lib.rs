//! End-to-end tests: boot the real guest images under `/dev/kvm` and check
//! what the guest and the VMM observe, including hostile guests. This
//! library holds the shared helpers; the tests are in `tests/`.

use std::sync::{Arc, Mutex};
use vmm::console::ConsoleOut;
use vmm::{Outcome, Vm, VmConfig};

/// The result of one guest run.
pub struct Run {
    /// How it ended.
    pub outcome: Outcome,
    /// Everything the guest printed.
    pub console: String,
    /// Exit and hypercall counters.
    pub stats: vmm::stats::ExitStats,
}

/// Boots bundled image `image` with `cmdline` and runs it to the end.
pub fn boot(image: &'static str, cmdline: &str) -> Run {
    let (console, buf): (ConsoleOut, Arc<Mutex<Vec<u8>>>) = ConsoleOut::capture();
    let cfg = VmConfig { console, ..VmConfig::bundled(image, cmdline) };
    let mut vm = Vm::new(&cfg).unwrap_or_else(|e| panic!("cannot create VM: {e}"));
    let outcome = vm.run().unwrap_or_else(|e| panic!("run failed: {e}"));
    let console = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
    Run { outcome, console, stats: vm.stats() }
}
