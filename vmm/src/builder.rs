//! Building a VM from a [`VmConfig`], in the order Xen's domain builder
//! (and Firecracker's `builder.rs`) does it: check the input, create the
//! KVM VM and guest memory, load the image, set up the console and store
//! pages with their pre-bound channels, attach the devices, write
//! start-info, and create the vCPU at the image's entry. Running it is
//! [`crate::vcpu`]'s job.

use crate::boot::elf::{BootKind, Elf, ImageInfo};
use crate::boot::{self, MemoryPlan};
use crate::devices::{DeviceThread, EvtchnAdapter, PortNotifier, PvDevices, StoreHandler, Subscriber, Threads};
use crate::error::VmmError;
use crate::hotplug::{ColdDisk, Plugged, TrackedStore};
use crate::kvm_platform::KvmPlatform;
use crate::memory::{GuestRam, RegisterSlots};
use crate::vcpu::Vcpu;
use crate::virtio_mmio_bus::VirtioBus;
use crate::vm::{Kernel, Vm, VmConfig};
use backend::console::Console;
use backend::ring_page::RingPage;
use backend::xenbus::XenbusHost;
use kvm_ioctls::{Cap, Kvm, VmFd};
use pv_abi::layout::{CONSOLE_RING, SHARED_INFO, START_INFO, STORE_RING};
use pv_abi::layout::{MAX_MEM_BYTES, MIN_MEM_BYTES};
use pv_abi::start_info::paging_mode;
use pv_store::{SharedStore, StoreServer};
use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vmm_sys_util::eventfd::EventFd;
use xen_domain::domain::Domain;
use xen_domain::domid::GUEST_DOMID;
use xen_domain::event_channel::EventChannels;
use xen_domain::grant_table::GrantTable;
use xen_domain::mmu::PagingState;
use xen_domain::pvh::{PvhLayout, PvhState};

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
    let why = if bytes < MIN_MEM_BYTES {
        "too small"
    } else if bytes > MAX_MEM_BYTES {
        "too large"
    } else if bytes % (1 << 20) != 0 {
        "not a whole number of MiB"
    } else {
        return Ok(bytes);
    };
    Err(mem_size_error(given, why))
}

/// Parses a RAM size such as `64M`, `512K`, `1G`, `64MiB` or a plain byte
/// count (the CLI's `--mem`) and checks it against the layout's limits.
pub fn parse_mem_size(given: &str) -> Result<u64, VmmError> {
    match parse_size(given) {
        Some(bytes) => check_mem_size(given, bytes),
        None => Err(mem_size_error(given, "not a size")),
    }
}

fn mem_size_error(given: &str, why: &'static str) -> VmmError {
    let fmt = |b: u64| format!("{}M", b >> 20);
    VmmError::BadMemSize { given: given.to_string(), why, min: fmt(MIN_MEM_BYTES), max: fmt(MAX_MEM_BYTES) }
}

