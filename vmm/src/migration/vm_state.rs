//! The VM state a migration carries: the snapshot's state
//! ([`crate::snapshot::SnapshotState`]: every vCPU's KVM state, the KVM
//! clock and irqchip, the domain, the store, the split devices'
//! transports, the virtio queues) without its memory file, which the
//! stream replaces.

use super::VmState;
use crate::control::VmControl;
use crate::snapshot::{format, SnapshotState, Snapshotter};
use std::path::Path;
use std::sync::Arc;

/// Where errors about the state record say they are.
const STREAM: &str = "migration stream";

/// The snapshot code as a migration's [`VmState`].
pub struct SnapshotVmState {
    snap: Snapshotter,
    control: Arc<VmControl>,
    captured: Option<SnapshotState>,
}

impl SnapshotVmState {
    /// The state of the VM `snap` snapshots, whose vCPUs `control` reaches.
    pub fn new(snap: Snapshotter, control: Arc<VmControl>) -> Self {
        SnapshotVmState { snap, control, captured: None }
    }
}

impl VmState for SnapshotVmState {
    fn quiesce(&mut self) -> Result<(), String> {
        // As a snapshot does: refuses hot-plugged devices, waits until
        // every device has answered its in-flight requests, reads each
        // paused vCPU's state; memory is copied after this.
        self.captured = Some(self.snap.capture(&self.control).map_err(|e| e.to_string())?);
        Ok(())
    }

    fn save(&mut self) -> Result<Vec<u8>, String> {
        let state = self.captured.take().ok_or("the VM state was not captured")?;
        format::encode(&state).map_err(|e| e.to_string())
    }

    fn unquiesce(&mut self) {
        // Capturing stopped nothing: the devices serve again as soon as
        // the vCPUs run.
        self.captured = None;
    }
}

/// Restores a migrated VM's state record into `vm`, built from the
/// configuration the same stream brought, its memory received: checked
/// as a snapshot's state file is checked (format version, checksum,
/// consistency, the same configuration), then restored as a snapshot is.
pub fn restore(vm: &mut crate::Vm, record: &[u8]) -> Result<(), String> {
    if record == super::NO_STATE {
        return Err("the source sent no VM state (it was built without the snapshot code)".into());
    }
    let path = Path::new(STREAM);
    let state: SnapshotState = format::decode(path, record).map_err(|e| e.to_string())?;
    crate::snapshot::restore::check(path, &state).map_err(|e| e.to_string())?;
    if vm.saved_config != state.config {
        return Err("the VM state is not the configuration's (the stream mixes two VMs)".into());
    }
    // Memory is in place already (the pre-copy rounds wrote it).
    crate::snapshot::restore::restore_with_memory(vm, &state, |_| Ok(0)).map(drop).map_err(|e| e.to_string())
}
