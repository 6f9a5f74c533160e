//! `event_channel_op` sub-operations and their argument structures.
//!
//! Byte-compatible with Xen's `public/event_channel.h`. Arguments: `rdi` =
//! sub-operation (`EVTCHNOP_*`), `rsi` = guest-physical address of the
//! sub-operation's argument structure, which the VMM reads, and for `OUT`
//! fields writes back.

/// An event-channel port number (Xen's `evtchn_port_t`).
pub type EvtchnPort = u32;
/// A domain id (Xen's `domid_t`).
pub type DomId = u16;

/// The calling domain (Xen's `DOMID_SELF`).
pub const DOMID_SELF: DomId = 0x7ff0;
/// The VMM's domain id: it plays Xen's domain 0 for back-ends and the store.
pub const DOMID_VMM: DomId = 0;

/// Number of ports of the 2-level ABI on a 64-bit guest (64 x 64 bits).
pub const EVTCHN_2L_NR_CHANNELS: u32 = 4096;

/// Ports the VMM offers a guest (bounded well below
/// [`EVTCHN_2L_NR_CHANNELS`] so per-guest tables stay small); a guest need
/// track no more.
pub const MAX_PORTS: u32 = 1024;
const _: () = assert!(MAX_PORTS <= EVTCHN_2L_NR_CHANNELS);

/// The interrupt vector the VMM delivers event-channel upcalls on (an MSI
/// to the local APIC); the guest installs its upcall handler there.
pub const UPCALL_VECTOR: u8 = 0x30;

/// `EVTCHNOP_bind_interdomain`: connect to a remote domain's unbound port.
pub const EVTCHNOP_BIND_INTERDOMAIN: u32 = 0;
/// `EVTCHNOP_bind_virq` (not implemented by the VMM).
pub const EVTCHNOP_BIND_VIRQ: u32 = 1;
/// `EVTCHNOP_bind_pirq` (not implemented by the VMM).
pub const EVTCHNOP_BIND_PIRQ: u32 = 2;
/// `EVTCHNOP_close`: close a port.
pub const EVTCHNOP_CLOSE: u32 = 3;
/// `EVTCHNOP_send`: notify the remote end of a port.
pub const EVTCHNOP_SEND: u32 = 4;
/// `EVTCHNOP_status`: query a port's state.
pub const EVTCHNOP_STATUS: u32 = 5;
/// `EVTCHNOP_alloc_unbound`: allocate a port a remote domain may bind to.
pub const EVTCHNOP_ALLOC_UNBOUND: u32 = 6;
/// `EVTCHNOP_bind_ipi`: a port whose sends notify one vCPU of the caller.
pub const EVTCHNOP_BIND_IPI: u32 = 7;
/// `EVTCHNOP_bind_vcpu`: moves a port's notifications to another vCPU.
pub const EVTCHNOP_BIND_VCPU: u32 = 8;
/// `EVTCHNOP_unmask`: clear a port's mask bit and redeliver if pending.
pub const EVTCHNOP_UNMASK: u32 = 9;

/// Argument of `EVTCHNOP_alloc_unbound` (Xen's `evtchn_alloc_unbound`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnAllocUnbound {
    /// IN: the domain allocating the port ([`DOMID_SELF`] for the caller).
    pub dom: DomId,
    /// IN: the only domain allowed to bind to the port.
    pub remote_dom: DomId,
    /// OUT: the allocated port.
    pub port: EvtchnPort,
}
crate::assert_layout!(EvtchnAllocUnbound, size = 8, dom = 0, remote_dom = 2, port = 4);

/// Argument of `EVTCHNOP_bind_interdomain` (Xen's `evtchn_bind_interdomain`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindInterdomain {
    /// IN: the remote domain ([`DOMID_VMM`] for the VMM's back-ends).
    pub remote_dom: DomId,
    /// Zero (alignment hole in Xen's layout).
    pub _pad: u16,
    /// IN: the remote domain's unbound port.
    pub remote_port: EvtchnPort,
    /// OUT: the local port now connected to it.
    pub local_port: EvtchnPort,
}
crate::assert_layout!(EvtchnBindInterdomain, size = 12, remote_dom = 0, remote_port = 4, local_port = 8);

/// Argument of `EVTCHNOP_close` (Xen's `evtchn_close`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnClose {
    /// IN: the port to close.
    pub port: EvtchnPort,
}
crate::assert_layout!(EvtchnClose, size = 4, port = 0);

/// Argument of `EVTCHNOP_send` (Xen's `evtchn_send`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnSend {
    /// IN: the local port whose remote end is notified.
    pub port: EvtchnPort,
}
crate::assert_layout!(EvtchnSend, size = 4, port = 0);

/// Argument of `EVTCHNOP_unmask` (Xen's `evtchn_unmask`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnUnmask {
    /// IN: the port to unmask.
    pub port: EvtchnPort,
}
crate::assert_layout!(EvtchnUnmask, size = 4, port = 0);

