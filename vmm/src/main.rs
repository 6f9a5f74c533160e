//! `vmm`: boots a PV guest under KVM (`vmm run`) and measures it (`vmm bench`).

use anyhow::Result;
use backend::block::DiskSpec;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use vmm::console::ConsoleOut;
use vmm::{Kernel, Vm, VmConfig, VmmError};

#[derive(Parser)]
#[command(name = "vmm", version, about = "Xen-style paravirtualization on Linux KVM")]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a PV guest (the bundled demo guest unless --kernel is given).
    Run(RunArgs),
    /// List the bundled guest images.
    Images,
    /// Measure PV operations against a raw KVM exit (see README "Measuring").
    Bench(BenchArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Guest ELF image (x86_64-unknown-none); default: the bundled demo guest.
    #[arg(long, conflicts_with = "image")]
    kernel: Option<PathBuf>,
    /// A bundled guest image by name instead of a file (see `vmm images`).
    #[arg(long)]
    image: Option<String>,
    /// Guest RAM, e.g. 64M or 1G.
    #[arg(long, default_value = "64M")]
    mem: String,
    /// Guest command line.
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Print exit and hypercall counters at shutdown (to stderr).
    #[arg(long)]
    stats: bool,
    /// Offer this many `echo` sample PV devices (device/echo/<n>).
    #[arg(long, default_value_t = 0)]
    echo: u32,
    /// Offer a raw image file as a virtual block device (repeatable):
    /// `<path>[,readonly][,transport=xen|virtio]`. Xen disks are
    /// device/vbd/51712, 51728, ...; virtio disks are virtio-blk devices on
    /// virtio-mmio, listed in start-info. With none, the default demo gets
    /// a scratch image in a temporary directory.
    #[arg(long, value_name = "PATH[,readonly][,transport=xen|virtio]")]
    disk: Vec<String>,
    /// Offer a split device of any type in `backend::DEVICE_TYPES`
    /// (repeatable), e.g. `echo` or `vbd,<path>[,readonly]`.
    #[arg(long, value_name = "TYPE[,OPTIONS]")]
    device: Vec<backend::xenbus::DeviceArg>,
    /// Offer a network interface on a TAP device (repeatable):
    /// `tap=<ifname>[,mac=<mac>][,transport=xen|virtio]`. Xen interfaces
    /// are device/vif/0, 1, ... (the same as `--device vif,tap=...`);
    /// virtio ones are virtio-net devices on virtio-mmio, listed in
    /// start-info. The TAP device is created if it does not exist (needs
    /// CAP_NET_ADMIN) and brought up.
    #[arg(long, value_name = "tap=IFNAME[,mac=MAC][,transport=xen|virtio]")]
    net: Vec<String>,
    /// Stop the guest (exit status 1) if it has not shut down after this many seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// Write guest console output to this file instead of stdout.
    #[arg(long)]
    console_file: Option<PathBuf>,
    /// Page-table pool mode: native (read-write), trapped (read-only, every
    /// PTE write traps) or pv (read-only, batched mmu_update).
    #[arg(long, default_value = "native", value_parser = ["native", "trapped", "pv"])]
    paging: String,
    /// Run without the per-thread seccomp filters (for debugging).
    #[arg(long)]
    no_seccomp: bool,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Operations per measured run.
    #[arg(long, default_value_t = 2000)]
    iters: u64,
    /// Runs per measurement; the median is reported.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Print one JSON array of records instead of the table.
    #[arg(long)]
    json: bool,
    /// Also draw every group of rows (ns and exits per op) as one SVG.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Run without the seccomp filters (for debugging).
    #[arg(long)]
    no_seccomp: bool,
}

/// Size of the demo's scratch disk.
const DEMO_DISK_BYTES: u64 = 4 << 20;

/// The guest image the arguments name.
fn kernel(args_kernel: Option<PathBuf>, image: Option<String>) -> Result<Kernel> {
    Ok(match (args_kernel, image) {
        (Some(p), _) => Kernel::File(p),
        (None, Some(name)) => {
            let (name, img) = frontend_guest::images::ALL.iter().find(|(n, _)| *n == name).ok_or_else(|| {
                anyhow::anyhow!("no bundled image '{name}': run `vmm images` to list them, or pass --kernel <elf>")
            })?;
            Kernel::Bundled(name, img)
        }
        (None, None) => Kernel::Bundled("demo", frontend_guest::images::DEMO),
    })
}

/// The demo needs a disk: with none given, a scratch image in a temporary
/// directory, removed when the returned guard drops.
fn scratch_disk(
    kernel: &Kernel,
    disks: &mut Vec<DiskSpec>,
    devices: &[backend::xenbus::DeviceArg],
) -> Result<Option<tempfile::TempDir>, VmmError> {
    let has_vbd = devices.iter().any(|d| d.device_type == pv_abi::blkif::DEVICE_TYPE);
    if !matches!(kernel, Kernel::Bundled("demo", _)) || !disks.is_empty() || has_vbd {
        return Ok(None);
    }
    let dir = tempfile::Builder::new().prefix("vmm-demo-").tempdir().map_err(|e| VmmError::Io("scratch disk", e))?;
    let path = dir.path().join("scratch.img");
    let f = std::fs::File::create(&path).map_err(|e| VmmError::Io("scratch disk", e))?;
    f.set_len(DEMO_DISK_BYTES).map_err(|e| VmmError::Io("scratch disk", e))?;
    disks.push(DiskSpec { path, readonly: false });
    Ok(Some(dir))
}

