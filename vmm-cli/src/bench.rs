//! `vmm bench`: costs of PV operations, measured as counts first (exits and
//! guest instructions per operation) and time second (nanoseconds per
//! operation, median of repeated runs, with a raw KVM port-I/O exit measured
//! in the same process as the baseline).
//!
//! Each guest operation is timed by differencing: the same image runs the
//! workload with `n=N` and with `n=0`, so boot and shutdown cancel out.

use kvm_ioctls::VcpuExit;
use pv_abi::start_info::paging_mode;
use serde::Serialize;
use std::time::Instant;
use vmm::builder::open_kvm;
use vmm::console::ConsoleOut;
use vmm::memory::{GuestRam, RegisterSlots, Slot};
use vmm::VmmError;
use vmm::{DeviceSpec, DiskConfig, NetConfig, Outcome, Transport, Vm, VmConfig};

/// One row of results (the `--json` record format).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Record {
    /// Operation name.
    pub op: String,
    /// Mode (transport, paging mode, or `raw`).
    pub mode: String,
    /// Operations per batch (1 where batching does not apply).
    pub batch: u64,
    /// Exits to the VMM per operation.
    pub exits_per_op: f64,
    /// Guest instructions per operation, where the host reports them.
    pub instructions_per_op: Option<f64>,
    /// Median nanoseconds per operation.
    pub ns_per_op: f64,
    /// KVM's own exit count per operation, including exits the kernel
    /// handles without the VMM (ioeventfd doorbells, APIC accesses, `hlt`).
    /// Shown in the table; not part of the JSON record format.
    #[serde(skip)]
    pub kvm_exits_per_op: Option<f64>,
    /// Notifications the split devices' back ends sent the guest per
    /// operation (from their metrics), where the workload has devices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_notifies_per_op: Option<f64>,
    /// The other direction: front-end notifications that woke a back end
    /// (event channel or virtio `QueueNotify`, each through an ioeventfd),
    /// per operation, from the devices' `kicks` counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_kicks_per_op: Option<f64>,
    /// The time is not above the noise: the runs with the operations did
    /// not take longer than the runs without them by more than the runs
    /// without them vary ([`above_noise`]). The table marks such rows `~`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub below_noise: bool,
}

/// Bench parameters.
#[derive(Debug, Clone, Copy)]
pub struct BenchOpts {
    /// Operations per measured run.
    pub iters: u64,
    /// Runs per measurement (the median is reported).
    pub reps: usize,
}