/// `EVTCHNOP_reset`: close every port of a domain.
pub const EVTCHNOP_RESET: u32 = 10;
/// `EVTCHNOP_init_control`: register a vCPU's FIFO control block; the
/// first call switches the domain from the 2-level to the FIFO ABI.
pub const EVTCHNOP_INIT_CONTROL: u32 = 11;
/// `EVTCHNOP_expand_array`: add a page to the FIFO event array.
pub const EVTCHNOP_EXPAND_ARRAY: u32 = 12;
/// `EVTCHNOP_set_priority`: set a port's FIFO queue.
pub const EVTCHNOP_SET_PRIORITY: u32 = 13;

/// Argument of `EVTCHNOP_init_control` (Xen's `evtchn_init_control`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnInitControl {
    /// IN: guest frame of the page holding the control block.
    pub control_gfn: u64,
    /// IN: byte offset of the control block in that page (8-byte aligned).
    pub offset: u32,
    /// IN: the vCPU the control block belongs to.
    pub vcpu: u32,
    /// OUT: bits of the LINK field ([`EVTCHN_FIFO_LINK_BITS`]).
    pub link_bits: u8,
    /// Zero.
    pub _pad: [u8; 7],
}
crate::assert_layout!(EvtchnInitControl, size = 24, control_gfn = 0, offset = 8, vcpu = 12, link_bits = 16);

/// Argument of `EVTCHNOP_expand_array` (Xen's `evtchn_expand_array`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnExpandArray {
    /// IN: guest frame of the new event-array page.
    pub array_gfn: u64,
}
crate::assert_layout!(EvtchnExpandArray, size = 8, array_gfn = 0);

/// Argument of `EVTCHNOP_set_priority` (Xen's `evtchn_set_priority`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnSetPriority {
    /// IN: the port.
    pub port: EvtchnPort,
    /// IN: its priority, [`EVTCHN_FIFO_PRIORITY_MAX`] (0, highest) to
    /// [`EVTCHN_FIFO_PRIORITY_MIN`] (15).
    pub priority: u32,
}
crate::assert_layout!(EvtchnSetPriority, size = 8, port = 0, priority = 4);

/// FIFO ABI: the highest priority.
pub const EVTCHN_FIFO_PRIORITY_MAX: u32 = 0;
/// FIFO ABI: the priority a port starts with.
pub const EVTCHN_FIFO_PRIORITY_DEFAULT: u32 = 7;
/// FIFO ABI: the lowest priority.
pub const EVTCHN_FIFO_PRIORITY_MIN: u32 = 15;
/// FIFO ABI: one queue per priority, per vCPU.
pub const EVTCHN_FIFO_MAX_QUEUES: usize = EVTCHN_FIFO_PRIORITY_MIN as usize + 1;
/// FIFO event word bit: the event is pending.
pub const EVTCHN_FIFO_PENDING: u32 = 31;
/// FIFO event word bit: the event is masked.
pub const EVTCHN_FIFO_MASKED: u32 = 30;
/// FIFO event word bit: the event is on a queue.
pub const EVTCHN_FIFO_LINKED: u32 = 29;
/// FIFO event word bit: the hypervisor is changing the LINK field (the
/// guest must not unmask by itself meanwhile).
pub const EVTCHN_FIFO_BUSY: u32 = 28;
/// FIFO event word: bits of the LINK field (the next port on the queue).
pub const EVTCHN_FIFO_LINK_BITS: u32 = 17;
/// FIFO event word: the LINK field.
pub const EVTCHN_FIFO_LINK_MASK: u32 = (1 << EVTCHN_FIFO_LINK_BITS) - 1;
/// FIFO ABI: ports the event array can name.
pub const EVTCHN_FIFO_NR_CHANNELS: u32 = 1 << EVTCHN_FIFO_LINK_BITS;
/// FIFO ABI: event words per event-array page (`PAGE_SIZE / sizeof(event_word_t)`).
pub const EVTCHN_FIFO_EVENT_WORDS_PER_PAGE: u32 = 1024;
/// FIFO ABI: event-array pages a domain may add.
pub const EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES: u32 = EVTCHN_FIFO_NR_CHANNELS / EVTCHN_FIFO_EVENT_WORDS_PER_PAGE;

/// A vCPU's FIFO control block (Xen's `evtchn_fifo_control_block`), in a
/// guest page: `ready` has bit `q` set while queue `q` is non-empty, and
/// `head[q]` is the first port of queue `q` (0: empty as far as the
/// hypervisor linked it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnFifoControlBlock {
    /// Bit per priority: that queue has events.
    pub ready: u32,
    /// Reserved.
    pub _rsvd: u32,
    /// The head port of each queue.
    pub head: [u32; EVTCHN_FIFO_MAX_QUEUES],
}
crate::assert_layout!(EvtchnFifoControlBlock, size = 72, ready = 0, _rsvd = 4, head = 8);

