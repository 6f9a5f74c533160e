//! Taking a snapshot: pause, drain, read the state on the vCPU threads,
//! write the files on the snapshot writer thread.

use super::devices::{self, DomainPart, StorePart};
use super::{format, memory, SavedConfig, SnapshotError, SnapshotState, VcpuCapture, VmWide};
use super::{MEMORY_FILE, STATE_FILE};
use crate::control::{RunState, SnapshotAsk, VmControl};
use kvm_ioctls::{VcpuFd, VmFd};
use pv_store::SharedStore;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xen_domain::domain::Domain;
use xen_domain::grant_table::GrantTable;
use xen_domain::guest_memory::GuestRam;

/// How long the vCPUs have to park, and to read their state.
const VCPU_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the devices have to answer their in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the writer may take (1 GiB of data on a slow disk).
const WRITE_TIMEOUT: Duration = Duration::from_secs(300);

/// What a snapshot took.
#[derive(Debug, Clone)]
pub struct SnapshotReport {
    /// Where it is.
    pub dir: PathBuf,
    /// Bytes of guest memory written (pages holding data).
    pub memory_bytes: u64,
    /// Size of the state file.
    pub state_bytes: u64,
    /// From the pause request to the vCPUs parked.
    pub pause: Duration,
    /// From the pause request to the files written (the guest's downtime,
    /// if it was running).
    pub total: Duration,
}

/// Reads vCPU `id`'s state on its own thread, with the VM-wide state
/// (`vm`) and the domain (`domain`) for vCPU 0.
pub fn capture(
    fd: &mut VcpuFd,
    id: u32,
    vm: Option<&VmFd>,
    domain: impl FnOnce() -> DomainPart,
) -> Result<VcpuCapture, SnapshotError> {
    let vcpu = super::vcpu_state::capture(fd, id)?;
    let vm = match vm {
        None => None,
        Some(vm) => {
            let clock = vm.get_clock().map_err(|e| SnapshotError::Kvm { what: "KVM_GET_CLOCK", source: e })?;
            // PIC master, slave, IOAPIC; none with a split irqchip (PVH).
            let irqchips = (0..3)
                .filter_map(|chip_id| {
                    let mut c = kvm_bindings::kvm_irqchip { chip_id, ..Default::default() };
                    vm.get_irqchip(&mut c).ok().map(|()| c)
                })
                .collect();
            Some(VmWide { clock, irqchips, domain: domain() })
        }
    };
    Ok(VcpuCapture { vcpu, vm })
}

/// The domain's state for the state file (on vCPU 0's thread, under the
/// domain lock, every vCPU parked).
pub fn domain_state(dom: &mut Domain) -> DomainPart {
    dom.save_state()
}

/// The store's state, with the guest connection's ring server (its
/// partial request, queued output and transactions).
pub(crate) fn store_state(store: &SharedStore, handler: &Mutex<crate::devices::StoreHandler>) -> StorePart {
    let mut state = store.save_state();
    handler.lock().unwrap_or_else(|p| p.into_inner()).save_into(&mut state);
    state
}

/// One snapshot for the writer thread.
struct WriteJob {
    dir: PathBuf,
    state: Box<SnapshotState>,
    ram: GuestRam,
    reply: Sender<Result<(u64, u64), SnapshotError>>,
}

/// The snapshot writer thread: creates the directory and writes the files,
/// under [`ThreadKind::Snapshot`](crate::seccomp::ThreadKind::Snapshot).
/// It ends when the last [`Snapshotter`] is dropped.
pub(crate) fn start_writer() -> std::io::Result<Sender<WriteJobHandle>> {
    let (tx, rx) = channel::<WriteJobHandle>();
    std::thread::Builder::new().name("snapshot".into()).spawn(move || {
        crate::seccomp::install_or_exit(crate::seccomp::ThreadKind::Snapshot);
        for WriteJobHandle(job) in rx {
            let r = write_files(&job.dir, &job.ram, *job.state);
            let _ = job.reply.send(r);
        }
    })?;
    Ok(tx)
}

/// A job in flight to the writer (opaque outside this module).
pub struct WriteJobHandle(WriteJob);

fn io(path: &Path) -> impl Fn(std::io::Error) -> SnapshotError + '_ {
    move |e| SnapshotError::Io { path: path.to_path_buf(), source: e }
}

/// Writes memory, then the state file (through a temporary name, so a
/// directory holds a state file only once its memory file is complete).
fn write_files(dir: &Path, ram: &GuestRam, mut state: SnapshotState) -> Result<(u64, u64), SnapshotError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let state_path = dir.join(STATE_FILE);
    match std::fs::remove_file(&state_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&state_path)(e)),
        _ => {}
    }
    state.memory_bytes = memory::save(ram, &dir.join(MEMORY_FILE))?;
    let bytes = format::encode(&state)?;
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, &state_path).map_err(io(&state_path))?;
    Ok((state.memory_bytes, bytes.len() as u64))
}

