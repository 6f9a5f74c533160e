//! One virtio-mmio register block (virtio 1.x, section 4.2.2, version 2)
//! and its status machine.

mod state;

pub use state::{QueueSave, TransportState, TransportStateError};

use super::{chain, Chain, ChainSource, VirtioDevice};
use crate::Notify;
use pv_util::ratelimit::LogLimiter;
use std::ops::Range;
use std::os::fd::RawFd;
use std::sync::Arc;
use virtio_bindings::virtio_config::*;
use virtio_bindings::virtio_mmio::*;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

/// `MagicValue`: "virt" in little-endian.
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// `Version`: the virtio 1.x register layout.
pub const MMIO_VERSION: u32 = 2;
/// `VendorID` this VMM reports ("PVKV").
pub const VENDOR_ID: u32 = 0x564b_5650;

/// Chains handled per wake-up before the device yields its thread. The
/// device lock is held while they run, and the vCPU thread takes it for
/// each register access, so this also bounds how long a register access
/// can wait behind disk I/O.
const BUDGET: usize = 64;

pv_util::device_metrics!(
    /// Transport counters of one virtio device (shared, read by `--stats`
    /// and the bench without taking the device lock).
    pub struct VirtioMetrics {
        /// Queue notifications handled (guest -> device wake-ups).
        kicks,
        /// Interrupts raised (device -> guest).
        notifies,
        /// Chains completed (including refused ones).
        chains,
        /// Chains refused by [`chain::check`].
        bad_chains,
        /// Times the device set `DEVICE_NEEDS_RESET`.
        needs_reset,
        /// Register accesses (MMIO exits that reached the VMM).
        register_accesses,
    }
);

/// What the VMM must do after a register write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Wake the device thread for this queue (a `QueueNotify` write that no
    /// ioeventfd took).
    Notify(u16),
}

/// A virtio-mmio device: registers, queues and the device behind them.
pub struct MmioTransport<D> {
    dev: D,
    mem: GuestMemoryMmap,
    usable: Range<u64>,
    irq: Arc<dyn Notify>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<Queue>,
    interrupt_status: u32,
    config_generation: u32,
    log: LogLimiter,
    counters: Arc<VirtioMetrics>,
}