/// `EvtchnStatus::status`: the port is not in use.
pub const EVTCHNSTAT_CLOSED: u32 = 0;
/// `EvtchnStatus::status`: waiting for an inter-domain connection.
pub const EVTCHNSTAT_UNBOUND: u32 = 1;
/// `EvtchnStatus::status`: connected to a remote domain.
pub const EVTCHNSTAT_INTERDOMAIN: u32 = 2;
/// `EvtchnStatus::status`: bound to a physical IRQ.
pub const EVTCHNSTAT_PIRQ: u32 = 3;
/// `EvtchnStatus::status`: bound to a virtual IRQ.
pub const EVTCHNSTAT_VIRQ: u32 = 4;
/// `EvtchnStatus::status`: bound to an IPI.
pub const EVTCHNSTAT_IPI: u32 = 5;

/// `EvtchnStatus::u` for [`EVTCHNSTAT_UNBOUND`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnStatusUnbound {
    /// The domain allowed to bind.
    pub dom: DomId,
}
crate::assert_layout!(EvtchnStatusUnbound, size = 2, dom = 0);

/// `EvtchnStatus::u` for [`EVTCHNSTAT_INTERDOMAIN`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnStatusInterdomain {
    /// The remote domain.
    pub dom: DomId,
    /// Zero (alignment hole in Xen's layout).
    pub _pad: u16,
    /// The remote port.
    pub port: EvtchnPort,
}
crate::assert_layout!(EvtchnStatusInterdomain, size = 8, dom = 0, port = 4);

/// The state-specific part of [`EvtchnStatus`] (Xen's anonymous union `u`).
#[repr(C)]
#[derive(Clone, Copy)]
pub union EvtchnStatusU {
    /// Valid for [`EVTCHNSTAT_UNBOUND`].
    pub unbound: EvtchnStatusUnbound,
    /// Valid for [`EVTCHNSTAT_INTERDOMAIN`].
    pub interdomain: EvtchnStatusInterdomain,
    /// Valid for [`EVTCHNSTAT_PIRQ`].
    pub pirq: u32,
    /// Valid for [`EVTCHNSTAT_VIRQ`].
    pub virq: u32,
}
crate::assert_layout!(EvtchnStatusU, size = 8);

impl Default for EvtchnStatusU {
    fn default() -> Self {
        EvtchnStatusU { interdomain: EvtchnStatusInterdomain::default() }
    }
}

impl core::fmt::Debug for EvtchnStatusU {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // SAFETY: every member is plain integers and the union is fully
        // covered by `interdomain`, so any bit pattern is a valid read.
        let raw = unsafe { self.interdomain };
        f.debug_struct("EvtchnStatusU").field("raw", &raw).finish()
    }
}

/// Argument of `EVTCHNOP_status` (Xen's `evtchn_status`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnStatus {
    /// IN: the domain owning the port ([`DOMID_SELF`] for the caller).
    pub dom: DomId,
    /// Zero (alignment hole in Xen's layout).
    pub _pad: u16,
    /// IN: the port to query.
    pub port: EvtchnPort,
    /// OUT: one of the `EVTCHNSTAT_*` values.
    pub status: u32,
    /// OUT: the vCPU the port notifies.
    pub vcpu: u32,
    /// OUT: state-specific details.
    pub u: EvtchnStatusU,
}
crate::assert_layout!(EvtchnStatus, size = 24, dom = 0, port = 4, status = 8, vcpu = 12, u = 16);

/// Argument of `EVTCHNOP_bind_virq` (Xen's `evtchn_bind_virq`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindVirq {
    /// IN: the virtual IRQ (`VIRQ_*`).
    pub virq: u32,
    /// IN: the vCPU to deliver to.
    pub vcpu: u32,
    /// OUT: the bound port.
    pub port: EvtchnPort,
}
crate::assert_layout!(EvtchnBindVirq, size = 12, virq = 0, vcpu = 4, port = 8);

/// Argument of `EVTCHNOP_bind_ipi` (Xen's `evtchn_bind_ipi`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindIpi {
    /// IN: the vCPU the port notifies.
    pub vcpu: u32,
    /// OUT: the bound port.
    pub port: EvtchnPort,
}
crate::assert_layout!(EvtchnBindIpi, size = 8, vcpu = 0, port = 4);

/// Argument of `EVTCHNOP_bind_vcpu` (Xen's `evtchn_bind_vcpu`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindVcpu {
    /// IN: the port to move.
    pub port: EvtchnPort,
    /// IN: the vCPU to notify from now on.
    pub vcpu: u32,
}
crate::assert_layout!(EvtchnBindVcpu, size = 8, port = 0, vcpu = 4);

/// Number of virtual IRQs (Xen's `NR_VIRQS`).
pub const NR_VIRQS: u32 = 24;
