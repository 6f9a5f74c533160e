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
}

impl SnapshotVmState {
    /// The state of the VM `snap` snapshots, whose vCPUs `control` reaches.
    pub fn new(snap: Snapshotter, control: Arc<VmControl>) -> Self {
        SnapshotVmState { snap, control, devices: Vec::new() }
    }
}

impl VmState for SnapshotVmState {
    fn quiesce(&mut self) -> Result<(), String> {
        if self.snap.virtio != 0 {
            return Err(
                "the VM has virtio devices, whose queue state is not saved yet: use Xen devices (transport=xen)".into(),
            );
        }
        // As a snapshot: every split device's ring answers what it has.
        let split = devices::split_devices(&self.snap.store, &self.snap.devices);
        devices::drain(&self.snap.grants, &split, DRAIN_TIMEOUT).map_err(|e| e.to_string())?;
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
            memory_bytes: 0,
        };
        format::encode(&state).map_err(|e| e.to_string())
    }

    fn unquiesce(&mut self) {
        // Draining stopped nothing: the devices serve again as soon as
        // the vCPUs run.
        self.devices.clear();
    }
}

/// Loads a state record into `vm`, built from the configuration the same
/// stream brought, its memory received: checks it as a snapshot's state
/// file is checked (format version, checksum, consistency, the same
/// configuration), then restores it.
pub fn restore(vm: &mut crate::Vm, record: &[u8]) -> Result<(), String> {
    let path = Path::new(STREAM);
    let state: SnapshotState = format::decode(path, record).map_err(|e| e.to_string())?;
    crate::snapshot::restore::check(path, &state).map_err(|e| e.to_string())?;
    if vm.saved_config != state.config {
        return Err("the VM state is not the configuration's (the stream mixes two VMs)".into());
    }
    crate::snapshot::restore::restore_state(vm, &state).map_err(|e| e.to_string())
}