impl<D> std::fmt::Debug for MmioTransport<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport").field("status", &self.status).field("queues", &self.queues.len()).finish()
    }
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// A device over guest memory `mem`, allowed to touch only the
    /// guest-physical range `usable` (rings and buffers), interrupting
    /// through `irq`.
    pub fn new(dev: D, mem: GuestMemoryMmap, usable: Range<u64>, irq: Arc<dyn Notify>) -> Self {
        let queues = dev.queue_max_sizes().iter().map(|&m| Queue::new(m).unwrap_or_else(|_| empty_queue())).collect();
        MmioTransport {
            dev,
            mem,
            usable,
            irq,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues,
            interrupt_status: 0,
            config_generation: 0,
            log: LogLimiter::default(),
            counters: Arc::new(VirtioMetrics::default()),
        }
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// The shared counters.
    pub fn counters(&self) -> Arc<VirtioMetrics> {
        self.counters.clone()
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The features the driver acknowledged.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// Number of queues.
    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    fn warn(&mut self, what: &str) {
        pv_util::limited_warn!(self.log, device = self.dev.device_id(), status = self.status, "virtio: {what}");
    }

    /// Marks the device broken until the driver resets it (virtio 1.x
    /// 2.1.1: `DEVICE_NEEDS_RESET` and a configuration change interrupt).
    pub fn needs_reset(&mut self, why: &str) {
        self.warn(&format!("{why}; device needs reset"));
        if self.status & VIRTIO_CONFIG_S_NEEDS_RESET == 0 {
            self.counters.needs_reset.inc();
            self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
            self.interrupt(VIRTIO_MMIO_INT_CONFIG);
        }
    }

    fn interrupt(&mut self, bit: u32) {
        self.interrupt_status |= bit;
        self.counters.notifies.inc();
        self.irq.notify();
    }

    fn queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// A guest read of `data.len()` bytes at `offset` in the block.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.counters.register_accesses.inc();
        if offset >= VIRTIO_MMIO_CONFIG as u64 {
            data.fill(0);
            self.dev.read_config(offset - VIRTIO_MMIO_CONFIG as u64, data);
            return;
        }
        let v = if data.len() == 4 && offset % 4 == 0 { self.read_reg(offset as u32) } else { None };
        let v = v.unwrap_or_else(|| {
            self.warn(&format!("read of {} bytes at register {offset:#x} refused", data.len()));
            0
        });
        let bytes = v.to_le_bytes();
        // A refused wide read gets zeros past the word too, not whatever
        // the buffer held.
        data.fill(0);
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    fn read_reg(&mut self, reg: u32) -> Option<u32> {
        let feat = |f: u64, sel: u32| if sel < 2 { (f >> (32 * sel)) as u32 } else { 0 };
        Some(match reg {
            VIRTIO_MMIO_MAGIC_VALUE => MMIO_MAGIC,
            VIRTIO_MMIO_VERSION => MMIO_VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.dev.device_id(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => feat(self.dev.features(), self.device_features_sel),
            VIRTIO_MMIO_QUEUE_NUM_MAX => self.queue().map_or(0, |q| q.max_size() as u32),
            VIRTIO_MMIO_QUEUE_READY => self.queue().is_some_and(|q| q.ready()) as u32,
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt_status,
            VIRTIO_MMIO_STATUS => self.status,
            VIRTIO_MMIO_CONFIG_GENERATION => self.config_generation,
            _ => return None,
        })
    }

    /// A guest write of `data` at `offset` in the block.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Action {
        self.counters.register_accesses.inc();
        if offset >= VIRTIO_MMIO_CONFIG as u64 {
            self.dev.write_config(offset - VIRTIO_MMIO_CONFIG as u64, data);
            return Action::None;
        }
        let Ok(word) = <[u8; 4]>::try_from(data) else {
            self.warn(&format!("write of {} bytes at register {offset:#x} refused", data.len()));
            return Action::None;
        };
        if offset % 4 != 0 {
            self.warn(&format!("unaligned write at register {offset:#x} refused"));
            return Action::None;
        }
        self.write_reg(offset as u32, u32::from_le_bytes(word))
    }

    fn write_reg(&mut self, reg: u32, v: u32) -> Action {
        match reg {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES => self.write_driver_features(v),
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = v,
            VIRTIO_MMIO_QUEUE_NOTIFY => return self.notify_register(v),
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt_status &= !v,
            VIRTIO_MMIO_STATUS => self.write_status(v),
            VIRTIO_MMIO_QUEUE_NUM
            | VIRTIO_MMIO_QUEUE_READY
            | VIRTIO_MMIO_QUEUE_DESC_LOW
            | VIRTIO_MMIO_QUEUE_DESC_HIGH
            | VIRTIO_MMIO_QUEUE_AVAIL_LOW
            | VIRTIO_MMIO_QUEUE_AVAIL_HIGH
            | VIRTIO_MMIO_QUEUE_USED_LOW
            | VIRTIO_MMIO_QUEUE_USED_HIGH => self.write_queue_reg(reg, v),
            _ => self.warn(&format!("write {v:#x} to register {reg:#x} ignored")),
        }
        Action::None
    }

    fn write_driver_features(&mut self, v: u32) {
        let settable = self.status & VIRTIO_CONFIG_S_DRIVER != 0 && self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0;
        if !settable || self.driver_features_sel >= 2 {
            self.warn("driver features written outside feature negotiation");
            return;
        }
        let shift = 32 * self.driver_features_sel;
        self.driver_features = (self.driver_features & !(0xffff_ffffu64 << shift)) | ((v as u64) << shift);
    }

    fn notify_register(&mut self, v: u32) -> Action {
        match u16::try_from(v) {
            Ok(q) if (q as usize) < self.queues.len() => Action::Notify(q),
            _ => {
                self.warn(&format!("notify of queue {v}, which does not exist"));
                Action::None
            }
        }
    }

    fn write_queue_reg(&mut self, reg: u32, v: u32) {
        // A queue that is not ready may be set up (or torn down, as drivers
        // do when they release a device) any time after FEATURES_OK.
        let configurable = self.status & VIRTIO_CONFIG_S_FEATURES_OK != 0;
        let sel = self.queue_sel;
        let Some(q) = self.queues.get_mut(sel as usize) else {
            return self
                .warn(&format!("queue register {reg:#x} written with queue {sel} selected, which does not exist"));
        };
        if reg == VIRTIO_MMIO_QUEUE_READY {
            return self.set_queue_ready(v == 1);
        }
        if q.ready() || !configurable {
            return self.warn(&format!("queue {sel} register {reg:#x} written while ready or before FEATURES_OK"));
        }
        let set = |old: u64, high: bool| {
            if high {
                (old & 0xffff_ffff) | ((v as u64) << 32)
            } else {
                (old & !0xffff_ffff) | v as u64
            }
        };
        let res = match reg {
            // Size 0: the driver releases the queue (as `virtio-drivers` does).
            VIRTIO_MMIO_QUEUE_NUM if v == 0 => {
                q.reset();
                Ok(())
            }
            VIRTIO_MMIO_QUEUE_NUM => q.try_set_size(v.try_into().unwrap_or(u16::MAX)),
            VIRTIO_MMIO_QUEUE_DESC_LOW | VIRTIO_MMIO_QUEUE_DESC_HIGH => {
                let a = set(q.desc_table(), reg == VIRTIO_MMIO_QUEUE_DESC_HIGH);
                q.try_set_desc_table_address(GuestAddress(a))
            }
            VIRTIO_MMIO_QUEUE_AVAIL_LOW | VIRTIO_MMIO_QUEUE_AVAIL_HIGH => {
                let a = set(q.avail_ring(), reg == VIRTIO_MMIO_QUEUE_AVAIL_HIGH);
                q.try_set_avail_ring_address(GuestAddress(a))
            }
            _ => {
                let a = set(q.used_ring(), reg == VIRTIO_MMIO_QUEUE_USED_HIGH);
                q.try_set_used_ring_address(GuestAddress(a))
            }
        };
        if let Err(e) = res {
            self.needs_reset(&format!("queue {sel}: register {reg:#x} = {v:#x}: {e:?}"));
        }
    }

    fn set_queue_ready(&mut self, ready: bool) {
        let sel = self.queue_sel as usize;
        if !ready {
            self.queues[sel].set_ready(false);
            return;
        }
        if self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0 || self.status & VIRTIO_CONFIG_S_NEEDS_RESET != 0 {
            return self.warn(&format!("queue {sel} made ready before FEATURES_OK or while the device needs reset"));
        }
        if let Err(why) = self.check_rings(sel) {
            return self.needs_reset(&format!("queue {sel}: {why}"));
        }
        let event_idx = self.driver_features & (1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX) != 0;
        let q = &mut self.queues[sel];
        q.set_event_idx(event_idx);
        q.set_ready(true);
    }

    /// Checks a queue's rings: inside the usable RAM, aligned, size valid.
    fn check_rings(&self, sel: usize) -> Result<(), QueueError> {
        let q = &self.queues[sel];
        let n = q.size() as u64;
        if n == 0 || !n.is_power_of_two() || n > q.max_size() as u64 {
            return Err(QueueError::Size { n, max: q.max_size() });
        }
        for (what, addr, len, access) in [
            ("descriptor table", q.desc_table(), 16 * n, Permissions::Read),
            ("available ring", q.avail_ring(), 6 + 2 * n, Permissions::Read),
            ("used ring", q.used_ring(), 6 + 8 * n, Permissions::Write),
        ] {
            let inside = addr.checked_add(len).is_some_and(|end| addr >= self.usable.start && end <= self.usable.end);
            if !inside || !self.mem.check_range(GuestAddress(addr), len as usize, access) {
                return Err(QueueError::OutsideRam { what, addr, len });
            }
        }
        Ok(())
    }

    fn write_status(&mut self, v: u32) {
        if v == 0 {
            return self.reset();
        }
        let old = self.status;
        if v & old != old & !VIRTIO_CONFIG_S_NEEDS_RESET {
            return self.warn(&format!("status {old:#x} -> {v:#x} clears bits without a reset"));
        }
        let added = v & !old;
        let steps = [
            (VIRTIO_CONFIG_S_ACKNOWLEDGE, 0),
            (VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_ACKNOWLEDGE),
            (VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_DRIVER),
            (VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK),
        ];
        for (bit, needs) in steps {
            if added & bit != 0 && v & needs != needs {
                return self.warn(&format!("status {old:#x} -> {v:#x} skips a step"));
            }
        }
        if added & !(steps.iter().fold(VIRTIO_CONFIG_S_FAILED, |a, (b, _)| a | b)) != 0 {
            return self.warn(&format!("status {v:#x} sets unknown bits"));
        }
        if added & VIRTIO_CONFIG_S_FEATURES_OK != 0 && !self.features_acceptable() {
            // Leave FEATURES_OK clear: the driver reads it back and gives up.
            // DRIVER_OK written in the same store would follow a step that
            // did not happen (3.1.1), so it stays clear too.
            self.warn(&format!("driver features {:#x} refused", self.driver_features));
            self.status = v & !(VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
            return;
        }
        self.status = v | (old & VIRTIO_CONFIG_S_NEEDS_RESET);
        if added & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            self.dev.activate(self.driver_features);
        }
    }

    /// The driver may accept only offered features, and must accept
    /// `VIRTIO_F_VERSION_1` (this transport has no legacy interface).
    fn features_acceptable(&self) -> bool {
        let offered = self.dev.features();
        self.driver_features & !offered == 0 && self.driver_features & (1 << VIRTIO_F_VERSION_1) != 0
    }

    fn reset(&mut self) {
        self.dev.reset();
        for q in &mut self.queues {
            q.reset();
        }
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.interrupt_status = 0;
    }

    /// Handles a notification of queue `q` (on the device thread): takes
    /// every available chain, checks it, hands it to the device, returns
    /// it on the used ring, and interrupts the guest if the ring's
    /// notification rule (event index or flags) asks for it. Returns whether
    /// work was left for another round (the budget ran out).
    pub fn process_queue(&mut self, q: u16) -> bool {
        self.counters.kicks.inc();
        if self.status & VIRTIO_CONFIG_S_NEEDS_RESET != 0 {
            return false;
        }
        if self.status == 0 {
            // A device in reset: a notification can be stale (written just
            // before the reset, or this thread's own re-kick), so it is
            // dropped rather than held against the next initialisation.
            tracing::debug!(device = self.dev.device_id(), queue = q, "virtio: notification while in reset dropped");
            return false;
        }
        let ready = self.queues.get(q as usize).is_some_and(|x| x.ready());
        if self.status & VIRTIO_CONFIG_S_DRIVER_OK == 0 || !ready {
            self.needs_reset(&format!("queue {q} notified before it is ready"));
            return false;
        }
        if self.dev.device_filled(q) {
            // Buffers were posted; the device fills them when it has data.
            return false;
        }
        match self.drain(q as usize) {
            Ok(more) => more,
            Err(why) => {
                self.needs_reset(&format!("queue {q}: {why}"));
                false
            }
        }
    }

    fn drain(&mut self, qi: usize) -> Result<bool, QueueError> {
        let mem = self.mem.clone();
        let mut done = 0;
        loop {
            let queue = &mut self.queues[qi];
            queue.disable_notification(&mem).map_err(QueueError::Ring)?;
            let max_len = queue.size() as usize;
            let room = BUDGET - done;
            let chains: Vec<_> = queue.iter(&mem).map_err(QueueError::AvailRing)?.take(room).collect();
            let used = !chains.is_empty();
            for c in chains {
                let head = c.head_index();
                let len = match chain::check(c, &self.usable, max_len) {
                    Ok(c) => self.dev.process(qi as u16, &c, &mem),
                    Err(e) => {
                        self.counters.bad_chains.inc();
                        self.warn(&format!("queue {qi}: chain at {head} refused: {e}"));
                        0
                    }
                };
                self.counters.chains.inc();
                add_used(&mut self.queues[qi], &mem, head, len)?;
                done += 1;
            }
            if used {
                // Only after using buffers (virtio 1.x 2.7.7): a notify with
                // nothing new must not buy the driver an interrupt.
                self.signal_used(qi)?;
            }
            if done >= BUDGET {
                // Come back after the other devices on the thread had a turn.
                return Ok(true);
            }
            let queue = &mut self.queues[qi];
            if !queue.enable_notification(&mem).map_err(QueueError::Ring)? {
                return Ok(false);
            }
        }
    }

    /// The device's own descriptor ([`VirtioDevice::event_fd`]) is
    /// readable (on the device thread): lets the device fill its queues,
    /// then interrupts the guest for the queues it used. Returns whether
    /// work was left.
    pub fn process_event(&mut self) -> bool {
        let running = self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0 && self.status & VIRTIO_CONFIG_S_NEEDS_RESET == 0;
        let mut src = Queues {
            queues: &mut self.queues,
            mem: &self.mem,
            usable: &self.usable,
            counters: &self.counters,
            log: &mut self.log,
            device: self.dev.device_id(),
            running,
            error: None,
            used: 0,
        };
        let more = self.dev.event(&mut src, &self.mem);
        let (error, used) = (src.error.take(), src.used);
        if let Some(why) = error {
            self.needs_reset(&why);
            return false;
        }
        for qi in (0..self.queues.len()).filter(|&q| q < 64 && used & (1 << q) != 0) {
            if let Err(why) = self.signal_used(qi) {
                self.needs_reset(&format!("queue {qi}: {why}"));
                return false;
            }
        }
        more
    }

    fn signal_used(&mut self, qi: usize) -> Result<(), QueueError> {
        let mem = self.mem.clone();
        if self.queues[qi].needs_notification(&mem).map_err(QueueError::Ring)? {
            self.interrupt(VIRTIO_MMIO_INT_VRING);
        }
        Ok(())
    }
}

/// Why a queue is unusable: the device then needs a reset.
#[derive(Debug, thiserror::Error)]
enum QueueError {
    #[error("size {n} is not a power of two up to {max}")]
    Size { n: u64, max: u16 },
    #[error("{what} {addr:#x}+{len:#x} is outside guest RAM")]
    OutsideRam { what: &'static str, addr: u64, len: u64 },
    #[error("{0:?}")]
    Ring(virtio_queue::Error),
    #[error("available ring: {0:?}")]
    AvailRing(virtio_queue::Error),
    #[error("used ring: head {head} is outside the queue (size {size})")]
    HeadOutside { head: u16, size: u16 },
    #[error("used ring, head {head}: {error:?}")]
    AddUsed { head: u16, error: virtio_queue::Error },
}

/// The transport's queues lent to a device for its own work.
struct Queues<'a> {
    queues: &'a mut [Queue],
    mem: &'a GuestMemoryMmap,
    usable: &'a Range<u64>,
    counters: &'a VirtioMetrics,
    log: &'a mut LogLimiter,
    device: u32,
    running: bool,
    /// A ring error: the device needs a reset (nothing more is taken).
    error: Option<String>,
    /// Bit `q`: queue `q` had chains returned.
    used: u64,
}

/// A chain taken off a queue: its head and the outcome of the checks.
type Taken = (u16, Result<Chain, chain::ChainError>);

impl Queues<'_> {
    fn next_raw(&mut self, qi: usize) -> Result<Option<Taken>, QueueError> {
        let (mem, usable) = (self.mem, self.usable);
        let queue = &mut self.queues[qi];
        let max_len = queue.size() as usize;
        let mut it = queue.iter(mem).map_err(QueueError::AvailRing)?;
        Ok(it.next().map(|c| (c.head_index(), chain::check(c, usable, max_len))))
    }
}

