//! A virtio-mmio transport's state for a snapshot: the registers the
//! driver set and each queue's addresses and indices (`virtio_queue`'s
//! `QueueState`). The rings themselves are in guest memory. Restoring
//! checks the state as the register writes that made it were checked (a
//! tampered state is an error, never a panic) and activates the device
//! again if the driver had (`DRIVER_OK`).

use super::{MmioTransport, QueueError};
use crate::virtio::VirtioDevice;
use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState, QueueT};
use vm_memory::{Bytes, GuestAddress};

/// One queue (`virtio_queue::QueueState`, field by field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSave {
    /// The device's maximum size.
    pub max_size: u16,
    /// The next available-ring entry the device takes.
    pub next_avail: u16,
    /// The next used-ring entry the device fills.
    pub next_used: u16,
    /// `VIRTIO_RING_F_EVENT_IDX` in use.
    pub event_idx: bool,
    /// The size the driver chose.
    pub size: u16,
    /// `QueueReady`.
    pub ready: bool,
    /// Descriptor table, available and used ring addresses.
    pub rings: [u64; 3],
}

/// The transport's registers and queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportState {
    /// The device id (checked against the restoring device).
    pub device_id: u32,
    /// `Status`.
    pub status: u32,
    /// `DeviceFeaturesSel`, `DriverFeaturesSel`, `QueueSel`.
    pub sels: [u32; 3],
    /// The features the driver acknowledged.
    pub driver_features: u64,
    /// `InterruptStatus`.
    pub interrupt_status: u32,
    /// `ConfigGeneration`.
    pub config_generation: u32,
    /// The queues.
    pub queues: Vec<QueueSave>,
}

/// Why a transport state cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum TransportStateError {
    /// Another device type or queue count.
    #[error("virtio state for device {saved_id} with {saved_queues} queues, the device is {id} with {queues}")]
    Device {
        /// Saved device id.
        saved_id: u32,
        /// Saved queue count.
        saved_queues: usize,
        /// This device's id.
        id: u32,
        /// Its queue count.
        queues: usize,
    },
    /// Features the device does not offer.
    #[error("virtio driver features {0:#x} not offered by the device")]
    Features(u64),
    /// A queue the checks refuse.
    #[error("virtio queue {0}: {1}")]
    Queue(usize, String),
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// The transport's state (the device thread must not be processing:
    /// take it under the transport's lock).
    pub fn save_state(&self) -> TransportState {
        let queues = (self.queues.iter())
            .map(|q| {
                let s = q.state();
                QueueSave {
                    max_size: s.max_size,
                    next_avail: s.next_avail,
                    next_used: s.next_used,
                    event_idx: s.event_idx_enabled,
                    size: s.size,
                    ready: s.ready,
                    rings: [s.desc_table, s.avail_ring, s.used_ring],
                }
            })
            .collect();
        TransportState {
            device_id: self.dev.device_id(),
            status: self.status,
            sels: [self.device_features_sel, self.driver_features_sel, self.queue_sel],
            driver_features: self.driver_features,
            interrupt_status: self.interrupt_status,
            config_generation: self.config_generation,
            queues,
        }
    }

    /// Whether every ready queue's available entries have all been taken
    /// (the guest's `avail.idx` equals the device's `next_avail`): then
    /// no request is half done (the device answers each chain it takes
    /// before the lock is released).
    pub fn idle(&self) -> bool {
        self.idle_queues(|_| true)
    }

    /// [`idle`](Self::idle) for the queues `which` selects (a network
    /// device's receive queue holds posted buffers the device takes only
    /// when a frame arrives, and uses at once: it is never waited for).
    pub fn idle_queues(&self, which: impl Fn(usize) -> bool) -> bool {
        self.queues.iter().enumerate().filter(|(i, q)| which(*i) && q.ready()).all(|(_, q)| {
            let idx = self.mem.read_obj::<u16>(GuestAddress(q.avail_ring() + 2));
            idx.is_ok_and(|i| i == q.next_avail())
        })
    }

    /// Puts `s` into this freshly built transport (same device), the
    /// guest's memory already restored.
    pub fn restore_state(&mut self, s: &TransportState) -> Result<(), TransportStateError> {
        let (id, n) = (self.dev.device_id(), self.queues.len());
        if s.device_id != id || s.queues.len() != n {
            return Err(TransportStateError::Device {
                saved_id: s.device_id,
                saved_queues: s.queues.len(),
                id,
                queues: n,
            });
        }
        if s.driver_features & !self.dev.features() != 0 {
            return Err(TransportStateError::Features(s.driver_features));
        }
        let mut queues = Vec::with_capacity(n);
        for (i, (q, mine)) in s.queues.iter().zip(&self.queues).enumerate() {
            let bad = |why: String| TransportStateError::Queue(i, why);
            if q.max_size != mine.max_size() {
                return Err(bad(format!("max size {} (the device's is {})", q.max_size, mine.max_size())));
            }
            let state = QueueState {
                max_size: q.max_size,
                next_avail: q.next_avail,
                next_used: q.next_used,
                event_idx_enabled: q.event_idx,
                size: q.size,
                ready: q.ready,
                desc_table: q.rings[0],
                avail_ring: q.rings[1],
                used_ring: q.rings[2],
            };
            queues.push(Queue::try_from(state).map_err(|e| bad(format!("{e:?}")))?);
        }
        let old = std::mem::replace(&mut self.queues, queues);
        for (i, q) in s.queues.iter().enumerate() {
            if let Err(e) = q.ready.then(|| self.check_rings(i)).transpose() {
                self.queues = old;
                return Err(TransportStateError::Queue(i, queue_error(e)));
            }
        }
        self.status = s.status;
        [self.device_features_sel, self.driver_features_sel, self.queue_sel] = s.sels;
        self.driver_features = s.driver_features;
        self.interrupt_status = s.interrupt_status;
        self.config_generation = s.config_generation;
        if self.status & virtio_bindings::virtio_config::VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            self.dev.activate(self.driver_features);
        }
        Ok(())
    }
}

fn queue_error(e: QueueError) -> String {
    format!("{e}")
}
