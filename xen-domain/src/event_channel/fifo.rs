//! Xen's FIFO event-channel ABI (`xen/common/event_fifo.c`,
//! `xen/include/public/event_channel.h`), which a guest switches to with
//! its first `EVTCHNOP_init_control`.
//!
//! - Each vCPU has a control block in a guest page: the `ready` word (a
//!   bit per priority) and the head port of each of its 16 queues.
//! - The domain has an event array of guest pages (added one at a time
//!   with `EVTCHNOP_expand_array`): a 32-bit event word per port with the
//!   PENDING, MASKED, LINKED and BUSY bits and a 17-bit LINK to the next
//!   port of its queue.
//! - Set-pending sets PENDING; an unmasked, unlinked event is linked at the
//!   tail of its priority's queue on the notified vCPU (the old tail's LINK
//!   set with a compare-exchange, or the head written if the queue was
//!   empty); when that made the queue non-empty its `ready` bit is set, and
//!   on the bit's 0->1 edge the vCPU is marked as having events pending
//!   (`vcpu_mark_events_pending()`, done by the caller).
//!
//! The guest changes the words and `ready` concurrently, so every access is
//! an atomic operation on guest memory. Xen locks each queue; here one
//! mutex covers the FIFO state of the whole domain (the queues' tails, the
//! ports' priorities, the page list), which is simpler and cheap at our
//! port counts. The state is per vCPU where Xen's is (control block,
//! queues), so more vCPUs need only [`Fifo::set_vcpus`].
//!
//! Pages the guest names are checked once, when registered (inside RAM,
//! not a VMM page); RAM never shrinks, so later accesses cannot leave it.

use crate::guest_memory::{BadGuestRange, GuestRam};
use pv_abi::errno::{EACCES, EINVAL, ENOENT, ENOSPC, ENOSYS, EOPNOTSUPP};
use pv_abi::event_channel::*;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

const PAGE_SIZE: u64 = 4096;
/// Bytes of the control block (`sizeof(evtchn_fifo_control_block_t)`).
const CONTROL_BLOCK_SIZE: u32 = std::mem::size_of::<EvtchnFifoControlBlock>() as u32;
/// Offset of `head[0]` in the control block.
const HEAD_OFFSET: u64 = std::mem::offset_of!(EvtchnFifoControlBlock, head) as u64;

/// The FIFO state of one port (fields of Xen's `struct evtchn`).
#[derive(Debug, Clone, Copy)]
struct PortFifo {
    /// Queue for future events (`evtchn->priority`).
    priority: u8,
    /// The queue it was last linked on (`evtchn->fifo_lastq`): vCPU, priority.
    last_vcpu: u32,
    last_priority: u8,
    /// Set while no event-array page holds its word (`evtchn->pending`):
    /// raised when the page is added.
    pending: bool,
}

impl Default for PortFifo {
    fn default() -> Self {
        // `fifo_lastq` starts zeroed, as Xen's zero-allocated `struct evtchn`.
        PortFifo { priority: EVTCHN_FIFO_PRIORITY_DEFAULT as u8, last_vcpu: 0, last_priority: 0, pending: false }
    }
}

/// One vCPU's FIFO state (Xen's `struct evtchn_fifo_vcpu`).
#[derive(Debug, Clone, Default)]
struct FifoVcpu {
    /// Guest-physical address of its control block, once registered.
    control_block: Option<u64>,
    /// The tail port of each queue (0: empty).
    tail: [u32; EVTCHN_FIFO_MAX_QUEUES],
}

/// A domain on the FIFO ABI (Xen's `struct evtchn_fifo_domain`).
#[derive(Debug)]
struct FifoDomain {
    vcpus: Vec<FifoVcpu>,
    /// Guest-physical address of each event-array page, in port order.
    array: Vec<u64>,
    ports: Vec<PortFifo>,
}

/// The FIFO ABI of a domain: inactive (the domain uses 2-level) until the
/// first successful `EVTCHNOP_init_control`.
#[derive(Debug)]
pub struct Fifo {
    ram: GuestRam,
    nr_vcpus: AtomicU32,
    state: Mutex<Option<FifoDomain>>,
}

/// An atomic read-modify-write of one bit of a guest word.
#[derive(Clone, Copy)]
enum BitOp {
    Test,
    Set,
    Clear,
}

impl Fifo {
    /// The FIFO ABI over `ram`, inactive, for a domain of one vCPU.
    pub fn new(ram: GuestRam) -> Self {
        Fifo { ram, nr_vcpus: AtomicU32::new(1), state: Mutex::new(None) }
    }