impl ChainSource for Queues<'_> {
    fn running(&self, q: u16) -> bool {
        self.running && self.error.is_none() && self.queues.get(q as usize).is_some_and(|x| x.ready())
    }

    fn pop(&mut self, q: u16) -> Option<Chain> {
        while self.running(q) {
            match self.next_raw(q as usize) {
                Ok(None) => return None,
                Ok(Some((_, Ok(c)))) => return Some(c),
                Ok(Some((head, Err(e)))) => {
                    self.counters.bad_chains.inc();
                    let device = self.device;
                    pv_util::limited_warn!(self.log, device, "virtio: queue {q}: chain at {head} refused: {e}");
                    self.push_used(q, head, 0);
                }
                Err(why) => self.error = Some(format!("queue {q}: {why}")),
            }
        }
        None
    }

    fn push_used(&mut self, q: u16, head: u16, len: u32) {
        let Some(queue) = self.queues.get_mut(q as usize) else { return };
        self.counters.chains.inc();
        match add_used(queue, self.mem, head, len) {
            Ok(()) => self.used |= 1u64.checked_shl(q as u32).unwrap_or(0),
            Err(e) => self.error = Some(format!("queue {q}: {e}")),
        }
    }
}

/// Returns chain `head` to the used ring. A head the guest put in the
/// available ring outside the queue is refused here, before `virtio_queue`
/// sees it: the crate logs an error of its own for each one (past our
/// per-device limiter), so a hostile driver could flood the log with them.
fn add_used(queue: &mut Queue, mem: &GuestMemoryMmap, head: u16, len: u32) -> Result<(), QueueError> {
    if head >= queue.size() {
        return Err(QueueError::HeadOutside { head, size: queue.size() });
    }
    queue.add_used(mem, head, len).map_err(|error| QueueError::AddUsed { head, error })
}