/// `64M`, `512K`, `1G`, `64MiB` or a plain byte count, in bytes.
fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let t = t.strip_suffix("iB").or_else(|| t.strip_suffix('B')).unwrap_or(t);
    let (num, shift) = match t.chars().last()? {
        'k' | 'K' => (&t[..t.len() - 1], 10),
        'm' | 'M' => (&t[..t.len() - 1], 20),
        'g' | 'G' => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    num.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// The KVM side of a VM: the system fd, the VM fd and its guest RAM.
struct Machine {
    kvm: Kvm,
    vm: Arc<VmFd>,
    ram: GuestRam,
    /// The RAM slots as registered (live migration's dirty log).
    slots: Vec<crate::memory::Slot>,
    /// Start of the page-table pool (virtio buffers must lie below it).
    pool_start: u64,
}

/// Where the VMM's own pages are in guest-physical memory.
struct VmmPages {
    shared_info: u64,
    console: u64,
    store: u64,
    /// Frames a grant may name: `[lo, hi)`.
    grantable: (u64, u64),
}

/// The pages and channels Xen's domain builder sets up before the guest
/// runs: the console ring and the store ring, each with a pre-bound port.
struct CorePages {
    console: Arc<Mutex<Console>>,
    console_port: u32,
    store: SharedStore,
    store_port: u32,
    subscribers: Vec<Subscriber>,
    /// The store ring's server (replaced by the snapshot's at a restore).
    store_handler: Arc<Mutex<StoreHandler>>,
    /// The console's and store's ports and wake eventfds.
    core_ports: [(u32, Arc<EventFd>); 2],
}

impl Vm {
    /// Creates the VM, loads the image and prepares the vCPU at its entry
    /// ([`build`]).
    pub fn new(cfg: &VmConfig) -> Result<Vm, VmmError> {
        build(cfg)
    }
}

/// What the input says, checked before KVM is touched so bad input fails
/// fast.
struct Input {
    mem_bytes: u64,
    bytes: Cow<'static, [u8]>,
    plan: MemoryPlan,
    pvh_layout: Option<PvhLayout>,
    image: ImageInfo,
    table: Vec<crate::devices::DeviceRow>,
    virtio_disks: Vec<backend::block::Disk>,
    virtio_nets: Vec<backend::virtio::net::VirtioNet>,
}

/// The hypervisor side of the guest as built: its event channels and
/// grant table over the KVM platform.
struct Hypervisor {
    platform: Arc<KvmPlatform>,
    evtchn: Arc<EventChannels>,
    grants: Arc<GrantTable>,
}

/// Builds the VM `cfg` describes, ready to run at the image's entry.
pub fn build(cfg: &VmConfig) -> Result<Vm, VmmError> {
    let created_at = Instant::now();
    let input = check_input(cfg)?;
    // PVH guests run their own page tables (the pool stays writable) and
    // own low memory; their outputs may not touch the VMM's top pages.
    let m = create_machine(
        &input.plan,
        cfg.paging != paging_mode::NATIVE && input.pvh_layout.is_none(),
        input.pvh_layout.map(|l| l.vmm_base..l.mem_bytes),
    )?;
    let image = load_image(&m.ram, &input)?;
    let pages = vmm_pages(&input);
    let store_ring_gpa = pages.store;
    let hv = create_hypervisor(&m, &pages)?;
    hv.platform.add_vcpu_upcalls(cfg.vcpus, input.pvh_layout.is_none())?;
    let mut core = setup_core_pages(cfg, &m.ram, &hv.evtchn, &pages)?;
    let mut threads = vec![("pv-core".to_string(), std::mem::take(&mut core.subscribers))];
    let (mut pv, virtio, wired_with) =
        wire_devices(&m, input.table, input.virtio_disks, input.virtio_nets, &core, &hv, &mut threads)?;
    let mut vcpu = Vcpu::new(&m.kvm, &m.vm, image.entry, cfg.console.clone())?;
    vcpu.attach_mmio(virtio.clone());
    vcpu.attach_vm(m.vm.clone());
    crate::snapshot::vcpu_state::init_msr_index(&m.kvm);
    let snapshot_writer = crate::snapshot::save::start_writer().map_err(io("snapshot thread"))?;
    let pvh = match input.pvh_layout {
        Some(l) => Some(Box::new(prepare_pvh(cfg, &m, &mut vcpu, l, image.entry, &core, &hv)?)),
        None => {
            write_start_info(cfg, &m.ram, &input.plan, &image, &core, &virtio.entries)?;
            None
        }
    };
    let aps = create_secondary_vcpus(cfg, &m, input.pvh_layout.is_some(), &virtio, &hv.platform)?;
    hv.evtchn.set_vcpus(cfg.vcpus);
    let (devices, cold) = start_device_threads(threads, &mut pv, wired_with)?;
    let hotplug = crate::hotplug::HotplugThread::start(
        crate::hotplug::HotplugHost {
            store: core.store.clone(),
            domid: GUEST_DOMID,
            evtchn: hv.evtchn.clone(),
            grants: hv.grants.clone(),
        },
        cold,
    )
    .map_err(io("hotplug thread"))?;
    let mut dom = Domain::new(m.ram, cfg.console.clone(), hv.evtchn, hv.grants);
    dom.vcpus = Arc::new(xen_domain::vcpus::VcpuSet::new(cfg.vcpus));
    dom.paging = PagingState::new(cfg.paging, input.plan.pool_start, input.mem_bytes, input.mem_bytes);
    dom.pvh = pvh;
    Ok(Vm {
        vcpu,
        aps,
        hotplug: Some(hotplug),
        devices,
        _vm: m.vm,
        ram_slots: m.slots,
        _kvm: m.kvm,
        dom,
        store: core.store,
        pv,
        virtio,
        console: core.console,
        timeout: cfg.timeout,
        shutdown_grace: cfg.shutdown_grace,
        image,
        created_at,
        first_run_at: None,
        saved_config: crate::snapshot::SavedConfig::of(cfg),
        store_handler: core.store_handler,
        core_ports: core.core_ports,
        store_ring: store_ring_gpa,
        snapshot_writer,
    })
}

/// vCPUs 1.. of `cfg.vcpus`, stopped: each with its own CPUID (the Xen
/// leaves name the vCPU, leaf 1 its initial APIC id), the MMIO bus and,
/// for a PVH guest, a callback line of its own.
fn create_secondary_vcpus(
    cfg: &VmConfig,
    m: &Machine,
    pvh: bool,
    virtio: &Arc<VirtioBus>,
    platform: &KvmPlatform,
) -> Result<Vec<Vcpu>, VmmError> {
    if cfg.vcpus <= 1 {
        return Ok(Vec::new());
    }
    let supported =
        m.kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES).map_err(VmmError::kvm("get_supported_cpuid"))?;
    (1..cfg.vcpus)
        .map(|id| {
            let mut cpuid = match pvh {
                true => crate::pvh::cpuid::install(&supported, id, GUEST_DOMID.into())
                    .map_err(|_| VmmError::MissingCap("CPUID entries"))?,
                false => supported.clone(),
            };
            for e in cpuid.as_mut_slice().iter_mut().filter(|e| e.function == 1) {
                e.ebx = (e.ebx & 0x00ff_ffff) | (id << 24);
            }
            let mut v = Vcpu::new_secondary(&m.vm, id, &cpuid, cfg.console.clone(), pvh)?;
            v.attach_mmio(virtio.clone());
            if pvh {
                // The callback vector reaches this vCPU as on vCPU 0.
                crate::pvh::callback::virtual_wire(v.fd_mut()).map_err(VmmError::kvm("KVM_SET_LAPIC"))?;
                v.attach_callback(platform.add_secondary_line());
            }
            Ok(v)
        })
        .collect()
}

