//! Direct paging end to end: the same workload in the three paging modes,
//! exit counts of trapped versus batched updates, each illegal update
//! rejected with its code, and multicall semantics.

use pv_abi::hypercall::nr;
use pv_abi::hypercall::sched_op::SHUTDOWN_POWEROFF;
use pv_abi::start_info::paging_mode::{NATIVE, PV, TRAPPED};
use std::sync::{Arc, Mutex};
use tests::Run;
use vmm::console::ConsoleOut;
use vmm::stats::ExitKind;
use vmm::{Outcome, Vm, VmConfig};

const OK: Outcome = Outcome::Shutdown { reason: SHUTDOWN_POWEROFF, code: 0 };

/// Boots the `paging` image in `mode` with `cmdline` and runs it to the end.
fn boot(mode: u32, cmdline: &str) -> Run {
    let (console, buf): (ConsoleOut, Arc<Mutex<Vec<u8>>>) = ConsoleOut::capture();
    let cfg = VmConfig { console, paging: mode, ..VmConfig::bundled("paging", cmdline) };
    // Under the default seccomp filters, on a thread of its own.
    tests::on_vm_thread(move || {
        let mut vm = Vm::new(&cfg).unwrap_or_else(|e| panic!("cannot create VM: {e}"));
        let outcome = vm.run().unwrap_or_else(|e| panic!("run failed: {e}"));
        let console = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
        Run { outcome, console, stats: vm.stats() }
    })
}

#[test]
fn same_workload_same_results_in_all_three_modes() {
    let runs: Vec<(u32, Run)> =
        [NATIVE, TRAPPED, PV].into_iter().map(|m| (m, boot(m, "test=workload pages=1000 batch=64"))).collect();
    for (mode, run) in &runs {
        assert_eq!(run.outcome, OK, "mode {mode}: {}", run.console);
        assert!(
            run.console.contains("pages=1000 ") && run.console.contains("bad=0 readonly=100 still-mapped=0"),
            "mode {mode}: {}",
            run.console
        );
    }
    assert_eq!(runs[0].1.console, runs[1].1.console);
    assert_eq!(runs[0].1.console, runs[2].1.console);
    // How the updates reached the tables differs: none, traps, hypercalls.
    let (native, trapped, pv) = (&runs[0].1.stats, &runs[1].1.stats, &runs[2].1.stats);
    assert_eq!(native.exits(ExitKind::Mmio), 0);
    assert_eq!(native.hypercalls(nr::MMU_UPDATE), 0);
    assert!(trapped.exits(ExitKind::Mmio) >= 2000, "{trapped}");
    assert_eq!(trapped.hypercalls(nr::MMU_UPDATE), 0);
    assert_eq!(pv.exits(ExitKind::Mmio), 0);
    // 2000+ updates in batches of 64, plus one flush per new table.
    let calls = pv.hypercalls(nr::MMU_UPDATE);
    assert!((32..=60).contains(&calls), "{pv}");
}

/// Exits of `n` PTE updates: the `n=N` run minus the `n=0` run.
fn update_exits(mode: u32, n: u64, batch: u64) -> u64 {
    let base = boot(mode, &format!("test=pte n=0 batch={batch}"));
    let full = boot(mode, &format!("test=pte n={n} batch={batch}"));
    assert_eq!(base.outcome, OK, "{}", base.console);
    assert_eq!(full.outcome, OK, "{}", full.console);
    full.stats.total_exits() - base.stats.total_exits()
}

#[test]
fn pv_batch_512_takes_at_most_2_exits_trapped_at_least_512() {
    let pv = update_exits(PV, 512, 512);
    assert!(pv <= 2, "pv: {pv} exits for 512 updates");
    let trapped = update_exits(TRAPPED, 512, 512);
    assert!(trapped >= 512, "trapped: {trapped} exits for 512 updates");
    assert_eq!(update_exits(NATIVE, 512, 512), 0);
    // Batch 1 is one hypercall per update.
    assert_eq!(update_exits(PV, 64, 1), 64);
}

