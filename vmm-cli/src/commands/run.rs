//! `vmm run`: boots the configured guest and reports how it ended.

use crate::api::{ApiServer, VmView};
use crate::config::RunConfig;
use anyhow::{Context, Result};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use vmm::control::VmControl;
use vmm::migration::MigratorThread;
use vmm::{Outcome, Vm};
use xen_domain::sched_op::XenShutdown;

/// Boots `cfg` and runs the guest to its end; the exit status is the
/// guest's (see [`vmm::Outcome::exit_status`]). A Xen guest's reboot boots
/// it again from the same configuration unless `--on-reboot exit`.
pub fn run(cfg: RunConfig, started: Instant) -> Result<ExitCode> {
    run_from(cfg, started, None)
}

/// `vmm restore <dir>`: the snapshot's configuration run as `vmm run`
/// would, its first boot replaced by the snapshot (a later reboot boots
/// the same configuration afresh).
pub fn restore(a: crate::args::RestoreArgs, started: Instant) -> Result<ExitCode> {
    let state = vmm::snapshot::load_state(&a.dir)?;
    let c = &state.config;
    let (kernel, image) = match &c.kernel {
        vmm::snapshot::SavedKernel::Bundled(n) => (None, Some(n.clone())),
        vmm::snapshot::SavedKernel::File(p) => (Some(p.clone()), None),
    };
    let cfg = RunConfig {
        kernel,
        image,
        mem: format!("{}", c.mem_bytes),
        cmdline: c.cmdline.clone(),
        vcpus: c.vcpus,
        stats: a.stats,
        timeout: a.timeout,
        shutdown_grace: a.shutdown_grace,
        on_reboot: "restart".into(),
        console_file: a.console_file,
        paging: xen_domain::mmu::mode_name(c.paging).into(),
        seccomp: !a.no_seccomp,
        api_socket: a.api_socket,
        devices: c.devices.clone(),
        incoming: None,
    };
    run_from(cfg, started, Some((state, a.dir)))
}

type Restore = Option<(vmm::snapshot::SnapshotState, std::path::PathBuf)>;

fn run_from(cfg: RunConfig, started: Instant, restore: Restore) -> Result<ExitCode> {
    let mut restore = restore;
    // `--incoming`: the configuration comes from the migration stream.
    let (cfg, mut incoming) = match cfg.incoming.clone() {
        Some(url) => {
            let (c, p) = super::incoming::wait(&cfg, &url)?;
            (c, Some(p))
        }
        None => (cfg, None),
    };
    let (mut vm_cfg, _scratch) = cfg.vm_config()?;
    let record = super::incoming::config_record(&cfg, &vm_cfg);
    // Before any other thread starts: they all inherit the blocked mask.
    vmm::watchdog::forward_stop_signals().context("cannot set up SIGTERM/SIGINT handling")?;
    // Before the device threads start: each installs its filter first.
    if cfg.seccomp {
        vmm::seccomp::enable();
    }
    // Before the boot loop: one API server for every boot of the guest.
    let control = Arc::new(VmControl::default());
    let api = cfg.api_socket.as_deref().map(|p| ApiServer::start(p, &cfg, control.clone())).transpose()?;
    let api = api.as_ref().map(|a| (a, &control));
    let deadline = vm_cfg.timeout.map(|t| Instant::now() + t);
    loop {
        if let Some(d) = deadline {
            vm_cfg.timeout = Some(d.saturating_duration_since(Instant::now()));
        }
        // Each boot on a thread of its own: the vCPU thread's seccomp
        // filter stays with it, and the next boot starts unfiltered.
        let inc = incoming.take();
        let from = restore.take();
        let boot = || boot_once(&vm_cfg, from, cfg.stats, started, api, inc, &record);
        let outcome =
            std::thread::scope(|s| s.spawn(boot).join()).map_err(|_| anyhow::anyhow!("the vCPU thread panicked"))??;
        if let Some((url, rep)) = api.and_then(|(a, _)| a.migrated_to()) {
            eprintln!(
                "vmm: migrated to {url}: the VM runs there now ({} rounds, {} bytes, downtime {:.1} ms)",
                rep.rounds,
                rep.bytes,
                rep.downtime.as_secs_f64() * 1e3
            );
            return Ok(ExitCode::SUCCESS);
        }
        let reboot = matches!(outcome, Outcome::XenShutdown { reason }
            if XenShutdown::from_reason(reason) == XenShutdown::Reboot);
        let asked_to_end = api.is_some_and(|(a, _)| a.ended_by_request());
        if reboot && cfg.on_reboot == "restart" && !vmm::watchdog::stop_requested() && !asked_to_end {
            eprintln!("guest rebooted: booting it again (--on-reboot restart)");
            continue;
        }
        report(&outcome);
        return Ok(ExitCode::from(outcome.exit_status() as u8));
    }
}

