//! A VM: its configuration, the parts the builder made (KVM fds, guest RAM
//! as the [`Domain`], device threads, the vCPU), and running it. `Vm::new`
//! lives with the builder (`crate::builder`), which sits above this module.

use crate::boot::elf::ImageInfo;
use crate::console::ConsoleOut;
use crate::device_spec::DeviceSpec;
use crate::devices::{DeviceThread, PvDevices};
use crate::error::VmmError;
use crate::kvm_stats::KvmStats;
use crate::stats::ExitMetrics;
use crate::vcpu::Vcpu;
use crate::watchdog::Watchdog;
use kvm_ioctls::{Kvm, VmFd};
use pv_abi::start_info::paging_mode;
use pv_store::SharedStore;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use xen_domain::domain::Domain;
use xen_domain::domid::GUEST_DOMID;

pub use crate::vcpu::Outcome;

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
    /// How long a guest asked to power off (at the time limit or a stop
    /// signal, [`crate::watchdog`]) has to shut down before it is stopped.
    pub shutdown_grace: std::time::Duration,
    /// Paging mode ([`paging_mode`]): how the page-table pool is mapped.
    pub paging: u32,
    /// The devices, Xen and virtio, each wired in list order
    /// ([`crate::device_spec`]). Xen disks without a `vdev` are
    /// `device/vbd/<vdev>` with [`vbd_vdev`] numbering.
    pub devices: Vec<DeviceSpec>,
    /// vCPUs (1..=[`MAX_VCPUS`]): vCPU 0 runs from the entry, the others
    /// start stopped until the guest brings them up (`VCPUOP_up`).
    pub vcpus: u32,
}

pub use xen_domain::vcpus::MAX_VCPUS;

pub use backend::block::vbd_vdev;

/// The default [`VmConfig::shutdown_grace`].
pub const DEFAULT_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

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
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            paging: paging_mode::NATIVE,
            devices: Vec::new(),
            vcpus: 1,
        }
    }
}

/// A booted VM ready to run.
pub struct Vm {
    // Field order matters for drop: vCPU and VM fds close before RAM unmaps.
    pub(crate) vcpu: Vcpu,
    /// vCPUs 1.. (stopped until the guest brings them up).
    pub(crate) aps: Vec<Vcpu>,
    /// Hot-plugged devices stop with it, before guest memory goes.
    pub(crate) hotplug: Option<crate::hotplug::HotplugThread>,
    pub(crate) devices: Vec<DeviceThread>,
    pub(crate) _vm: Arc<VmFd>,
    /// The RAM slots as registered with KVM (slot `i` = entry `i`).
    pub(crate) ram_slots: Vec<crate::memory::Slot>,
    pub(crate) _kvm: Kvm,
    /// The guest's VMM-side state.
    pub dom: Domain,
    /// The store (domain 0's handle).
    pub store: SharedStore,
    /// The split devices (echo, disks, `--device`), in device-table order.
    pub pv: PvDevices,
    /// The virtio-mmio devices.
    pub virtio: Arc<crate::virtio_mmio_bus::VirtioBus>,
    /// The console back-end (drained once more at shutdown).
    pub(crate) console: Arc<Mutex<backend::console::Console>>,
    pub(crate) timeout: Option<std::time::Duration>,
    pub(crate) shutdown_grace: std::time::Duration,
    /// What the loader learned about the image.
    pub image: ImageInfo,
    /// When `Vm::new` started.
    pub created_at: Instant,
    /// When the vCPU first entered the guest (`KVM_RUN`).
    pub first_run_at: Option<Instant>,
    /// What a snapshot saves as the configuration.
    pub(crate) saved_config: crate::snapshot::SavedConfig,
    /// The store ring's server.
    pub(crate) store_handler: Arc<Mutex<crate::devices::StoreHandler>>,
    /// The console's and the store's pre-bound ports and the eventfds
    /// their handlers sleep on (re-attached after a restore).
    pub(crate) core_ports: [(u32, Arc<vmm_sys_util::eventfd::EventFd>); 2],
    /// Where the store ring page is.
    pub(crate) store_ring: u64,
    /// The snapshot writer thread's queue.
    pub(crate) snapshot_writer: std::sync::mpsc::Sender<crate::snapshot::save::WriteJobHandle>,
}

impl Vm {
    /// Exit counters of every vCPU together, with KVM's own counters
    /// refreshed.
    pub fn stats(&self) -> ExitMetrics {
        let mut total = self.vcpu.stats();
        for ap in &self.aps {
            total.add(&ap.stats());
        }
        total
    }

    /// Each vCPU's exit counters, vCPU 0 first.
    pub fn vcpu_stats(&self) -> Vec<ExitMetrics> {
        std::iter::once(&self.vcpu).chain(&self.aps).map(Vcpu::stats).collect()
    }

