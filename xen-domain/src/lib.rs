//! The hypervisor side of the PV framework, without KVM.
//!
//! A [`domain::Domain`] is the guest as Xen sees it: its RAM, event
//! channels, grant table, direct-paging state and (for Xen PVH guests)
//! PVH state. [`hypercall::HypercallTable`] dispatches a hypercall to one
//! handler file per Xen hypercall, named as Xen's `xen/common/*.c`:
//! [`console_io`], [`sched_op`], [`vcpu_op`], [`xen_version`],
//! [`event_channel`], [`grant_table`], [`memory_op`], [`hvm_op`],
//! [`multicall`] and [`mmu`]. Every guest-memory access goes through
//! [`guest_memory::GuestRam`]'s checked copies, and every hypercall output
//! through its one checked path, `copy_to_guest`.
//!
//! The machine (KVM in the `vmm` crate, a recording fake in tests) is
//! reached only through [`platform::Platform`]: raise an upcall, bind a
//! doorbell, place a page at a guest frame, route the upcall vector.
//!
//! Module order, low to high (no module imports one above it):
//! `domid`, `guest_memory`, `console`, `platform`, `time`, `event_channel`,
//! `grant_table::mapper`, `mmu::validator`, `timer`, `pvh`, `preempt`,
//! `hvm_context`, `vcpus`,
//! `domain`, then the handlers, then `hypercall`, `snapshot` (the domain's
//! state as data, [`snapshot::DomainState`]), and `fake` (tests) on top.

pub mod console;
pub mod console_io;
pub mod domain;
pub mod domid;
pub mod event_channel;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod grant_table;
pub mod guest_memory;
pub mod hvm_context;
pub mod hvm_op;
pub mod hypercall;
pub mod memory_op;
pub mod mmu;
pub mod multicall;
pub mod platform;
pub mod preempt;
pub mod pvh;
pub mod runstate;
pub mod sched_op;
pub mod snapshot;
pub mod time;
pub mod timer;
pub mod toolstack_op;
pub mod vcpu_op;
pub mod vcpus;
pub mod xen_version;
