//! `event_channel_op` and the port table (Xen's `xen/common/event_channel.c`,
//! `xen/include/public/event_channel.h`), over the 2-level bitmaps of
//! [`two_level`].
//!
//! - Host to guest: set the port's pending bit; on a 0->1 edge of an
//!   unmasked port set the selector bit and `upcall_pending`, and on its
//!   0->1 edge raise an upcall through the [`Platform`] (KVM: an irqfd
//!   routed as an MSI to the guest's upcall vector).
//! - Guest to host: `EVTCHNOP_send` (one exit to the VMM), or the doorbell:
//!   a 32-bit `out` of the port number to `DOORBELL_PORT`, bound per port
//!   through the [`Platform`] (KVM: an ioeventfd), which wakes the
//!   back-end's eventfd without a userspace exit on the vCPU thread.
//!
//! The guest is domain [`GUEST_DOMID`]; the VMM and its back-ends are
//! domain 0. Guest ports are numbered from 1.
//!
//! Ownership: each domain-0 binding of a guest port gets a generation
//! ([`Binding`]). A back end closes and notifies through its binding only,
//! so after the guest closes a port (`EVTCHNOP_close` frees it, as Xen
//! does for an interdomain port) and the number is bound again by another
//! device, the first device's teardown and notifications are no-ops for
//! the second's. A back end learns of the guest's close through xenbus
//! (the front end's state), as in Xen.
//!
//! Closing is Xen's `evtchn_close()` from either side: the guest's close
//! frees its port and clears its pending bit; domain 0's close (device
//! teardown, [`EventChannels::close`]) frees only domain 0's end, and the
//! guest's port stays allocated as `ECS_UNBOUND` with remote domain 0
//! until the guest closes it.
//!
//! The ABI: 2-level until the guest's first `EVTCHNOP_init_control`
//! switches the domain to [`fifo`] (back to 2-level on `EVTCHNOP_reset`),
//! as Xen's `d->evtchn_port_ops`. The port table is the same for both.

pub mod fifo;
pub mod state;
pub mod two_level;

use crate::domid::GUEST_DOMID;
use crate::guest_memory::{BadGuestRange, GuestRam};
use crate::platform::Platform;
use fifo::Fifo;
use pv_abi::errno::{EBUSY, EFAULT, EINVAL, ENOENT, ENOSPC, ENOSYS, EPERM, ESRCH};
use pv_abi::event_channel::*;
use pv_abi::shared_info::EvtchnLayout;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use two_level::TwoLevel;
use vmm_sys_util::eventfd::EventFd;

/// An event-channel error for host callers (back-ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EvtchnError {
    /// The port is out of range or not in the state the operation needs.
    #[error("event-channel port {0} is not usable for this operation")]
    BadPort(u32),
    /// No free port left.
    #[error("no free event-channel port")]
    NoSpace,
    /// The machine refused the doorbell registration.
    #[error("cannot register the doorbell ioeventfd for port {0}")]
    Doorbell(u32),
    /// The binding was closed (by the guest) since it was made.
    #[error("event-channel port {0}: this binding was closed")]
    Stale(u32),
    /// The shared-info page is outside RAM (cannot happen with our layout).
    #[error("shared-info page unreachable")]
    SharedInfo,
    /// No such domain may use the channel.
    #[error("domain {0} cannot use this channel")]
    BadDomain(DomId),
}

impl EvtchnError {
    /// The errno a guest sees for this error.
    pub fn errno(self) -> i64 {
        match self {
            EvtchnError::BadPort(_) | EvtchnError::Stale(_) => EINVAL,
            EvtchnError::NoSpace => ENOSPC,
            EvtchnError::Doorbell(_) | EvtchnError::SharedInfo => pv_abi::errno::EIO,
            EvtchnError::BadDomain(_) => ESRCH,
        }
    }
}

#[derive(Clone)]
enum PortState {
    Free,
    /// Allocated by the guest, waiting for domain 0 to bind.
    Unbound {
        remote_dom: DomId,
    },
    /// Bound to a virtual IRQ of vCPU 0 (`EVTCHNOP_bind_virq`).
    Virq {
        virq: u32,
    },
    /// An inter-processor interrupt to vCPU 0 (`EVTCHNOP_bind_ipi`).
    Ipi,
    /// Connected to another port of the guest itself (a loopback
    /// `EVTCHNOP_bind_interdomain`).
    Loopback {
        peer: u32,
    },
    /// Connected to a domain-0 endpoint whose back-end sleeps on `wake`.
    Interdomain {
        remote_port: u32,
        wake: Arc<EventFd>,
        /// This binding's generation ([`Binding`]).
        gen: u64,
    },
    /// An interdomain port restored from a snapshot whose back end has not
    /// re-attached yet ([`EventChannels::reattach`]): the guest sees it
    /// bound; a send is remembered in `kicked` for the back end.
    Detached {
        remote_port: u32,
        kicked: bool,
    },
}

/// A domain-0 binding of a guest port: the port and the generation it was
/// bound with. Operations through a stale binding do nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// The guest port.
    pub port: u32,
    /// Generation of the binding (unique per VM).
    pub gen: u64,
}

/// A domain-0 endpoint the guest may bind to with `EVTCHNOP_bind_interdomain`.
struct Dom0Port {
    wake: Arc<EventFd>,
    /// The only domain allowed to bind it (Xen's `remote_domid`).
    remote_dom: DomId,
    /// The guest port bound to it.
    bound_to: Option<u32>,
}

/// Counters of event traffic.
#[derive(Debug, Default)]
pub struct EvtchnMetrics {
    /// `EVTCHNOP_send` hypercalls (and unmatched doorbell exits).
    pub sends: AtomicU64,
    /// Host-to-guest notifications requested by back-ends.
    pub notifies: AtomicU64,
    /// Of those, how many raised an upcall interrupt.
    pub upcalls: AtomicU64,
}

struct Table {
    ports: Vec<PortState>,
    /// Each port's notify vCPU (Xen's `chn->notify_vcpu_id`): whose
    /// `vcpu_info` and upcall its events use; 0 for a free port.
    notify_vcpu: Vec<u32>,
    dom0: Vec<Dom0Port>,
    /// Last binding generation handed out.
    gen: u64,
}

impl Table {
    fn next_gen(&mut self) -> u64 {
        self.gen += 1;
        self.gen
    }
}

/// The guest's event channels.
pub struct EventChannels {
    table: Mutex<Table>,
    ram: GuestRam,
    bitmaps: TwoLevel,
    /// The FIFO ABI, once the guest chose it.
    fifo: Fifo,
    platform: Arc<dyn Platform>,
    /// How many vCPUs the domain has (targets of `bind_vcpu`, `bind_ipi`,
    /// per-vCPU virqs).
    nr_vcpus: std::sync::atomic::AtomicU32,
    /// Event counters.
    pub counters: EvtchnMetrics,
}

impl std::fmt::Debug for EventChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventChannels").field("bitmaps", &self.bitmaps).finish_non_exhaustive()
    }
}

impl EventChannels {
    /// An empty port table over the shared-info page at `shared_info`
    /// (cleared here), raising upcalls and binding doorbells through
    /// `platform`.
    pub fn new(platform: Arc<dyn Platform>, ram: GuestRam, shared_info: u64) -> Result<Self, BadGuestRange> {
        let bitmaps = TwoLevel::new(ram.clone(), shared_info);
        bitmaps.reset()?;
        Ok(EventChannels {
            table: Mutex::new(Table {
                ports: vec![PortState::Free; MAX_PORTS as usize],
                notify_vcpu: vec![0; MAX_PORTS as usize],
                dom0: Vec::new(),
                gen: 0,
            }),
            fifo: Fifo::new(ram.clone()),
            ram,
            bitmaps,
            platform,
            nr_vcpus: std::sync::atomic::AtomicU32::new(1),
            counters: EvtchnMetrics::default(),
        })
    }

    /// Chooses the shared-info layout: Xen's x86_32 one (`true`) or x86-64.
    ///
    /// The rule (Xen decides by the guest's mode too): a PVH guest's layout
    /// is fixed by the vCPU's mode at the hypercall that places the
    /// shared-info page (`XENMEM_add_to_physmap`) or chooses how events
    /// arrive (`HVM_PARAM_CALLBACK_IRQ`, `HVMOP_set_evtchn_upcall_vector`);
    /// the latest such call wins. Our own guests are 64-bit and never call
    /// this.
    pub fn set_compat_layout(&self, compat: bool) {
        self.bitmaps.set_compat_layout(compat);
    }

    /// The domain has `n` vCPUs (set once by the builder): targets of
    /// binds, and how many may register FIFO control blocks.
    pub fn set_vcpus(&self, n: u32) {
        self.nr_vcpus.store(n.max(1), Ordering::Relaxed);
        self.fifo.set_vcpus(n.max(1));
    }

    /// Whether vCPU `vcpu` exists (Xen's `domain_vcpu()`).
    fn vcpu_exists(&self, vcpu: u32) -> bool {
        vcpu < self.nr_vcpus.load(Ordering::Relaxed)
    }