fn run(args: RunArgs, started: Instant) -> Result<ExitCode> {
    let mem_bytes = vmm::builder::parse_mem_size(&args.mem)?;
    let kernel = kernel(args.kernel, args.image)?;
    let (mut disks, mut virtio_disks) = (Vec::new(), Vec::new());
    for d in &args.disk {
        match vmm::virtio::parse_disk_arg(d).map_err(VmmError::from)? {
            (spec, vmm::virtio::Transport::Xen) => disks.push(spec),
            (spec, vmm::virtio::Transport::Virtio) => virtio_disks.push(spec),
        }
    }
    let (mut nets, mut virtio_nets) = (Vec::new(), Vec::new());
    for n in &args.net {
        match vmm::virtio::parse_net_arg(n)? {
            (opts, vmm::virtio::Transport::Xen) => {
                nets.push(backend::xenbus::DeviceArg::new(pv_abi::netif::DEVICE_TYPE, &opts))
            }
            (opts, vmm::virtio::Transport::Virtio) => {
                virtio_nets.push(opts.parse::<backend::net::NetSpec>().map_err(anyhow::Error::from)?)
            }
        }
    }
    let _scratch = if virtio_disks.is_empty() { scratch_disk(&kernel, &mut disks, &args.device)? } else { None };
    let console = match &args.console_file {
        Some(p) => ConsoleOut::File(std::sync::Arc::new(std::sync::Mutex::new(
            std::fs::File::create(p).map_err(VmmError::Console)?,
        ))),
        None => ConsoleOut::Stdout,
    };
    let cfg = VmConfig {
        kernel,
        mem_bytes,
        cmdline: args.cmdline,
        console,
        timeout: args.timeout.map(std::time::Duration::from_secs_f64),
        echo_devices: args.echo,
        disks,
        devices: args.device.into_iter().chain(nets).collect(),
        virtio_disks,
        virtio_nets,
        paging: xen_domain::mmu::parse_mode(&args.paging).unwrap_or_default(),
    };
    // Before the device threads start: each installs its filter first.
    if !args.no_seccomp {
        vmm::seccomp::enable();
    }
    let mut vm = Vm::new(&cfg)?;
    let outcome = vm.run()?;
    if args.stats {
        print_stats(&vm, &outcome, started);
    }
    match outcome {
        vmm::Outcome::Shutdown { .. } => {}
        other => eprintln!("error: {other}"),
    }
    if let Some(note) = outcome.status_note() {
        eprintln!("error: {note}");
    }
    Ok(ExitCode::from(outcome.exit_status() as u8))
}

/// `--stats`: the run's counters, on stderr.
fn print_stats(vm: &Vm, outcome: &vmm::Outcome, started: Instant) {
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
    let join = |c: Vec<(&str, u64)>| c.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
    for (i, e) in vm.virtio.entries.iter().enumerate() {
        if let Some(c) = vm.virtio.counters(i) {
            eprintln!(
                "virtio-mmio@{:#x} (device {}): {}",
                e.base,
                e.device_id,
                join(backend::metrics::DeviceMetrics::counters(&*c))
            );
        }
    }
    for (i, net) in vm.virtio.net.iter().enumerate() {
        if let Ok(n) = net.lock() {
            eprintln!("virtio-net{i}: {}", join(backend::metrics::DeviceMetrics::counters(&**n.device().metrics())));
        }
    }
    for (i, blk) in vm.virtio.blk.iter().enumerate() {
        if let Ok(b) = blk.lock() {
            eprintln!("virtio-blk{i}: {}", join(backend::metrics::DeviceMetrics::counters(&**b.device().metrics())));
        }
    }
}

fn main() -> ExitCode {
    let started = Instant::now();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("VMM_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    let cli = Cli::parse();
    let res = match cli.cmd {
        Command::Run(args) => run(args, started),
        Command::Bench(b) => {
            if b.iters == 0 || b.reps == 0 {
                eprintln!("error: --iters and --reps must be at least 1");
                return ExitCode::from(2);
            }
            if !b.no_seccomp {
                vmm::seccomp::enable();
            }
            let net = vmm::bench::net_setup();
            let opts = vmm::bench::BenchOpts { iters: b.iters, reps: b.reps };
            vmm::seccomp::install(vmm::seccomp::ThreadKind::Main)
                .map_err(VmmError::from)
                .and_then(|()| vmm::bench::run_all(opts))
                .and_then(|mut recs| {
                    if let Some(n) = &net {
                        recs.extend(vmm::bench::net_rows(opts, n)?);
                    }
                    Ok(recs)
                })
                .map_err(anyhow::Error::from)
                .and_then(|recs| {
                    if let Some(path) = &b.plot {
                        std::fs::write(path, vmm::plot::svg(&recs)?)
                            .map_err(|e| anyhow::anyhow!("cannot write the plot to {}: {e}", path.display()))?;
                    }
                    if b.json {
                        println!("{}", serde_json::to_string_pretty(&recs)?);
                    } else {
                        print!("{}", vmm::bench::table(&recs));
                    }
                    Ok(ExitCode::SUCCESS)
                })
        }
        Command::Images => {
            for (name, img) in frontend_guest::images::ALL {
                println!("{name:<12} {} bytes", img.len());
            }
            Ok(ExitCode::SUCCESS)
        }
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