fn empty_queue() -> Queue {
    // A zero-sized stand-in for a device that asked for an impossible size:
    // it can never be made ready.
    Queue::new(1).expect("1 is a valid queue size")
}

/// A virtio-mmio device as the VMM sees it, whatever the device behind
/// the registers (so one bus can hold block, echo and net devices).
pub trait MmioDevice: Send {
    /// A register read at `offset` in the block (vCPU thread).
    fn mmio_read(&mut self, offset: u64, data: &mut [u8]);
    /// A register write at `offset` in the block (vCPU thread).
    fn mmio_write(&mut self, offset: u64, data: &[u8]) -> Action;
    /// Handles a notification of queue `q` (device thread); whether work is left.
    fn process_queue(&mut self, q: u16) -> bool;
    /// Number of queues.
    fn num_queues(&self) -> usize;
    /// The shared counters.
    fn counters(&self) -> Arc<VirtioMetrics>;
    /// The device's own descriptor, if any ([`VirtioDevice::event_fd`]).
    fn event_fd(&self) -> Option<RawFd>;
    /// That descriptor is readable (device thread); whether work is left.
    fn process_event(&mut self) -> bool;
}

impl<D: VirtioDevice> MmioDevice for MmioTransport<D> {
    fn mmio_read(&mut self, offset: u64, data: &mut [u8]) {
        self.read(offset, data)
    }

    fn mmio_write(&mut self, offset: u64, data: &[u8]) -> Action {
        self.write(offset, data)
    }

    fn process_queue(&mut self, q: u16) -> bool {
        MmioTransport::process_queue(self, q)
    }

    fn num_queues(&self) -> usize {
        self.queues.len()
    }

    fn counters(&self) -> Arc<VirtioMetrics> {
        self.counters.clone()
    }

    fn event_fd(&self) -> Option<RawFd> {
        self.dev.event_fd()
    }

    fn process_event(&mut self) -> bool {
        MmioTransport::process_event(self)
    }
}
