//! A VM: KVM fds, guest RAM, one vCPU, and the exit loop that dispatches.

use crate::boot::{self, MemoryPlan};
use crate::console::ConsoleOut;
use crate::devices::{DeviceThread, EvtchnAdapter, PortNotifier, StoreHandler, Subscriber};
use crate::domain::Domain;
use crate::error::VmmError;
use crate::evtchn::EventChannels;
use crate::evtchn::GUEST_DOMID;
use crate::hypercall::HypercallTable;
use crate::kvm_stats::KvmStats;
use crate::loader::{self, ImageInfo};
use crate::memory::GuestRam;
use crate::paging::{self, PagingState};
use crate::stats::{ExitKind, ExitStats};
use crate::uart::{self, Uart};
use crate::watchdog::Watchdog;
use backend::block::{BlockBackend, Disk, DiskSpec};
use backend::echo::EchoBackend;
use backend::grant::GrantTable;
use backend::ring_page::RingPage;
use backend::xenbus::{EvtchnBinder, XenbusDevice, XenbusStore};
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Cap, Kvm, SyncReg, VcpuExit, VcpuFd, VmFd};
use pv_abi::hypercall::sched_op::SHUTDOWN_CRASH;
use pv_abi::hypercall::{DOORBELL_PORT, HYPERCALL_PORT};
use pv_abi::layout::{CONSOLE_RING, SHARED_INFO, START_INFO, STORE_RING};
use pv_abi::layout::{MAX_MEM_BYTES, MIN_MEM_BYTES};
use pv_abi::start_info::paging_mode;
use pv_store::{SharedStore, StoreServer};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vmm_sys_util::eventfd::EventFd;

/// Where the guest image comes from.
#[derive(Debug, Clone)]
pub enum Kernel {
    /// An ELF file on disk.
    File(PathBuf),
    /// A bundled image (name, bytes).
    Bundled(&'static str, &'static [u8]),
}

/// Everything needed to build a VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The guest image.
    pub kernel: Kernel,
    /// Guest RAM in bytes.
    pub mem_bytes: u64,
    /// The guest command line.
    pub cmdline: String,
    /// Console output.
    pub console: ConsoleOut,
    /// Stop the guest (as [`Outcome::Timeout`]) after this long.
    pub timeout: Option<std::time::Duration>,
    /// Paging mode ([`paging_mode`]): how the page-table pool is mapped.
    pub paging: u32,
    /// Number of `echo` sample devices to offer the guest.
    pub echo_devices: u32,
    /// Disks offered as virtual block devices `device/vbd/<vdev>`
    /// ([`vbd_vdev`]), in order.
    pub disks: Vec<DiskSpec>,
}

/// The virtual device number of the `i`-th disk: Xen's `xvd` numbering
/// (major 202, 16 minors per disk), so disk 0 is `xvda` = 51712.
pub fn vbd_vdev(i: usize) -> u32 {
    (202 << 8) + 16 * i as u32
}

impl VmConfig {
    /// A config for a bundled image with 64 MiB and output captured nowhere.
    pub fn bundled(name: &'static str, cmdline: &str) -> Self {
        let image = frontend_guest::images::by_name(name).unwrap_or_else(|| panic!("no bundled image {name}"));
        VmConfig {
            kernel: Kernel::Bundled(name, image),
            mem_bytes: 64 << 20,
            cmdline: cmdline.to_string(),
            console: ConsoleOut::Null,
            timeout: None,
            paging: paging_mode::NATIVE,
            echo_devices: 0,
            disks: Vec::new(),
        }
    }
}

/// How a guest run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The guest called `SCHEDOP_shutdown`.
    Shutdown {
        /// `SHUTDOWN_*` reason.
        reason: u32,
        /// Exit status the guest chose.
        code: u32,
    },
    /// The vCPU triple-faulted (KVM shutdown exit).
    TripleFault {
        /// Instruction pointer at the fault.
        rip: u64,
    },
    /// The run-time limit passed before the guest shut down.
    Timeout,
    /// KVM could not run or emulate the guest.
    InternalError {
        /// KVM's reason code (internal error suberror or entry failure reason).
        reason: u64,
        /// Instruction pointer.
        rip: u64,
    },
}