    /// Lets `control` pause, resume, destroy and read this VM's vCPUs
    /// while they run ([`crate::control`]); each attaches by its id while
    /// it is up.
    pub fn attach_control(&mut self, control: Arc<crate::control::VmControl>) {
        for ap in &mut self.aps {
            ap.attach_control(control.clone());
        }
        self.vcpu.attach_control(control);
    }

    /// A handle for hot-plugging disks while the VM runs ([`crate::hotplug`]).
    pub fn hotplug(&self) -> Option<crate::hotplug::Hotplug> {
        self.hotplug.as_ref().map(|h| h.handle())
    }

    /// What a live migration reads of this VM (the migration thread,
    /// [`crate::migration::MigratorThread`]); `config` is the
    /// configuration record the destination builds the VM from.
    pub fn migration_source(
        &self,
        control: Arc<crate::control::VmControl>,
        config: Vec<u8>,
    ) -> crate::migration::send::Source {
        crate::migration::send::Source {
            vm: self._vm.clone(),
            ram: self.dom.ram.clone(),
            slots: self.ram_slots.clone(),
            control,
            config,
        }
    }

    /// A handle taking snapshots of this VM while it runs
    /// ([`crate::snapshot`]).
    pub fn snapshotter(&self) -> crate::snapshot::Snapshotter {
        crate::snapshot::Snapshotter {
            config: self.saved_config.clone(),
            ram: self.dom.ram.clone(),
            grants: self.dom.grants.clone(),
            store: self.store.clone(),
            store_handler: self.store_handler.clone(),
            devices: self
                .pv
                .iter()
                .map(|d| (d.device_type.to_string(), d.paths.back.clone(), d.paths.front.clone()))
                .collect(),
            virtio: self.virtio.clone(),
            writer: self.snapshot_writer.clone(),
        }
    }

    /// Builds the VM a snapshot in `dir` (with state `state`, from
    /// [`crate::snapshot::load_state`]) was taken of, from `cfg` (which
    /// must be `state.config`'s, [`crate::snapshot::SavedConfig::to_vm_config`],
    /// with this process's console and time limit), and loads its memory
    /// and state: it continues where it stopped when run.
    pub fn restore(
        cfg: &VmConfig,
        state: &crate::snapshot::SnapshotState,
        dir: &std::path::Path,
    ) -> Result<Vm, VmmError> {
        if crate::snapshot::SavedConfig::of(cfg) != state.config {
            return Err(VmmError::Snapshot("the configuration differs from the snapshot's".into()));
        }
        let mut vm = Vm::new(cfg)?;
        crate::snapshot::restore_into(&mut vm, state, dir).map_err(|e| VmmError::Snapshot(e.to_string()))?;
        Ok(vm)
    }

    /// The vCPU's KVM binary statistics, where the host provides them.
    pub fn kvm_stats(&self) -> Option<&KvmStats> {
        self.vcpu.kvm_stats()
    }

    /// Runs the guest until it shuts down or fails, then stops the devices
    /// (draining the console ring a last time).
    pub fn run(&mut self) -> Result<Outcome, VmmError> {
        self.first_run_at.get_or_insert_with(Instant::now);
        let store = self.store.clone();
        let ask = move || {
            if let Err(e) = crate::store_nodes::request_shutdown(&store, GUEST_DOMID, "poweroff") {
                tracing::warn!("cannot write control/shutdown: {e}");
            }
        };
        let watchdog = Watchdog::arm(self.timeout, self.shutdown_grace, Box::new(ask));
        let mut outcome = if self.aps.is_empty() {
            // The vCPU thread's filter, before the guest runs (`seccomp`).
            crate::seccomp::install(crate::seccomp::ThreadKind::Vcpu)?;
            self.vcpu.run(&mut self.dom, Some(&watchdog))
        } else {
            crate::smp::run(&mut self.vcpu, &mut self.aps, &mut self.dom, &watchdog)
        };
        // A guest that powered off only because the time limit asked it to
        // still missed the limit.
        if watchdog.cause() == Some(crate::watchdog::StopCause::Timeout) {
            outcome = outcome.map(|_| Outcome::Timeout);
        }
        drop(watchdog);
        // A last line the guest did not end.
        self.dom.hv_console.flush();
        self.devices.iter_mut().for_each(DeviceThread::stop);
        if let Ok(mut c) = self.console.lock() {
            c.drain();
        }
        outcome
    }

    /// Benchmark support: [`Vcpu::time_hypercall_dispatch`].
    pub fn time_hypercall_dispatch(&mut self, n: u64) -> Result<std::time::Duration, VmmError> {
        self.first_run_at.get_or_insert_with(Instant::now);
        self.vcpu.time_hypercall_dispatch(&mut self.dom, n)
    }
}