/// Takes snapshots of one VM (any thread may hold one: the work that
/// needs the vCPUs or files is sent to their threads).
#[derive(Clone)]
pub struct Snapshotter {
    pub(crate) config: SavedConfig,
    pub(crate) ram: GuestRam,
    pub(crate) grants: Arc<GrantTable>,
    pub(crate) store: SharedStore,
    pub(crate) store_handler: Arc<Mutex<crate::devices::StoreHandler>>,
    /// Each split device: type, back-end and front-end directory.
    pub(crate) devices: Vec<(String, String, String)>,
    pub(crate) virtio: Arc<crate::virtio_mmio_bus::VirtioBus>,
    pub(crate) writer: Sender<WriteJobHandle>,
}

impl Snapshotter {
    /// Pauses the VM (if it runs), snapshots it into `dir`, and resumes it
    /// if it was running. `control` is the VM's.
    pub fn snapshot(&self, control: &VmControl, dir: &Path) -> Result<SnapshotReport, SnapshotError> {
        let start = Instant::now();
        // A suspended guest stays suspended: its resume is the caller's.
        let was_paused = matches!(control.state(), RunState::Paused | RunState::Suspended);
        control.pause(VCPU_TIMEOUT)?;
        let pause = start.elapsed();
        let r = self.take(control, dir);
        if !was_paused {
            let _ = control.resume();
        }
        let (memory_bytes, state_bytes) = r?;
        Ok(SnapshotReport { dir: dir.to_path_buf(), memory_bytes, state_bytes, pause, total: start.elapsed() })
    }

    /// Xen's checkpoint (`xl save -c`): asks the guest to suspend
    /// itself ([`suspend_cooperatively`](crate::control::suspend_cooperatively),
    /// waiting up to `timeout`), snapshots it suspended (the state records
    /// which vCPU suspended: a restore resumes it as a new domain), then
    /// cancels the suspend here (the hypercall returns 1), so the source
    /// runs on with its connections. A guest that does not suspend in time
    /// is an error and runs on.
    pub fn snapshot_cooperatively(
        &self,
        control: &VmControl,
        dir: &Path,
        timeout: Duration,
    ) -> Result<SnapshotReport, SnapshotError> {
        use crate::control::{resume_suspended, suspend_cooperatively, Resume};
        use xen_domain::domid::GUEST_DOMID;
        suspend_cooperatively(control, &self.store, GUEST_DOMID, timeout)?;
        let r = self.snapshot(control, dir);
        // Cancelled whether or not the files were written: the source
        // always runs on (libxl's checkpoint resumes it either way).
        resume_suspended(control, &self.store, GUEST_DOMID, Resume::Cancelled, VCPU_TIMEOUT)?;
        r
    }

    /// The VM's state, memory aside, for a snapshot or a migration's
    /// last round: the VM must be paused ([`VmControl::pause`]). Waits for
    /// the devices to finish their in-flight requests first. Guest memory
    /// must be copied after this returns and before the VM resumes.
    pub fn capture(&self, control: &VmControl) -> Result<SnapshotState, SnapshotError> {
        devices::refuse_hotplugged(&self.store, &self.devices)?;
        let devices = devices::split_devices(&self.store, &self.devices);
        devices::drain(&self.grants, &devices, DRAIN_TIMEOUT)?;
        let (virtio_blk, virtio_net) = devices::drain_virtio(&self.virtio, DRAIN_TIMEOUT)?;
        let caps = control.snapshot_capture(VCPU_TIMEOUT).map_err(|e| match e {
            SnapshotAsk::Control(c) => SnapshotError::Control(c),
            other => SnapshotError::Unsupported(other.to_string()),
        })?;
        let vm =
            caps.iter().find_map(|c| c.vm.clone()).ok_or(SnapshotError::Unsupported("vCPU 0 did not answer".into()))?;
        Ok(SnapshotState {
            config: self.config.clone(),
            vcpus: caps.into_iter().map(|c| c.vcpu).collect(),
            vm,
            store: store_state(&self.store, &self.store_handler),
            devices,
            virtio_blk,
            virtio_net,
            memory_bytes: 0,
            suspended: control.suspended_vcpu().map(|vcpu| super::SuspendedAt { vcpu }),
        })
    }

    /// Guest RAM (a migration copies it).
    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }

    fn take(&self, control: &VmControl, dir: &Path) -> Result<(u64, u64), SnapshotError> {
        let state = self.capture(control)?;
        let (reply, answer) = channel();
        let job = WriteJob { dir: dir.to_path_buf(), state: Box::new(state), ram: self.ram.clone(), reply };
        self.writer
            .send(WriteJobHandle(job))
            .map_err(|_| SnapshotError::Unsupported("the snapshot writer thread has ended".into()))?;
        answer
            .recv_timeout(WRITE_TIMEOUT)
            .map_err(|_| SnapshotError::Unsupported("the snapshot writer did not answer".into()))?
    }
}