struct Sample {
    ns: f64,
    exits: u64,
    kvm_exits: Option<u64>,
    insns: Option<u64>,
    /// Back-end notifications to the guest, summed over the devices.
    notifies: Option<u64>,
    /// Back-end wake-ups by the guest, summed over the devices.
    kicks: Option<u64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Whether a differenced time means anything: the median of `diffs` (run
/// with the operations minus run without, nanoseconds, one per repetition)
/// is positive and larger than the spread (max - min) of the runs without
/// them (`base`), the run-to-run noise. With one repetition there is no
/// spread to compare with, so only a difference of zero or less is noise.
pub fn above_noise(diffs: &[f64], base: &[f64]) -> bool {
    if diffs.is_empty() {
        return false;
    }
    let (lo, hi) = base.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &b| (lo.min(b), hi.max(b)));
    let spread = if base.len() < 2 { 0.0 } else { hi - lo };
    let d = median(diffs.to_vec());
    d > 0.0 && d > spread
}

/// Boots `cfg` (console discarded) and times `Vm::run`.
fn sample(cfg: VmConfig) -> Result<Sample, VmmError> {
    let cmdline = cfg.cmdline.clone();
    let mut vm = Vm::new(&VmConfig { console: ConsoleOut::Null, ..cfg })?;
    let t = Instant::now();
    let outcome = vm.run()?;
    let ns = t.elapsed().as_nanos() as f64;
    if !matches!(outcome, Outcome::Shutdown { reason: 0, code: 0 }) {
        return Err(VmmError::Bench(format!("guest `{cmdline}` failed: {outcome}")));
    }
    let s = vm.stats();
    // Xen devices and virtio transports name their counters alike.
    let virtio = (0..vm.virtio.len()).filter_map(|i| vm.virtio.counters(i));
    let counters: Vec<_> = vm
        .pv
        .iter()
        .flat_map(|d| d.metrics.counters())
        .chain(virtio.flat_map(|c| pv_util::metrics::DeviceMetrics::counters(&*c)))
        .collect();
    let sum = |name: &str| counters.iter().filter(|(k, _)| *k == name).map(|(_, v)| *v).reduce(|a, b| a + b);
    Ok(Sample {
        ns,
        exits: s.total_exits(),
        kvm_exits: s.kvm_exits,
        insns: s.guest_instructions,
        notifies: sum("notifies"),
        kicks: sum("kicks"),
    })
}

/// Where the guest workload runs: image, command line (without `n=`) and
/// the VM around it.
pub struct Workload {
    /// Bundled image.
    pub image: &'static str,
    /// Command line selecting the operation.
    pub cmdline: String,
    /// Paging mode.
    pub paging: u32,
    /// The devices to offer.
    pub devices: Vec<DeviceSpec>,
    /// vCPUs.
    pub vcpus: u32,
}

impl Workload {
    /// A workload on `image` with `cmdline` and a plain VM.
    pub fn new(image: &'static str, cmdline: &str) -> Self {
        Workload { image, cmdline: cmdline.into(), paging: paging_mode::NATIVE, devices: Vec::new(), vcpus: 1 }
    }

