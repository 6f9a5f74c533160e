//! The event channels' part of a snapshot ([`EvtchnState`]): every port
//! in use (state, remote end, notify vCPU), the domain-0 ports offered to
//! the guest, the 2-level layout and each vCPU's `vcpu_info` place, and
//! the FIFO ABI's VMM-side state. Pending and mask bits, selectors,
//! `upcall_pending`, FIFO event words, control blocks and queue heads all
//! live in guest memory, which the snapshot carries separately, so an
//! event pending at the snapshot is still pending after a restore.
//!
//! What is not saved: a back end's eventfd. A restored interdomain port is
//! *detached* (the guest sees it bound, `EVTCHNSTAT_interdomain`) until its
//! back end calls [`EventChannels::reattach`]; a guest send meanwhile is
//! remembered and delivered to the back end then.

use super::{Dom0Port, EventChannels, PortState, Table};
use crate::domid::GUEST_DOMID;
use pv_abi::event_channel::{DomId, EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES, EVTCHN_FIFO_MAX_QUEUES, MAX_PORTS};
use pv_abi::event_channel::{DOMID_VMM, EVTCHN_FIFO_PRIORITY_MIN, NR_VIRQS};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use vmm_sys_util::eventfd::EventFd;

/// What a port in use is connected to (Xen's `ECS_*` with its `u`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortKind {
    /// `ECS_UNBOUND`, offered to `remote_dom`.
    Unbound {
        /// The domain that may bind it.
        remote_dom: DomId,
    },
    /// `ECS_VIRQ`.
    Virq {
        /// The virtual IRQ.
        virq: u32,
    },
    /// `ECS_IPI`.
    Ipi,
    /// `ECS_INTERDOMAIN` to another port of the guest itself.
    Loopback {
        /// The other end.
        peer: u32,
    },
    /// `ECS_INTERDOMAIN` to a domain-0 back end (re-attached after a restore).
    Interdomain {
        /// Domain 0's port number.
        remote_port: u32,
    },
}

/// One guest port in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSave {
    /// The port number (1..`MAX_PORTS`).
    pub port: u32,
    /// Its notify vCPU (`notify_vcpu_id`).
    pub notify_vcpu: u32,
    /// Its state.
    pub kind: PortKind,
}

/// A domain-0 port offered to the guest (`alloc_dom0_unbound`), numbered
/// from 1 by its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dom0PortSave {
    /// The domain allowed to bind it.
    pub remote_dom: DomId,
    /// The guest port bound to it.
    pub bound_to: Option<u32>,
}

/// One port's FIFO state (`evtchn->priority`, `fifo_lastq`, `pending`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FifoPortSave {
    /// The port.
    pub port: u32,
    /// Queue for future events.
    pub priority: u8,
    /// vCPU of the queue it was last linked on.
    pub last_vcpu: u32,
    /// Priority of the queue it was last linked on.
    pub last_priority: u8,
    /// An event waiting for its event-array page.
    pub pending: bool,
}

/// One vCPU's FIFO state (`struct evtchn_fifo_vcpu`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FifoVcpuSave {
    /// Guest-physical address of its control block, once registered.
    pub control_block: Option<u64>,
    /// The tail port of each of the 16 queues (0: empty). The heads are
    /// in the control block, in guest memory.
    pub tail: Vec<u32>,
}

/// The FIFO ABI's VMM-side state (`struct evtchn_fifo_domain`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FifoState {
    /// Per vCPU.
    pub vcpus: Vec<FifoVcpuSave>,
    /// Guest-physical address of each event-array page, in port order.
    pub array: Vec<u64>,
    /// Ports whose FIFO state differs from a fresh port's.
    pub ports: Vec<FifoPortSave>,
}

/// The event channels of a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvtchnState {
    /// Ports in use, in port order.
    pub ports: Vec<PortSave>,
    /// Domain-0 ports offered to the guest, numbered from 1.
    pub dom0: Vec<Dom0PortSave>,
    /// The last binding generation handed out (generations stay unique).
    pub gen: u64,
    /// The shared-info page (guest-physical) the bitmaps are in.
    pub shared_info: u64,
    /// The shared-info page uses Xen's x86_32 layout.
    pub compat_layout: bool,
    /// `None` on the 2-level ABI.
    pub fifo: Option<FifoState>,
}

