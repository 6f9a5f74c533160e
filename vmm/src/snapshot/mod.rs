//! Snapshot and restore of a whole VM (`vmm ctl snapshot <dir>`, `vmm
//! restore <dir>`), as Firecracker and Cloud Hypervisor do it, with Xen's
//! parts (the domain, the store, the split devices) carried along.
//!
//! A snapshot directory holds two files ([`STATE_FILE`], [`MEMORY_FILE`]):
//! - `memory`: guest RAM, sparse ([`memory`]);
//! - `state`: a header checked before anything is parsed ([`format`]) and
//!   a [`SnapshotState`]: the VM's configuration (restore needs no other
//!   flag), each vCPU's KVM state ([`vcpu_state`]), the KVM clock and
//!   irqchip, the domain and store state (`xen_domain`, `pv_store`), and
//!   each device's transport state ([`devices`]).
//!
//! Saving ([`save`]) pauses the vCPUs, waits until every split device's
//! ring has answered all its requests, has each vCPU thread read its own
//! state, and writes the files on the snapshot writer thread (the API
//! thread's seccomp filter opens no file). Restoring ([`restore`]) builds
//! the VM from the saved configuration, as `vmm run` would, then loads
//! memory and state over it before the first `KVM_RUN`; the split back
//! ends re-attach to their rings at the rings' current indices.
//! docs/snapshot.md has the format and what is and is not saved.

pub mod devices;
pub mod format;
pub mod memory;
pub mod restore;
pub mod save;
pub mod vcpu_state;

pub use restore::{load_state, restore_into, restore_with_memory};
pub use save::{SnapshotReport, Snapshotter};

use crate::device_spec::DeviceSpec;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The state file in a snapshot directory.
pub const STATE_FILE: &str = "state";
/// The guest memory file in a snapshot directory.
pub const MEMORY_FILE: &str = "memory";

/// A snapshot could not be taken or restored. Each message is one line
/// saying what is wrong and, for the user's part, what to do.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file of the snapshot could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The state file does not start with the snapshot magic.
    #[error("{}: not a vmm snapshot state file", .0.display())]
    NotASnapshot(PathBuf),
    /// The state file is from another format version.
    #[error("{}: snapshot state format version {found}, this vmm reads version {expected} only: restore it with the vmm that took it", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
        /// Ours.
        expected: u32,
    },
    /// The state file is shorter (or longer) than its header says.
    #[error("{}: truncated snapshot: {got} bytes, the header says {expected}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Length the header gives.
        expected: u64,
        /// Length found.
        got: u64,
    },
    /// The file is damaged or its content is inconsistent.
    #[error("{}: corrupt snapshot: {why}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The state cannot be encoded.
    #[error("cannot encode the snapshot state: {0}")]
    Encode(String),
    /// A KVM call failed.
    #[error("{what}: {source}")]
    Kvm {
        /// The ioctl.
        what: &'static str,
        /// Why.
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be accessed.
    #[error("guest memory: {0}")]
    Memory(String),
    /// The VM cannot be snapshotted (now, or at all).
    #[error("cannot snapshot: {0}")]
    Unsupported(String),
    /// The vCPUs did not answer.
    #[error("cannot snapshot: {0}")]
    Control(#[from] crate::control::ControlError),
    /// A cooperative snapshot's suspend or resume failed (the VM runs on).
    #[error("cannot snapshot cooperatively: {0}")]
    Suspend(#[from] crate::control::SuspendError),
    /// A device did not become idle.
    #[error("cannot snapshot: {0} did not finish its in-flight requests in time")]
    Drain(String),
    /// The saved domain or store state was refused.
    #[error("cannot restore the {what} state: {why}")]
    State {
        /// Domain, store, device.
        what: &'static str,
        /// Why.
        why: String,
    },
}

/// Where the guest image came from, as saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SavedKernel {
    /// A bundled image, by name.
    Bundled(String),
    /// An ELF file (it must still be there at restore: the builder checks
    /// it as at boot, then its loaded bytes are replaced by guest memory).
    File(PathBuf),
}

/// The VM configuration a snapshot carries: what `vmm run` was given,
/// less what belongs to the process (console, time limit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedConfig {
    /// The guest image.
    pub kernel: SavedKernel,
    /// Guest RAM in bytes.
    pub mem_bytes: u64,
    /// The guest command line.
    pub cmdline: String,
    /// Paging mode.
    pub paging: u32,
    /// The devices, in list order (disks are the same files: the user
    /// keeps them consistent with the snapshot).
    pub devices: Vec<DeviceSpec>,
    /// vCPUs.
    pub vcpus: u32,
}

