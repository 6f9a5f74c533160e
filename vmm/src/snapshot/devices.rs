//! The devices' part of a snapshot, and waiting for them to go idle.
//!
//! A split (Xen) device's transport state is its store directories (the
//! front end's `ring-ref`s and `event-channel`, both sides' `state`), its
//! shared rings (in guest memory) and the back end's private ring indices.
//! The first two are saved with the store and memory; the third is not
//! saved at all: a snapshot is taken only when every request on a ring
//! has its response (`rsp_prod == req_prod`, [`drain`]), so at restore the
//! back end re-attaches at the shared ring's `rsp_prod` (Xen's
//! `BACK_RING_ATTACH`, `ring_buffers::BackRing::attach`) and finds the
//! state it left. A network front end's posted receive buffers stay posted
//! (their requests have no response until a packet arrives) and are used
//! after restore.

use super::SnapshotError;
use pv_store::SharedStore;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xen_domain::grant_table::GrantTable;

/// The domain's state (`xen_domain::snapshot`).
pub type DomainPart = xen_domain::snapshot::DomainState;

/// The store's state with the guest connection's server side
/// (`pv_store::snapshot`).
pub type StorePart = pv_store::snapshot::StoreState;

/// What a snapshot records of one split device (for checking it against
/// the rebuilt VM at restore, and for the reader of the state file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitDevice {
    /// Device type (`vbd`, `vif`, `echo`).
    pub device_type: String,
    /// Back-end directory.
    pub back: String,
    /// Front-end directory.
    pub front: String,
    /// The back end's xenbus state then.
    pub state: Option<String>,
    /// The rings it serves (`ring-ref`, or `tx-ring-ref` and
    /// `rx-ring-ref`) and the front end's `event-channel`.
    pub rings: Vec<(String, u32)>,
    /// The front end's event channel.
    pub event_channel: Option<u32>,
}

/// Front-end keys naming a ring whose requests all get a response
/// promptly: these must be drained. (`rx-ring-ref` is not: its requests
/// are posted buffers waiting for packets.)
const DRAINED_RINGS: &[&str] = &["ring-ref", "tx-ring-ref"];
const ALL_RINGS: &[&str] = &["ring-ref", "tx-ring-ref", "rx-ring-ref"];

fn read_u32(store: &SharedStore, path: &str) -> Option<u32> {
    let v = store.read(path).ok()?;
    std::str::from_utf8(&v).ok()?.trim().parse().ok()
}

/// Records each split device `(type, back, front)`.
pub fn split_devices(store: &SharedStore, devices: &[(String, String, String)]) -> Vec<SplitDevice> {
    devices
        .iter()
        .map(|(t, back, front)| SplitDevice {
            device_type: t.clone(),
            back: back.clone(),
            front: front.clone(),
            state: store.read(&format!("{back}/state")).ok().map(|v| String::from_utf8_lossy(&v).into_owned()),
            rings: ALL_RINGS
                .iter()
                .filter_map(|k| read_u32(store, &format!("{front}/{k}")).map(|r| ((*k).to_string(), r)))
                .collect(),
            event_channel: read_u32(store, &format!("{front}/event-channel")),
        })
        .collect()
}

/// `(req_prod, rsp_prod)` of the shared ring granted as `gref` (the first
/// and third words of Xen's `struct <name>_sring`).
fn ring_indices(grants: &GrantTable, gref: u32) -> Option<(u32, u32)> {
    let m = grants.map_scoped(gref, false).ok()?;
    let mut w = [0u32; 3];
    m.read_pod(0, &mut w).ok()?;
    Some((w[0], w[2]))
}

/// Waits until every connected split device has answered every request
/// on its rings, up to `timeout`. The vCPUs must be paused (nothing new
/// is queued); the back ends run on their own threads and finish.
pub fn drain(grants: &Arc<GrantTable>, devices: &[SplitDevice], timeout: Duration) -> Result<(), SnapshotError> {
    let end = Instant::now() + timeout;
    for d in devices.iter().filter(|d| d.state.as_deref() == Some("4")) {
        for (key, gref) in d.rings.iter().filter(|(k, _)| DRAINED_RINGS.contains(&k.as_str())) {
            loop {
                match ring_indices(grants, *gref) {
                    // A ring the back end cannot map is not served: nothing in flight.
                    None => break,
                    Some((req, rsp)) if req == rsp => break,
                    Some(_) if Instant::now() >= end => {
                        return Err(SnapshotError::Drain(format!("{} ({key})", d.back)))
                    }
                    Some(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        }
    }
    Ok(())
}

/// Checks that the rebuilt VM has the split devices the snapshot had, at
/// the same store directories (the configuration is the same, so they
/// are, unless the state file was edited).
pub fn check_devices(pv: &crate::devices::PvDevices, saved: &[SplitDevice]) -> Result<(), SnapshotError> {
    for d in saved {
        if !pv.iter().any(|w| w.paths.back == d.back && w.paths.front == d.front) {
            return Err(SnapshotError::State {
                what: "device",
                why: format!("{} is not in the VM built from the snapshot's configuration", d.back),
            });
        }
    }
    Ok(())
}

/// Makes each connected split back end re-attach: the restored store
/// says both ends are connected, the back end (built fresh) is not, and
/// the front end's `state` node, written again with its value, fires the
/// back end's watch: it binds the restored port
/// (`EventChannels::reattach`) and maps its rings at their indices.
pub fn reconnect(store: &SharedStore, devices: &[SplitDevice]) {
    for d in devices {
        let path = format!("{}/state", d.front);
        if let Ok(v) = store.read(&path) {
            if let Err(e) = store.write(&path, &v) {
                tracing::warn!(device = %d.front, "cannot re-announce the front end's state: {e}");
            }
        }
    }
}

/// Waits until every virtio-blk queue's available entries were all taken
/// (each is answered before the transport's lock is released), then
/// returns each transport's state, read under its lock.
pub fn drain_virtio(
    bus: &crate::virtio_mmio_bus::VirtioBus,
    timeout: Duration,
) -> Result<Vec<backend::virtio::mmio::TransportState>, SnapshotError> {
    let end = Instant::now() + timeout;
    let mut out = Vec::with_capacity(bus.blk.len());
    for (i, blk) in bus.blk.iter().enumerate() {
        loop {
            let t = blk.lock().unwrap_or_else(|p| p.into_inner());
            if t.idle() {
                out.push(t.save_state());
                break;
            }
            drop(t);
            if Instant::now() >= end {
                return Err(SnapshotError::Drain(format!("virtio-blk{i}")));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(out)
}

/// Puts each virtio-blk transport's saved state back.
pub fn restore_virtio(
    bus: &crate::virtio_mmio_bus::VirtioBus,
    saved: &[backend::virtio::mmio::TransportState],
) -> Result<(), SnapshotError> {
    if saved.len() != bus.blk.len() || !bus.net.is_empty() {
        return Err(SnapshotError::State {
            what: "virtio",
            why: "the virtio devices differ from the snapshot's".into(),
        });
    }
    for (blk, s) in bus.blk.iter().zip(saved) {
        let mut t = blk.lock().unwrap_or_else(|p| p.into_inner());
        t.restore_state(s).map_err(|e| SnapshotError::State { what: "virtio", why: e.to_string() })?;
    }
    Ok(())
}