    /// Sets `port` pending as a back end's notification would (tests).
    #[cfg(test)]
    fn notify_guest_for_test(&self, port: u32) {
        self.set_pending(port).unwrap();
    }

    /// Frees `port` again after a failed output (notify vCPU back to 0).
    fn release(&self, port: u32) {
        let mut t = self.lock();
        t.ports[port as usize] = PortState::Free;
        t.notify_vcpu[port as usize] = 0;
    }

    /// `port`'s notify vCPU (0 for a port beyond the table).
    pub fn notify_vcpu(&self, port: u32) -> u32 {
        self.lock().notify_vcpu.get(port as usize).copied().unwrap_or(0)
    }

    /// Where `vcpu`'s `vcpu_info` is (guest-physical): registered with
    /// `VCPUOP_register_vcpu_info`, else its shared-info slot.
    pub fn vcpu_info(&self, vcpu: u32) -> Option<u64> {
        self.bitmaps.vcpu_info(vcpu)
    }

    /// Whether `vcpu`'s `vcpu_info` was moved out of the shared-info page.
    pub fn vcpu_info_registered(&self, vcpu: u32) -> bool {
        self.bitmaps.vcpu_info_registered(vcpu)
    }

    /// `VCPUOP_register_vcpu_info` once its argument is checked: moves
    /// `vcpu`'s `vcpu_info` to `gpa` (`-EBUSY` if moved before, as Xen's
    /// `map_guest_area()`) and raises a (possibly spurious) upcall so no
    /// event pending at the move is lost.
    pub fn register_vcpu_info(&self, vcpu: u32, gpa: u64) -> Result<(), i64> {
        match self.bitmaps.move_vcpu_info(vcpu, gpa) {
            Ok(raise) => {
                self.upcall_if(raise, vcpu);
                Ok(())
            }
            Err(None) => Err(EBUSY),
            Err(Some(_)) => Err(EFAULT),
        }
    }