/// Checks the memory size, the image, the paging mode and the devices.
fn check_input(cfg: &VmConfig) -> Result<Input, VmmError> {
    if !(1..=crate::vm::MAX_VCPUS).contains(&cfg.vcpus) {
        return Err(VmmError::BadVcpus(cfg.vcpus));
    }
    let mem_bytes = check_mem_size(&format!("{}", cfg.mem_bytes), cfg.mem_bytes)?;
    let (name, bytes) = read_kernel(&cfg.kernel)?;
    if xen_domain::mmu::mode_name(cfg.paging) == "unknown" {
        return Err(VmmError::BadPagingMode(cfg.paging));
    }
    let plan = MemoryPlan::new(mem_bytes);
    let elf = Elf::parse(&bytes).map_err(|e| e.for_image(&name))?;
    let kind = elf.boot_kind().map_err(|e| e.for_image(&name))?;
    let pvh_layout = matches!(kind, BootKind::Pvh(_)).then(|| PvhLayout::new(mem_bytes));
    let (lo, hi) = pvh_layout.map_or(plan.loadable(), |l| (0, l.vmm_base));
    let image = elf.check(lo, hi).map_err(|e| e.for_image(&name))?;
    let table = crate::devices::device_table(&cfg.devices)?;
    let virtio_disks = crate::device_spec::virtio_disks(&cfg.devices);
    let virtio_disks = virtio_disks.iter().map(backend::block::Disk::open).collect::<Result<Vec<_>, _>>()?;
    let virtio_nets = crate::virtio_mmio_bus::open_nets(&crate::device_spec::virtio_nets(&cfg.devices)?)?;
    Ok(Input { mem_bytes, bytes, plan, pvh_layout, image, table, virtio_disks, virtio_nets })
}

/// Loads the image (and for our own guests the boot page tables and GDT).
fn load_image(ram: &GuestRam, input: &Input) -> Result<ImageInfo, VmmError> {
    crate::boot::elf::load(ram, &input.bytes, &input.image)?;
    if input.pvh_layout.is_none() {
        boot::write_page_tables_and_gdt(ram)?;
    }
    Ok(input.image.clone())
}

/// The VMM's pages: fixed low pages for our guests, the top of RAM for
/// PVH guests (whose RAM starts at 0).
fn vmm_pages(input: &Input) -> VmmPages {
    match &input.pvh_layout {
        Some(l) => VmmPages {
            shared_info: l.shared_info(),
            console: l.console(),
            store: l.store(),
            grantable: (pv_abi::layout::PAGE_SIZE, l.vmm_base),
        },
        None => VmmPages {
            shared_info: SHARED_INFO,
            console: CONSOLE_RING,
            store: STORE_RING,
            grantable: (pv_abi::layout::KERNEL_BASE, input.plan.pool_start),
        },
    }
}