/// Builds and runs one VM (with `incoming`, the one a migration brings);
/// prints `--stats` however the run ends. `record` is the configuration a
/// migration of this VM sends.
fn boot_once(
    vm_cfg: &vmm::VmConfig,
    restore: Restore,
    stats: bool,
    started: Instant,
    api: Option<(&ApiServer, &Arc<VmControl>)>,
    incoming: Option<super::incoming::Pending>,
    record: &[u8],
) -> Result<Outcome> {
    // An incoming VM's disks: the source holds their locks until the
    // switch-over (`backend::block::lock_handover`).
    backend::block::lock_handover::defer(incoming.is_some());
    let vm = match &restore {
        Some((state, dir)) => Vm::restore(vm_cfg, state, dir),
        None => Vm::new(vm_cfg),
    };
    backend::block::lock_handover::defer(false);
    let mut vm = vm?;
    if let Some(p) = incoming {
        super::incoming::receive(&mut vm, p)?;
    }
    // The migration thread starts before the vCPU's filter is installed
    // and installs its own.
    let migrator = api
        .map(|(_, control)| MigratorThread::start(vm.migration_source(control.clone(), record.to_vec())))
        .transpose()
        .context("cannot start the migration thread")?;
    if let Some((server, control)) = api {
        vm.attach_control(control.clone());
        let mut view = VmView::of(&vm);
        view.migrator = migrator.as_ref().and_then(MigratorThread::handle);
        let (snap, control) = (vm.snapshotter(), control.clone());
        view.vm_state =
            Arc::new(move || Box::new(vmm::migration::vm_state::SnapshotVmState::new(snap.clone(), control.clone())));
        server.set_vm(Some(view));
    }
    let outcome = vm.run();
    if let Some((server, _)) = api {
        server.set_vm(None);
    }
    drop(migrator);
    if stats {
        match &outcome {
            Ok(o) => print_stats(&vm, o, started),
            Err(e) => print_stats(&vm, &format!("run failed: {e}"), started),
        }
    }
    Ok(outcome?)
}

/// The `error:` line for an outcome that is not a clean end, and any note
/// about the status.
fn report(outcome: &Outcome) {
    match outcome {
        Outcome::Shutdown { .. } => {}
        Outcome::XenShutdown { reason } => {
            if let Some(e) = XenShutdown::from_reason(*reason).error() {
                eprintln!("error: {e}");
            }
        }
        other => eprintln!("error: {other}"),
    }
    if let Some(note) = outcome.status_note() {
        eprintln!("error: {note}");
    }
}

/// `--stats`: the run's counters, on stderr.
fn print_stats(vm: &Vm, outcome: &dyn std::fmt::Display, started: Instant) {
    let s = vm.stats();
    eprintln!("--- vmm stats ---");
    eprintln!("{outcome}");
    if let Some(t) = vm.first_run_at {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        eprintln!(
            "startup: {:.3} ms from process start to first KVM_RUN ({:.3} ms of it building the VM)",
            ms(t - started),
            ms(t - vm.created_at)
        );
    }
    // One line per vCPU, then the totals over all of them.
    let per_vcpu = vm.vcpu_stats();
    for (i, v) in per_vcpu.iter().enumerate() {
        eprintln!("vcpu{i}: {}", v.summary());
    }
    eprintln!("vcpus: {} (totals below)", per_vcpu.len());
    eprint!("{s}");
    let p = vm.dom.paging.counters;
    if p != Default::default() {
        eprintln!(
            "direct paging: {} entries applied, {} rejected, {} trapped pool writes",
            p.applied, p.rejected, p.trapped_writes
        );
    }
    let ev = &vm.dom.evtchn.counters;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "event channels: {} send hypercalls, {} notifications to the guest, {} upcalls raised",
        load(&ev.sends),
        load(&ev.notifies),
        load(&ev.upcalls)
    );
    for d in vm.pv.iter() {
        let counters: Vec<_> = d.metrics.counters().iter().map(|(k, v)| format!("{k}={v}")).collect();
        eprintln!("{}: {}", d.paths.back, counters.join(" "));
    }
    print_virtio_stats(vm);
}

/// The virtio part of `--stats`: each transport's counters, then each
/// device's.
fn print_virtio_stats(vm: &Vm) {
    let join = |c: Vec<(&str, u64)>| c.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
    for (i, e) in vm.virtio.entries.iter().enumerate() {
        if let Some(c) = vm.virtio.counters(i) {
            eprintln!(
                "virtio-mmio@{:#x} (device {}): {}",
                e.base,
                e.device_id,
                join(pv_util::metrics::DeviceMetrics::counters(&*c))
            );
        }
    }
    for (i, net) in vm.virtio.net.iter().enumerate() {
        if let Ok(n) = net.lock() {
            eprintln!("virtio-net{i}: {}", join(pv_util::metrics::DeviceMetrics::counters(&**n.device().metrics())));
        }
    }
    for (i, blk) in vm.virtio.blk.iter().enumerate() {
        if let Ok(b) = blk.lock() {
            eprintln!("virtio-blk{i}: {}", join(pv_util::metrics::DeviceMetrics::counters(&**b.device().metrics())));
        }
    }
}
