//! virtio-mmio devices in the VM.
//!
//! Each device gets a page of guest-physical space in the MMIO hole
//! (`pv_abi::virtio::mmio_base`). Register reads and writes exit to the
//! VMM and are handled on the vCPU thread ([`VirtioBus::read`],
//! [`VirtioBus::write`]: cheap, no I/O). A `QueueNotify` write is matched
//! in the kernel by one ioeventfd per queue (datamatch = queue index), so
//! it wakes the device thread with no exit to the VMM; the device
//! interrupts the guest through an irqfd routed as an MSI to the device's
//! vector. The guest learns base, size and vector from start-info.

use crate::devices::Subscriber;
use crate::error::VmmError;
use crate::kvm_platform::{msi_route, UPCALL_GSI};
use backend::block::Disk;
use backend::net::NetSpec;
use backend::virtio::blk::VirtioBlk;
use backend::virtio::net::VirtioNet;
use backend::virtio::{Action, MmioDevice, MmioTransport, VirtioMetrics};
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use kvm_ioctls::{IoEventAddress, VmFd};
use pv_abi::virtio::VIRTIO_VECTOR_BASE;
use pv_abi::virtio::{mmio_base, VirtioMmioDevice, MAX_VIRTIO_DEVICES, VIRTIO_MMIO_BASE, VIRTIO_MMIO_SIZE};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use virtio_bindings::virtio_mmio::VIRTIO_MMIO_QUEUE_NOTIFY;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// A device thread to start: its name and subscribers.
pub type DeviceThreadSpec = (String, Vec<Subscriber>);

/// GSI of the first virtio device (after the event-channel upcall's).
pub const VIRTIO_GSI_BASE: u32 = UPCALL_GSI + 1;

/// The MAC virtio-net interface `i` gets when none is given (apart from
/// the Xen interfaces' defaults): `02:00:00:00:01:<i + 1>`.
pub fn default_virtio_mac(i: usize) -> [u8; 6] {
    NetSpec::default_mac(0x100 + i as u32)
}

/// Opens the TAP devices of the virtio-net interfaces (before KVM is
/// touched, so a bad one fails fast).
pub fn open_nets(specs: &[NetSpec]) -> Result<Vec<VirtioNet>, VmmError> {
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let tap = backend::net::tap::Tap::open(&spec.tap).map_err(VmmError::device("net"))?;
            Ok(VirtioNet::new(Box::new(tap), spec.mac.unwrap_or(default_virtio_mac(i))))
        })
        .collect()
}

/// Raises one device's interrupt: signals its irqfd.
struct IrqFd(EventFd);

impl backend::Notify for IrqFd {
    fn notify(&self) {
        if let Err(e) = self.0.write(1) {
            tracing::warn!("virtio: cannot signal the irqfd: {e}");
        }
    }
}

/// One device on the bus.
struct Slot {
    dev: Arc<Mutex<dyn MmioDevice>>,
    queue_fds: Vec<Arc<EventFd>>,
}

/// The virtio-mmio devices of a VM, by address.
#[derive(Default)]
pub struct VirtioBus {
    slots: Vec<Slot>,
    /// The start-info entries, in device order.
    pub entries: Vec<VirtioMmioDevice>,
    /// The block devices, in `--disk ...,transport=virtio` order.
    pub blk: Vec<Arc<Mutex<MmioTransport<VirtioBlk>>>>,
    /// The network devices, in `--net ...,transport=virtio` order.
    pub net: Vec<Arc<Mutex<MmioTransport<VirtioNet>>>>,
}

impl std::fmt::Debug for VirtioBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioBus").field("devices", &self.entries).finish()
    }
}

impl VirtioBus {
    /// The device and offset of a guest-physical address on the bus.
    fn slot(&self, addr: u64) -> Option<(&Slot, u64)> {
        let rel = addr.checked_sub(VIRTIO_MMIO_BASE)?;
        let slot = self.slots.get((rel / VIRTIO_MMIO_SIZE) as usize)?;
        Some((slot, rel % VIRTIO_MMIO_SIZE))
    }

    /// Whether `addr` is a register of a device on the bus.
    pub fn contains(&self, addr: u64) -> bool {
        self.slot(addr).is_some()
    }