/// The KVM platform, the event channels over it and the grant table.
fn create_hypervisor(m: &Machine, pages: &VmmPages) -> Result<Hypervisor, VmmError> {
    let platform = Arc::new(KvmPlatform::new(m.vm.clone(), m.ram.clone())?);
    let evtchn = EventChannels::new(platform.clone(), m.ram.clone(), pages.shared_info)
        .map_err(|e| VmmError::BootWrite(e.to_string()))?;
    let grants = GrantTable::new(m.ram.mem().clone(), pages.grantable.0, pages.grantable.1);
    Ok(Hypervisor { platform, evtchn: Arc::new(evtchn), grants: Arc::new(grants) })
}

/// Wires the split devices (one binder each: each closes only the
/// bindings it made) and the virtio devices, and writes the store nodes
/// Xen's toolstack writes. One thread for the console and store, one per
/// device type or per device (each disk): a slow disk never delays
/// another device.
fn wire_devices(
    m: &Machine,
    table: Vec<crate::devices::DeviceRow>,
    disks: Vec<backend::block::Disk>,
    nets: Vec<backend::virtio::net::VirtioNet>,
    core: &CorePages,
    hv: &Hypervisor,
    threads: &mut Threads,
) -> Result<(PvDevices, Arc<VirtioBus>, Vec<WiredWith>), VmmError> {
    // Each split device's store handle and binder, kept so that a
    // cold-plugged disk can be detached like a hot-plugged one.
    let wired_with = std::cell::RefCell::new(Vec::new());
    let host = || {
        let store = Arc::new(TrackedStore::new(core.store.clone()));
        let evtchn = Arc::new(EvtchnAdapter::new(hv.evtchn.clone()));
        wired_with.borrow_mut().push((store.clone(), evtchn.clone()));
        XenbusHost { store, evtchn, grants: hv.grants.clone() }
    };
    let pv = crate::devices::wire_devices(table, &core.store, GUEST_DOMID, &host, threads)?;
    let usable = pv_abi::layout::KERNEL_BASE..m.pool_start;
    let (virtio, virtio_threads) =
        crate::virtio_mmio_bus::build(&m.vm, &hv.platform, m.ram.mem(), usable, disks, nets)?;
    threads.extend(virtio_threads);
    crate::store_nodes::write_domain_nodes(&core.store, GUEST_DOMID, "guest").map_err(VmmError::device("store"))?;
    crate::store_nodes::name_disks(&core.store, GUEST_DOMID).map_err(VmmError::device("store"))?;
    Ok((pv, Arc::new(virtio), wired_with.into_inner()))
}

/// The store handle and binder one split device was wired with.
type WiredWith = (Arc<TrackedStore>, Arc<EvtchnAdapter>);

/// Starts the device threads; a Xen disk alone on its thread (each
/// `--disk` has one) is returned apart, for the hot-plug thread to own
/// so that `remove-device` can detach it.
fn start_device_threads(
    threads: Threads,
    pv: &mut PvDevices,
    wired_with: Vec<WiredWith>,
) -> Result<(Vec<DeviceThread>, Vec<ColdDisk>), VmmError> {
    let same = |a: &Subscriber, b: &Subscriber| std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b));
    let (mut devices, mut cold) = (Vec::new(), Vec::new());
    let (queue_threads, threads): (Threads, Threads) = threads.into_iter().partition(|(n, _)| is_queue_thread(n));
    let mut queues = Vec::new();
    for (name, subs) in queue_threads {
        queues.push((name.clone(), DeviceThread::start(&name, subs)?));
    }
    for (name, subs) in threads {
        let disk = match subs.as_slice() {
            [one] => pv.iter().position(|d| d.device_type == pv_abi::blkif::DEVICE_TYPE && same(&d.subscriber, one)),
            _ => None,
        };
        let thread = DeviceThread::start(&name, subs)?;
        match disk.and_then(|j| Some((pv.0.get_mut(j)?, wired_with.get(j)?))) {
            Some((d, (store, binder))) => {
                // The thread holds the only other reference: stopping it
                // on a detach drops the back end.
                d.subscriber = Arc::new(Mutex::new(crate::devices::HandedOver));
                let vdev = d.paths.front.rsplit('/').next().unwrap_or_default();
                cold.push(ColdDisk {
                    plugged: Plugged { id: format!("vbd/{vdev}"), paths: d.paths.clone() },
                    metrics: d.metrics.clone(),
                    queues: take_queue_threads(&mut queues, &name),
                    thread,
                    binder: binder.clone(),
                    store: store.clone(),
                });
            }
            None => devices.push(thread),
        }
    }
    devices.extend(queues.into_iter().map(|(_, t)| t));
    Ok((devices, cold))
}