impl Outcome {
    /// The VMM process exit status for this outcome: the guest's chosen code
    /// for a clean shutdown (0..=255), 1 for anything that is a failure.
    pub fn exit_status(&self) -> i32 {
        match *self {
            Outcome::Shutdown { reason, code } if reason != SHUTDOWN_CRASH => (code & 0xff) as i32,
            Outcome::Shutdown { code, .. } => {
                if code & 0xff == 0 {
                    1
                } else {
                    (code & 0xff) as i32
                }
            }
            _ => 1,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Outcome::Shutdown { reason, code } => {
                let why = ["poweroff", "reboot", "suspend", "crash", "watchdog"]
                    .get(reason as usize)
                    .copied()
                    .unwrap_or("unknown");
                write!(f, "guest shut down ({why}) with status {code}")
            }
            Outcome::TripleFault { rip } => write!(f, "guest triple-faulted at rip {rip:#x}"),
            Outcome::Timeout => write!(f, "guest did not shut down within the time limit"),
            Outcome::InternalError { reason, rip } => {
                write!(f, "KVM could not run the guest (reason {reason}) at rip {rip:#x}")
            }
        }
    }
}

/// Environment variable naming the KVM device to open instead of `/dev/kvm`.
pub const KVM_DEVICE_ENV: &str = "VMM_KVM_DEVICE";

/// Opens `/dev/kvm` (or `$VMM_KVM_DEVICE`), turning the common failures
/// into actionable errors.
pub fn open_kvm() -> Result<Kvm, VmmError> {
    let res = match std::env::var_os(KVM_DEVICE_ENV) {
        Some(path) => {
            let path = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
                .map_err(|_| VmmError::NoKvm)?;
            Kvm::new_with_path(&path)
        }
        None => Kvm::new(),
    };
    res.map_err(kvm_open_error)
}

/// Maps the errno of opening the KVM device to a user-facing error.
pub fn kvm_open_error(e: kvm_ioctls::Error) -> VmmError {
    match e.errno() {
        libc::ENOENT | libc::ENODEV | libc::ENXIO => VmmError::NoKvm,
        libc::EACCES | libc::EPERM => VmmError::KvmPermission,
        _ => VmmError::KvmOpen(e),
    }
}

/// Checks a RAM size against the layout's limits.
pub fn check_mem_size(given: &str, bytes: u64) -> Result<u64, VmmError> {
    let fmt = |b: u64| format!("{}M", b >> 20);
    let why = if bytes < MIN_MEM_BYTES {
        "too small"
    } else if bytes > MAX_MEM_BYTES {
        "too large"
    } else if bytes % (1 << 20) != 0 {
        "not a whole number of MiB"
    } else {
        return Ok(bytes);
    };
    Err(VmmError::BadMemSize { given: given.to_string(), why, min: fmt(MIN_MEM_BYTES), max: fmt(MAX_MEM_BYTES) })
}

/// A booted VM ready to run.
pub struct Vm {
    // Field order matters for drop: vCPU and VM fds close before RAM unmaps.
    vcpu: VcpuFd,
    devices: Vec<DeviceThread>,
    _vm: Arc<VmFd>,
    _kvm: Kvm,
    /// The guest's VMM-side state.
    pub dom: Domain,
    uart: Uart,
    hypercalls: HypercallTable,
    stats: ExitStats,
    kvm_stats: Option<KvmStats>,
    /// The store (domain 0's handle).
    pub store: SharedStore,
    /// The echo sample devices.
    pub echo: Vec<Arc<Mutex<XenbusDevice<EchoBackend>>>>,
    /// The block devices (blkback), one per `--disk`.
    pub blk: Vec<Arc<Mutex<XenbusDevice<BlockBackend>>>>,
    /// The console back-end (drained once more at shutdown).
    console: Arc<Mutex<backend::console::Console>>,
    timeout: Option<std::time::Duration>,
    /// What the loader learned about the image.
    pub image: ImageInfo,
    /// When `Vm::new` started.
    pub created_at: Instant,
    /// When the vCPU first entered the guest (`KVM_RUN`).
    pub first_run_at: Option<Instant>,
}

