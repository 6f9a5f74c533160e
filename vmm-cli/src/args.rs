//! The command line, as clap parses it.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// `vmm <command> [options]`.
#[derive(Parser)]
#[command(name = "vmm", version, about = "Xen-style paravirtualization on Linux KVM")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub cmd: Command,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Boot a PV guest (the bundled demo guest unless --kernel is given).
    Run(Box<RunArgs>),
    /// List the bundled guest images.
    Images,
    /// Measure PV operations against a raw KVM exit (see docs/measuring.md).
    Bench(BenchArgs),
    /// Drive a running VM through its API socket (`vmm run --api-socket`).
    Ctl(CtlArgs),
    /// Continue a VM from a snapshot (`vmm ctl snapshot <dir>`): its
    /// configuration comes from the snapshot.
    Restore(RestoreArgs),
}

/// `vmm restore`.
#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The snapshot directory.
    pub dir: PathBuf,
    /// Serve the HTTP API on this Unix socket (docs/api.md).
    #[arg(long)]
    pub api_socket: Option<PathBuf>,
    /// Print exit and hypercall counters at shutdown (to stderr).
    #[arg(long)]
    pub stats: bool,
    /// Stop the guest after this many seconds (from the restore).
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Seconds a guest asked to power off has to do so.
    #[arg(long, default_value_t = 5.0)]
    pub shutdown_grace: f64,
    /// Guest console output to this file instead of stdout.
    #[arg(long)]
    pub console_file: Option<PathBuf>,
    /// Run without the seccomp filters (for debugging).
    #[arg(long)]
    pub no_seccomp: bool,
}

/// `vmm run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Guest ELF image (x86_64-unknown-none); default: the bundled demo guest.
    #[arg(long, conflicts_with = "image")]
    pub kernel: Option<PathBuf>,
    /// A bundled guest image by name instead of a file (see `vmm images`).
    #[arg(long)]
    pub image: Option<String>,
    /// Guest RAM, e.g. 64M or 1G.
    #[arg(long, default_value = "64M")]
    pub mem: String,
    /// Guest command line.
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Number of vCPUs (1 to 32); vCPUs 1.. start stopped until the guest
    /// brings them up (`VCPUOP_initialise`, `VCPUOP_up`), as on Xen.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub vcpus: u32,
    /// Print exit and hypercall counters at shutdown (to stderr).
    #[arg(long)]
    pub stats: bool,
    /// Offer this many `echo` sample PV devices (device/echo/<n>).
    #[arg(long, default_value_t = 0)]
    pub echo: u32,
    /// Offer a raw image file as a virtual block device (repeatable):
    /// `<path>[,readonly][,lock=off][,transport=xen|virtio][,vdev=<name|number>]`.
    /// Xen disks are device/vbd/51712, 51728, ... unless `vdev=` names one
    /// the way Xen does (xvdb, hda, sda, d1p2, or the number itself);
    /// virtio disks are virtio-blk devices on virtio-mmio, listed in
    /// start-info. Each image is locked (shared if readonly, else
    /// exclusive); `lock=off` skips that (unsafe: a second writer corrupts
    /// the image). With none, the default demo gets a scratch image in a
    /// temporary directory.
    #[arg(long, value_name = "PATH[,readonly][,lock=off][,transport=xen|virtio][,vdev=NAME]")]
    pub disk: Vec<String>,
    /// Offer a split device of any type in `backend::DEVICE_TYPES`
    /// (repeatable), e.g. `echo` or `vbd,<path>[,readonly]`.
    #[arg(long, value_name = "TYPE[,OPTIONS]")]
    pub device: Vec<backend::xenbus::DeviceArg>,
    /// Offer a network interface on a TAP device (repeatable):
    /// `tap=<ifname>[,mac=<mac>][,transport=xen|virtio]`. Xen interfaces
    /// are device/vif/0, 1, ... (the same as `--device vif,tap=...`);
    /// virtio ones are virtio-net devices on virtio-mmio, listed in
    /// start-info. The TAP device is created if it does not exist (needs
    /// CAP_NET_ADMIN) and brought up.
    #[arg(long, value_name = "tap=IFNAME[,mac=MAC][,transport=xen|virtio]")]
    pub net: Vec<String>,
    /// Stop the guest (exit status 1) if it has not shut down after this
    /// many seconds: it is first asked to power off (`control/shutdown`)
    /// and given --shutdown-grace to do so.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Seconds a guest asked to power off (at --timeout, SIGTERM or
    /// SIGINT) has to shut down before it is stopped. A second signal
    /// stops it at once.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub shutdown_grace: f64,
    /// What a Xen guest's reboot request does: `restart` boots it again
    /// from the same configuration (xl's default `on_reboot=restart`);
    /// `exit` ends the run with status 0.
    #[arg(long, default_value = "restart", value_parser = ["restart", "exit"])]
    pub on_reboot: String,
    /// Write guest console output to this file instead of stdout.
    #[arg(long)]
    pub console_file: Option<PathBuf>,
    /// Page-table pool mode: native (read-write), trapped (read-only, every
    /// PTE write traps) or pv (read-only, batched mmu_update).
    #[arg(long, default_value = "native", value_parser = ["native", "trapped", "pv"])]
    pub paging: String,
    /// Run without the per-thread seccomp filters (for debugging).
    #[arg(long)]
    pub no_seccomp: bool,
    /// Read the run options from this TOML file (docs/cli.md); options
    /// given on the command line override it (device options replace its
    /// device list).
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Serve the HTTP API on this Unix socket (mode 0600, docs/api.md).
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// Wait for a live migration on `tcp:<ip>:<port>` or `unix:<path>`
    /// (docs/migration.md) and run the VM it brings: the configuration
    /// comes from the stream; --api-socket, --stats, --console-file,
    /// --timeout and --no-seccomp still apply here.
    #[arg(long, value_name = "URL")]
    pub incoming: Option<String>,
}