/// `pv-vbd0q1`: a further queue's thread (`devices::wire_devices`).
fn is_queue_thread(name: &str) -> bool {
    name.rsplit_once('q')
        .is_some_and(|(head, n)| head.starts_with("pv-") && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Takes the threads of `disk`'s further queues (`<disk>q<N>`) out of `queues`.
fn take_queue_threads(queues: &mut Vec<(String, DeviceThread)>, disk: &str) -> Vec<DeviceThread> {
    let prefix = format!("{disk}q");
    let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(queues)
        .into_iter()
        .partition(|(n, _)| n.strip_prefix(&prefix).is_some_and(|q| q.bytes().all(|b| b.is_ascii_digit())));
    *queues = rest;
    mine.into_iter().map(|(_, t)| t).collect()
}

/// A PVH guest's start info, entry state, timer thread and callback line.
fn prepare_pvh(
    cfg: &VmConfig,
    m: &Machine,
    vcpu: &mut Vcpu,
    l: PvhLayout,
    entry: u64,
    core: &CorePages,
    hv: &Hypervisor,
) -> Result<PvhState, VmmError> {
    let si = crate::boot::pvh::write_start_info(&m.ram, &l, &cfg.cmdline)?;
    let clock = crate::boot::pvh::prepare_vcpu(&m.kvm, &m.vm, vcpu.fd_mut(), entry as u32, si)?;
    vcpu.attach_callback(hv.platform.callback.clone());
    let mut pvh = PvhState::new(l, hv.platform.clone(), clock);
    // Sleeping, locking and writing the upcall eventfd: the watchdog's set.
    let seccomp = || crate::seccomp::install_or_exit(crate::seccomp::ThreadKind::Watchdog);
    // A domain watchdog's expiry kicks the vCPU, which then shuts down.
    let line = hv.platform.callback.clone();
    let kick: xen_domain::timer::WatchdogKick = Arc::new(move || line.kick());
    let timer = xen_domain::timer::Timer::start_with_kick(hv.evtchn.clone(), Some(kick), seccomp);
    pvh.timer = Some(timer.map_err(io("timer thread"))?);
    pvh.console_evtchn = core.console_port;
    pvh.store_evtchn = core.store_port;
    let kib = pvh.reservation.max_pages * (pv_abi::layout::PAGE_SIZE / 1024);
    crate::store_nodes::write_memory_nodes(&core.store, GUEST_DOMID, kib, kib).map_err(VmmError::device("store"))?;
    Ok(pvh)
}

/// The image's name (for messages) and bytes.
fn read_kernel(kernel: &Kernel) -> Result<(String, Cow<'static, [u8]>), VmmError> {
    Ok(match kernel {
        Kernel::Bundled(name, img) => ((*name).to_string(), (*img).into()),
        Kernel::File(path) => {
            let data = std::fs::read(path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => VmmError::KernelNotFound(path.clone()),
                _ => VmmError::KernelRead { path: path.clone(), source: e },
            })?;
            (path.display().to_string(), data.into())
        }
    })
}

/// Opens KVM, checks the capabilities the VMM relies on, creates the VM
/// with its memory slots (the pool read-only unless `native` paging) and
/// the in-kernel irqchip.
fn create_machine(
    plan: &MemoryPlan,
    pool_readonly: bool,
    pvh_vmm_pages: Option<std::ops::Range<u64>>,
) -> Result<Machine, VmmError> {
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
    // Hypercall outputs may not land in the read-only pool or the VMM's
    // low pages (`xen_domain::guest_memory`).
    let mut protected = vec![pvh_vmm_pages.clone().unwrap_or(xen_domain::guest_memory::RESERVED_LOW)];
    if pool_readonly {
        protected.push(plan.pool_start..plan.mem_bytes);
    }
    ram.protect_outputs(protected);
    if pvh_vmm_pages.is_some() {
        // PVH: the callback vector needs `KVM_INTERRUPT` (pvh::callback).
        crate::pvh::callback::split_irqchip(&vm).map_err(VmmError::kvm("KVM_CAP_SPLIT_IRQCHIP"))?;
    } else {
        vm.create_irq_chip().map_err(VmmError::kvm("create_irq_chip"))?;
    }
    Ok(Machine { kvm, vm, ram, slots: slots.to_vec(), pool_start: plan.pool_start })
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> VmmError {
    move |e| VmmError::Io(what, e)
}

/// The console and the store: ring pages and pre-bound event channels, as
/// Xen's domain builder sets them up, served on the `pv-core` thread.
fn setup_core_pages(
    cfg: &VmConfig,
    ram: &GuestRam,
    evtchn: &Arc<EventChannels>,
    pages: &VmmPages,
) -> Result<CorePages, VmmError> {
    let console_wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(io("eventfd"))?);
    let console_port = evtchn.prebind(console_wake.clone()).map_err(VmmError::device("console"))?;
    let sink_out = cfg.console.clone();
    let console = Arc::new(Mutex::new(
        Console::new(
            ram.mem(),
            pages.console,
            Arc::new(move |b: &[u8]| sink_out.write(b)),
            Arc::new(PortNotifier::new(evtchn.clone(), console_port)),
        )
        .map_err(VmmError::device("console"))?,
    ));
    let mut handler = backend::console::ConsoleHandler::new(console.clone(), console_wake.clone());
    // Console input from the VMM's stdin when the output goes to stdout
    // and stdin is a terminal or a pipe.
    if matches!(cfg.console, crate::console::ConsoleOut::Stdout) && crate::console::stdin_is_interactive() {
        handler = handler.with_stdin();
    }
    let mut subscribers: Vec<Subscriber> = vec![Arc::new(Mutex::new(handler))];

    let store = SharedStore::new();
    let store_wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(io("eventfd"))?);
    let store_port = evtchn.prebind(store_wake.clone()).map_err(VmmError::device("store"))?;
    let store_page = RingPage::assigned(ram.mem(), pages.store).map_err(VmmError::device("store"))?;
    let server = StoreServer::new(store.clone(), GUEST_DOMID, store_page).map_err(VmmError::device("store"))?;
    let store_handler = Arc::new(Mutex::new(StoreHandler::new(
        server,
        store_wake.clone(),
        PortNotifier::new(evtchn.clone(), store_port),
    )));
    subscribers.push(store_handler.clone());
    let core_ports = [(console_port, console_wake), (store_port, store_wake)];
    Ok(CorePages { console, console_port, store, store_port, subscribers, store_handler, core_ports })
}