impl Vm {
    /// Creates the VM, loads the image and prepares the vCPU at its entry.
    pub fn new(cfg: &VmConfig) -> Result<Vm, VmmError> {
        let created = Instant::now();
        let mem_bytes = check_mem_size(&format!("{}", cfg.mem_bytes), cfg.mem_bytes)?;
        let (name, bytes): (String, std::borrow::Cow<'static, [u8]>) = match &cfg.kernel {
            Kernel::Bundled(name, img) => ((*name).to_string(), (*img).into()),
            Kernel::File(path) => {
                let data = std::fs::read(path).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => VmmError::KernelNotFound(path.clone()),
                    _ => VmmError::KernelRead { path: path.clone(), source: e },
                })?;
                (path.display().to_string(), data.into())
            }
        };
        if crate::paging::mode_name(cfg.paging) == "unknown" {
            return Err(VmmError::BadPagingMode(cfg.paging));
        }
        let plan = MemoryPlan::new(mem_bytes);
        let (lo, hi) = plan.loadable();
        // Check the image before touching KVM so bad input fails fast.
        let pvh_layout = crate::pvh::elf::is_pvh(&bytes).then(|| crate::pvh::PvhLayout::new(mem_bytes));
        let pvh_image = match &pvh_layout {
            Some(l) => Some(crate::pvh::elf::check(&name, &bytes, 0, l.vmm_base)?),
            None => loader::check_elf(&name, &bytes, lo, hi).map(|_| None)?,
        };
        // PVH guests run their own page tables: the pool stays writable.
        let pool_readonly = cfg.paging != paging_mode::NATIVE && pvh_layout.is_none();
        let disks = cfg.disks.iter().map(Disk::open).collect::<Result<Vec<_>, _>>()?;

        let kvm = open_kvm()?;
        for (cap, what) in [
            (Cap::SyncRegs, "KVM_CAP_SYNC_REGS"),
            (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
            (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(VmmError::MissingCap(what));
            }
        }
        if pool_readonly && !kvm.check_extension(Cap::ReadonlyMem) {
            return Err(VmmError::MissingCap("KVM_CAP_READONLY_MEM"));
        }
        let vm = Arc::new(kvm.create_vm().map_err(VmmError::kvm("create_vm"))?);
        let slots = plan.slots(pool_readonly);
        let ram = GuestRam::new(&slots)?;
        ram.register(&vm, &slots)?;
        vm.create_irq_chip().map_err(VmmError::kvm("create_irq_chip"))?;

        let image = match &pvh_image {
            Some(p) => crate::pvh::boot::load(&ram, &bytes, p)?,
            None => {
                let image = loader::load(&ram, &name, &bytes, lo, hi)?;
                boot::write_page_tables_and_gdt(&ram)?;
                image
            }
        };
        // Where the VMM's pages are: fixed low pages for our guests, the
        // top of RAM for PVH guests (whose RAM starts at 0).
        let (shared_info, console_ring, store_ring, grantable) = match &pvh_layout {
            Some(l) => (l.shared_info(), l.console(), l.store(), (pv_abi::layout::PAGE_SIZE, l.vmm_base)),
            None => (SHARED_INFO, CONSOLE_RING, STORE_RING, (pv_abi::layout::KERNEL_BASE, plan.pool_start)),
        };
        let evtchn = Arc::new(EventChannels::new(vm.clone(), ram.clone(), shared_info)?);
        let grants = Arc::new(GrantTable::new(ram.mem().clone(), grantable.0, grantable.1));

        // The console: a ring page and a pre-bound event channel, as Xen's
        // domain builder sets them up.
        let io = |what| move |e| VmmError::Io(what, e);
        let console_wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(io("eventfd"))?);
        let console_port = evtchn.prebind(console_wake.clone()).map_err(VmmError::device("console"))?;
        let sink_out = cfg.console.clone();
        let console = Arc::new(Mutex::new(
            backend::console::Console::new(
                ram.mem(),
                console_ring,
                Arc::new(move |b: &[u8]| sink_out.write(b)),
                Arc::new(PortNotifier::new(evtchn.clone(), console_port)),
            )
            .map_err(VmmError::device("console"))?,
        ));
        let mut subscribers: Vec<Subscriber> =
            vec![Arc::new(Mutex::new(backend::console::ConsoleHandler::new(console.clone(), console_wake)))];

        // The store: ring page and pre-bound channel, served on the device thread.
        let store = SharedStore::new();
        let store_wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(io("eventfd"))?);
        let store_port = evtchn.prebind(store_wake.clone()).map_err(VmmError::device("store"))?;
        let store_page = RingPage::assigned(ram.mem(), store_ring).map_err(VmmError::device("store"))?;
        let server = StoreServer::new(store.clone(), GUEST_DOMID, store_page).map_err(VmmError::device("store"))?;
        subscribers.push(Arc::new(Mutex::new(StoreHandler::new(
            server,
            store_wake,
            PortNotifier::new(evtchn.clone(), store_port),
        ))));
        let store_dom0: Arc<dyn XenbusStore> = Arc::new(store.clone());
        let binder: Arc<dyn EvtchnBinder> = Arc::new(EvtchnAdapter(evtchn.clone()));
        // One thread for the console and store, one for the sample devices,
        // one per disk: a slow disk never delays another device.
        let mut threads = vec![("pv-core".to_string(), std::mem::take(&mut subscribers))];
        let mut echo = Vec::new();
        let mut echo_subs: Vec<Subscriber> = Vec::new();
        for id in 0..cfg.echo_devices {
            let paths = pv_store::xenbus::create_device(&store, GUEST_DOMID, pv_abi::echo::DEVICE_TYPE, id)
                .map_err(VmmError::device("echo device"))?;
            let dev =
                XenbusDevice::new(EchoBackend::default(), paths, store_dom0.clone(), binder.clone(), grants.clone())
                    .map_err(io("echo device"))?;
            let dev = Arc::new(Mutex::new(dev));
            echo_subs.push(dev.clone());
            echo.push(dev);
        }
        if !echo_subs.is_empty() {
            threads.push(("pv-echo".to_string(), echo_subs));
        }
        let mut blk = Vec::new();
        for (i, disk) in disks.into_iter().enumerate() {
            let paths = pv_store::xenbus::create_device(&store, GUEST_DOMID, backend::block::DEVICE_TYPE, vbd_vdev(i))
                .map_err(VmmError::device("vbd device"))?;
            let dev =
                XenbusDevice::new(BlockBackend::new(disk), paths, store_dom0.clone(), binder.clone(), grants.clone())
                    .map_err(io("vbd device"))?;
            let dev = Arc::new(Mutex::new(dev));
            threads.push((format!("pv-vbd{i}"), vec![dev.clone() as Subscriber]));
            blk.push(dev);
        }

        let mut vcpu = vm.create_vcpu(0).map_err(VmmError::kvm("create_vcpu"))?;
        let pvh_clock = match &pvh_layout {
            Some(l) => {
                let si = crate::pvh::boot::write_start_info(&ram, l, &cfg.cmdline)?;
                Some(crate::pvh::boot::prepare_vcpu(&kvm, &vm, &mut vcpu, image.entry as u32, si)?)
            }
            None => {
                let mut si = boot::write_start_info(&ram, &plan, image.end, &cfg.cmdline, cfg.paging)?;
                si.console.evtchn = console_port;
                si.store.evtchn = store_port;
                ram.write_obj(START_INFO, &si).map_err(|e| VmmError::BootWrite(e.to_string()))?;
                let cpuid =
                    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(VmmError::kvm("get_supported_cpuid"))?;
                vcpu.set_cpuid2(&cpuid).map_err(VmmError::kvm("set_cpuid2"))?;
                let mut sregs = vcpu.get_sregs().map_err(VmmError::kvm("get_sregs"))?;
                boot::long_mode_sregs(&mut sregs);
                vcpu.set_sregs(&sregs).map_err(VmmError::kvm("set_sregs"))?;
                vcpu.set_regs(&boot::entry_regs(image.entry)).map_err(VmmError::kvm("set_regs"))?;
                vcpu.set_sync_valid_reg(SyncReg::Register);
                None
            }
        };
        let kvm_stats = KvmStats::open(&vcpu);
        let mut dom = Domain::new(ram.clone(), cfg.console.clone(), evtchn, grants);
        dom.paging = PagingState::new(cfg.paging, plan.pool_start, mem_bytes, mem_bytes);
        if let (Some(l), Some(clock)) = (pvh_layout, pvh_clock) {
            let mut pvh = crate::pvh::PvhState::new(l, vm.clone(), ram, clock);
            pvh.console_evtchn = console_port;
            pvh.store_evtchn = store_port;
            dom.pvh = Some(Box::new(pvh));
        }

        let devices =
            threads.into_iter().map(|(name, subs)| DeviceThread::start(&name, subs)).collect::<Result<Vec<_>, _>>()?;
        Ok(Vm {
            vcpu,
            devices,
            _vm: vm,
            _kvm: kvm,
            console,
            store,
            echo,
            blk,
            timeout: cfg.timeout,
            uart: Uart::new(cfg.console.clone()),
            dom,
            hypercalls: HypercallTable::default(),
            stats: ExitStats::default(),
            kvm_stats,
            image,
            created_at: created,
            first_run_at: None,
        })
    }

    /// Exit counters, with KVM's own counters refreshed.
    pub fn stats(&self) -> ExitStats {
        let mut s = self.stats.clone();
        if let Some(k) = &self.kvm_stats {
            s.guest_instructions = k.get("insn_emulation");
            s.kvm_exits = k.get("exits");
        }
        s
    }

    /// The vCPU's KVM binary statistics, where the host provides them.
    pub fn kvm_stats(&self) -> Option<&KvmStats> {
        self.kvm_stats.as_ref()
    }

    /// Runs the guest until it shuts down or fails, then stops the devices
    /// (draining the console ring a last time).
    pub fn run(&mut self) -> Result<Outcome, VmmError> {
        self.first_run_at.get_or_insert_with(Instant::now);
        let watchdog = self.timeout.map(Watchdog::arm);
        let outcome = self.run_loop(watchdog.as_ref());
        drop(watchdog);
        self.devices.iter_mut().for_each(DeviceThread::stop);
        if let Ok(mut c) = self.console.lock() {
            c.drain();
        }
        outcome
    }

    fn run_loop(&mut self, watchdog: Option<&Watchdog>) -> Result<Outcome, VmmError> {
        loop {
            if watchdog.is_some_and(Watchdog::expired) {
                return Ok(Outcome::Timeout);
            }
            let mut hypercall = false;
            let exit = self.vcpu.run();
            match exit {
                Ok(VcpuExit::IoOut(HYPERCALL_PORT, _)) => hypercall = true,
                Ok(VcpuExit::IoOut(DOORBELL_PORT, data)) => {
                    // No ioeventfd matched: an unbound port or a bad width.
                    self.stats.exit(ExitKind::Doorbell);
                    self.dom.evtchn.doorbell_exit(data);
                }
                Ok(VcpuExit::IoOut(port, data)) if uart::PORTS.contains(&port) => {
                    self.stats.exit(ExitKind::Uart);
                    self.uart.write(port, data);
                }
                Ok(VcpuExit::IoIn(port, data)) if uart::PORTS.contains(&port) => {
                    self.stats.exit(ExitKind::Uart);
                    self.uart.read(port, data);
                }
                Ok(VcpuExit::IoOut(crate::pvh::DEBUGCONS_PORT, data)) if self.dom.pvh.is_some() => {
                    self.stats.exit(ExitKind::OtherIo);
                    self.dom.console.write(data);
                }
                Ok(VcpuExit::X86Wrmsr(exit)) => {
                    self.stats.exit(ExitKind::Msr);
                    *exit.error = crate::pvh::wrmsr_exit(&mut self.dom, exit.index, exit.data);
                }
                Ok(VcpuExit::X86Rdmsr(exit)) => {
                    self.stats.exit(ExitKind::Msr);
                    match crate::pvh::hypercall_page::rdmsr(exit.index) {
                        Ok(v) => *exit.data = v,
                        Err(_) => *exit.error = 1,
                    }
                }
                Ok(VcpuExit::IoOut(port, _)) => {
                    self.stats.exit(ExitKind::OtherIo);
                    tracing::debug!(port, "guest wrote an unassigned port");
                }
                Ok(VcpuExit::IoIn(port, data)) => {
                    self.stats.exit(ExitKind::OtherIo);
                    data.fill(0xff);
                    tracing::debug!(port, "guest read an unassigned port");
                }
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    self.stats.exit(ExitKind::Mmio);
                    data.fill(0xff);
                    tracing::debug!(addr, "guest read unbacked memory");
                }
                Ok(VcpuExit::MmioWrite(addr, data)) if self.dom.paging.in_pool(addr) => {
                    self.stats.exit(ExitKind::Mmio);
                    paging::trapped_write(&mut self.dom, addr, data);
                }
                Ok(VcpuExit::MmioWrite(addr, _)) => {
                    self.stats.exit(ExitKind::Mmio);
                    tracing::debug!(addr, "guest wrote unbacked memory");
                }
                Ok(VcpuExit::Hlt) => {
                    self.stats.exit(ExitKind::Hlt);
                }
                Ok(VcpuExit::Shutdown) => {
                    self.stats.exit(ExitKind::Shutdown);
                    return Ok(Outcome::TripleFault { rip: self.rip() });
                }
                Ok(VcpuExit::FailEntry(reason, _)) => {
                    self.stats.exit(ExitKind::Error);
                    return Ok(Outcome::InternalError { reason, rip: self.rip() });
                }
                Ok(VcpuExit::InternalError) => {
                    self.stats.exit(ExitKind::Error);
                    return Ok(Outcome::InternalError { reason: 0, rip: self.rip() });
                }
                Ok(other) => {
                    self.stats.exit(ExitKind::Error);
                    tracing::warn!("unexpected exit {other:?}");
                    return Ok(Outcome::InternalError { reason: u64::MAX, rip: self.rip() });
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.stats.exit(ExitKind::Interrupted);
                }
                Err(e) => return Err(VmmError::Kvm { what: "KVM_RUN", source: e }),
            }
            if hypercall {
                self.stats.exit(ExitKind::Hypercall);
                self.do_hypercall();
                if let Some(cr3) = self.dom.paging.pending_cr3.take() {
                    self.load_cr3(cr3)?;
                }
                if let Some(s) = self.dom.shutdown {
                    return Ok(Outcome::Shutdown { reason: s.reason, code: s.code });
                }
            }
        }
    }

    /// Benchmark support: runs the vCPU for `n` exits that must all be
    /// hypercalls, dispatching each, and returns the time spent in the
    /// VMM's own handling (from `KVM_RUN` returning to the registers being
    /// written back), excluding the kernel's exit and entry.
    pub fn time_hypercall_dispatch(&mut self, n: u64) -> Result<std::time::Duration, VmmError> {
        self.first_run_at.get_or_insert_with(Instant::now);
        let mut spent = std::time::Duration::ZERO;
        for _ in 0..n {
            match self.vcpu.run() {
                Ok(VcpuExit::IoOut(HYPERCALL_PORT, _)) => {}
                Ok(other) => return Err(VmmError::Bench(format!("expected a hypercall exit, got {other:?}"))),
                Err(e) => return Err(VmmError::Kvm { what: "KVM_RUN", source: e }),
            }
            let t = Instant::now();
            self.stats.exit(ExitKind::Hypercall);
            self.do_hypercall();
            spent += t.elapsed();
        }
        Ok(spent)
    }

    fn do_hypercall(&mut self) {
        // A PVH guest may call from 32-bit code: Xen's 32-bit convention.
        self.dom.compat = self.dom.pvh.is_some() && !crate::pvh::long_mode(&self.vcpu.sync_regs().sregs);
        let regs = &self.vcpu.sync_regs_mut().regs;
        let (nr, args) = crate::pvh::hypercall_args(regs, self.dom.compat);
        self.stats.hypercall(nr);
        let ret = self.hypercalls.dispatch(&mut self.dom, nr, &args);
        self.vcpu.sync_regs_mut().regs.rax = ret;
        self.vcpu.set_sync_dirty_reg(SyncReg::Register);
    }

    /// Loads CR3 (`MMUEXT_NEW_BASEPTR`); KVM drops the vCPU's cached
    /// translations when CR3 changes through `KVM_SET_SREGS`.
    fn load_cr3(&mut self, cr3: u64) -> Result<(), VmmError> {
        let mut sregs = self.vcpu.get_sregs().map_err(VmmError::kvm("get_sregs"))?;
        sregs.cr3 = cr3;
        self.vcpu.set_sregs(&sregs).map_err(VmmError::kvm("set_sregs"))
    }

    fn rip(&self) -> u64 {
        self.vcpu.get_regs().map(|r| r.rip).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_open_errors_say_what_to_do() {
        let msg = |errno| kvm_open_error(kvm_ioctls::Error::new(errno)).to_string();
        assert!(msg(libc::ENOENT).contains("/dev/kvm not found"));
        assert!(msg(libc::EACCES).contains("kvm' group"));
        assert!(msg(libc::EBUSY).starts_with("cannot open /dev/kvm"));
    }

    #[test]
    fn exit_status_follows_the_guest() {
        assert_eq!(Outcome::Shutdown { reason: 0, code: 42 }.exit_status(), 42);
        assert_eq!(Outcome::Shutdown { reason: SHUTDOWN_CRASH, code: 0 }.exit_status(), 1);
        assert_eq!(Outcome::Shutdown { reason: SHUTDOWN_CRASH, code: 101 }.exit_status(), 101);
        assert_eq!(Outcome::TripleFault { rip: 0 }.exit_status(), 1);
    }

    #[test]
    fn mem_size_limits() {
        assert!(check_mem_size("64M", 64 << 20).is_ok());
        assert!(check_mem_size("1M", 1 << 20).unwrap_err().to_string().contains("too small"));
        assert!(check_mem_size("8G", 8 << 30).unwrap_err().to_string().contains("too large"));
        assert!(check_mem_size("x", (64 << 20) + 1).is_err());
    }
}