    /// An MMIO read exit.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        match self.slot(addr) {
            Some((s, off)) => lock(&s.dev).mmio_read(off, data),
            None => data.fill(0xff),
        }
    }

    /// An MMIO write exit (a `QueueNotify` no ioeventfd took is forwarded
    /// to the device thread).
    pub fn write(&self, addr: u64, data: &[u8]) {
        let Some((s, off)) = self.slot(addr) else { return };
        if let Action::Notify(q) = lock(&s.dev).mmio_write(off, data) {
            if let Some(fd) = s.queue_fds.get(q as usize) {
                let _ = fd.write(1);
            }
        }
    }

    /// Device `i`'s counters.
    pub fn counters(&self, i: usize) -> Option<Arc<VirtioMetrics>> {
        self.slots.get(i).map(|s| lock(&s.dev).counters())
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Builds the virtio devices: one virtio-blk per disk, then one
/// virtio-net per interface. Returns the bus and one device thread (name,
/// subscribers) per device.
pub fn build(
    vm: &VmFd,
    platform: &crate::kvm_platform::KvmPlatform,
    mem: &GuestMemoryMmap,
    usable: Range<u64>,
    disks: Vec<Disk>,
    nets: Vec<VirtioNet>,
) -> Result<(VirtioBus, Vec<DeviceThreadSpec>), VmmError> {
    let mut bus = VirtioBus::default();
    let mut threads = Vec::new();
    if disks.len() + nets.len() > MAX_VIRTIO_DEVICES {
        return Err(VmmError::Device { what: "virtio", why: format!("at most {MAX_VIRTIO_DEVICES} devices") });
    }
    let mut routes = Vec::new();
    for (i, disk) in disks.into_iter().enumerate() {
        let serial = format!("pv-kvm-vd{}", (b'a' + i as u8) as char);
        let irq = irqfd(vm, i, &mut routes)?;
        let usable = usable.clone();
        let blk = VirtioBlk::new(Arc::new(disk), &serial, Arc::default());
        let t = Arc::new(Mutex::new(MmioTransport::new(blk, mem.clone(), usable, irq)));
        bus.blk.push(t.clone());
        threads.push((format!("virtio-blk{i}"), attach(vm, &mut bus, i, t, pv_abi::virtio::device_id::BLOCK)?));
    }
    for (n, net) in nets.into_iter().enumerate() {
        let i = bus.len();
        let irq = irqfd(vm, i, &mut routes)?;
        let t = Arc::new(Mutex::new(MmioTransport::new(net, mem.clone(), usable.clone(), irq)));
        bus.net.push(t.clone());
        threads.push((format!("virtio-net{n}"), attach(vm, &mut bus, i, t, pv_abi::virtio::device_id::NET)?));
    }
    if !routes.is_empty() {
        // The platform keeps them: a later upcall-vector change re-installs them.
        platform.add_device_routes(&routes)?;
    }
    Ok((bus, threads))
}

fn irqfd(vm: &VmFd, i: usize, routes: &mut Vec<kvm_bindings::kvm_irq_routing_entry>) -> Result<Arc<IrqFd>, VmmError> {
    let gsi = VIRTIO_GSI_BASE + i as u32;
    routes.push(msi_route(gsi, VIRTIO_VECTOR_BASE as u32 + i as u32));
    let fd = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| VmmError::Io("eventfd", e))?;
    vm.register_irqfd(&fd, gsi).map_err(VmmError::kvm("KVM_IRQFD"))?;
    Ok(Arc::new(IrqFd(fd)))
}

/// Puts device `i` on the bus: its start-info entry, and one ioeventfd and
/// one device-thread subscriber per queue.
fn attach(
    vm: &VmFd,
    bus: &mut VirtioBus,
    i: usize,
    dev: Arc<Mutex<dyn MmioDevice>>,
    device_id: u32,
) -> Result<Vec<Subscriber>, VmmError> {
    let base = mmio_base(i);
    let mut subs: Vec<Subscriber> = Vec::new();
    let mut queue_fds = Vec::new();
    for q in 0..lock(&dev).num_queues() {
        let fd = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(|e| VmmError::Io("eventfd", e))?);
        let at = IoEventAddress::Mmio(base + VIRTIO_MMIO_QUEUE_NOTIFY as u64);
        vm.register_ioevent(&fd, &at, q as u32).map_err(VmmError::kvm("KVM_IOEVENTFD"))?;
        subs.push(Arc::new(Mutex::new(QueueHandler { dev: dev.clone(), q: q as u16, fd: fd.clone() })));
        queue_fds.push(fd);
    }
    if let Some(fd) = lock(&dev).event_fd() {
        subs.push(Arc::new(Mutex::new(EventHandler { dev: dev.clone(), fd })));
    }
    bus.entries.push(VirtioMmioDevice {
        base,
        size: VIRTIO_MMIO_SIZE,
        device_id,
        vector: VIRTIO_VECTOR_BASE as u32 + i as u32,
        gsi: VIRTIO_GSI_BASE + i as u32,
        _pad: 0,
    });
    bus.slots.push(Slot { dev, queue_fds });
    Ok(subs)
}

/// Runs one queue when its ioeventfd fires.
struct QueueHandler {
    dev: Arc<Mutex<dyn MmioDevice>>,
    q: u16,
    fd: Arc<EventFd>,
}

impl MutEventSubscriber for QueueHandler {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.event_set().contains(EventSet::IN) {
            let _ = self.fd.read();
            if lock(&self.dev).process_queue(self.q) {
                // Budget spent: come back after the other devices had a turn.
                let _ = self.fd.write(1);
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&*self.fd, EventSet::IN)) {
            tracing::error!("virtio: cannot watch queue {}'s eventfd: {e}", self.q);
        }
    }
}

/// Runs a device's own work when its descriptor (a network port) is
/// readable. The descriptor is level-triggered: work left over brings the
/// thread back after the other subscribers had a turn.
struct EventHandler {
    dev: Arc<Mutex<dyn MmioDevice>>,
    fd: std::os::fd::RawFd,
}

impl MutEventSubscriber for EventHandler {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.event_set().contains(EventSet::IN) {
            lock(&self.dev).process_event();
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new_raw(self.fd, EventSet::IN)) {
            tracing::error!("virtio: cannot watch the device's descriptor: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtio_macs_differ_from_xen_ones() {
        assert_ne!(default_virtio_mac(0), NetSpec::default_mac(0));
    }
}
