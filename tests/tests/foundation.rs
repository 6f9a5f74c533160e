//! Foundation: boot, console hypercall versus UART traps, hostile hypercalls.

use pv_abi::hypercall::nr;
use pv_abi::hypercall::sched_op::{SHUTDOWN_CRASH, SHUTDOWN_POWEROFF};
use tests::boot;
use vmm::stats::ExitKind;
use vmm::Outcome;

#[test]
fn hello_prints_and_exits_with_the_chosen_code() {
    let run = boot("hello", "exit=42 marker-xyz");
    assert_eq!(run.outcome, Outcome::Shutdown { reason: SHUTDOWN_POWEROFF, code: 42 });
    assert!(run.console.contains("Hello from the PV guest (64 MiB RAM)"), "{}", run.console);
    assert!(run.console.contains("cmdline: exit=42 marker-xyz"), "{}", run.console);
}

#[test]
fn console_hypercall_is_one_exit_uart_is_one_exit_per_byte() {
    const N: u64 = 300;
    let uart = boot("selftest", &format!("noevents test=uart n={N}"));
    assert_eq!(uart.outcome, Outcome::Shutdown { reason: SHUTDOWN_POWEROFF, code: 0 });
    assert_eq!(uart.stats.exits(ExitKind::Uart), N);
    assert_eq!(uart.console.len() as u64, N);
    assert!(uart.console.starts_with("abcdefghijklmnopqrstuvwxyzabcd"));
    // The only hypercall is the shutdown.
    assert_eq!(uart.stats.exits(ExitKind::Hypercall), 1);

    let cons = boot("selftest", &format!("noevents test=console n={N}"));
    assert_eq!(cons.outcome, Outcome::Shutdown { reason: SHUTDOWN_POWEROFF, code: 0 });
    assert_eq!(cons.console, "c".repeat(N as usize));
    assert_eq!(cons.stats.hypercalls(nr::CONSOLE_IO), 1);
    assert_eq!(cons.stats.exits(ExitKind::Hypercall), 2, "one console_io + one shutdown");
    assert_eq!(cons.stats.exits(ExitKind::Uart), 0);
}

#[test]
fn hostile_hypercalls_get_errors_and_the_guest_continues() {
    let run = boot("selftest", "test=hostile");
    for line in [
        "unknown hypercall: ok (-38)",
        "unknown console_io cmd: ok (-38)",
        "console_io outside RAM: ok (-14)",
        "console_io straddling RAM end: ok (-14)",
        "console_io overflowing: ok (-14)",
        "console_io huge length: ok (-14)",
        "sched_op shutdown arg outside RAM: ok (-14)",
        "still running",
    ] {
        assert!(run.console.contains(line), "missing {line:?} in:\n{}", run.console);
    }
    assert_eq!(run.outcome, Outcome::Shutdown { reason: SHUTDOWN_POWEROFF, code: 0 });
    assert_eq!(run.stats.hypercalls(999), 1);
    assert_eq!(run.stats.other_hypercalls(), 1, "999 is counted in the \"other\" bucket");
}

#[test]
fn triple_fault_is_an_outcome_not_a_panic() {
    let run = boot("selftest", "test=triplefault");
    assert!(matches!(run.outcome, Outcome::TripleFault { .. }), "{:?}", run.outcome);
    assert_eq!(run.outcome.exit_status(), 1);
}

#[test]
fn guest_panic_is_a_crash_shutdown() {
    let run = boot("selftest", "test=panic");
    assert_eq!(run.outcome, Outcome::Shutdown { reason: SHUTDOWN_CRASH, code: 101 });
    assert!(run.console.contains("guest panic: panicked at"), "{}", run.console);
    assert!(run.console.contains("requested by the command line"));
}

#[test]
fn null_hypercalls_cost_one_exit_each_and_few_instructions() {
    let run = boot("selftest", "test=null n=500");
    assert_eq!(run.stats.hypercalls(nr::XEN_VERSION), 500);
    if let Some(insns) = run.stats.guest_instructions {
        // Boot + 500 iterations of a tight loop: well under 100 each.
        assert!(insns < 500 * 100, "{insns} guest instructions");
    }
}

#[test]
fn a_guest_that_never_shuts_down_is_stopped_by_the_time_limit() {
    let cfg = vmm::VmConfig {
        timeout: Some(std::time::Duration::from_millis(500)),
        ..vmm::VmConfig::bundled("selftest", "test=hang")
    };
    let outcome = tests::on_vm_thread(move || vmm::Vm::new(&cfg).unwrap().run().unwrap());
    assert_eq!(outcome, Outcome::Timeout);
}