    /// Sets how many vCPUs the domain has (before the guest runs).
    pub fn set_vcpus(&self, n: u32) {
        self.nr_vcpus.store(n.max(1), Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Option<FifoDomain>> {
        // Every update leaves the state consistent between statements.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the domain uses the FIFO ABI.
    pub fn is_active(&self) -> bool {
        self.lock().is_some()
    }

    /// `bit` of the guest word at `gpa` before `op`.
    fn bit(&self, gpa: u64, bit: u32, op: BitOp) -> Result<bool, BadGuestRange> {
        let m = 1u32 << bit;
        self.ram.with_atomic(gpa, |w: &AtomicU32| {
            let old = match op {
                BitOp::Test => w.load(Ordering::SeqCst),
                BitOp::Set => w.fetch_or(m, Ordering::SeqCst),
                BitOp::Clear => w.fetch_and(!m, Ordering::SeqCst),
            };
            old & m != 0
        })
    }

    /// A guest page the FIFO ABI may use (Xen's `map_guest_page()`: a
    /// writable page of the guest's, else `EINVAL`); VMM pages are refused.
    fn guest_page(&self, gfn: u64) -> Result<u64, i64> {
        let gpa = gfn.checked_mul(PAGE_SIZE).ok_or(EINVAL)?;
        self.ram.check_output(gpa, PAGE_SIZE).map_err(|_| EINVAL)?;
        Ok(gpa)
    }

    /// `evtchn_fifo_init_control()`: registers `vcpu`'s control block.
    /// The first one switches the domain to FIFO: each port that
    /// `was_pending` on the 2-level bitmaps keeps its event, raised when an
    /// event-array page for it is added (`setup_ports()`).
    pub fn init_control(&self, a: &EvtchnInitControl, was_pending: impl Fn(u32) -> bool) -> Result<(), i64> {
        if a.vcpu >= self.nr_vcpus.load(Ordering::Relaxed) {
            return Err(ENOENT);
        }
        // "Must not cross page boundary", "Must be 8-bytes aligned".
        if a.offset > PAGE_SIZE as u32 - CONTROL_BLOCK_SIZE || a.offset & 7 != 0 {
            return Err(EINVAL);
        }
        let mut st = self.lock();
        if let Some(d) = st.as_ref() {
            if d.vcpus.get(a.vcpu as usize).is_some_and(|v| v.control_block.is_some()) {
                return Err(EINVAL);
            }
        }
        // `map_control_block()`; on the first call a failure leaves the
        // domain on 2-level (`evtchn_fifo_destroy()`).
        let cb = self.guest_page(a.control_gfn)? + u64::from(a.offset);
        let d = st.get_or_insert_with(|| {
            let mut ports = vec![PortFifo::default(); MAX_PORTS as usize];
            for (port, p) in ports.iter_mut().enumerate().skip(1) {
                p.pending = was_pending(port as u32);
            }
            let n = self.nr_vcpus.load(Ordering::Relaxed) as usize;
            FifoDomain { vcpus: vec![FifoVcpu::default(); n], array: Vec::new(), ports }
        });
        // vCPUs added after the switch get their queues now.
        if d.vcpus.len() <= a.vcpu as usize {
            d.vcpus.resize(a.vcpu as usize + 1, FifoVcpu::default());
        }
        d.vcpus[a.vcpu as usize].control_block = Some(cb);
        Ok(())
    }

    /// `evtchn_fifo_expand_array()`: adds the page at `gfn` to the event
    /// array (`EOPNOTSUPP` on 2-level, `ENOSPC` past
    /// [`EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES`]), then raises the events that
    /// were waiting for its words on the port's vCPU (`notify_vcpu`).
    /// Returns the vCPUs to mark as having events pending.
    pub fn expand_array(&self, gfn: u64, notify_vcpu: impl Fn(u32) -> u32) -> Result<Vec<u32>, i64> {
        let mut st = self.lock();
        let d = st.as_mut().ok_or(EOPNOTSUPP)?;
        if d.array.len() >= EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES as usize {
            return Err(ENOSPC);
        }
        let gpa = self.guest_page(gfn)?;
        let first = d.array.len() * EVTCHN_FIFO_EVENT_WORDS_PER_PAGE as usize;
        d.array.push(gpa);
        let mut mark = Vec::new();
        let end = (first + EVTCHN_FIFO_EVENT_WORDS_PER_PAGE as usize).min(d.ports.len());
        for port in first..end {
            if d.ports[port].pending {
                let vcpu = notify_vcpu(port as u32);
                if self.link(d, vcpu, port as u32).unwrap_or(false) && !mark.contains(&vcpu) {
                    mark.push(vcpu);
                }
            }
        }
        Ok(mark)
    }

    /// `evtchn_fifo_set_priority()` behind `evtchn_port_set_priority()`:
    /// `ENOSYS` on 2-level, `EACCES` for a port not in use, `EINVAL` above
    /// [`EVTCHN_FIFO_PRIORITY_MIN`]. Future events use the new queue.
    pub fn set_priority(&self, port: u32, priority: u32, usable: bool) -> Result<(), i64> {
        let mut st = self.lock();
        let d = st.as_mut().ok_or(ENOSYS)?;
        if !usable {
            return Err(EACCES);
        }
        if priority > EVTCHN_FIFO_PRIORITY_MIN {
            return Err(EINVAL);
        }
        let p = d.ports.get_mut(port as usize).ok_or(EINVAL)?;
        p.priority = priority as u8;
        Ok(())
    }

    /// `port` was freed: its next user starts at the default priority
    /// (`evtchn_fifo_init()`), and an event saved for a missing array page
    /// dies with it (Xen keeps that flag and would raise it on the new
    /// user when the page is added; the 2-level ABI clears the bit).
    pub fn port_freed(&self, port: u32) {
        if let Some(p) = self.lock().as_mut().and_then(|d| d.ports.get_mut(port as usize)) {
            p.priority = EVTCHN_FIFO_PRIORITY_DEFAULT as u8;
            p.pending = false;
        }
    }

    /// Back to 2-level (`evtchn_fifo_destroy()`, from `evtchn_reset()`).
    pub fn destroy(&self) {
        *self.lock() = None;
    }

    /// `evtchn_fifo_set_pending()` on `vcpu`: `None` on 2-level, else
    /// whether `vcpu` is to be marked as having events pending.
    pub fn set_pending(&self, vcpu: u32, port: u32) -> Option<Result<bool, BadGuestRange>> {
        let mut st = self.lock();
        let d = st.as_mut()?;
        Some(self.link(d, vcpu, port))
    }

    /// `evtchn_fifo_clear_pending()`: clears PENDING (the guest unlinks
    /// events it finds not pending). `None` on 2-level.
    pub fn clear_pending(&self, port: u32) -> Option<Result<(), BadGuestRange>> {
        let st = self.lock();
        let d = st.as_ref()?;
        Some(match word(d, port) {
            Some(w) => self.bit(w, EVTCHN_FIFO_PENDING, BitOp::Clear).map(|_| ()),
            None => Ok(()),
        })
    }

    /// `evtchn_fifo_is_pending()`. `None` on 2-level.
    pub fn is_pending(&self, port: u32) -> Option<bool> {
        let st = self.lock();
        let d = st.as_ref()?;
        Some(word(d, port).is_some_and(|w| self.bit(w, EVTCHN_FIFO_PENDING, BitOp::Test).unwrap_or(false)))
    }

    /// `evtchn_fifo_unmask()`: clears MASKED and relinks a pending event
    /// on `vcpu` (the return value as [`set_pending`](Self::set_pending)).
    pub fn unmask(&self, vcpu: u32, port: u32) -> Option<Result<bool, BadGuestRange>> {
        let mut st = self.lock();
        let d = st.as_mut()?;
        let Some(w) = word(d, port) else { return Some(Ok(false)) };
        let relink =
            self.bit(w, EVTCHN_FIFO_MASKED, BitOp::Clear).and_then(|_| self.bit(w, EVTCHN_FIFO_PENDING, BitOp::Test));
        Some(match relink {
            Ok(true) => self.link(d, vcpu, port),
            Ok(false) => Ok(false),
            Err(e) => Err(e),
        })
    }

    /// The body of `evtchn_fifo_set_pending()`.
    fn link(&self, d: &mut FifoDomain, vcpu: u32, port: u32) -> Result<bool, BadGuestRange> {
        let (Some(w), Some(p)) = (word(d, port), d.ports.get(port as usize).copied()) else {
            // "Event array page may not exist yet, save the pending state".
            if let Some(p) = d.ports.get_mut(port as usize) {
                p.pending = true;
            }
            return Ok(false);
        };
        let Some(cb) = d.vcpus.get(vcpu as usize).and_then(|v| v.control_block) else {
            // "The guest must not unmask an event until the control block
            // is initialized, so we can just drop the event."
            tracing::debug!(vcpu, port, "FIFO event for a vCPU without a control block dropped");
            return Ok(false);
        };
        self.bit(w, EVTCHN_FIFO_PENDING, BitOp::Set)?;
        if self.bit(w, EVTCHN_FIFO_MASKED, BitOp::Test)? || self.bit(w, EVTCHN_FIFO_LINKED, BitOp::Set)? {
            return Ok(false);
        }
        let q = usize::from(p.priority);
        // If this event was a tail, its old queue is empty now.
        let (old_v, old_q) = (p.last_vcpu as usize, usize::from(p.last_priority));
        if let Some(t) = d.vcpus.get_mut(old_v).map(|v| &mut v.tail[old_q]) {
            if *t == port {
                *t = 0;
            }
        }
        d.ports[port as usize].last_vcpu = vcpu;
        d.ports[port as usize].last_priority = p.priority;
        let v = &mut d.vcpus[vcpu as usize];
        let tail = v.tail[q];
        v.tail[q] = port;
        let linked = match word(d, tail).filter(|_| tail != 0) {
            Some(tw) => self.set_link(tw, port)?,
            None => false,
        };
        if linked {
            return Ok(false);
        }
        let head = cb + HEAD_OFFSET + 4 * q as u64;
        self.ram.with_atomic(head, |h: &AtomicU32| h.store(port, Ordering::SeqCst))?;
        Ok(!self.bit(cb, q as u32, BitOp::Set)?)
    }

    /// `evtchn_fifo_set_link()`: sets the LINK of the word at `tw` to
    /// `port` if it is still LINKED (the guest may unlink it meanwhile).
    /// BUSY keeps the guest from unmasking by itself while we retry, so
    /// the retries are bounded as in Xen.
    fn set_link(&self, tw: u64, port: u32) -> Result<bool, BadGuestRange> {
        let attempt = |w: &AtomicU32| -> Option<bool> {
            let old = w.load(Ordering::SeqCst);
            if old & (1 << EVTCHN_FIFO_LINKED) == 0 {
                return Some(false);
            }
            let new = (old & !((1 << EVTCHN_FIFO_BUSY) | EVTCHN_FIFO_LINK_MASK)) | port;
            w.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst).is_ok().then_some(true)
        };
        if let Some(linked) = self.ram.with_atomic(tw, attempt)? {
            return Ok(linked);
        }
        self.bit(tw, EVTCHN_FIFO_BUSY, BitOp::Set)?;
        for _ in 0..4 {
            if let Some(linked) = self.ram.with_atomic(tw, attempt)? {
                if !linked {
                    self.bit(tw, EVTCHN_FIFO_BUSY, BitOp::Clear)?;
                }
                return Ok(linked);
            }
        }
        tracing::debug!(port, "FIFO tail kept changing; treated as linked, as Xen does");
        self.bit(tw, EVTCHN_FIFO_BUSY, BitOp::Clear)?;
        Ok(true)
    }
}

impl Fifo {
    /// The FIFO state to snapshot (`None` on 2-level).
    pub(super) fn save_state(&self) -> Option<super::state::FifoState> {
        use super::state::{FifoPortSave, FifoState, FifoVcpuSave};
        let st = self.lock();
        let d = st.as_ref()?;
        let fresh = PortFifo::default();
        let ports = (d.ports.iter().enumerate())
            .filter(|(_, p)| {
                (p.priority, p.last_vcpu, p.last_priority, p.pending)
                    != (fresh.priority, fresh.last_vcpu, fresh.last_priority, fresh.pending)
            })
            .map(|(port, p)| FifoPortSave {
                port: port as u32,
                priority: p.priority,
                last_vcpu: p.last_vcpu,
                last_priority: p.last_priority,
                pending: p.pending,
            })
            .collect();
        let vcpus =
            d.vcpus.iter().map(|v| FifoVcpuSave { control_block: v.control_block, tail: v.tail.to_vec() }).collect();
        Some(FifoState { vcpus, array: d.array.clone(), ports })
    }

    /// Puts back a checked state (`None`: the 2-level ABI).
    pub(super) fn restore_state(&self, s: Option<&super::state::FifoState>) {
        *self.lock() = s.map(|s| {
            let mut ports = vec![PortFifo::default(); MAX_PORTS as usize];
            for p in &s.ports {
                if let Some(slot) = ports.get_mut(p.port as usize) {
                    *slot = PortFifo {
                        priority: p.priority,
                        last_vcpu: p.last_vcpu,
                        last_priority: p.last_priority,
                        pending: p.pending,
                    };
                }
            }
            let mut vcpus = vec![FifoVcpu::default(); self.nr_vcpus.load(Ordering::Relaxed) as usize];
            for (v, saved) in vcpus.iter_mut().zip(&s.vcpus) {
                v.control_block = saved.control_block;
                for (t, &p) in v.tail.iter_mut().zip(&saved.tail) {
                    *t = p;
                }
            }
            FifoDomain { vcpus, array: s.array.clone(), ports }
        });
    }
}

/// The guest-physical address of `port`'s event word, if an array page
/// holds it (`evtchn_fifo_word_from_port()`).
fn word(d: &FifoDomain, port: u32) -> Option<u64> {
    let per_page = EVTCHN_FIFO_EVENT_WORDS_PER_PAGE;
    let page = d.array.get((port / per_page) as usize)?;
    Some(page + u64::from(port % per_page) * 4)
}

/// Against `xen/common/event_fifo.c` (`evtchn_fifo_init_control()`,
/// `evtchn_fifo_expand_array()`, `evtchn_fifo_set_pending()`,
/// `evtchn_fifo_unmask()`, `evtchn_fifo_set_priority()`, `setup_ports()`),
/// `xen/common/event_channel.c` (`evtchn_set_priority()`,
/// `evtchn_reset()`) and `xen/common/event_channel.h`
/// (`evtchn_port_set_priority()`), through the guest's hypercalls.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{TestDomain, TEST_ARG};
    use pv_abi::errno::{EFAULT, ENOSYS};
    use pv_abi::hypercall::nr;
    use pv_abi::layout::SHARED_INFO;
    use pv_abi::shared_info::{SharedInfo, LAYOUT_64};
    use pv_abi::start_info::paging_mode;
    use std::sync::Arc;
    use vmm_sys_util::eventfd::EventFd;

    /// The guest's control-block page and its first event-array page.
    const CB_GFN: u64 = 0x100;
    const ARRAY_GFN: u64 = 0x110;
    const CB: u64 = CB_GFN * PAGE_SIZE;

    fn op(t: &mut TestDomain, cmd: u32) -> i64 {
        t.call(nr::EVENT_CHANNEL_OP, [u64::from(cmd), TEST_ARG, 0, 0, 0])
    }

    fn init_control(t: &mut TestDomain, control_gfn: u64, offset: u32, vcpu: u32) -> i64 {
        t.put(TEST_ARG, &EvtchnInitControl { control_gfn, offset, vcpu, ..Default::default() });
        op(t, EVTCHNOP_INIT_CONTROL)
    }

    fn expand(t: &mut TestDomain, array_gfn: u64) -> i64 {
        t.put(TEST_ARG, &EvtchnExpandArray { array_gfn });
        op(t, EVTCHNOP_EXPAND_ARRAY)
    }

    fn set_priority(t: &mut TestDomain, port: u32, priority: u32) -> i64 {
        t.put(TEST_ARG, &EvtchnSetPriority { port, priority });
        op(t, EVTCHNOP_SET_PRIORITY)
    }

    /// A FIFO domain: control block of vCPU 0 at `CB`, one array page.
    fn fifo_domain() -> TestDomain {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        assert_eq!(init_control(&mut t, CB_GFN, 0, 0), 0);
        assert_eq!(expand(&mut t, ARRAY_GFN), 0);
        t
    }

    /// A port bound to a back end, which notifies it.
    fn bound_port(t: &mut TestDomain) -> (u32, crate::event_channel::Binding) {
        t.put(TEST_ARG, &EvtchnAllocUnbound { dom: DOMID_SELF, remote_dom: DOMID_VMM, port: 0 });
        assert_eq!(op(t, EVTCHNOP_ALLOC_UNBOUND), 0);
        let port = t.get::<EvtchnAllocUnbound>(TEST_ARG).port;
        let b = t.dom.evtchn.bind_guest_port(port, Arc::new(EventFd::new(0).unwrap())).unwrap();
        (port, b)
    }

    fn word(t: &TestDomain, port: u32) -> u32 {
        t.get(ARRAY_GFN * PAGE_SIZE + u64::from(port) * 4)
    }

    fn set_word(t: &TestDomain, port: u32, w: u32) {
        t.put(ARRAY_GFN * PAGE_SIZE + u64::from(port) * 4, &w);
    }

    fn cb(t: &TestDomain) -> EvtchnFifoControlBlock {
        t.get(CB)
    }

    fn upcall_pending(t: &TestDomain) -> u8 {
        t.get(SHARED_INFO + SharedInfo::upcall_pending_offset(0) as u64)
    }

    const P: u32 = 1 << EVTCHN_FIFO_PENDING;
    const M: u32 = 1 << EVTCHN_FIFO_MASKED;
    const L: u32 = 1 << EVTCHN_FIFO_LINKED;

    /// `evtchn_fifo_init_control()`: unknown vCPU `ENOENT`; an offset that
    /// crosses the page or is not 8-byte aligned `EINVAL`; a frame that is
    /// not the guest's page (`map_guest_page()`) `EINVAL`; a second block
    /// for the vCPU `EINVAL`; `link_bits` written back.
    #[test]
    fn init_control_checks_its_arguments_as_xen() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        assert_eq!(init_control(&mut t, CB_GFN, 0, 1), -ENOENT, "vCPU 1 does not exist");
        assert_eq!(init_control(&mut t, CB_GFN, 4096 - 72 + 8, 0), -EINVAL, "crosses the page");
        assert_eq!(init_control(&mut t, CB_GFN, 4, 0), -EINVAL, "not 8-byte aligned");
        assert_eq!(init_control(&mut t, 1 << 60, 0, 0), -EINVAL, "beyond RAM");
        assert_eq!(init_control(&mut t, 0, 0, 0), -EINVAL, "a VMM page");
        assert!(!t.dom.evtchn.uses_fifo(), "refusals leave the domain on 2-level");
        assert_eq!(init_control(&mut t, CB_GFN, 4096 - 72, 0), 0);
        assert_eq!(t.get::<EvtchnInitControl>(TEST_ARG).link_bits, 17);
        assert!(t.dom.evtchn.uses_fifo());
        assert_eq!(init_control(&mut t, CB_GFN, 0, 0), -EINVAL, "already initialised");
        assert_eq!(t.call(nr::EVENT_CHANNEL_OP, [u64::from(EVTCHNOP_INIT_CONTROL), u64::MAX - 2, 0, 0, 0]), -EFAULT);
    }