    /// The shared-info layout in use.
    pub fn layout(&self) -> &'static EvtchnLayout {
        self.bitmaps.layout()
    }

    /// The machine this table raises upcalls on.
    pub fn platform(&self) -> &Arc<dyn Platform> {
        &self.platform
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A poisoned lock means a back-end thread panicked mid-update; the
        // table itself is always consistent between statements.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn free_port(t: &Table) -> Option<u32> {
        (1..MAX_PORTS).find(|&p| matches!(t.ports[p as usize], PortState::Free))
    }

    fn register_doorbell(&self, port: u32, wake: &EventFd) -> Result<(), EvtchnError> {
        self.platform.bind_doorbell(port, wake).map_err(|_| EvtchnError::Doorbell(port))
    }

    fn unregister_doorbell(&self, port: u32, wake: &EventFd) {
        if let Err(e) = self.platform.unbind_doorbell(port, wake) {
            tracing::warn!(port, "cannot unregister doorbell: {e}");
        }
    }

    // ---- Host (domain 0) side -------------------------------------------

    /// Allocates a guest port already connected to a domain-0 back-end that
    /// sleeps on `wake` — what Xen's domain builder does for the console
    /// and store channels before the guest starts.
    pub fn prebind(&self, wake: Arc<EventFd>) -> Result<u32, EvtchnError> {
        let mut t = self.lock();
        let port = Self::free_port(&t).ok_or(EvtchnError::NoSpace)?;
        self.register_doorbell(port, &wake)?;
        let gen = t.next_gen();
        t.ports[port as usize] = PortState::Interdomain { remote_port: port, wake, gen };
        Ok(port)
    }

    /// Binds domain 0 to a port the guest allocated with
    /// `EVTCHNOP_alloc_unbound` (remote domain 0): the back-end's half of
    /// the xenbus handshake.
    pub fn bind_guest_port(&self, port: u32, wake: Arc<EventFd>) -> Result<Binding, EvtchnError> {
        let mut t = self.lock();
        match t.ports.get(port as usize) {
            Some(PortState::Unbound { remote_dom: 0 }) => {}
            _ => return Err(EvtchnError::BadPort(port)),
        }
        self.register_doorbell(port, &wake)?;
        let gen = t.next_gen();
        t.ports[port as usize] = PortState::Interdomain { remote_port: port, wake, gen };
        Ok(Binding { port, gen })
    }

    /// The current domain-0 binding of `port`, if it is bound.
    pub fn binding(&self, port: u32) -> Option<Binding> {
        match self.lock().ports.get(port as usize) {
            Some(PortState::Interdomain { gen, .. }) => Some(Binding { port, gen: *gen }),
            _ => None,
        }
    }

    /// Closes `b` if it is still the port's binding (device teardown);
    /// a stale binding (the guest closed the port, maybe rebound since) is
    /// left alone.
    pub fn close_binding(&self, b: Binding) -> Result<(), EvtchnError> {
        if self.binding(b.port) != Some(b) {
            return Err(EvtchnError::Stale(b.port));
        }
        self.close(b.port)
    }

    /// Notifies the guest through `b` if it is still the port's binding.
    pub fn notify_binding(&self, b: Binding) -> Result<bool, EvtchnError> {
        if self.binding(b.port) != Some(b) {
            return Err(EvtchnError::Stale(b.port));
        }
        self.notify_guest(b.port)
    }

    /// Domain 0's `EVTCHNOP_alloc_unbound(remote_dom)`: a domain-0 port
    /// (numbered from 1) that guest `remote_dom` may bind with
    /// `EVTCHNOP_bind_interdomain(0, port)`; the caller publishes the
    /// number (in the store, as a back end would) and sleeps on `wake`,
    /// which the guest's sends signal once bound. Domain 0 sends back with
    /// [`notify_dom0_port`](Self::notify_dom0_port). This is the direction
    /// where the back end allocates and the front end binds; the bundled
    /// devices use the other one ([`bind_guest_port`](Self::bind_guest_port)).
    pub fn alloc_dom0_unbound(&self, remote_dom: DomId, wake: Arc<EventFd>) -> Result<u32, EvtchnError> {
        if remote_dom != GUEST_DOMID {
            return Err(EvtchnError::BadDomain(remote_dom));
        }
        let mut t = self.lock();
        if t.dom0.len() >= MAX_PORTS as usize {
            return Err(EvtchnError::NoSpace);
        }
        t.dom0.push(Dom0Port { wake, remote_dom, bound_to: None });
        Ok(t.dom0.len() as u32)
    }

    /// The guest port bound to domain-0 port `dom0_port`, if any.
    pub fn dom0_peer(&self, dom0_port: u32) -> Option<u32> {
        let idx = (dom0_port as usize).checked_sub(1)?;
        self.lock().dom0.get(idx)?.bound_to
    }

    /// Domain 0 sends on its port `dom0_port`: the guest port bound to it
    /// gets the event. Sending on a port the guest has not bound yet is a
    /// no-op (`Ok(false)`), as in Xen. Returns whether an upcall was raised.
    pub fn notify_dom0_port(&self, dom0_port: u32) -> Result<bool, EvtchnError> {
        let idx = (dom0_port as usize).checked_sub(1).ok_or(EvtchnError::BadPort(dom0_port))?;
        let peer = self.lock().dom0.get(idx).ok_or(EvtchnError::BadPort(dom0_port))?.bound_to;
        match peer {
            Some(port) => self.notify_guest(port),
            None => Ok(false),
        }
    }

    /// Domain 0 closes its end of the channel at guest `port` (device
    /// teardown). Xen's `evtchn_close()` run by domain 0 frees domain 0's
    /// port and leaves the guest's `ECS_UNBOUND` with remote domain 0: it
    /// stays allocated (pending bit kept) until the guest closes it, a
    /// guest send on it is dropped, and a back end may bind it again.
    pub fn close(&self, port: u32) -> Result<(), EvtchnError> {
        let mut t = self.lock();
        let Some(PortState::Interdomain { wake, .. }) = t.ports.get(port as usize) else {
            return Err(EvtchnError::BadPort(port));
        };
        self.unregister_doorbell(port, wake);
        t.ports[port as usize] = PortState::Unbound { remote_dom: DOMID_VMM };
        for d in t.dom0.iter_mut().filter(|d| d.bound_to == Some(port)) {
            d.bound_to = None;
        }
        Ok(())
    }

    /// The guest's `EVTCHNOP_close` (Xen's `evtchn_close(d, port, 1)`):
    /// frees the port and clears its pending bit (`evtchn_free()`); a
    /// domain-0 port bound to it becomes unbound again.
    fn guest_close(&self, port: u32) -> Result<(), i64> {
        let mut t = self.lock();
        match t.ports.get(port as usize) {
            None | Some(PortState::Free) => return Err(EINVAL),
            Some(PortState::Interdomain { wake, .. }) => self.unregister_doorbell(port, wake),
            // The peer waits for a new partner, as Xen's `ECS_UNBOUND`.
            Some(&PortState::Loopback { peer }) => {
                t.ports[peer as usize] = PortState::Unbound { remote_dom: GUEST_DOMID };
            }
            Some(_) => {}
        }
        t.ports[port as usize] = PortState::Free;
        t.notify_vcpu[port as usize] = 0;
        for d in t.dom0.iter_mut().filter(|d| d.bound_to == Some(port)) {
            d.bound_to = None;
        }
        // Still under the table lock, so a new user of the number keeps
        // its events.
        let cleared = match self.fifo.clear_pending(port) {
            Some(r) => r,
            None => self.bitmaps.clear_pending(port),
        };
        if cleared.is_err() {
            tracing::warn!(port, "cannot clear the pending bit of a closed port");
        }
        self.fifo.port_freed(port);
        Ok(())
    }

    /// Closes every guest port as the guest's close does (Xen's
    /// `evtchn_reset()`, which runs `evtchn_close(d, port, 1)` on each),
    /// and returns the domain to the 2-level ABI.
    pub fn reset(&self) {
        for port in 1..MAX_PORTS {
            let _ = self.guest_close(port);
        }
        self.fifo.destroy();
    }

    /// Whether the guest switched to the FIFO ABI.
    pub fn uses_fifo(&self) -> bool {
        self.fifo.is_active()
    }

    /// `EVTCHNOP_bind_virq` for vCPU 0: a fresh port raised by
    /// [`notify_virq`](Self::notify_virq). A virq binds once (`EEXIST`).
    /// Xen's `evtchn_bind_virq()`: a virq that is not per-vCPU only on
    /// vCPU 0 (`EINVAL`); a vCPU that does not exist `ENOENT`; a global
    /// virq belongs to the hardware domain (`EBUSY` for a domU).
    pub fn bind_virq(&self, virq: u32, vcpu: u32) -> Result<u32, i64> {
        if virq >= NR_VIRQS {
            return Err(EINVAL);
        }
        let per_vcpu = PER_VCPU_VIRQS.contains(&virq);
        if !per_vcpu && vcpu != 0 {
            return Err(EINVAL);
        }
        if !self.vcpu_exists(vcpu) {
            return Err(ENOENT);
        }
        if !per_vcpu && virq != VIRQ_ARGO {
            return Err(EBUSY);
        }
        let mut t = self.lock();
        if Self::virq_port(&t, virq, vcpu).is_some() {
            return Err(pv_abi::errno::EEXIST);
        }
        let port = Self::free_port(&t).ok_or(ENOSPC)?;
        t.ports[port as usize] = PortState::Virq { virq };
        t.notify_vcpu[port as usize] = vcpu;
        Ok(port)
    }

    /// The port `virq` is bound to on `vcpu` (Xen's `v->virq_to_evtchn`;
    /// a global virq has one port, whichever vCPU it notifies).
    fn virq_port(t: &Table, virq: u32, vcpu: u32) -> Option<u32> {
        let per_vcpu = PER_VCPU_VIRQS.contains(&virq);
        let at = t.ports.iter().enumerate().position(|(p, s)| {
            matches!(s, PortState::Virq { virq: v } if *v == virq) && (!per_vcpu || t.notify_vcpu[p] == vcpu)
        });
        at.map(|p| p as u32)
    }

    /// Raises `virq` on the port bound to it, if any (Xen's `send_guest_vcpu_virq`).
    /// Returns whether an upcall was raised.
    pub fn notify_virq(&self, virq: u32) -> Result<bool, EvtchnError> {
        self.notify_vcpu_virq(virq, 0)
    }

    /// Raises `virq` of `vcpu` (a per-vCPU virq such as `VIRQ_TIMER`; a
    /// global one wherever its port points). Returns whether an upcall was
    /// raised.
    pub fn notify_vcpu_virq(&self, virq: u32, vcpu: u32) -> Result<bool, EvtchnError> {
        let port = Self::virq_port(&self.lock(), virq, vcpu);
        match port {
            Some(port) => {
                self.counters.notifies.fetch_add(1, Ordering::Relaxed);
                self.set_pending(port)
            }
            None => Ok(false),
        }
    }

    /// Whether `port` is pending (its bit in the shared-info page, or
    /// PENDING in its FIFO event word).
    pub fn is_pending(&self, port: u32) -> bool {
        self.fifo.is_pending(port).unwrap_or_else(|| self.bitmaps.is_pending(port))
    }

    /// Notifies the guest on `port` (Xen's `evtchn_2l_set_pending`).
    /// Returns whether an upcall interrupt was raised.
    pub fn notify_guest(&self, port: u32) -> Result<bool, EvtchnError> {
        if !matches!(self.lock().ports.get(port as usize), Some(PortState::Interdomain { .. })) {
            return Err(EvtchnError::BadPort(port));
        }
        self.counters.notifies.fetch_add(1, Ordering::Relaxed);
        self.set_pending(port)
    }

    fn set_pending(&self, port: u32) -> Result<bool, EvtchnError> {
        let vcpu = self.notify_vcpu(port);
        let raise = match self.fifo.set_pending(vcpu, port) {
            Some(r) => self.fifo_mark(vcpu, r),
            None => self.bitmaps.set_pending(port, vcpu),
        };
        match raise {
            Ok(Some(raise)) => Ok(self.upcall_if(raise, vcpu)),
            Ok(None) => Err(EvtchnError::BadPort(port)),
            Err(_) => Err(EvtchnError::SharedInfo),
        }
    }

    /// The end of a FIFO set-pending: on a `ready` edge,
    /// `vcpu_mark_events_pending()`.
    fn fifo_mark(&self, vcpu: u32, ready_edge: Result<bool, BadGuestRange>) -> Result<Option<bool>, BadGuestRange> {
        match ready_edge? {
            true => self.bitmaps.mark_events_pending(vcpu).map(Some),
            false => Ok(Some(false)),
        }
    }

    /// Interrupts `vcpu` if `raise`; returns `raise`.
    fn upcall_if(&self, raise: bool, vcpu: u32) -> bool {
        if raise {
            self.counters.upcalls.fetch_add(1, Ordering::Relaxed);
            self.platform.raise_upcall(vcpu);
        }
        raise
    }

    /// Wakes the back-end bound to `port` (guest send). Sending on an
    /// unbound port is a no-op, as in Xen.
    fn send(&self, port: u32) -> Result<(), i64> {
        let mut t = self.lock();
        if let Some(PortState::Detached { kicked, .. }) = t.ports.get_mut(port as usize) {
            // The back end re-attaching after a restore is woken then.
            *kicked = true;
            self.counters.sends.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        match t.ports.get(port as usize) {
            Some(PortState::Interdomain { wake, .. }) => {
                self.counters.sends.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = wake.write(1) {
                    tracing::warn!(port, "cannot wake back-end: {e}");
                }
                Ok(())
            }
            Some(PortState::Unbound { .. }) => Ok(()),
            Some(&PortState::Loopback { peer }) => {
                drop(t);
                self.counters.sends.fetch_add(1, Ordering::Relaxed);
                self.set_pending(peer).map(|_| ()).map_err(|e| e.errno())
            }
            Some(PortState::Ipi) => {
                drop(t);
                self.counters.sends.fetch_add(1, Ordering::Relaxed);
                self.set_pending(port).map(|_| ()).map_err(|e| e.errno())
            }
            _ => Err(EINVAL),
        }
    }

    /// A doorbell `out` that no ioeventfd matched (the port is unbound or
    /// the guest used the wrong width): handled like `EVTCHNOP_send`.
    pub fn doorbell_exit(&self, data: &[u8]) {
        let mut v = [0u8; 4];
        let n = data.len().min(4);
        v[..n].copy_from_slice(&data[..n]);
        let port = u32::from_le_bytes(v);
        if self.send(port).is_err() {
            tracing::debug!(port, "doorbell on an unusable port");
        }
    }

    // ---- Guest hypercall side --------------------------------------------

    /// `event_channel_op(cmd, arg)`.
    pub fn hypercall(&self, cmd: u64, arg: u64) -> Result<u64, i64> {
        let ram = &self.ram;
        match u32::try_from(cmd).map_err(|_| pv_abi::errno::ENOSYS)? {
            EVTCHNOP_ALLOC_UNBOUND => self.alloc_unbound_op(arg),
            EVTCHNOP_BIND_INTERDOMAIN => self.bind_interdomain_op(arg),
            EVTCHNOP_SEND => {
                let a: EvtchnSend = ram.read_obj(arg)?;
                self.send(a.port).map(|_| 0)
            }
            EVTCHNOP_CLOSE => {
                let a: EvtchnClose = ram.read_obj(arg)?;
                self.guest_close(a.port).map(|_| 0)
            }
            EVTCHNOP_UNMASK => {
                let a: EvtchnUnmask = ram.read_obj(arg)?;
                self.unmask(a.port).map(|_| 0)
            }
            EVTCHNOP_STATUS => self.status_op(arg),
            EVTCHNOP_BIND_VIRQ => {
                let mut a: EvtchnBindVirq = ram.read_obj(arg)?;
                a.port = self.bind_virq(a.virq, a.vcpu)?;
                if let Err(e) = ram.copy_obj_to_guest(arg, &a) {
                    self.release(a.port);
                    return Err(e.into());
                }
                Ok(0)
            }
            EVTCHNOP_BIND_IPI => self.bind_ipi_op(arg),
            EVTCHNOP_BIND_VCPU => {
                let [port, vcpu]: [u32; 2] = ram.read_obj(arg)?;
                self.bind_vcpu(port, vcpu).map(|_| 0)
            }
            EVTCHNOP_RESET => self.reset_op(arg),
            EVTCHNOP_INIT_CONTROL => self.init_control_op(arg),
            EVTCHNOP_EXPAND_ARRAY => {
                let a: EvtchnExpandArray = ram.read_obj(arg)?;
                // Events saved for the new page's ports go to each port's
                // notify vCPU. A snapshot: the FIFO lock is taken after the
                // table's elsewhere (init_control), never before it.
                let notify = self.lock().notify_vcpu.clone();
                let vcpu_of = |port: u32| notify.get(port as usize).copied().unwrap_or(0);
                for vcpu in self.fifo.expand_array(a.array_gfn, vcpu_of)? {
                    self.upcall_if(self.bitmaps.mark_events_pending(vcpu).map_err(|_| EFAULT)?, vcpu);
                }
                Ok(0)
            }
            EVTCHNOP_SET_PRIORITY => {
                let a: EvtchnSetPriority = ram.read_obj(arg)?;
                // `evtchn_set_priority()`: an invalid port first, then
                // `evtchn_port_set_priority()` (`evtchn_usable()`: a port
                // in use; port 0 is reserved).
                let t = self.lock();
                let state = t.ports.get(a.port as usize).ok_or(EINVAL)?;
                let usable = a.port != 0 && !matches!(state, PortState::Free);
                drop(t);
                self.fifo.set_priority(a.port, a.priority, usable).map(|_| 0)
            }
            _ => Err(ENOSYS),
        }
    }

    /// `EVTCHNOP_init_control` (`evtchn_fifo_init_control()`): `link_bits`
    /// is written back on success only (a bad output pointer is `EFAULT`,
    /// the control block stays registered, as in Xen).
    fn init_control_op(&self, arg: u64) -> Result<u64, i64> {
        let mut a: EvtchnInitControl = self.ram.read_obj(arg)?;
        a.link_bits = EVTCHN_FIFO_LINK_BITS as u8;
        // The table lock keeps ports from changing while their 2-level
        // pending bits are carried over (Xen holds `d->event_lock`).
        let t = self.lock();
        self.fifo.init_control(&a, |port| self.bitmaps.is_pending(port))?;
        drop(t);
        self.ram.copy_obj_to_guest(arg, &a)?;
        Ok(0)
    }

    /// `EVTCHNOP_bind_ipi` (Xen's `evtchn_bind_ipi()`): a port whose
    /// sends notify `vcpu` (`-ENOENT` if it does not exist).
    fn bind_ipi_op(&self, arg: u64) -> Result<u64, i64> {
        let [vcpu, _]: [u32; 2] = self.ram.read_obj(arg)?;
        if !self.vcpu_exists(vcpu) {
            return Err(ENOENT);
        }
        let mut t = self.lock();
        let port = Self::free_port(&t).ok_or(ENOSPC)?;
        t.ports[port as usize] = PortState::Ipi;
        t.notify_vcpu[port as usize] = vcpu;
        drop(t);
        if let Err(e) = self.ram.copy_obj_to_guest(arg + 4, &port) {
            self.release(port);
            return Err(e.into());
        }
        Ok(0)
    }

    /// `EVTCHNOP_bind_vcpu` (Xen's `evtchn_bind_vcpu()`): an existing
    /// vCPU (`-ENOENT`; it may be down) becomes the notify vCPU of an
    /// unbound, interdomain or global-virq port; any other port `-EINVAL`.
    fn bind_vcpu(&self, port: u32, vcpu: u32) -> Result<(), i64> {
        if !self.vcpu_exists(vcpu) {
            return Err(ENOENT);
        }
        let mut t = self.lock();
        match t.ports.get(port as usize) {
            Some(
                PortState::Unbound { .. }
                | PortState::Interdomain { .. }
                | PortState::Detached { .. }
                | PortState::Loopback { .. },
            ) => {}
            Some(PortState::Virq { virq }) if !PER_VCPU_VIRQS.contains(virq) => {}
            _ => return Err(EINVAL),
        }
        t.notify_vcpu[port as usize] = vcpu;
        Ok(())
    }

    /// `EVTCHNOP_reset` (`do_event_channel_op()`): another existing domain
    /// `EPERM` (XSM_TARGET), an unknown one `ESRCH`.
    fn reset_op(&self, arg: u64) -> Result<u64, i64> {
        let dom: DomId = self.ram.read_obj(arg)?;
        check_target(dom)?;
        self.reset();
        Ok(0)
    }

    /// Xen's `evtchn_alloc_unbound()`: `dom` must exist (`ESRCH`), then a
    /// free port (`ENOSPC`), then XSM_TARGET (`EPERM` for domain 0).
    /// `remote_dom` is not checked; `DOMID_SELF` names the caller.
    fn alloc_unbound_op(&self, arg: u64) -> Result<u64, i64> {
        let mut a: EvtchnAllocUnbound = self.ram.read_obj(arg)?;
        if !crate::domid::is_self(a.dom) && a.dom != DOMID_VMM {
            return Err(ESRCH);
        }
        let mut t = self.lock();
        let port = Self::free_port(&t).ok_or(ENOSPC)?;
        check_target(a.dom)?;
        let remote_dom = if a.remote_dom == DOMID_SELF { GUEST_DOMID } else { a.remote_dom };
        t.ports[port as usize] = PortState::Unbound { remote_dom };
        a.port = port;
        drop(t);
        if let Err(e) = self.ram.copy_obj_to_guest(arg, &a) {
            self.release(port);
            return Err(e.into());
        }
        Ok(0)
    }

    /// Xen's `evtchn_bind_interdomain`: the remote port must be a domain-0
    /// port allocated unbound for this guest
    /// ([`alloc_dom0_unbound`](Self::alloc_dom0_unbound)) and not bound yet.
    fn bind_interdomain_op(&self, arg: u64) -> Result<u64, i64> {
        let mut a: EvtchnBindInterdomain = self.ram.read_obj(arg)?;
        if crate::domid::is_self(a.remote_dom) {
            return self.bind_loopback(a, arg);
        }
        if a.remote_dom != DOMID_VMM {
            return Err(ESRCH);
        }
        let mut t = self.lock();
        let idx = (a.remote_port as usize).checked_sub(1).ok_or(EINVAL)?;
        let wake = match t.dom0.get(idx) {
            Some(Dom0Port { wake, remote_dom: GUEST_DOMID, bound_to: None }) => wake.clone(),
            _ => return Err(EINVAL),
        };
        let port = Self::free_port(&t).ok_or(ENOSPC)?;
        self.register_doorbell(port, &wake).map_err(|e| e.errno())?;
        let gen = t.next_gen();
        t.ports[port as usize] = PortState::Interdomain { remote_port: a.remote_port, wake, gen };
        t.dom0[idx].bound_to = Some(port);
        a.local_port = port;
        drop(t);
        self.finish_bind_interdomain(port, arg, &a)
    }

    /// The end of `evtchn_bind_interdomain()`: the output written (or the
    /// port closed again, so a bad pointer leaves no half-bound channel),
    /// then the new port set pending: "We may have lost notifications on
    /// the remote unbound port".
    fn finish_bind_interdomain(&self, port: u32, arg: u64, a: &EvtchnBindInterdomain) -> Result<u64, i64> {
        if let Err(e) = self.ram.copy_obj_to_guest(arg, a) {
            let _ = self.guest_close(port);
            return Err(e.into());
        }
        if let Err(e) = self.set_pending(port) {
            tracing::warn!(port, "cannot set the new port pending: {e}");
        }
        Ok(0)
    }

    /// `evtchn_bind_interdomain()` naming the caller itself: the remote
    /// port must be the guest's own, unbound for the guest; both ends
    /// become interdomain, and the new one starts pending.
    fn bind_loopback(&self, mut a: EvtchnBindInterdomain, arg: u64) -> Result<u64, i64> {
        let mut t = self.lock();
        let port = Self::free_port(&t).ok_or(ENOSPC)?;
        let peer = a.remote_port;
        match t.ports.get(peer as usize) {
            Some(PortState::Unbound { remote_dom }) if *remote_dom == GUEST_DOMID => {}
            _ => return Err(EINVAL),
        }
        t.ports[port as usize] = PortState::Loopback { peer };
        t.ports[peer as usize] = PortState::Loopback { peer: port };
        a.local_port = port;
        drop(t);
        self.finish_bind_interdomain(port, arg, &a)
    }

    /// `EVTCHNOP_unmask`: an event that arrived while masked is delivered
    /// now. Xen's `evtchn_unmask()` checks only that the port is valid
    /// (`_evtchn_from_port()`), so a free port is 0 too; but
    /// `evtchn_port_unmask()` acts only on a port in use
    /// (`evtchn_usable()`), so a free one's mask stays as it is.
    fn unmask(&self, port: u32) -> Result<(), i64> {
        match self.lock().ports.get(port as usize) {
            None => return Err(EINVAL),
            Some(PortState::Free) => return Ok(()),
            Some(_) => {}
        }
        let vcpu = self.notify_vcpu(port);
        let unmasked = match self.fifo.unmask(vcpu, port) {
            Some(r) => self.fifo_mark(vcpu, r),
            None => self.bitmaps.unmask(port, vcpu),
        };
        match unmasked {
            Ok(Some(raise)) => {
                self.upcall_if(raise, vcpu);
                Ok(())
            }
            Ok(None) => Err(EINVAL),
            Err(_) => Err(EFAULT),
        }
    }

    fn status_op(&self, arg: u64) -> Result<u64, i64> {
        let mut a: EvtchnStatus = self.ram.read_obj(arg)?;
        check_target(a.dom)?;
        let t = self.lock();
        let state = t.ports.get(a.port as usize).ok_or(EINVAL)?;
        a.vcpu = t.notify_vcpu[a.port as usize];
        a.u = EvtchnStatusU::default();
        a.status = match state {
            PortState::Free => EVTCHNSTAT_CLOSED,
            PortState::Unbound { remote_dom } => {
                a.u.unbound = EvtchnStatusUnbound { dom: *remote_dom };
                EVTCHNSTAT_UNBOUND
            }
            PortState::Interdomain { remote_port, .. } | PortState::Detached { remote_port, .. } => {
                a.u.interdomain = EvtchnStatusInterdomain { dom: DOMID_VMM, _pad: 0, port: *remote_port };
                EVTCHNSTAT_INTERDOMAIN
            }
            PortState::Virq { virq } => {
                a.u.virq = *virq;
                EVTCHNSTAT_VIRQ
            }
            PortState::Ipi => EVTCHNSTAT_IPI,
            PortState::Loopback { peer } => {
                a.u.interdomain = EvtchnStatusInterdomain { dom: GUEST_DOMID, _pad: 0, port: *peer };
                EVTCHNSTAT_INTERDOMAIN
            }
        };
        drop(t);
        self.ram.copy_obj_to_guest(arg, &a)?;
        Ok(0)
    }
}

