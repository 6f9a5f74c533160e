//! End-to-end tests: boot the real guest images under `/dev/kvm` and check
//! what the guest and the VMM observe, including hostile guests. This
//! library holds the shared helpers; the tests are in `tests/`.

pub mod conformance;
pub mod pvh_asm;
pub mod smp_asm;

use std::sync::{Arc, Mutex};
use std::time::Duration;
use vmm::console::ConsoleOut;
use vmm::{Outcome, Vm, VmConfig};

/// The result of one guest run.
pub struct Run {
    /// How it ended.
    pub outcome: Outcome,
    /// Everything the guest printed.
    pub console: String,
    /// Exit and hypercall counters.
    pub stats: vmm::stats::ExitMetrics,
}

/// A stopped VM handed back for inspecting its devices. Dropping it tears
/// the VM down (device threads stopped and joined, guest memory unmapped,
/// descriptors closed) on a thread under the vCPU filter, the filter `vmm
/// run` tears its VM down under, so teardown is held to the allowlists as
/// the run was. While a panic unwinds, it is dropped in place instead (a
/// forbidden call then would hide the first failure).
pub struct RanVm(Option<Vm>);

impl From<Vm> for RanVm {
    /// A VM a test ran itself (on [`on_vm_thread`]) and now inspects.
    fn from(vm: Vm) -> Self {
        RanVm(Some(vm))
    }
}

impl std::ops::Deref for RanVm {
    type Target = Vm;
    fn deref(&self) -> &Vm {
        self.0.as_ref().unwrap_or_else(|| unreachable!("taken only when dropped"))
    }
}

impl std::ops::DerefMut for RanVm {
    fn deref_mut(&mut self) -> &mut Vm {
        self.0.as_mut().unwrap_or_else(|| unreachable!("taken only when dropped"))
    }
}

impl Drop for RanVm {
    fn drop(&mut self) {
        let Some(vm) = self.0.take() else { return };
        if std::thread::panicking() {
            return;
        }
        if let Err(e) = vmm::seccomp::run_confined(vmm::seccomp::ThreadKind::Vcpu, move || drop(vm)) {
            panic!("{e}");
        }
    }
}

/// Boots bundled image `image` with `cmdline` and runs it to the end.
pub fn boot(image: &'static str, cmdline: &str) -> Run {
    boot_vm(VmConfig::bundled(image, cmdline)).0
}

/// The run-time limit of a test guest: a liveness guard only (a hung
/// guest fails instead of blocking the suite), generous because the
/// emulating KVM on a loaded shared machine runs guests many times slower
/// (60 s timed out the block tests under load 20).
pub const LIVENESS_LIMIT: Duration = Duration::from_secs(240);

/// Boots `cfg` (console captured, [`LIVENESS_LIMIT`]) and runs it to the end;
/// returns the run and the stopped VM for inspecting its devices.
pub fn boot_vm(cfg: VmConfig) -> (Run, RanVm) {
    boot_vm_with(cfg, |_| {})
}

/// As [`boot_vm`], with `prepare` run on the built VM before the guest
/// starts (to offer it something, as a toolstack would). The VM is built
/// and run on a thread of its own ([`on_vm_thread`]), under the default
/// seccomp filters as `vmm run` is.
pub fn boot_vm_with(cfg: VmConfig, prepare: impl FnOnce(&mut Vm) + Send) -> (Run, RanVm) {
    let (run, vm) = on_vm_thread(move || {
        let (console, buf): (ConsoleOut, Arc<Mutex<Vec<u8>>>) = ConsoleOut::capture();
        let cfg = VmConfig { console, timeout: Some(LIVENESS_LIMIT), ..cfg };
        let mut vm = Vm::new(&cfg).unwrap_or_else(|e| panic!("cannot create VM: {e}"));
        prepare(&mut vm);
        let outcome = vm.run().unwrap_or_else(|e| panic!("run failed: {e}"));
        let console = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
        let stats = vm.stats();
        (Run { outcome, console, stats }, vm)
    });
    (run, RanVm(Some(vm)))
}

/// Runs `f` (which builds and runs VMs) on a new thread with the VMM's
/// default seccomp filters on, as the `vmm` binary runs, and returns its
/// result; a panic in `f` fails the caller. Filters are per thread and
/// inherited by the threads a thread starts: `Vm::run` confines the thread
/// it runs on with the vCPU filter (and each device thread its own), so
/// that must not be the test harness's thread, which has to go on. A
/// forbidden system call stops the whole test binary with
/// `error: seccomp: ...` and exit status 159: a gap in the allowlists of
/// `vmm::seccomp` (or a needless call on that path) to fix.
pub fn on_vm_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    vmm::seccomp::enable();
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// The value of `key=<number>` in the first console line containing `tag`.
pub fn field(console: &str, tag: &str, key: &str) -> Option<u64> {
    let line = console.lines().find(|l| l.contains(tag))?;
    line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}
