//! SMP PVH guests built instruction by instruction (`tests::pvh_asm`):
//! vCPU 0 brings vCPU 1 up with `VCPUOP_initialise` (Xen's
//! `vcpu_hvm_context`, 32- and 64-bit) and `VCPUOP_up`, vCPU 1 makes a
//! hypercall of its own, vCPU 0 takes it down and up again (it resumes
//! where it stopped), and the refusals come back as Xen's errnos.

use pv_abi::errno::*;
use tests::pvh_asm::*;
use tests::smp_asm::*;
use tests::{boot_vm, Run};
use vmm::{Kernel, Outcome, Vm, VmConfig};

fn result(vm: &Vm, slot: u32) -> i32 {
    vm.dom.ram.read_obj::<i32>(u64::from(RESULTS + slot * 4)).unwrap()
}

fn err(e: i64) -> i32 {
    -(e as i32)
}

fn run(long: bool, vcpus: u32) -> (Run, Vm) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("smp.elf");
    std::fs::write(&path, pvh_elf(&guest(long), long)).unwrap();
    let mut cfg = VmConfig::bundled("hello", "");
    cfg.kernel = Kernel::File(path);
    cfg.mem_bytes = 16 << 20;
    cfg.vcpus = vcpus;
    boot_vm(cfg)
}

fn check(long: bool) {
    let (run, vm) = run(long, 3);
    assert_eq!(run.outcome, Outcome::XenShutdown { reason: 0 }, "{}", run.console);
    // `common_vcpu_op` (xen/common/domain.c): up before initialise.
    assert_eq!(result(&vm, 0), err(EINVAL), "up of an uninitialised vCPU");
    // `arch_initialise_vcpu` (xen/arch/x86/domain.c) / `arch_set_info_hvm_guest`.
    assert_eq!(result(&vm, 1), 0, "initialise");
    assert_eq!(result(&vm, 2), 0, "initialise leaves the vCPU down (is_up 0)");
    assert_eq!(result(&vm, 3), err(EEXIST), "second initialise");
    assert_eq!(result(&vm, 4), 0, "up");
    assert_eq!(result(&vm, 10), 1, "vCPU 1's own hypercall: it is up");
    assert_eq!(result(&vm, 5), 0, "down");
    assert_eq!(result(&vm, 6), 0, "is_up after down");
    assert_eq!(result(&vm, 7), 0, "up again");
    let entries = vm.dom.ram.read_obj::<u32>(u64::from(ENTRIES)).unwrap();
    assert_eq!(entries, 1, "up after down resumes vCPU 1 where it stopped, not at its entry");
    // `arch_set_info_hvm_guest` (xen/arch/x86/hvm/domain.c): pad, mode.
    assert_eq!(result(&vm, 8), err(EINVAL), "non-zero pad");
    assert_eq!(result(&vm, 9), err(EINVAL), "unknown mode");
    // `do_vcpu_op` (xen/arch/x86/domain.c): `domain_vcpu()` is NULL.
    assert_eq!(result(&vm, 11), err(ENOENT), "vCPU 3 of 3");
    let per_vcpu = vm.vcpu_stats();
    assert_eq!(per_vcpu.len(), 3);
    assert_eq!(per_vcpu[1].hypercalls(u64::from(VCPU_OP)), 1, "vCPU 1 made one vcpu_op");
    assert_eq!(per_vcpu[2].total_exits(), 0, "vCPU 2 never ran");
    assert_eq!(run.stats.hypercalls(u64::from(VCPU_OP)), 12, "totals count every vCPU");
}

#[test]
fn a_32_bit_pvh_guest_brings_up_a_second_vcpu_with_vcpu_hvm_context() {
    check(false);
}

#[test]
fn a_64_bit_pvh_guest_brings_up_a_second_vcpu_with_vcpu_hvm_context() {
    check(true);
}