    fn config(&self, n: u64) -> VmConfig {
        VmConfig {
            paging: self.paging,
            devices: self.devices.clone(),
            vcpus: self.vcpus,
            ..VmConfig::bundled(self.image, &format!("{} n={n}", self.cmdline))
        }
    }
}

/// Measures one operation of `w` by differencing a run of `iters`
/// operations against a run of none (boot and shutdown cancel out), `reps`
/// times; counts from the last pair, time as the median.
pub fn measure(op: &str, mode: &str, batch: u64, w: &Workload, iters: u64, reps: usize) -> Result<Record, VmmError> {
    let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / iters as f64;
    let (mut diffs, mut bases) = (Vec::new(), Vec::new());
    let (mut exits, mut kvm_exits, mut insns, mut notifies, mut kicks) = (0.0, None, None, None, None);
    for _ in 0..reps {
        let base = sample(w.config(0))?;
        let full = sample(w.config(iters))?;
        diffs.push(full.ns - base.ns);
        bases.push(base.ns);
        exits = per(full.exits, base.exits);
        kvm_exits = full.kvm_exits.zip(base.kvm_exits).map(|(f, b)| per(f, b));
        insns = full.insns.zip(base.insns).map(|(f, b)| per(f, b));
        notifies = full.notifies.zip(base.notifies).map(|(f, b)| per(f, b));
        kicks = full.kicks.zip(base.kicks).map(|(f, b)| per(f, b));
    }
    Ok(Record {
        op: op.into(),
        mode: mode.into(),
        batch,
        exits_per_op: exits,
        instructions_per_op: insns,
        // A negative median (noise) shows as 0, flagged.
        ns_per_op: median(diffs.clone()).max(0.0) / iters as f64,
        kvm_exits_per_op: kvm_exits,
        backend_notifies_per_op: notifies,
        backend_kicks_per_op: kicks,
        below_noise: !above_noise(&diffs, &bases),
    })
}

/// Measures a guest operation by differencing `n=iters` against `n=0`.
pub fn guest_op(op: &str, mode: &str, image: &'static str, cmdline: &str, opts: BenchOpts) -> Result<Record, VmmError> {
    measure(op, mode, 1, &Workload::new(image, cmdline), opts.iters, opts.reps)
}

/// The baseline: a minimal real-mode VM whose only code is `out 0x80, al;
/// jmp $-2`, driven by a bare `KVM_RUN` loop with no dispatch at all.
pub fn raw_port_io_exit(opts: BenchOpts) -> Result<Record, VmmError> {
    let kvm = open_kvm()?;
    let vm = kvm.create_vm().map_err(VmmError::kvm("create_vm"))?;
    let slots = [Slot { start: 0, len: 0x10000, readonly: false }];
    let ram = GuestRam::new(&slots)?;
    ram.register(&vm, &slots)?;
    ram.write(0x1000, &[0xe6, 0x80, 0xeb, 0xfc]).map_err(|e| VmmError::Bench(e.to_string()))?;
    let mut vcpu = vm.create_vcpu(0).map_err(VmmError::kvm("create_vcpu"))?;
    let mut sregs = vcpu.get_sregs().map_err(VmmError::kvm("get_sregs"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).map_err(VmmError::kvm("set_sregs"))?;
    let regs = kvm_bindings::kvm_regs { rip: 0x1000, rflags: 2, ..Default::default() };
    vcpu.set_regs(&regs).map_err(VmmError::kvm("set_regs"))?;
    let stats = vmm::kvm_stats::KvmStats::open(&vcpu);
    let mut run = |n: u64| -> Result<(), VmmError> {
        for _ in 0..n {
            match vcpu.run() {
                Ok(VcpuExit::IoOut(0x80, _)) => {}
                Ok(other) => return Err(VmmError::Bench(format!("raw VM: unexpected exit {other:?}"))),
                Err(e) => return Err(VmmError::Kvm { what: "KVM_RUN", source: e }),
            }
        }
        Ok(())
    };
    run(100)?; // warm up
    let insn0 = stats.as_ref().and_then(|s| s.get("insn_emulation"));
    let mut ns = Vec::new();
    for _ in 0..opts.reps {
        let t = Instant::now();
        run(opts.iters)?;
        ns.push(t.elapsed().as_nanos() as f64 / opts.iters as f64);
    }
    let insn1 = stats.as_ref().and_then(|s| s.get("insn_emulation"));
    let total = opts.iters * opts.reps as u64;
    Ok(Record {
        op: "port-io exit".into(),
        mode: "raw".into(),
        batch: 1,
        exits_per_op: 1.0,
        instructions_per_op: insn0.zip(insn1).map(|(a, b)| (b - a) as f64 / total as f64),
        ns_per_op: median(ns),
        kvm_exits_per_op: Some(1.0),
        backend_notifies_per_op: None,
        backend_kicks_per_op: None,
        below_noise: false,
    })
}

/// Batch sizes of the PTE-update rows.
pub const PTE_BATCHES: [u64; 4] = [1, 8, 64, 512];

/// One PTE update in each paging mode at each batch size (the batch only
/// changes `pv`; `native` and `trapped` write each entry at once, and their
/// rows show that the cost stays flat).
pub fn pte_updates(opts: BenchOpts) -> Result<Vec<Record>, VmmError> {
    let mut out = Vec::new();
    for mode in [paging_mode::NATIVE, paging_mode::TRAPPED, paging_mode::PV] {
        for batch in PTE_BATCHES {
            let w = Workload { paging: mode, ..Workload::new("paging", &format!("test=pte batch={batch}")) };
            out.push(measure("pte update", xen_domain::mmu::mode_name(mode), batch, &w, opts.iters, opts.reps)?);
        }
    }
    Ok(out)
}

/// The VMM's own cost per hypercall: the time from `KVM_RUN` returning a
/// hypercall exit to the result being in the registers (counters, sync-regs
/// read, table dispatch, write-back), on the tight null-hypercall loop.
pub fn dispatch_cost(opts: BenchOpts) -> Result<Record, VmmError> {
    let n = opts.iters;
    let cfg = VmConfig {
        console: ConsoleOut::Null,
        ..VmConfig::bundled("selftest", &format!("noevents test=null-tight n={}", n * opts.reps as u64 + 100))
    };
    let mut vm = Vm::new(&cfg)?;
    vm.time_hypercall_dispatch(100)?; // warm up
    let mut per = Vec::new();
    for _ in 0..opts.reps {
        per.push(vm.time_hypercall_dispatch(n)?.as_nanos() as f64 / n as f64);
    }
    let _ = vm.run()?;
    Ok(Record {
        op: "hypercall dispatch".into(),
        mode: "vmm-only".into(),
        batch: 1,
        exits_per_op: 0.0,
        instructions_per_op: Some(0.0),
        ns_per_op: median(per),
        kvm_exits_per_op: Some(0.0),
        backend_notifies_per_op: None,
        backend_kicks_per_op: None,
        below_noise: false,
    })
}

/// A group of rows: its operation's name (what `--only` matches) and how
/// to measure it.
type Row<'a> = (&'a str, Box<dyn Fn() -> Result<Vec<Record>, VmmError> + 'a>);

/// Runs every benchmark this build knows, or (`only`) those whose
/// operation starts with that prefix.
pub fn run_all(opts: BenchOpts, only: Option<&str>) -> Result<Vec<Record>, VmmError> {
    let one = |r: Result<Record, VmmError>| r.map(|r| vec![r]);
    let rows: Vec<Row> = vec![
        ("port-io exit", Box::new(move || one(raw_port_io_exit(opts)))),
        (
            "null hypercall",
            Box::new(move || one(guest_op("null hypercall", "pv", "selftest", "noevents test=null", opts))),
        ),
        (
            "null hypercall",
            Box::new(move || one(guest_op("null hypercall", "pv-tight", "selftest", "noevents test=null-tight", opts))),
        ),
        ("hypercall dispatch", Box::new(move || one(dispatch_cost(opts)))),
        (
            "console byte",
            Box::new(move || one(guest_op("console byte", "uart", "selftest", "noevents test=uart", opts))),
        ),
        (
            "console byte",
            Box::new(move || {
                one(guest_op("console byte", "hypercall", "selftest", "noevents test=console chunk=64", opts))
            }),
        ),
        (
            "console byte",
            Box::new(move || one(guest_op("console byte", "ring", "selftest", "test=ring chunk=64", opts))),
        ),
        ("event round trip", Box::new(move || one(event_round_trip("hypercall", opts)))),
        ("event round trip", Box::new(move || one(event_round_trip("doorbell", opts)))),
        ("event delivery", Box::new(move || one(event_delivery("2-level", opts)))),
        ("event delivery", Box::new(move || one(event_delivery("fifo", opts)))),
        ("ipi round trip", Box::new(move || one(ipi_round_trip("evtchn", opts)))),
        ("ipi round trip", Box::new(move || one(ipi_round_trip("lapic", opts)))),
        ("blk 4k randread", Box::new(move || one(block_io("read", opts)))),
        ("blk 4k randwrite", Box::new(move || one(block_io("write", opts)))),
        ("blk 4k randread", Box::new(move || BLOCK_QUEUES.iter().map(|&q| block_io_queues(q, opts)).collect())),
        ("blk 4k randread", Box::new(move || one(virtio_block_io("read", opts)))),
        ("blk 4k randwrite", Box::new(move || one(virtio_block_io("write", opts)))),
        ("pte update", Box::new(move || pte_updates(opts))),
    ];
    let mut all = Vec::new();
    for (name, run) in rows {
        if only.is_none_or(|p| name.starts_with(p)) {
            all.extend(run()?);
        }
    }
    Ok(all)
}

/// One event round trip guest -> back end -> guest on the echo device:
/// notify (send hypercall or doorbell), back-end wake-up and response,
/// irqfd upcall. Fewer iterations: each costs a device-thread wake-up.
fn event_round_trip(via: &str, opts: BenchOpts) -> Result<Record, VmmError> {
    let w = Workload { devices: vec![DeviceSpec::Echo], ..Workload::new("pvdev", &format!("test=events via={via}")) };
    measure("event round trip", via, 1, &w, (opts.iters / 4).max(1), opts.reps)
}

/// One event delivered to the guest over a loopback channel, on the
/// event-channel ABI `abi` (`2-level` or `fifo`): send hypercall,
/// set-pending and upcall in the VMM, the guest's upcall handler for that
/// ABI (2-level: selector and bitmap scan; FIFO: ready word and queue).
fn event_delivery(abi: &str, opts: BenchOpts) -> Result<Record, VmmError> {
    let force = if abi == "2-level" { " evtchn=2l" } else { "" };
    measure("event delivery", abi, 1, &Workload::new("pvdev", &format!("test=evloop{force}")), opts.iters, opts.reps)
}

/// One IPI round trip between two vCPUs of our `smp` guest (issue 19):
/// over two event channels (`EVTCHNOP_bind_ipi`; a send hypercall each
/// way, the VMM raising the other vCPU's upcall MSI) or through the local
/// APIC (an x2APIC ICR write each way, handled by KVM without the VMM).
/// Fewer iterations: each wakes a halted vCPU twice.
pub fn ipi_round_trip(via: &str, opts: BenchOpts) -> Result<Record, VmmError> {
    let w = Workload { vcpus: 2, ..Workload::new("smp", &format!("test=ipi via={via}")) };
    measure("ipi round trip", via, 1, &w, (opts.iters / 4).max(1), opts.reps)
}

/// Requests in flight in the block rows, the same for both transports:
/// `virtio-drivers`' `VirtIOBlk` has a 16-descriptor queue and, without a
/// guest heap (its `alloc` feature), no indirect descriptors, so a request
/// takes 3 descriptors and at most 5 fit.
pub const BLOCK_QUEUE_DEPTH: u64 = 4;

/// A 16 MiB scratch image for the block rows (removed with the directory).
fn bench_disk() -> Result<(tempfile::TempDir, std::path::PathBuf), VmmError> {
    let dir = tempfile::tempdir().map_err(|e| VmmError::Io("bench disk", e))?;
    let path = dir.path().join("bench.img");
    std::fs::write(&path, vec![0x5a; 16 << 20]).map_err(|e| VmmError::Io("bench disk", e))?;
    Ok((dir, path))
}

/// One 4 KiB random block request end to end (blkfront in the guest,
/// blkback on a scratch image), [`BLOCK_QUEUE_DEPTH`] in flight,
/// differencing `n` requests against none. Fewer iterations: each is a
/// real request.
pub fn block_io(op: &str, opts: BenchOpts) -> Result<Record, VmmError> {
    let (_dir, disk) = bench_disk()?;
    let w = Workload {
        devices: vec![DeviceSpec::Disk(DiskConfig::xen(disk, false))],
        ..Workload::new("blk", &format!("test=bench op={op} depth={BLOCK_QUEUE_DEPTH}"))
    };
    measure(&format!("blk 4k rand{op}"), "ring+doorbell", BLOCK_QUEUE_DEPTH, &w, (opts.iters / 10).max(1), opts.reps)
}

/// Queues of the multi-queue block rows.
pub const BLOCK_QUEUES: [u32; 3] = [1, 2, 4];

/// [`block_io`]'s reads through the multi-queue path (`queues=N`: Linux's
/// `multi-queue-num-queues` handshake, one ring per queue, the requests
/// spread over the queues in turn, [`BLOCK_QUEUE_DEPTH`] in flight on
/// each): with one queue it should cost what the single-queue row costs.
pub fn block_io_queues(queues: u32, opts: BenchOpts) -> Result<Record, VmmError> {
    let (_dir, disk) = bench_disk()?;
    let w = Workload {
        devices: vec![DeviceSpec::Disk(DiskConfig::xen(disk, false))],
        ..Workload::new("blk", &format!("test=bench op=read depth={BLOCK_QUEUE_DEPTH} queues={queues}"))
    };
    let mode = format!("{queues} queue{}", if queues == 1 { "" } else { "s" });
    measure("blk 4k randread", &mode, BLOCK_QUEUE_DEPTH * u64::from(queues), &w, (opts.iters / 10).max(1), opts.reps)
}

/// The same workload over virtio: `virtio-drivers`' `VirtIOBlk` in the
/// guest, virtio-blk on virtio-mmio (same block executor) in the VMM.
pub fn virtio_block_io(op: &str, opts: BenchOpts) -> Result<Record, VmmError> {
    let (_dir, disk) = bench_disk()?;
    let w = Workload {
        devices: vec![DeviceSpec::Disk(DiskConfig::virtio(disk, false))],
        ..Workload::new("virtio", &format!("test=bench op={op} depth={BLOCK_QUEUE_DEPTH}"))
    };
    measure(&format!("blk 4k rand{op}"), "virtio-mmio", BLOCK_QUEUE_DEPTH, &w, (opts.iters / 10).max(1), opts.reps)
}

/// Formats records as a table.
pub fn table(records: &[Record]) -> String {
    let mut s = format!(
        "{:<18} {:<13} {:>5} {:>9} {:>9} {:>10} {:>11} {:>8} {:>8} {:>8}\n",
        "op", "mode", "batch", "exits/op", "kvm/op", "insns/op", "ns/op", "vs raw", "kick/op", "ntfy/op"
    );
    let raw = records.iter().find(|r| r.mode == "raw").map(|r| r.ns_per_op);
    for r in records {
        let insns = r.instructions_per_op.map_or("n/a".to_string(), |v| format!("{v:.1}"));
        let mark = if r.below_noise { "~" } else { "" };
        let ratio = raw.map_or("".to_string(), |b| format!("{mark}{:.2}x", r.ns_per_op / b));
        let ns = format!("{mark}{:.0}", r.ns_per_op);
        let kvm = r.kvm_exits_per_op.map_or("n/a".to_string(), |v| format!("{v:.3}"));
        let count = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
        let (kick, ntfy) = (count(r.backend_kicks_per_op), count(r.backend_notifies_per_op));
        s += &format!(
            "{:<18} {:<13} {:>5} {:>9.4} {:>9} {:>10} {:>11} {:>8} {:>8} {:>8}\n",
            r.op, r.mode, r.batch, r.exits_per_op, kvm, insns, ns, ratio, kick, ntfy
        );
    }
    if records.iter().any(|r| r.below_noise) {
        s += "~ time not above the noise: the runs with the operations were not slower than the runs without \
              them by more than those vary between repetitions; raise --iters or --reps\n";
    }
    s
}

/// The net rows' host side: a TAP device with an address in a network
/// namespace of the benchmark's own, and a TCP sink for the guest's stream.
#[derive(Debug)]
pub struct NetBench {
    tap: String,
}

const NET_BENCH_TAP: &str = "pvbench0";
const NET_BENCH_HOST: &str = "10.55.0.1";
const NET_BENCH_GUEST: &str = "10.55.0.2/24";
const NET_BENCH_PORT: u16 = 5001;

/// Prepares the net rows, before the seccomp filter is installed: moves
/// this thread into a fresh network namespace (`unshare(CLONE_NEWNET)`;
/// needs root, else the rows are skipped and `None` returned), makes the TAP
/// device with the host address, and starts a TCP sink thread. Nothing can
/// leave the namespace, and it goes away with the process.
pub fn net_setup() -> Option<NetBench> {
    // SAFETY: CLONE_NEWNET only changes the calling thread's network
    // namespace; threads started afterwards inherit it.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!("note: net rows skipped (a private network namespace needs root)");
        return None;
    }
    let ip = |args: &[&str]| std::process::Command::new("ip").args(args).output().is_ok_and(|o| o.status.success());
    let host = format!("{NET_BENCH_HOST}/24");
    let ok = ip(&["link", "set", "lo", "up"])
        && ip(&["tuntap", "add", "dev", NET_BENCH_TAP, "mode", "tap"])
        && ip(&["addr", "add", &host, "dev", NET_BENCH_TAP])
        && ip(&["link", "set", NET_BENCH_TAP, "up"]);
    let listener = std::net::TcpListener::bind((NET_BENCH_HOST, NET_BENCH_PORT));
    let (true, Ok(listener)) = (ok, listener) else {
        eprintln!("note: net rows skipped (cannot set up the TAP device; is iproute2 installed?)");
        return None;
    };
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let _ = std::io::copy(&mut c, &mut std::io::sink());
        }
    });
    Some(NetBench { tap: NET_BENCH_TAP.to_string() })
}