impl SavedConfig {
    /// What a snapshot of a VM built from `cfg` saves.
    pub fn of(cfg: &crate::VmConfig) -> Self {
        SavedConfig {
            kernel: match &cfg.kernel {
                crate::Kernel::Bundled(name, _) => SavedKernel::Bundled((*name).to_string()),
                crate::Kernel::File(p) => SavedKernel::File(p.clone()),
            },
            mem_bytes: cfg.mem_bytes,
            cmdline: cfg.cmdline.clone(),
            paging: cfg.paging,
            devices: cfg.devices.clone(),
            vcpus: cfg.vcpus,
        }
    }

    /// A VM configuration for restoring this one (console and time limit
    /// set by the caller).
    pub fn to_vm_config(&self) -> Result<crate::VmConfig, SnapshotError> {
        let kernel = match &self.kernel {
            SavedKernel::Bundled(name) => {
                let (name, img) = frontend_guest::images::ALL.iter().find(|(n, _)| n == name).ok_or_else(|| {
                    SnapshotError::Corrupt {
                        path: PathBuf::from(STATE_FILE),
                        why: format!("no bundled image '{name}' in this vmm"),
                    }
                })?;
                crate::Kernel::Bundled(name, img)
            }
            SavedKernel::File(p) => crate::Kernel::File(p.clone()),
        };
        Ok(crate::VmConfig {
            kernel,
            mem_bytes: self.mem_bytes,
            cmdline: self.cmdline.clone(),
            console: crate::console::ConsoleOut::Null,
            timeout: None,
            shutdown_grace: crate::vm::DEFAULT_SHUTDOWN_GRACE,
            paging: self.paging,
            devices: self.devices.clone(),
            vcpus: self.vcpus,
        })
    }
}

/// What vCPU 0's thread reads besides its own registers: the VM-wide KVM
/// state and the domain (read under the domain lock, all vCPUs parked).
#[derive(Clone, Serialize, Deserialize)]
pub struct VmWide {
    /// The KVM clock (`KVM_GET_CLOCK`): kvmclock continues from it.
    pub clock: kvm_bindings::kvm_clock_data,
    /// The in-kernel PIC master, slave and IOAPIC (our own guests; PVH
    /// guests run a split irqchip: nothing to save here).
    pub irqchips: Vec<kvm_bindings::kvm_irqchip>,
    /// The domain (`xen_domain::snapshot`).
    pub domain: devices::DomainPart,
}

/// What one vCPU thread hands back for a snapshot.
#[derive(Serialize, Deserialize)]
pub struct VcpuCapture {
    /// Its KVM state.
    pub vcpu: vcpu_state::VcpuState,
    /// vCPU 0 only: the VM-wide state.
    pub vm: Option<VmWide>,
}

/// The content of the state file.
#[derive(Serialize, Deserialize)]
pub struct SnapshotState {
    /// The VM configuration.
    pub config: SavedConfig,
    /// Every vCPU, by id.
    pub vcpus: Vec<vcpu_state::VcpuState>,
    /// The VM-wide KVM state and the domain.
    pub vm: VmWide,
    /// The store.
    pub store: devices::StorePart,
    /// The split devices' transports.
    pub devices: Vec<devices::SplitDevice>,
    /// The virtio-blk transports, in device order.
    pub virtio_blk: Vec<backend::virtio::mmio::TransportState>,
    /// The virtio-net transports, in device order.
    pub virtio_net: Vec<backend::virtio::mmio::TransportState>,
    /// Bytes of guest memory holding data when it was taken.
    pub memory_bytes: u64,
    /// Set when the guest had suspended itself cooperatively
    /// (`SCHEDOP_shutdown(SHUTDOWN_suspend)`) when it was taken: a restore
    /// resumes it as a new domain.
    pub suspended: Option<SuspendedAt>,
}

/// A guest suspended when its snapshot was taken: Xen's saved domain
/// after `xl save` (`xen/include/public/sched.h` SHUTDOWN_suspend: the
/// hypercall returns 0 in the restored domain, whose back ends start in
/// `InitWait`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspendedAt {
    /// The vCPU that called `SHUTDOWN_suspend`: its hypercall's return
    /// value is set to 0 on restore.
    pub vcpu: u32,
}
