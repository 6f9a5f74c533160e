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
use backend::virtio::mmio::TransportState;
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

/// A snapshot carries the VM's configuration, which lists the devices it
/// was started with: a device hot-plugged since (a back-end directory
/// none of `devices` has) would come back in the store without its back
/// end, so such a VM is refused until it is removed.
pub fn refuse_hotplugged(store: &SharedStore, devices: &[(String, String, String)]) -> Result<(), SnapshotError> {
    let guest = xen_domain::domid::GUEST_DOMID;
    for kind in ["vbd", "vif"] {
        let dir = format!("/local/domain/0/backend/{kind}/{guest}");
        for id in store.directory(&dir).unwrap_or_default() {
            let back = format!("{dir}/{id}");
            if !devices.iter().any(|(_, b, _)| *b == back) {
                return Err(SnapshotError::Unsupported(format!(
                    "{back} was hot-plugged and is not saved: remove it first (vmm ctl remove-device {kind}/{id})"
                )));
            }
        }
    }
    Ok(())
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

/// Waits until every virtio-blk queue's and every virtio-net transmit
/// queue's available entries were all taken (each is answered before the
/// transport's lock is released; a receive queue's posted buffers stay
/// posted), then returns each transport's state, read under its lock:
/// the disks', then the network devices'.
pub fn drain_virtio(
    bus: &crate::virtio_mmio_bus::VirtioBus,
    timeout: Duration,
) -> Result<(Vec<TransportState>, Vec<TransportState>), SnapshotError> {
    let end = Instant::now() + timeout;
    let blk = (bus.blk.iter().enumerate())
        .map(|(i, t)| drain_one(t, |_| true, end, || format!("virtio-blk{i}")))
        .collect::<Result<_, _>>()?;
    // virtio 1.x 5.1.2: queue 0 receives, queue 1 transmits.
    let net = (bus.net.iter().enumerate())
        .map(|(i, t)| drain_one(t, |q| q == 1, end, || format!("virtio-net{i}")))
        .collect::<Result<_, _>>()?;
    Ok((blk, net))
}

fn drain_one<D: backend::virtio::VirtioDevice>(
    t: &std::sync::Mutex<backend::virtio::mmio::MmioTransport<D>>,
    which: impl Fn(usize) -> bool + Copy,
    end: Instant,
    name: impl Fn() -> String,
) -> Result<TransportState, SnapshotError> {
    loop {
        let t = t.lock().unwrap_or_else(|p| p.into_inner());
        if t.idle_queues(which) {
            return Ok(t.save_state());
        }
        drop(t);
        if Instant::now() >= end {
            return Err(SnapshotError::Drain(name()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Puts each virtio transport's saved state back (disks, then network
/// devices, in device order).
pub fn restore_virtio(
    bus: &crate::virtio_mmio_bus::VirtioBus,
    blk: &[TransportState],
    net: &[TransportState],
) -> Result<(), SnapshotError> {
    if blk.len() != bus.blk.len() || net.len() != bus.net.len() {
        return Err(SnapshotError::State {
            what: "virtio",
            why: "the virtio devices differ from the snapshot's".into(),
        });
    }
    let bad =
        |e: backend::virtio::mmio::TransportStateError| SnapshotError::State { what: "virtio", why: e.to_string() };
    for (t, s) in bus.blk.iter().zip(blk) {
        t.lock().unwrap_or_else(|p| p.into_inner()).restore_state(s).map_err(bad)?;
    }
    for (t, s) in bus.net.iter().zip(net) {
        t.lock().unwrap_or_else(|p| p.into_inner()).restore_state(s).map_err(bad)?;
    }
    Ok(())
}