/// Why an event-channel state was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvtchnStateError {
    /// A port number out of range, 0, or listed twice.
    #[error("event-channel port {0} is out of range or listed twice")]
    BadPort(u32),
    /// A notify vCPU the domain does not have.
    #[error("event-channel port {port} notifies vCPU {vcpu}, which does not exist")]
    BadVcpu {
        /// The port.
        port: u32,
        /// Its vCPU.
        vcpu: u32,
    },
    /// A port whose connection is inconsistent (a loopback peer that does
    /// not point back, an unknown virq, a domain-0 port bound twice).
    #[error("event-channel port {0}: inconsistent binding")]
    BadBinding(u32),
    /// The state was taken with the shared-info page elsewhere.
    #[error("shared-info page at {saved:#x} in the state, {here:#x} here")]
    SharedInfo {
        /// In the state.
        saved: u64,
        /// In this domain.
        here: u64,
    },
    /// The host refused an eventfd.
    #[error("cannot create an eventfd for the restored domain-0 ports")]
    EventFd,
    /// A binding generation near the end of its range.
    #[error("event-channel binding generation {0} out of range")]
    Generation(u64),
    /// A FIFO page or control block outside the guest's RAM, or too many.
    #[error("FIFO state: {0}")]
    Fifo(&'static str),
}

impl EventChannels {
    /// The state to snapshot (the guest is paused).
    pub fn save_state(&self) -> EvtchnState {
        let t = self.lock();
        let ports = (1..MAX_PORTS)
            .filter_map(|p| {
                let kind = match &t.ports[p as usize] {
                    PortState::Free => return None,
                    &PortState::Unbound { remote_dom } => PortKind::Unbound { remote_dom },
                    &PortState::Virq { virq } => PortKind::Virq { virq },
                    PortState::Ipi => PortKind::Ipi,
                    &PortState::Loopback { peer } => PortKind::Loopback { peer },
                    &PortState::Interdomain { remote_port, .. } | &PortState::Detached { remote_port, .. } => {
                        PortKind::Interdomain { remote_port }
                    }
                };
                Some(PortSave { port: p, notify_vcpu: t.notify_vcpu[p as usize], kind })
            })
            .collect();
        let dom0 = t.dom0.iter().map(|d| Dom0PortSave { remote_dom: d.remote_dom, bound_to: d.bound_to }).collect();
        let gen = t.gen;
        drop(t);
        EvtchnState {
            ports,
            dom0,
            gen,
            shared_info: self.bitmaps.shared_info(),
            compat_layout: self.bitmaps.is_compat_layout(),
            fifo: self.fifo.save_state(),
        }
    }

    /// Checks `s` against this domain (its RAM, the vCPU count set with
    /// [`set_vcpus`](Self::set_vcpus)) without changing anything.
    pub fn check_state(&self, s: &EvtchnState) -> Result<(), EvtchnStateError> {
        // Generations count bindings (one per back-end attach): far below this.
        if s.gen > u64::MAX / 2 {
            return Err(EvtchnStateError::Generation(s.gen));
        }
        let here = self.bitmaps.shared_info();
        if s.shared_info != here {
            return Err(EvtchnStateError::SharedInfo { saved: s.shared_info, here });
        }
        let nr_vcpus = self.nr_vcpus.load(Ordering::Relaxed);
        let mut kinds = vec![None; MAX_PORTS as usize];
        for p in &s.ports {
            let slot =
                kinds.get_mut(p.port as usize).filter(|_| p.port != 0).ok_or(EvtchnStateError::BadPort(p.port))?;
            if slot.replace(p.kind).is_some() {
                return Err(EvtchnStateError::BadPort(p.port));
            }
            if p.notify_vcpu >= nr_vcpus {
                return Err(EvtchnStateError::BadVcpu { port: p.port, vcpu: p.notify_vcpu });
            }
        }
        for p in &s.ports {
            let ok = match p.kind {
                PortKind::Loopback { peer } => {
                    kinds.get(peer as usize) == Some(&Some(PortKind::Loopback { peer: p.port }))
                }
                PortKind::Virq { virq } => virq < NR_VIRQS,
                PortKind::Unbound { .. } | PortKind::Ipi | PortKind::Interdomain { .. } => true,
            };
            if !ok {
                return Err(EvtchnStateError::BadBinding(p.port));
            }
        }
        if s.dom0.len() > MAX_PORTS as usize {
            return Err(EvtchnStateError::BadPort(s.dom0.len() as u32));
        }
        let mut bound = vec![false; MAX_PORTS as usize];
        for (i, d) in s.dom0.iter().enumerate() {
            let Some(port) = d.bound_to else { continue };
            let is_peer = kinds.get(port as usize) == Some(&Some(PortKind::Interdomain { remote_port: i as u32 + 1 }));
            if d.remote_dom != GUEST_DOMID || !is_peer || std::mem::replace(&mut bound[port as usize], true) {
                return Err(EvtchnStateError::BadBinding(port));
            }
        }
        match &s.fifo {
            // The check `map_guest_page()` made at registration.
            Some(f) => check_fifo(f, nr_vcpus, |gpa| self.ram.check_output(gpa, 4096).is_ok()),
            None => Ok(()),
        }
    }

