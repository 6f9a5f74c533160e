//! The VM state a migration carries: the snapshot's state
//! ([`crate::snapshot::SnapshotState`]: every vCPU's KVM state, the KVM
//! clock and irqchip, the domain, the store, the split devices'
//! transports) without its memory file, which the stream replaces.

use super::VmState;
use crate::control::{SnapshotAsk, VmControl};
use crate::snapshot::{devices, format, SnapshotState, Snapshotter};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long the devices have to answer their in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the paused vCPUs have to read their state.
const VCPU_TIMEOUT: Duration = Duration::from_secs(5);

/// Where errors about the state record say they are.
const STREAM: &str = "migration stream";

/// The snapshot code as a migration's [`VmState`].
pub struct SnapshotVmState {
    snap: Snapshotter,
    control: Arc<VmControl>,
    devices: Vec<devices::SplitDevice>,
    virtio_blk: Vec<backend::virtio::mmio::TransportState>,
}

impl SnapshotVmState {
    /// The state of the VM `snap` snapshots, whose vCPUs `control` reaches.
    pub fn new(snap: Snapshotter, control: Arc<VmControl>) -> Self {
        SnapshotVmState { snap, control, devices: Vec::new(), virtio_blk: Vec::new() }
    }
}

impl VmState for SnapshotVmState {
    fn quiesce(&mut self) -> Result<(), String> {
        if !self.snap.virtio.net.is_empty() {
            return Err("the VM has a virtio-net device, whose state is not saved yet: use a Xen vif".into());
        }
        // As a snapshot: every split device's ring and every virtio-blk
        // queue answers what it has.
        let split = devices::split_devices(&self.snap.store, &self.snap.devices);
        devices::drain(&self.snap.grants, &split, DRAIN_TIMEOUT).map_err(|e| e.to_string())?;
        self.virtio_blk = devices::drain_virtio(&self.snap.virtio, DRAIN_TIMEOUT).map_err(|e| e.to_string())?;
        self.devices = split;
        Ok(())
    }

    fn save(&mut self) -> Result<Vec<u8>, String> {
        let caps = self.control.snapshot_capture(VCPU_TIMEOUT).map_err(|e: SnapshotAsk| e.to_string())?;
        let vm = caps.iter().find_map(|c| c.vm.clone()).ok_or("vCPU 0 did not answer")?;
        let state = SnapshotState {
            config: self.snap.config.clone(),
            vcpus: caps.into_iter().map(|c| c.vcpu).collect(),
            vm,
            store: crate::snapshot::save::store_state(&self.snap.store, &self.snap.store_handler),
            devices: std::mem::take(&mut self.devices),
            virtio_blk: std::mem::take(&mut self.virtio_blk),
            memory_bytes: 0,
        };
        format::encode(&state).map_err(|e| e.to_string())
    }

    fn unquiesce(&mut self) {
        // Draining stopped nothing: the devices serve again as soon as
        // the vCPUs run.
        self.devices.clear();
        self.virtio_blk.clear();
    }
}

/// Receives a migrated VM into `vm`, built from the configuration the same
/// stream brought: `receive` fills guest RAM and returns the state record,
/// which is then checked as a snapshot's state file is checked (format
/// version, checksum, consistency, the same configuration) and restored.
/// The console is held throughout, as a snapshot restore holds it (input
/// written to the fresh ring is taken back and written again after).
pub fn receive_into(
    vm: &mut crate::Vm,
    receive: impl FnOnce(&crate::memory::GuestRam) -> Result<Vec<u8>, String>,
) -> Result<(), String> {
    let console = vm.console.clone();
    let mut console = console.lock().unwrap_or_else(|p| p.into_inner());
    console.reclaim_input();
    let record = receive(&vm.dom.ram)?;
    if record == super::NO_STATE {
        return Err("the source sent no VM state (it was built without the snapshot code)".into());
    }
    let path = Path::new(STREAM);
    let state: SnapshotState = format::decode(path, &record).map_err(|e| e.to_string())?;
    crate::snapshot::restore::check(path, &state).map_err(|e| e.to_string())?;
    if vm.saved_config != state.config {
        return Err("the VM state is not the configuration's (the stream mixes two VMs)".into());
    }
    crate::snapshot::restore::restore_state(vm, &state, &mut console).map_err(|e| e.to_string())
}