    /// One control block per vCPU (`map_control_block()` per `struct
    /// vcpu`): each vCPU of the domain registers its own, once; a vCPU the
    /// domain does not have is `ENOENT` (`domain_vcpu()`).
    #[test]
    fn each_vcpu_registers_its_own_control_block_once() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        assert_eq!(init_control(&mut t, CB_GFN, 0, 0), 0);
        assert_eq!(init_control(&mut t, CB_GFN, 72, 1), -ENOENT, "one vCPU");
        t.dom.evtchn.set_vcpus(3);
        assert_eq!(init_control(&mut t, CB_GFN, 72, 2), 0, "a vCPU added after the switch");
        assert_eq!(init_control(&mut t, CB_GFN, 144, 1), 0);
        assert_eq!(init_control(&mut t, CB_GFN, 216, 1), -EINVAL, "vCPU 1 has one");
        assert_eq!(init_control(&mut t, CB_GFN, 0, 3), -ENOENT);
    }

    /// `evtchn_fifo_expand_array()`: `EOPNOTSUPP` on 2-level, `EINVAL` for
    /// a frame that is not the guest's, `ENOSPC` after
    /// `EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES` pages.
    #[test]
    fn expand_array_needs_fifo_a_guest_page_and_room() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        assert_eq!(expand(&mut t, ARRAY_GFN), -EOPNOTSUPP);
        assert_eq!(init_control(&mut t, CB_GFN, 0, 0), 0);
        assert_eq!(expand(&mut t, 1 << 60), -EINVAL);
        assert_eq!(expand(&mut t, 0), -EINVAL, "a VMM page");
        for i in 0..EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES {
            assert_eq!(expand(&mut t, ARRAY_GFN + u64::from(i)), 0, "page {i}");
        }
        assert_eq!(expand(&mut t, ARRAY_GFN), -ENOSPC);
    }

    /// `evtchn_set_priority()`: invalid port `EINVAL`; on 2-level the
    /// missing hook `ENOSYS`; a port not in use (or reserved port 0)
    /// `EACCES`; a priority above `EVTCHN_FIFO_PRIORITY_MIN` `EINVAL`.
    #[test]
    fn set_priority_errors_follow_xens_order() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        let (port, _b) = bound_port(&mut t);
        assert_eq!(set_priority(&mut t, MAX_PORTS, 3), -EINVAL);
        assert_eq!(set_priority(&mut t, port, 3), -ENOSYS, "2-level");
        assert_eq!(init_control(&mut t, CB_GFN, 0, 0), 0);
        assert_eq!(set_priority(&mut t, port + 1, 3), -EACCES, "a free port");
        assert_eq!(set_priority(&mut t, 0, 3), -EACCES, "the reserved port");
        assert_eq!(set_priority(&mut t, port, 16), -EINVAL);
        assert_eq!(set_priority(&mut t, port, 15), 0);
        assert_eq!(set_priority(&mut t, MAX_PORTS, 3), -EINVAL);
    }

    /// `vcpu_mark_events_pending()` (`xen/common/event_channel.c`) sets
    /// `vcpu_info(v, evtchn_upcall_pending)`: after
    /// `VCPUOP_register_vcpu_info` moved it (`map_guest_area()`,
    /// `xen/common/domain.c`), a FIFO `ready` edge marks the new place, not
    /// the shared-info slot.
    #[test]
    fn the_ready_edge_marks_a_moved_vcpu_info() {
        const INFO: u64 = 0x13_0000;
        let mut t = fifo_domain();
        let (_, b) = bound_port(&mut t);
        let upcalls = t.platform.upcalls();
        assert_eq!(t.dom.evtchn.register_vcpu_info(0, INFO), Ok(()));
        assert_eq!(t.get::<u8>(INFO), 1, "the spurious event of the move");
        assert_eq!(t.platform.upcalls(), upcalls + 1);
        t.put(INFO, &0u8);
        assert_eq!(t.dom.evtchn.register_vcpu_info(0, INFO + 64), Err(pv_abi::errno::EBUSY));
        assert_eq!(t.dom.evtchn.notify_binding(b), Ok(true));
        assert_eq!(t.get::<u8>(INFO), 1, "upcall_pending at the new place");
        assert_eq!(upcall_pending(&t), 0, "the shared-info slot is not used any more");
        assert_eq!(t.get::<u8>(INFO + 64), 0, "nothing written at the refused place");
    }

    /// `evtchn_fifo_set_pending()`: PENDING and LINKED set, the first event
    /// of a queue written to `head[q]`, `ready` bit `q` set and on its edge
    /// `evtchn_upcall_pending` and one upcall; a second event of the queue
    /// linked from the tail's LINK without another upcall; another
    /// priority gets its own queue.
    #[test]
    fn events_are_queued_by_priority_and_the_ready_edge_raises_the_upcall() {
        let mut t = fifo_domain();
        let (a, ba) = bound_port(&mut t);
        let (b, bb) = bound_port(&mut t);
        let (c, bc) = bound_port(&mut t);
        assert_eq!(set_priority(&mut t, c, 2), 0);
        assert_eq!(t.dom.evtchn.notify_binding(ba), Ok(true));
        assert_eq!(word(&t, a), P | L);
        let q = EVTCHN_FIFO_PRIORITY_DEFAULT as usize;
        assert_eq!((cb(&t).ready, cb(&t).head[q]), (1 << q, a));
        assert_eq!(upcall_pending(&t), 1);
        assert_eq!(t.platform.upcalls(), 1);
        assert!(t.dom.evtchn.is_pending(a));
        assert!(!t.dom.evtchn.is_pending(b));
        assert_eq!(t.dom.evtchn.notify_binding(bb), Ok(false), "the queue was not empty");
        assert_eq!(word(&t, a), P | L | b, "a's LINK names b");
        assert_eq!(word(&t, b), P | L);
        assert_eq!(cb(&t).head[q], a);
        assert_eq!(t.dom.evtchn.notify_binding(bc), Ok(false), "upcall_pending already set");
        assert_eq!((cb(&t).ready, cb(&t).head[2]), (1 << q | 1 << 2, c));
        assert_eq!(word(&t, b) & EVTCHN_FIFO_LINK_MASK, 0, "c is on another queue");
        assert_eq!(t.platform.upcalls(), 1);
        // Already pending and linked: nothing changes.
        assert_eq!(t.dom.evtchn.notify_binding(ba), Ok(false));
        assert_eq!(word(&t, a), P | L | b);
    }

    /// The guest consumed the queue (cleared LINKED and `ready`,
    /// `upcall_pending`): the next event starts the queue again at `head`
    /// (`try_set_link()` finds the old tail unlinked) and raises an upcall.
    #[test]
    fn an_event_after_the_guest_emptied_the_queue_restarts_it_at_head() {
        let mut t = fifo_domain();
        let (a, ba) = bound_port(&mut t);
        let (b, bb) = bound_port(&mut t);
        assert_eq!(t.dom.evtchn.notify_binding(ba), Ok(true));
        set_word(&t, a, 0);
        t.put(CB, &0u32);
        t.put(SHARED_INFO + SharedInfo::upcall_pending_offset(0) as u64, &0u8);
        assert_eq!(t.dom.evtchn.notify_binding(bb), Ok(true));
        let q = EVTCHN_FIFO_PRIORITY_DEFAULT as usize;
        assert_eq!((cb(&t).ready, cb(&t).head[q]), (1 << q, b));
        assert_eq!(word(&t, a), 0, "the old tail was not relinked");
        assert_eq!(t.platform.upcalls(), 2);
    }

    /// A masked event is PENDING but not linked; `EVTCHNOP_unmask`
    /// (`evtchn_fifo_unmask()`) clears MASKED and links it.
    #[test]
    fn a_masked_event_is_linked_when_unmasked() {
        let mut t = fifo_domain();
        let (a, ba) = bound_port(&mut t);
        set_word(&t, a, M);
        assert_eq!(t.dom.evtchn.notify_binding(ba), Ok(false));
        assert_eq!(word(&t, a), M | P);
        assert_eq!(cb(&t).ready, 0);
        assert_eq!(t.platform.upcalls(), 0);
        t.put(TEST_ARG, &EvtchnUnmask { port: a });
        assert_eq!(op(&mut t, EVTCHNOP_UNMASK), 0);
        assert_eq!(word(&t, a), P | L);
        assert_eq!(cb(&t).head[EVTCHN_FIFO_PRIORITY_DEFAULT as usize], a);
        assert_eq!(t.platform.upcalls(), 1);
        // Unmasking a port that is not pending links nothing.
        let (b, _bb) = bound_port(&mut t);
        set_word(&t, b, M);
        t.put(TEST_ARG, &EvtchnUnmask { port: b });
        assert_eq!(op(&mut t, EVTCHNOP_UNMASK), 0);
        assert_eq!(word(&t, b), 0);
    }

    /// The switch (`setup_ports()`, `add_page_to_event_array()`): an event
    /// pending on the 2-level bitmap, and one sent before the array page
    /// exists, are linked when the page is added.
    #[test]
    fn pending_events_carry_over_from_2_level_to_the_first_array_page() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        let (a, ba) = bound_port(&mut t);
        let (b, bb) = bound_port(&mut t);
        assert_eq!(t.dom.evtchn.notify_binding(ba), Ok(true));
        let bit = |t: &TestDomain, port: u32| t.get::<u64>(SHARED_INFO + LAYOUT_64.pending as u64) & (1 << port) != 0;
        assert!(bit(&t, a));
        t.put(SHARED_INFO + SharedInfo::upcall_pending_offset(0) as u64, &0u8);
        assert_eq!(init_control(&mut t, CB_GFN, 0, 0), 0);
        assert!(!t.dom.evtchn.is_pending(a), "no word for it yet");
        assert_eq!(t.dom.evtchn.notify_binding(bb), Ok(false), "saved for the page");
        assert!(!bit(&t, b), "FIFO now: the 2-level bitmap is not used");
        assert_eq!(expand(&mut t, ARRAY_GFN), 0);
        assert_eq!((word(&t, a), word(&t, b)), (P | L | b, P | L));
        assert_eq!(cb(&t).head[EVTCHN_FIFO_PRIORITY_DEFAULT as usize], a);
        assert_eq!(upcall_pending(&t), 1);
        assert_eq!(t.platform.upcalls(), 2);
    }

    /// A hostile guest: garbage in the control block and the event words,
    /// and a tail word changing under the compare-exchange (another
    /// thread flips it as fast as it can). Every operation returns (the
    /// retries are bounded as `evtchn_fifo_set_link()`), nothing panics,
    /// and the VMM never follows a guest-written LINK.
    #[test]
    fn garbage_and_racing_words_never_panic_or_hang() {
        let mut t = fifo_domain();
        let (a, ba) = bound_port(&mut t);
        let (b, bb) = bound_port(&mut t);
        t.put(CB, &[0xffu8; 72]);
        assert_eq!(t.dom.evtchn.notify_binding(ba), Ok(false), "ready bit already set: no new upcall");
        assert_eq!(word(&t, a), P | L);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ram = t.dom.ram.clone();
        let at = ARRAY_GFN * PAGE_SIZE + u64::from(a) * 4;
        let flipper = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let _ = ram.with_atomic(at, |w: &AtomicU32| w.store(x | L, Ordering::SeqCst));
                }
            })
        };
        for _ in 0..2000 {
            let _ = t.dom.evtchn.notify_binding(bb);
            set_word(&t, b, EVTCHN_FIFO_LINK_MASK);
            t.put(TEST_ARG, &EvtchnUnmask { port: b });
            assert_eq!(op(&mut t, EVTCHNOP_UNMASK), 0);
        }
        stop.store(true, Ordering::Relaxed);
        flipper.join().unwrap();
        for port in [a, b] {
            t.put(TEST_ARG, &EvtchnClose { port });
            assert_eq!(op(&mut t, EVTCHNOP_CLOSE), 0);
        }
    }

    /// The guest's close clears PENDING (`evtchn_fifo_clear_pending()`) and
    /// the port's next user starts at the default priority
    /// (`evtchn_fifo_init()`); `EVTCHNOP_reset` returns the domain to
    /// 2-level (`evtchn_reset()`), where the FIFO ops refuse again.
    #[test]
    fn close_clears_pending_and_reset_returns_to_2_level() {
        let mut t = fifo_domain();
        let (a, ba) = bound_port(&mut t);
        assert_eq!(set_priority(&mut t, a, 1), 0);
        assert_eq!(t.dom.evtchn.notify_binding(ba), Ok(true));
        assert_eq!(cb(&t).head[1], a);
        t.put(TEST_ARG, &EvtchnClose { port: a });
        assert_eq!(op(&mut t, EVTCHNOP_CLOSE), 0);
        assert_eq!(word(&t, a), L, "PENDING cleared; the guest unlinks it");
        set_word(&t, a, 0);
        let (a2, ba2) = bound_port(&mut t);
        assert_eq!(a2, a, "the number is reused");
        t.put(CB, &0u32);
        assert_eq!(t.dom.evtchn.notify_binding(ba2), Ok(false));
        assert_eq!(cb(&t).head[EVTCHN_FIFO_PRIORITY_DEFAULT as usize], a, "default queue again");
        t.put(TEST_ARG, &DOMID_SELF);
        assert_eq!(op(&mut t, EVTCHNOP_RESET), 0);
        assert!(!t.dom.evtchn.uses_fifo());
        assert_eq!(expand(&mut t, ARRAY_GFN), -EOPNOTSUPP);
        assert_eq!(init_control(&mut t, CB_GFN, 0, 0), 0, "a new switch is allowed");
    }
}