    /// Replaces the port table and ABI state with `s` after checking it
    /// ([`check_state`](Self::check_state)); guest memory must already
    /// hold the snapshot's pages. Ports bound before are closed first
    /// (their doorbells unregistered). Interdomain ports come back
    /// detached: see [`reattach`](Self::reattach).
    pub fn restore_state(&self, s: &EvtchnState) -> Result<(), EvtchnStateError> {
        self.check_state(s)?;
        // One stand-in for every domain-0 end until its owner re-attaches
        // (`reattach_dom0`): made before anything changes.
        let standin = match s.dom0.is_empty() {
            true => None,
            false => Some(Arc::new(
                EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).map_err(|_| EvtchnStateError::EventFd)?,
            )),
        };
        let mut t = self.lock();
        for p in 1..MAX_PORTS {
            if let PortState::Interdomain { wake, .. } = &t.ports[p as usize] {
                self.unregister_doorbell(p, wake);
            }
        }
        let mut fresh = Table {
            ports: vec![PortState::Free; MAX_PORTS as usize],
            notify_vcpu: vec![0; MAX_PORTS as usize],
            dom0: Vec::new(),
            gen: s.gen,
        };
        for p in &s.ports {
            fresh.ports[p.port as usize] = match p.kind {
                PortKind::Unbound { remote_dom } => PortState::Unbound { remote_dom },
                PortKind::Virq { virq } => PortState::Virq { virq },
                PortKind::Ipi => PortState::Ipi,
                PortKind::Loopback { peer } => PortState::Loopback { peer },
                PortKind::Interdomain { remote_port } => PortState::Detached { remote_port, kicked: false },
            };
            fresh.notify_vcpu[p.port as usize] = p.notify_vcpu;
        }
        for d in &s.dom0 {
            let wake = standin.clone().ok_or(EvtchnStateError::EventFd)?;
            fresh.dom0.push(Dom0Port { wake, remote_dom: d.remote_dom, bound_to: d.bound_to });
        }
        *t = fresh;
        self.bitmaps.set_compat_layout(s.compat_layout);
        self.fifo.restore_state(s.fifo.as_ref());
        Ok(())
    }

    /// The interdomain ports restored without their back end, waiting
    /// for [`reattach`](Self::reattach).
    pub fn detached_ports(&self) -> Vec<u32> {
        let t = self.lock();
        (1..MAX_PORTS).filter(|&p| matches!(t.ports[p as usize], PortState::Detached { .. })).collect()
    }

    /// A back end takes over restored interdomain port `port` (the one its
    /// store directory names) and sleeps on `wake`; a send the guest made
    /// while the port was detached wakes it at once. The binding is new
    /// (a fresh generation).
    pub fn reattach(&self, port: u32, wake: Arc<EventFd>) -> Result<super::Binding, super::EvtchnError> {
        let mut t = self.lock();
        let Some(&PortState::Detached { remote_port, kicked }) = t.ports.get(port as usize) else {
            return Err(super::EvtchnError::BadPort(port));
        };
        self.register_doorbell(port, &wake)?;
        if kicked {
            if let Err(e) = wake.write(1) {
                tracing::warn!(port, "cannot wake the re-attached back end: {e}");
            }
        }
        let gen = t.next_gen();
        t.ports[port as usize] = PortState::Interdomain { remote_port, wake, gen };
        Ok(super::Binding { port, gen })
    }

    /// The owner of restored domain-0 port `dom0_port`
    /// ([`alloc_dom0_unbound`](Self::alloc_dom0_unbound)) sleeps on `wake`
    /// again; a guest port bound to it is re-attached with it.
    pub fn reattach_dom0(&self, dom0_port: u32, wake: Arc<EventFd>) -> Result<(), super::EvtchnError> {
        let idx = (dom0_port as usize).checked_sub(1).ok_or(super::EvtchnError::BadPort(dom0_port))?;
        let mut t = self.lock();
        let d = t.dom0.get_mut(idx).ok_or(super::EvtchnError::BadPort(dom0_port))?;
        d.wake = wake.clone();
        let Some(port) = d.bound_to else { return Ok(()) };
        // Bound since the restore, with the stand-in: move its doorbell.
        // (One doorbell per port: the old one goes first; if the new one
        // is refused, the old one comes back.)
        if let Some(PortState::Interdomain { wake: old, .. }) = t.ports.get_mut(port as usize) {
            self.unregister_doorbell(port, old);
            if let Err(e) = self.register_doorbell(port, &wake) {
                let _ = self.register_doorbell(port, old);
                return Err(e);
            }
            *old = wake;
            return Ok(());
        }
        drop(t);
        self.reattach(port, wake).map(|_| ())
    }
}