/// The per-vCPU virqs (`get_virq_type()` says `VIRQ_VCPU`): `VIRQ_TIMER`,
/// `VIRQ_DEBUG`, `VIRQ_XENOPROF`, `VIRQ_XENPMU` (`xen/include/public/xen.h`).
const PER_VCPU_VIRQS: [u32; 4] = [0, 1, 7, 13];
/// `VIRQ_ARGO`, the one per-domain virq a domU may bind.
const VIRQ_ARGO: u32 = 11;

/// XSM_TARGET on a domain id (`xen/include/xsm/dummy.h`): the caller
/// itself passes, domain 0 exists (`EPERM`), anything else does not
/// (`ESRCH`, from `rcu_lock_domain_by_any_id()`).
fn check_target(dom: DomId) -> Result<(), i64> {
    if crate::domid::is_self(dom) {
        Ok(())
    } else if dom == DOMID_VMM {
        Err(EPERM)
    } else {
        Err(ESRCH)
    }
}

/// Against `xen/include/public/event_channel.h` (`EVTCHNOP_*`, the
/// argument structs, `EVTCHNSTAT_*`) and `xen/common/event_channel.c`
/// (`-ESRCH` for a domain the caller may not name, `-EINVAL` for a port
/// not in the needed state, `-EEXIST` for a VIRQ bound twice, `-ENOSYS`
/// for unknown commands, sends on an unbound port dropped), and
/// `xen/common/event_2l.c` (pending, mask, selector, `upcall_pending`:
/// an upcall only on the 0->1 edges of an unmasked port).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Call, TestDomain, TEST_ARG, TEST_POOL};
    use pv_abi::errno::EEXIST;
    use pv_abi::hypercall::nr;
    use pv_abi::layout::SHARED_INFO;
    use pv_abi::shared_info::{SharedInfo, LAYOUT_64, LAYOUT_X86_32};
    use pv_abi::start_info::paging_mode;

    fn op(t: &mut TestDomain, cmd: u32) -> i64 {
        t.call(nr::EVENT_CHANNEL_OP, [u64::from(cmd), TEST_ARG, 0, 0, 0])
    }

    fn alloc(t: &mut TestDomain) -> u32 {
        t.put(TEST_ARG, &EvtchnAllocUnbound { dom: DOMID_SELF, remote_dom: DOMID_VMM, port: 0 });
        assert_eq!(op(t, EVTCHNOP_ALLOC_UNBOUND), 0);
        t.get::<EvtchnAllocUnbound>(TEST_ARG).port
    }

    fn status(t: &mut TestDomain, port: u32) -> EvtchnStatus {
        t.put(TEST_ARG, &EvtchnStatus { dom: DOMID_SELF, port, ..Default::default() });
        assert_eq!(op(t, EVTCHNOP_STATUS), 0);
        t.get(TEST_ARG)
    }

    fn bit(t: &TestDomain, off: usize, port: u32) -> bool {
        t.get::<u64>(SHARED_INFO + off as u64 + u64::from(port / 64) * 8) & (1 << (port % 64)) != 0
    }

    #[test]
    fn alloc_unbound_hands_out_a_port_domain_0_may_bind() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        let port = alloc(&mut t);
        assert!(port >= 1);
        let s = status(&mut t, port);
        // SAFETY: `unbound` is the member EVTCHNSTAT_unbound selects.
        assert_eq!((s.status, unsafe { s.u.unbound.dom }), (EVTCHNSTAT_UNBOUND, DOMID_VMM));
        assert_ne!(alloc(&mut t), port);
    }

    /// `evtchn_alloc_unbound()`: `dom` via `rcu_lock_domain_by_any_id()`
    /// (`ESRCH`) and XSM_TARGET (`EPERM` for existing domain 0);
    /// `remote_dom` unchecked, `DOMID_SELF` becomes the caller's id.
    #[test]
    fn alloc_unbound_checks_dom_as_xen_and_takes_any_remote_domain() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        t.put(TEST_ARG, &EvtchnAllocUnbound { dom: 7, remote_dom: DOMID_VMM, port: 0 });
        assert_eq!(op(&mut t, EVTCHNOP_ALLOC_UNBOUND), -ESRCH);
        t.put(TEST_ARG, &EvtchnAllocUnbound { dom: DOMID_VMM, remote_dom: DOMID_VMM, port: 0 });
        assert_eq!(op(&mut t, EVTCHNOP_ALLOC_UNBOUND), -EPERM);
        // Nothing was allocated by the refusals.
        assert_eq!(status(&mut t, 1).status, EVTCHNSTAT_CLOSED);
        for (remote, want) in [(5, 5), (DOMID_SELF, GUEST_DOMID)] {
            t.put(TEST_ARG, &EvtchnAllocUnbound { dom: DOMID_SELF, remote_dom: remote, port: 0 });
            assert_eq!(op(&mut t, EVTCHNOP_ALLOC_UNBOUND), 0);
            let port = t.get::<EvtchnAllocUnbound>(TEST_ARG).port;
            let s = status(&mut t, port);
            // SAFETY: `unbound` is the member EVTCHNSTAT_unbound selects.
            assert_eq!((s.status, unsafe { s.u.unbound.dom }), (EVTCHNSTAT_UNBOUND, want));
            // Only a port offered to domain 0 may be bound by a back end.
            let wake = Arc::new(EventFd::new(0).unwrap());
            assert_eq!(t.dom.evtchn.bind_guest_port(port, wake), Err(EvtchnError::BadPort(port)));
        }
    }

    #[test]
    fn an_output_into_the_pool_is_efault_and_frees_the_port() {
        let mut t = TestDomain::new(paging_mode::PV);
        let a = EvtchnAllocUnbound { dom: DOMID_SELF, remote_dom: DOMID_VMM, port: 0 };
        t.dom.ram.write_obj(TEST_POOL, &a).unwrap();
        let r = t.call(nr::EVENT_CHANNEL_OP, [u64::from(EVTCHNOP_ALLOC_UNBOUND), TEST_POOL, 0, 0, 0]);
        assert_eq!(r, -EFAULT);
        assert_eq!(status(&mut t, 1).status, EVTCHNSTAT_CLOSED);
        assert_eq!(t.call(nr::EVENT_CHANNEL_OP, [u64::from(EVTCHNOP_SEND), u64::MAX - 2, 0, 0, 0]), -EFAULT);
    }

    #[test]
    fn sends_wake_the_bound_back_end_and_are_dropped_when_unbound() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        let port = alloc(&mut t);
        t.put(TEST_ARG, &EvtchnSend { port });
        assert_eq!(op(&mut t, EVTCHNOP_SEND), 0, "unbound: dropped");
        let wake = Arc::new(EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap());
        let b = t.dom.evtchn.bind_guest_port(port, wake.clone()).unwrap();
        assert_eq!(t.platform.doorbells(), vec![port]);
        t.put(TEST_ARG, &EvtchnSend { port });
        assert_eq!(op(&mut t, EVTCHNOP_SEND), 0);
        assert_eq!(wake.read().unwrap(), 1);
        t.put(TEST_ARG, &EvtchnSend { port: port + 1 });
        assert_eq!(op(&mut t, EVTCHNOP_SEND), -EINVAL, "a closed port");
        t.dom.evtchn.close_binding(b).unwrap();
        assert!(t.platform.doorbells().is_empty());
    }

    #[test]
    fn an_upcall_is_raised_on_the_edges_of_unmasked_ports_only() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        let port = alloc(&mut t);
        let wake = Arc::new(EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap());
        let b = t.dom.evtchn.bind_guest_port(port, wake).unwrap();
        assert_eq!(t.dom.evtchn.notify_binding(b), Ok(true));
        assert!(bit(&t, LAYOUT_64.pending, port));
        assert_eq!(t.dom.evtchn.notify_binding(b), Ok(false), "already pending");
        assert_eq!(t.platform.upcalls(), 1);
        // Masked: pending but no upcall until EVTCHNOP_unmask.
        let port2 = alloc(&mut t);
        let b2 = t.dom.evtchn.bind_guest_port(port2, Arc::new(EventFd::new(0).unwrap())).unwrap();
        t.dom.ram.write_obj(SHARED_INFO + LAYOUT_64.mask as u64, &(1u64 << port2)).unwrap();
        t.dom.ram.write_obj(SHARED_INFO + LAYOUT_64.pending_sel as u64, &0u64).unwrap();
        t.dom.ram.write_obj(SHARED_INFO + SharedInfo::upcall_pending_offset(0) as u64, &0u8).unwrap();
        assert_eq!(t.dom.evtchn.notify_binding(b2), Ok(false));
        assert_eq!(t.platform.upcalls(), 1);
        t.put(TEST_ARG, &EvtchnUnmask { port: port2 });
        assert_eq!(op(&mut t, EVTCHNOP_UNMASK), 0);
        assert!(!bit(&t, LAYOUT_64.mask, port2));
        assert_eq!(t.platform.calls().last(), Some(&Call::RaiseUpcall(0)));
        assert_eq!(t.platform.upcalls(), 2);
    }

    #[test]
    fn close_frees_the_port_and_closing_a_free_port_is_einval() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        let port = alloc(&mut t);
        t.put(TEST_ARG, &EvtchnClose { port });
        assert_eq!(op(&mut t, EVTCHNOP_CLOSE), 0);
        assert_eq!(status(&mut t, port).status, EVTCHNSTAT_CLOSED);
        t.put(TEST_ARG, &EvtchnClose { port });
        assert_eq!(op(&mut t, EVTCHNOP_CLOSE), -EINVAL);
        t.put(TEST_ARG, &EvtchnClose { port: MAX_PORTS + 5 });
        assert_eq!(op(&mut t, EVTCHNOP_CLOSE), -EINVAL);
        // `evtchn_unmask()` checks only `_evtchn_from_port()`: a valid
        // free port is fine, one beyond the table is not; and
        // `evtchn_port_unmask()` leaves a port not in use alone
        // (`evtchn_usable()`), so its mask bit stays.
        t.dom.ram.write_obj(SHARED_INFO + LAYOUT_64.mask as u64, &(1u64 << port)).unwrap();
        t.put(TEST_ARG, &EvtchnUnmask { port });
        assert_eq!(op(&mut t, EVTCHNOP_UNMASK), 0);
        assert!(bit(&t, LAYOUT_64.mask, port), "a free port's mask is untouched");
        t.put(TEST_ARG, &EvtchnUnmask { port: MAX_PORTS });
        assert_eq!(op(&mut t, EVTCHNOP_UNMASK), -EINVAL);
    }

    fn guest_close(t: &mut TestDomain, port: u32) -> i64 {
        t.put(TEST_ARG, &EvtchnClose { port });
        op(t, EVTCHNOP_CLOSE)
    }

    /// `evtchn_close()` (`xen/common/event_channel.c`) run by domain 0 on
    /// its end: the guest's port becomes `ECS_UNBOUND`, remote domain 0,
    /// until the guest's own close frees it (`evtchn_free()` clears the
    /// pending bit).
    #[test]
    fn a_back_end_close_leaves_the_guest_port_unbound_until_the_guest_closes_it() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        let port = alloc(&mut t);
        let wake = Arc::new(EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap());
        let b = t.dom.evtchn.bind_guest_port(port, wake.clone()).unwrap();
        assert_eq!(t.dom.evtchn.notify_binding(b), Ok(true));
        t.dom.evtchn.close_binding(b).unwrap();
        assert!(t.platform.doorbells().is_empty(), "the doorbell goes with domain 0's end");
        assert_eq!(t.dom.evtchn.close_binding(b), Err(EvtchnError::Stale(port)));
        let s = status(&mut t, port);
        // SAFETY: `unbound` is the member EVTCHNSTAT_unbound selects.
        assert_eq!((s.status, unsafe { s.u.unbound.dom }), (EVTCHNSTAT_UNBOUND, DOMID_VMM));
        assert!(bit(&t, LAYOUT_64.pending, port), "domain 0's close keeps the pending bit");
        t.put(TEST_ARG, &EvtchnSend { port });
        assert_eq!(op(&mut t, EVTCHNOP_SEND), 0, "a send on the unbound port is dropped");
        assert_eq!(wake.read().ok(), None);
        assert_ne!(alloc(&mut t), port, "the number is still the guest's");
        // A back end may bind it again, and close again.
        let b2 = t.dom.evtchn.bind_guest_port(port, wake).unwrap();
        assert_ne!(b2, b);
        assert_eq!(t.dom.evtchn.close(port), Ok(()));
        assert_eq!(guest_close(&mut t, port), 0);
        assert!(!bit(&t, LAYOUT_64.pending, port), "the guest's close clears the pending bit");
        assert_eq!(status(&mut t, port).status, EVTCHNSTAT_CLOSED);
        assert_eq!(guest_close(&mut t, port), -EINVAL);
        assert_eq!(t.dom.evtchn.close(port), Err(EvtchnError::BadPort(port)), "nothing left for domain 0");
    }

    /// `evtchn_bind_interdomain()`: a loopback to the caller's own port
    /// unbound for itself; the new port starts pending; sends cross over;
    /// closing one end leaves the other unbound for the guest.
    #[test]
    fn bind_interdomain_loops_back_to_the_guests_own_unbound_port() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        let bind = |t: &mut TestDomain, remote_port| {
            t.put(TEST_ARG, &EvtchnBindInterdomain { remote_dom: DOMID_SELF, _pad: 0, remote_port, local_port: 0 });
            op(t, EVTCHNOP_BIND_INTERDOMAIN)
        };
        let to_dom0 = alloc(&mut t);
        assert_eq!(bind(&mut t, to_dom0), -EINVAL, "unbound for domain 0, not for the guest");
        t.put(TEST_ARG, &EvtchnAllocUnbound { dom: DOMID_SELF, remote_dom: DOMID_SELF, port: 0 });
        assert_eq!(op(&mut t, EVTCHNOP_ALLOC_UNBOUND), 0);
        let a = t.get::<EvtchnAllocUnbound>(TEST_ARG).port;
        assert_eq!(bind(&mut t, a), 0);
        let b = t.get::<EvtchnBindInterdomain>(TEST_ARG).local_port;
        assert!(bit(&t, LAYOUT_64.pending, b), "the new port starts pending");
        let s = status(&mut t, a);
        // SAFETY: `interdomain` is the member EVTCHNSTAT_interdomain selects.
        let peer = unsafe { s.u.interdomain };
        assert_eq!((s.status, peer.dom, peer.port), (EVTCHNSTAT_INTERDOMAIN, GUEST_DOMID, b));
        t.put(TEST_ARG, &EvtchnSend { port: b });
        assert_eq!(op(&mut t, EVTCHNOP_SEND), 0);
        assert!(bit(&t, LAYOUT_64.pending, a));
        assert_eq!(guest_close(&mut t, b), 0);
        let s = status(&mut t, a);
        // SAFETY: `unbound` is the member EVTCHNSTAT_unbound selects.
        assert_eq!((s.status, unsafe { s.u.unbound.dom }), (EVTCHNSTAT_UNBOUND, GUEST_DOMID));
    }

    /// `evtchn_bind_ipi()` / `evtchn_send()` on `ECS_IPI`: the port is set
    /// pending on the bound vCPU, which gets the upcall.
    #[test]
    fn an_ipi_port_notifies_vcpu_0_itself() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        t.put(TEST_ARG, &[1u32, 0]);
        assert_eq!(op(&mut t, EVTCHNOP_BIND_IPI), -ENOENT, "vCPU 1 does not exist");
        t.put(TEST_ARG, &[0u32, 0]);
        assert_eq!(op(&mut t, EVTCHNOP_BIND_IPI), 0);
        let port = t.get::<[u32; 2]>(TEST_ARG)[1];
        assert!(port >= 1);
        assert_eq!(status(&mut t, port).status, EVTCHNSTAT_IPI);
        t.put(TEST_ARG, &EvtchnSend { port });
        assert_eq!(op(&mut t, EVTCHNOP_SEND), 0);
        assert!(bit(&t, LAYOUT_64.pending, port));
        assert_eq!(t.platform.upcalls(), 1);
        assert_eq!(guest_close(&mut t, port), 0);
    }

    /// `vcpu_info[vcpu]`'s `evtchn_upcall_pending` and `evtchn_pending_sel`
    /// (`xen/include/public/xen.h`: 64-byte `vcpu_info` slots).
    fn vcpu_flags(t: &TestDomain, vcpu: u64) -> (u8, u64) {
        let at = SHARED_INFO + vcpu * 64;
        (t.get::<u8>(at), t.get::<u64>(at + 8))
    }

    fn ipi(t: &mut TestDomain, vcpu: u32) -> u32 {
        t.put(TEST_ARG, &[vcpu, 0]);
        assert_eq!(op(t, EVTCHNOP_BIND_IPI), 0, "bind_ipi vCPU {vcpu}");
        t.get::<[u32; 2]>(TEST_ARG)[1]
    }

    /// `evtchn_bind_ipi()` / `evtchn_2l_set_pending()` (`xen/common/
    /// event_channel.c`, `event_2l.c`): an IPI port notifies the vCPU it
    /// was bound for: that vCPU's selector and `upcall_pending`, that
    /// vCPU's upcall; the status names it; vCPU 2 of 2 is `-ENOENT`.
    #[test]
    fn an_ipi_port_notifies_only_the_vcpu_it_was_bound_for() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        t.dom.evtchn.set_vcpus(2);
        t.put(TEST_ARG, &[2u32, 0]);
        assert_eq!(op(&mut t, EVTCHNOP_BIND_IPI), -ENOENT);
        let port = ipi(&mut t, 1);
        assert_eq!(status(&mut t, port).vcpu, 1);
        t.put(TEST_ARG, &EvtchnSend { port });
        assert_eq!(op(&mut t, EVTCHNOP_SEND), 0);
        assert_eq!(vcpu_flags(&t, 1), (1, 1 << (port / 64)), "vCPU 1's vcpu_info");
        assert_eq!(vcpu_flags(&t, 0), (0, 0), "vCPU 0 untouched");
        assert_eq!(
            t.platform.calls().iter().filter(|c| matches!(c, Call::RaiseUpcall(_))).collect::<Vec<_>>(),
            [&Call::RaiseUpcall(1)]
        );
        // Closing resets the notify vCPU (`evtchn_free()`): the next port
        // allocated in its place notifies vCPU 0.
        assert_eq!(guest_close(&mut t, port), 0);
        assert_eq!(t.dom.evtchn.notify_vcpu(port), 0);
    }

    /// `evtchn_bind_vcpu()` (`xen/common/event_channel.c`): an unbound or
    /// loopback port moves to vCPU 1 (which need not be up), its events
    /// then raise vCPU 1; vCPU 2 of 2 is `-ENOENT`; an IPI port `-EINVAL`.
    #[test]
    fn bind_vcpu_moves_a_port_and_its_events_follow() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        t.dom.evtchn.set_vcpus(2);
        // An unbound port (offered to domain 0).
        let a = alloc(&mut t);
        t.put(TEST_ARG, &[a, 2]);
        assert_eq!(op(&mut t, EVTCHNOP_BIND_VCPU), -ENOENT);
        t.put(TEST_ARG, &[a, 1]);
        assert_eq!(op(&mut t, EVTCHNOP_BIND_VCPU), 0);
        assert_eq!(status(&mut t, a).vcpu, 1);
        let i = ipi(&mut t, 0);
        t.put(TEST_ARG, &[i, 1]);
        assert_eq!(op(&mut t, EVTCHNOP_BIND_VCPU), -EINVAL, "IPI ports stay on their vCPU");
        t.dom.evtchn.notify_guest_for_test(a);
        assert_eq!(t.platform.calls().last(), Some(&Call::RaiseUpcall(1)));
        assert_eq!(vcpu_flags(&t, 1).0, 1);
        assert_eq!(vcpu_flags(&t, 0).0, 0);
    }

    /// `evtchn_bind_virq()` (`xen/common/event_channel.c`): a per-vCPU
    /// virq binds once per vCPU (`-EEXIST` on the same vCPU), and
    /// `send_guest_vcpu_virq()` raises the port of that vCPU only.
    #[test]
    fn virq_timer_binds_per_vcpu_and_fires_on_its_own_vcpu() {
        let t = TestDomain::new(paging_mode::NATIVE);
        let ev = &t.dom.evtchn;
        ev.set_vcpus(3);
        let p0 = ev.bind_virq(0, 0).unwrap();
        let p2 = ev.bind_virq(0, 2).unwrap();
        assert_ne!(p0, p2);
        assert_eq!(ev.bind_virq(0, 2), Err(pv_abi::errno::EEXIST));
        assert_eq!(ev.bind_virq(0, 3), Err(ENOENT));
        assert_eq!(ev.notify_vcpu_virq(0, 2), Ok(true));
        assert!(ev.is_pending(p2) && !ev.is_pending(p0));
        assert_eq!((vcpu_flags(&t, 2).0, vcpu_flags(&t, 0).0), (1, 0));
        assert_eq!(ev.notify_vcpu_virq(0, 1), Ok(false), "vCPU 1 has no VIRQ_TIMER port");
    }

    /// No lost or doubled event under concurrent sends (`xen/common/
    /// event_2l.c`: one upcall per 0->1 edge of `evtchn_upcall_pending`):
    /// four vCPUs each send on an IPI port bound for one of them, 500
    /// times, each send after the "guest" consumed the last; the consumer
    /// counts every event in the vCPU's selector it belongs to, and the
    /// machine sees exactly one upcall per event on that vCPU.
    #[test]
    fn concurrent_sends_from_every_vcpu_are_each_delivered_once_to_their_vcpu() {
        use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8};
        const N: u32 = 4;
        const K: u64 = 500;
        let mut t = TestDomain::new(paging_mode::NATIVE);
        t.dom.evtchn.set_vcpus(N);
        let ports: Vec<u32> = (0..N).map(|v| ipi(&mut t, (v + 1) % N)).collect();
        let (ev, ram) = (t.dom.evtchn.clone(), t.dom.ram.clone());
        let done = AtomicBool::new(false);
        let counts: Vec<AtomicU64> = (0..N).map(|_| AtomicU64::new(0)).collect();
        let misdelivered = AtomicU64::new(0);
        std::thread::scope(|s| {
            for (i, &port) in ports.iter().enumerate() {
                let (ev, ram) = (ev.clone(), ram.clone());
                let done = &done;
                s.spawn(move || {
                    let arg = TEST_ARG + 64 * i as u64;
                    ram.write_obj(arg, &EvtchnSend { port }).unwrap();
                    for _ in 0..K {
                        assert_eq!(ev.hypercall(u64::from(EVTCHNOP_SEND), arg), Ok(0));
                        while ev.is_pending(port) && !done.load(Ordering::SeqCst) {
                            std::thread::yield_now();
                        }
                    }
                });
            }
            s.spawn(|| {
                // A liveness guard (a lost event would stall the senders),
                // not a timing assertion: the counts below decide.
                let give_up = std::time::Instant::now() + std::time::Duration::from_secs(120);
                while !done.load(Ordering::SeqCst) {
                    if std::time::Instant::now() > give_up {
                        done.store(true, Ordering::SeqCst);
                    }
                    for v in 0..N as u64 {
                        let info = SHARED_INFO + v * 64;
                        if ram.with_atomic(info, |b: &AtomicU8| b.swap(0, Ordering::SeqCst)).unwrap() == 0 {
                            continue;
                        }
                        let sel = ram.with_atomic(info + 8, |w: &AtomicU64| w.swap(0, Ordering::SeqCst)).unwrap();
                        for word in (0..64).filter(|w| sel & (1 << w) != 0) {
                            // A guest's handler on vCPU v takes the ports
                            // bound to v (Linux masks by CPU binding).
                            let mine: u64 = (0..N as usize)
                                .filter(|&i| (i as u64 + 1) % u64::from(N) == v)
                                .filter(|&i| u64::from(ports[i] / 64) == word)
                                .map(|i| 1u64 << (ports[i] % 64))
                                .sum();
                            let at = SHARED_INFO + LAYOUT_64.pending as u64 + word * 8;
                            let bits =
                                ram.with_atomic(at, |w: &AtomicU64| w.fetch_and(!mine, Ordering::SeqCst)).unwrap()
                                    & mine;
                            if bits == 0 {
                                // Selected without an event of its own: an
                                // event of another vCPU came here.
                                misdelivered.fetch_add(1, Ordering::SeqCst);
                            }
                            for bit in (0..64).filter(|b| bits & (1 << b) != 0) {
                                let port = (word * 64 + bit) as u32;
                                let i = ports.iter().position(|&p| p == port).unwrap();
                                counts[i].fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                    if counts.iter().all(|c| c.load(Ordering::SeqCst) == K) {
                        done.store(true, Ordering::SeqCst);
                    }
                }
            });
        });
        assert_eq!(counts.iter().map(|c| c.load(Ordering::SeqCst)).collect::<Vec<_>>(), vec![K; N as usize]);
        assert_eq!(misdelivered.load(Ordering::SeqCst), 0, "every event in its own vCPU's vcpu_info");
        let calls = t.platform.calls();
        for v in 0..N {
            let raised = calls.iter().filter(|c| **c == Call::RaiseUpcall(v)).count() as u64;
            assert_eq!(raised, K, "upcalls on vCPU {v}");
        }
    }

    /// `evtchn_bind_vcpu()`: unknown vCPU `ENOENT`; unbound, interdomain
    /// and global-virq ports re-target (0); a per-vCPU virq, a free or an
    /// invalid port `EINVAL`.
    #[test]
    fn bind_vcpu_accepts_vcpu_0_for_the_states_xen_lets_move() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        let bind = |t: &mut TestDomain, port: u32, vcpu: u32| {
            t.put(TEST_ARG, &[port, vcpu]);
            op(t, EVTCHNOP_BIND_VCPU)
        };
        let unbound = alloc(&mut t);
        let timer = t.dom.evtchn.bind_virq(0, 0).unwrap();
        assert_eq!(bind(&mut t, unbound, 1), -ENOENT);
        assert_eq!(bind(&mut t, unbound, 0), 0);
        assert_eq!(bind(&mut t, timer, 0), -EINVAL, "VIRQ_TIMER is per-vCPU");
        assert_eq!(bind(&mut t, 900, 0), -EINVAL, "a free port");
        assert_eq!(bind(&mut t, MAX_PORTS, 0), -EINVAL);
    }

    /// `EVTCHNOP_reset` (`do_event_channel_op()`, `evtchn_reset()`).
    #[test]
    fn reset_closes_every_port_of_the_caller_only() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        let a = alloc(&mut t);
        let bp = alloc(&mut t);
        let b = t.dom.evtchn.bind_guest_port(bp, Arc::new(EventFd::new(0).unwrap())).unwrap();
        t.put(TEST_ARG, &DOMID_VMM);
        assert_eq!(op(&mut t, 10), -EPERM);
        t.put(TEST_ARG, &9u16);
        assert_eq!(op(&mut t, 10), -ESRCH);
        assert_eq!(status(&mut t, a).status, EVTCHNSTAT_UNBOUND);
        t.put(TEST_ARG, &DOMID_SELF);
        assert_eq!(op(&mut t, 10), 0);
        assert_eq!(status(&mut t, a).status, EVTCHNSTAT_CLOSED);
        assert_eq!(status(&mut t, b.port).status, EVTCHNSTAT_CLOSED);
        assert!(t.platform.doorbells().is_empty());
        assert_eq!(t.dom.evtchn.notify_binding(b), Err(EvtchnError::Stale(b.port)));
    }

    /// A 2-level domain: `evtchn_fifo_expand_array()` `EOPNOTSUPP`,
    /// `evtchn_port_set_priority()` `ENOSYS` (invalid port `EINVAL`),
    /// `init_control` on frame 0 (a VMM page: `map_guest_page()` `EINVAL`);
    /// each reads its argument first (`EFAULT`). The FIFO ABI itself is
    /// tested in `fifo.rs`.
    #[test]
    fn fifo_ops_on_a_2_level_domain() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        t.put(TEST_ARG, &[0u64; 3]);
        assert_eq!(op(&mut t, 11), -EINVAL);
        assert_eq!(op(&mut t, 12), -pv_abi::errno::EOPNOTSUPP);
        t.put(TEST_ARG, &[1u32, 3]);
        assert_eq!(op(&mut t, 13), -ENOSYS);
        t.put(TEST_ARG, &[MAX_PORTS, 3]);
        assert_eq!(op(&mut t, 13), -EINVAL);
        for cmd in [11, 12, 13] {
            assert_eq!(t.call(nr::EVENT_CHANNEL_OP, [cmd, u64::MAX - 2, 0, 0, 0]), -EFAULT, "cmd {cmd}");
        }
    }

    #[test]
    fn bind_virq_checks_vcpu_virq_and_binds_once() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        let bind = |t: &mut TestDomain, virq, vcpu| {
            t.put(TEST_ARG, &EvtchnBindVirq { virq, vcpu, port: 0 });
            op(t, EVTCHNOP_BIND_VIRQ)
        };
        // `evtchn_bind_virq()`: per-vCPU VIRQ_TIMER on a missing vCPU is
        // ENOENT, a global virq on vCPU 1 EINVAL, on vCPU 0 EBUSY (it is
        // the hardware domain's, `get_global_virq_handler()`).
        assert_eq!(bind(&mut t, 0, 1), -ENOENT, "vCPU 1 does not exist");
        assert_eq!(bind(&mut t, 8, 1), -EINVAL, "VIRQ_CON_RING is global");
        assert_eq!(bind(&mut t, 8, 0), -EBUSY);
        assert_eq!(bind(&mut t, NR_VIRQS, 0), -EINVAL);
        assert_eq!(bind(&mut t, 0, 0), 0);
        let port = t.get::<EvtchnBindVirq>(TEST_ARG).port;
        assert_eq!(bind(&mut t, 0, 0), -EEXIST);
        let s = status(&mut t, port);
        // SAFETY: `virq` is the member EVTCHNSTAT_virq selects.
        assert_eq!((s.status, unsafe { s.u.virq }), (EVTCHNSTAT_VIRQ, 0));
        assert_eq!(t.dom.evtchn.notify_virq(0), Ok(true));
    }

    #[test]
    fn bind_interdomain_needs_a_domain_0_port_offered_to_this_guest() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        let bind = |t: &mut TestDomain, remote_dom, remote_port| {
            t.put(TEST_ARG, &EvtchnBindInterdomain { remote_dom, _pad: 0, remote_port, local_port: 0 });
            op(t, EVTCHNOP_BIND_INTERDOMAIN)
        };
        assert_eq!(bind(&mut t, 3, 1), -ESRCH);
        assert_eq!(bind(&mut t, DOMID_VMM, 1), -EINVAL, "not offered");
        let wake = Arc::new(EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap());
        let dom0 = t.dom.evtchn.alloc_dom0_unbound(GUEST_DOMID, wake.clone()).unwrap();
        assert_eq!(bind(&mut t, DOMID_VMM, dom0), 0);
        let local = t.get::<EvtchnBindInterdomain>(TEST_ARG).local_port;
        assert_eq!(t.dom.evtchn.dom0_peer(dom0), Some(local));
        assert_eq!(bind(&mut t, DOMID_VMM, dom0), -EINVAL, "bound already");
        let s = status(&mut t, local);
        // SAFETY: `interdomain` is the member EVTCHNSTAT_interdomain selects.
        assert_eq!((s.status, unsafe { s.u.interdomain.port }), (EVTCHNSTAT_INTERDOMAIN, dom0));
    }

    #[test]
    fn status_checks_the_domain_and_the_port() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        t.put(TEST_ARG, &EvtchnStatus { dom: 9, port: 1, ..Default::default() });
        assert_eq!(op(&mut t, EVTCHNOP_STATUS), -ESRCH);
        t.put(TEST_ARG, &EvtchnStatus { dom: DOMID_VMM, port: 1, ..Default::default() });
        assert_eq!(op(&mut t, EVTCHNOP_STATUS), -EPERM, "domain 0 exists: XSM_TARGET");
        t.put(TEST_ARG, &EvtchnStatus { dom: DOMID_SELF, port: MAX_PORTS, ..Default::default() });
        assert_eq!(op(&mut t, EVTCHNOP_STATUS), -EINVAL);
    }

    #[test]
    fn unsupported_commands_are_enosys() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        for cmd in [EVTCHNOP_BIND_PIRQ, 14, 99] {
            assert_eq!(op(&mut t, cmd), -ENOSYS, "cmd {cmd}");
        }
        assert_eq!(t.call(nr::EVENT_CHANNEL_OP, [u64::MAX, TEST_ARG, 0, 0, 0]), -ENOSYS);
    }

    #[test]
    fn a_refused_doorbell_leaves_the_port_unbound() {
        let mut t = TestDomain::new(paging_mode::NATIVE);
        let port = alloc(&mut t);
        t.platform.refuse_doorbells(true);
        let wake = Arc::new(EventFd::new(0).unwrap());
        assert_eq!(t.dom.evtchn.bind_guest_port(port, wake), Err(EvtchnError::Doorbell(port)));
        assert_eq!(status(&mut t, port).status, EVTCHNSTAT_UNBOUND);
        assert_eq!(EvtchnError::Doorbell(port).errno(), pv_abi::errno::EIO);
    }

    #[test]
    fn the_x86_32_layout_uses_32_bit_words() {
        let t = TestDomain::pvh();
        let si = t.dom.pvh.as_ref().unwrap().layout.shared_info();
        t.dom.evtchn.set_compat_layout(true);
        let port = t.dom.evtchn.bind_virq(0, 0).unwrap();
        assert_eq!(t.dom.evtchn.notify_virq(0), Ok(true));
        let word: u32 = t.get(si + LAYOUT_X86_32.pending as u64);
        assert_eq!(word, 1 << port);
        let sel: u32 = t.get(si + LAYOUT_X86_32.pending_sel as u64);
        assert_eq!(sel, 1);
    }
}