/// `vmm ctl`.
#[derive(clap::Args)]
pub struct CtlArgs {
    /// The VM's API socket (`vmm run --api-socket`).
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// What to ask.
    #[command(subcommand)]
    pub cmd: CtlCommand,
}

/// `vmm ctl` commands, one per API endpoint (docs/api.md).
#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum CtlCommand {
    /// The VM's configuration and state (`GET /vm`).
    Info,
    /// Park the vCPU (`PUT /vm.pause`).
    Pause,
    /// Unpark it, or resume a suspended guest (`PUT /vm.resume`)
    ///
    /// A suspended guest sees its suspend cancelled (its hypercall
    /// returns 1) or, with `--fresh`, continues as a new domain (its
    /// hypercall returns 0; its front ends reconnect).
    Resume {
        /// Resume a suspended guest as a new domain.
        #[arg(long)]
        fresh: bool,
    },
    /// Ask the guest to suspend itself (`PUT /vm.suspend`)
    ///
    /// Xen's cooperative suspend: `control/shutdown = suspend`, then the
    /// guest calls `SCHEDOP_shutdown(SHUTDOWN_suspend)` (docs/lifecycle.md).
    Suspend {
        /// Milliseconds the guest has to suspend (default 60000, libxl's).
        #[arg(long)]
        timeout_ms: Option<u64>,
    },
    /// Ask the guest to power off, stop it after the grace period (`PUT /vm.shutdown`).
    Shutdown,
    /// Ask the guest to reboot (`PUT /vm.reboot`).
    Reboot,
    /// Stop the VM at once (`PUT /vm.destroy`).
    Destroy,
    /// The `--stats` counters as JSON (`GET /vm.stats`).
    Stats,
    /// Set the balloon target, `memory/target` (`PUT /vm.balloon`).
    Balloon {
        /// The target in KiB.
        target_kib: u64,
    },
    /// Attach a Xen disk at run time (`PUT /vm.add-disk`, as `xl block-attach`).
    AddDisk {
        /// `--disk` syntax.
        disk: String,
    },
    /// Detach a disk or a hot-plugged vif (`PUT /vm.remove-device`, as `xl block-detach`)
    RemoveDevice {
        /// The device's id: `vbd/<n>`, `<n>` or a disk name (`xvdb`), or `vif/<n>`.
        id: String,
        /// Milliseconds to wait for the guest to close it before forcing
        /// (default 10000, libxl's LIBXL_DESTROY_TIMEOUT).
        #[arg(long)]
        timeout_ms: Option<u64>,
    },
    /// Attach a Xen network interface at run time (`PUT /vm.add-net`, as `xl network-attach`).
    AddNet {
        /// `--net` syntax: `tap=<ifname>[,mac=<mac>]`.
        net: String,
    },
    /// Pause, write a snapshot, resume (`PUT /vm.snapshot`); `vmm restore
    /// <dir>` continues it.
    Snapshot {
        /// The directory to write (created; an earlier snapshot in it is
        /// replaced).
        dir: PathBuf,
        /// Have the guest suspend itself first (Xen's cooperative suspend,
        /// `xl save -c`); it runs on, and a restore resumes it as a new
        /// domain whose front ends reconnect.
        #[arg(long)]
        cooperative: bool,
        /// With --cooperative: milliseconds the guest has to suspend
        /// (default 60000, libxl's).
        #[arg(long, requires = "cooperative")]
        timeout_ms: Option<u64>,
    },
    /// Live-migrate the VM to a `vmm run --incoming <url>` (`PUT /vm.migrate`).
    Migrate {
        /// `tcp:<ip>:<port>` or `unix:<path>`.
        url: String,
    },
}

/// `vmm bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Operations per measured run.
    #[arg(long, default_value_t = 2000)]
    pub iters: u64,
    /// Runs per measurement; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Print one JSON array of records instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also draw every group of rows (ns and exits per op) as one SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Run without the seccomp filters (for debugging).
    #[arg(long)]
    pub no_seccomp: bool,
    /// Run only the rows whose operation starts with PREFIX (e.g. `blk`).
    #[arg(long, value_name = "PREFIX")]
    pub only: Option<String>,
}