/// The checks `init_control` and `expand_array` made when the guest
/// registered its pages, made again on a state that may be tampered with.
fn check_fifo(f: &FifoState, nr_vcpus: u32, guest_page: impl Fn(u64) -> bool) -> Result<(), EvtchnStateError> {
    const PAGE: u64 = 4096;
    let cb_size = std::mem::size_of::<pv_abi::event_channel::EvtchnFifoControlBlock>() as u64;
    if f.vcpus.len() > nr_vcpus as usize {
        return Err(EvtchnStateError::Fifo("control blocks for vCPUs the domain does not have"));
    }
    for v in &f.vcpus {
        if v.tail.len() != EVTCHN_FIFO_MAX_QUEUES || v.tail.iter().any(|&p| p >= MAX_PORTS) {
            return Err(EvtchnStateError::Fifo("a queue tail out of range"));
        }
        if let Some(cb) = v.control_block {
            let fits = cb % 8 == 0 && cb % PAGE <= PAGE - cb_size && guest_page(cb - cb % PAGE);
            if !fits {
                return Err(EvtchnStateError::Fifo("a control block outside RAM or misaligned"));
            }
        }
    }
    if f.array.len() > EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES as usize
        || f.array.iter().any(|&g| g % PAGE != 0 || !guest_page(g))
    {
        return Err(EvtchnStateError::Fifo("an event-array page outside RAM, misaligned or too many"));
    }
    let bad_port = |p: &FifoPortSave| {
        p.port == 0
            || p.port >= MAX_PORTS
            || u32::from(p.priority) > EVTCHN_FIFO_PRIORITY_MIN
            || u32::from(p.last_priority) > EVTCHN_FIFO_PRIORITY_MIN
            || p.last_vcpu >= nr_vcpus
    };
    if f.ports.iter().any(bad_port) {
        return Err(EvtchnStateError::Fifo("a port's priority, queue or number out of range"));
    }
    Ok(())
}

// `DOMID_VMM` is domain 0: the only remote an interdomain port may have.
const _: () = assert!(DOMID_VMM == 0);

impl EventChannels {
    /// A restore: `vcpu`'s `vcpu_info` is at `gpa` (`None`: its shared-info
    /// slot). Refused (`false`) for a vCPU beyond the shared-info page's
    /// slots or a place outside the guest's RAM, as
    /// `VCPUOP_register_vcpu_info` would refuse it.
    pub fn restore_vcpu_info(&self, vcpu: u32, gpa: Option<u64>) -> bool {
        let size = std::mem::size_of::<pv_abi::shared_info::VcpuInfo>() as u64;
        if vcpu as usize >= pv_abi::shared_info::MAX_LEGACY_VCPUS
            || gpa.is_some_and(|g| g == 0 || self.ram.check_output(g, size).is_err())
        {
            return false;
        }
        self.bitmaps.restore_vcpu_info(vcpu, gpa.unwrap_or(0));
        true
    }
}