#[test]
fn illegal_updates_are_rejected_with_their_codes_and_change_nothing() {
    let run = boot(PV, "test=illegal");
    for line in [
        "writable mapping of a pool page: ok (-30)",
        "target outside the pool: ok (-1)",
        "target in an unused pool page: ok (-1)",
        "misaligned target: ok (-22)",
        "frame outside RAM: ok (-34)",
        "upper-level entry pointing outside the pool: ok (-13)",
        "reserved bits: ok (-95)",
        "unknown command bits: ok (-38)",
        "new_baseptr to an unpinned table: ok (-9)",
        "new_baseptr to an unused pool page: ok (-9)",
        "unknown mmuext command: ok (-38)",
        "batch stops at the first failure: ok",
        "legal update after the rejections: ok",
    ] {
        assert!(run.console.contains(line), "missing {line:?} in:\n{}", run.console);
    }
    assert!(!run.console.contains("FAILED"), "{}", run.console);
    assert_eq!(run.outcome, OK, "the VMM and the guest keep running");
}

#[test]
fn illegal_trapped_writes_go_through_the_same_validator_and_are_dropped() {
    let run = boot(TRAPPED, "test=illegal-trapped");
    for line in [
        "trapped frame outside RAM: dropped",
        "trapped upper-level entry pointing outside the pool: dropped",
        "trapped reserved bits: dropped",
        "trapped 2M page over the end of RAM: dropped",
        "trapped legal writes apply: ok",
    ] {
        assert!(run.console.contains(line), "missing {line:?} in:\n{}", run.console);
    }
    assert_eq!(run.outcome, OK, "{}", run.console);
    assert!(run.stats.exits(ExitKind::Mmio) > 0);
}

#[test]
fn multicall_runs_every_entry_writes_each_result_and_refuses_nesting() {
    let run = boot(PV, "test=multicall");
    for i in 0..7 {
        let line = format!("multicall entry {i}: ok");
        assert!(run.console.contains(&line), "{line}:\n{}", run.console);
    }
    for line in [
        "multicall entry 2: ok (-30)",
        "multicall entry 3: ok (-38)",
        "multicall entry 4: ok (-22)",
        "multicall returns 0 and applies the good entries: ok",
        "multicall of 257 entries: ok",
        "multicall array outside RAM: ok (-14)",
    ] {
        assert!(run.console.contains(line), "{line}:\n{}", run.console);
    }
    assert_eq!(run.outcome, OK);
    // The whole batch of seven was one exit.
    assert_eq!(run.stats.hypercalls(nr::MULTICALL), 3);
}

#[test]
fn direct_paging_hypercalls_are_refused_in_native_mode() {
    let run = boot(NATIVE, "test=illegal");
    assert!(run.console.contains("mmu_update in native mode: ok"), "{}", run.console);
    assert_eq!(run.outcome, OK);
    // And a pv guest boots, switches to its own tables and shuts down.
    assert_eq!(boot(PV, "test=boot").outcome, OK);
}

#[test]
fn hypercall_outputs_aimed_at_page_tables_or_low_pages_fault_and_change_nothing() {
    for mode in [PV, TRAPPED] {
        let run = boot(mode, "test=outputs");
        assert_eq!(run.outcome, OK, "mode {mode}: {}", run.console);
        assert_eq!(run.console.matches("output into").count(), 8, "mode {mode}: {}", run.console);
        assert!(!run.console.contains("FAILED"), "mode {mode}: {}", run.console);
    }
}

/// One exit never does more than `xen_domain::preempt::WORK_PER_EXIT` units: a
/// multicall of 256 mmuext_ops over 20000 flushes each (5M operations) is
/// continued many times, and every entry still gets its full `pdone`.
#[test]
fn a_huge_multicall_batch_is_split_into_bounded_exits_and_completes() {
    const N: u64 = 20_000;
    let run = boot(PV, &format!("test=flood n={N} rounds=1"));
    assert_eq!(run.outcome, OK, "{}", run.console);
    assert!(run.console.contains(&format!("flood: rounds=1 entries=256 n={N} ok")), "{}", run.console);
    // 256 * 20001 units at 16K units per exit: at least 312 exits (one
    // exit, before the bound existed).
    assert_eq!(xen_domain::preempt::WORK_PER_EXIT, 16 * 1024);
    let exits = run.stats.hypercalls(nr::MULTICALL);
    assert!(exits >= 312, "{exits} multicall exits for 5M operations");
    // The direct mmuext_op over 20000 was continued once too.
    assert!(run.stats.hypercalls(nr::MMUEXT_OP) >= 2, "{}", run.stats);
}