/// Writes start-info with the console and store channels and the virtio
/// device list filled in.
fn write_start_info(
    cfg: &VmConfig,
    ram: &GuestRam,
    plan: &MemoryPlan,
    image: &ImageInfo,
    core: &CorePages,
    virtio: &[pv_abi::virtio::VirtioMmioDevice],
) -> Result<(), VmmError> {
    let mut si = boot::write_start_info(ram, plan, image.end, &cfg.cmdline, cfg.paging)?;
    si.console.evtchn = core.console_port;
    si.store.evtchn = core.store_port;
    si.nr_virtio = virtio.len() as u32;
    si.virtio[..virtio.len()].copy_from_slice(virtio);
    ram.write_obj(START_INFO, &si).map_err(|e| VmmError::BootWrite(e.to_string()))
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
    fn sizes() {
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("12x"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("99999999999G"), None);
    }

    #[test]
    fn every_mem_size_error_names_the_layout_limits() {
        let limits = format!("between {}M and {}M", MIN_MEM_BYTES >> 20, MAX_MEM_BYTES >> 20);
        for bad in ["lots", "1M", "8G", "65537K"] {
            let msg = parse_mem_size(bad).unwrap_err().to_string();
            assert!(msg.contains(&limits), "{bad}: {msg}");
        }
        assert_eq!(parse_mem_size("64M").unwrap(), 64 << 20);
    }

    #[test]
    fn mem_size_limits() {
        assert!(check_mem_size("64M", 64 << 20).is_ok());
        assert!(check_mem_size("1M", 1 << 20).unwrap_err().to_string().contains("too small"));
        assert!(check_mem_size("8G", 8 << 30).unwrap_err().to_string().contains("too large"));
        assert!(check_mem_size("x", (64 << 20) + 1).is_err());
    }
}
