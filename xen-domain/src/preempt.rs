//! Bounded work per exit: Xen's `hypercall_preempt_check` and
//! `hypercall_create_continuation`.
//!
//! Each hypercall exit starts with [`WORK_PER_EXIT`] work units. Handlers
//! whose cost the guest chooses charge what they do (`Domain::charge`)
//! and, once the budget is spent and at least one item is done, stop and
//! record the arguments that finish the job (`Domain::create_continuation`).
//! The vCPU loop then rewinds `rip` onto the hypercall instruction with
//! those arguments (`pv_abi::hypercall`, "Continuations"), so the guest
//! re-enters the hypercall after the VMM has checked its time limit: no
//! single exit runs longer than the budget plus one item, whatever the
//! guest asks for.
//!
//! Units: one batch entry, multicall entry or grant-copy operation is one
//! unit (a grant copy of up to a page [`COPY_UNITS`]); a page-table
//! validation adds [`FRAME_UNITS`] for each table frame whose 512 entries
//! it scanned.

/// Work units one hypercall exit may spend.
pub const WORK_PER_EXIT: u64 = 16 * 1024;
/// Units charged per table frame a page-table validation scans.
pub const FRAME_UNITS: u64 = 512;
/// Units charged per grant-copy operation (up to a page of copying).
pub const COPY_UNITS: u64 = 8;