/// Guest end to end over netfront, netback and the TAP device: one ICMP
/// echo round trip to the host, and one 1448-byte TCP segment streamed to
/// the host's sink (per packet: exits, KVM exits, guest instructions).
pub fn net_rows(opts: BenchOpts, net: &NetBench) -> Result<Vec<Record>, VmmError> {
    let vif = vec![DeviceSpec::Net(NetConfig { tap: net.tap.clone(), mac: None, transport: Transport::Xen })];
    let ping = Workload {
        devices: vif.clone(),
        ..Workload::new("net", &format!("test=ping ip={NET_BENCH_GUEST} peer={NET_BENCH_HOST}"))
    };
    let stream = Workload {
        devices: vif,
        ..Workload::new("net", &format!("ip={NET_BENCH_GUEST} send={NET_BENCH_HOST}:{NET_BENCH_PORT} exit_after_send"))
    };
    Ok(vec![
        measure("net ping round trip", "icmp via tap", 1, &ping, (opts.iters / 10).max(1), opts.reps)?,
        measure("net tcp guest->host", "1448 B segment", 1, &stream, (opts.iters / 4).max(1), opts.reps)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(op: &str, mode: &str, ns: f64, below_noise: bool) -> Record {
        Record {
            op: op.into(),
            mode: mode.into(),
            batch: 1,
            exits_per_op: 1.0,
            instructions_per_op: None,
            ns_per_op: ns,
            kvm_exits_per_op: None,
            backend_notifies_per_op: None,
            backend_kicks_per_op: None,
            below_noise,
        }
    }

    #[test]
    fn a_difference_within_the_noise_is_flagged() {
        // One repetition: only a difference of zero or less is noise.
        assert!(!above_noise(&[-5.0], &[1000.0]));
        assert!(!above_noise(&[0.0], &[1000.0]));
        assert!(above_noise(&[5.0], &[1000.0]));
        // The base runs vary by 300 ns: a 200 ns median difference is not
        // above that, a 400 ns one is.
        let base = [1000.0, 1300.0, 1100.0];
        assert!(!above_noise(&[200.0, 250.0, -50.0], &base));
        assert!(above_noise(&[400.0, 500.0, 450.0], &base));
        assert!(!above_noise(&[], &[]));
    }

    #[test]
    fn the_table_marks_noise_rows_and_explains_them() {
        let rows = [rec("port-io exit", "raw", 8000.0, false), rec("null hypercall", "pv", 0.0, true)];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].contains(" 8000 ") && lines[1].contains("1.00x") && !lines[1].contains('~'), "{t}");
        assert!(lines[2].contains("~0 ") && lines[2].contains("~0.00x"), "{t}");
        assert!(lines.last().unwrap().starts_with("~ time not above the noise"), "{t}");
        let clean = table(&rows[..1]);
        assert!(!clean.contains('~'), "no footnote without a flagged row: {clean}");
        // JSON carries the flag only where it is set.
        assert!(serde_json::to_string(&rows[1]).unwrap().contains("\"below_noise\":true"));
        assert!(!serde_json::to_string(&rows[0]).unwrap().contains("below_noise"));
    }
}
