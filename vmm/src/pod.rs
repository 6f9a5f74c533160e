//! Plain-old-data wire structures as bytes, for copying to and from guest
//! memory without long-lived references into it.

use pv_abi::hypercall::{sched_op::SchedShutdown, xen_version::FeatureInfo};
use pv_abi::mmu::{MmuUpdate, MmuextOp};
use pv_abi::multicall::MulticallEntry;
use pv_abi::start_info::StartInfo;

/// A type every bit pattern of which is a valid value and which has no
/// padding bytes, so it can be copied from and to raw bytes.
///
/// # Safety
/// Implement only for `#[repr(C)]` types made of integers and arrays of
/// integers, with no implicit padding.
pub unsafe trait Pod: Copy + 'static {}

// SAFETY: each is `#[repr(C)]`, integer-only, with explicit padding fields
// (layout asserted in pv-abi).
unsafe impl Pod for StartInfo {}
// SAFETY: as above.
unsafe impl Pod for SchedShutdown {}
// SAFETY: as above.
unsafe impl Pod for FeatureInfo {}
// SAFETY: as above (MmuextOp's unions are u64-wide, any bits valid).
unsafe impl Pod for MmuUpdate {}
// SAFETY: as above.
unsafe impl Pod for MmuextOp {}
// SAFETY: as above.
unsafe impl Pod for MulticallEntry {}
// SAFETY: integers.
unsafe impl Pod for u64 {}
// SAFETY: integers.
unsafe impl Pod for u32 {}

/// The bytes of a value.
pub fn as_bytes<T: Pod>(v: &T) -> &[u8] {
    // SAFETY: `T: Pod` has no padding, so all `size_of::<T>()` bytes are
    // initialised; the slice borrows `v`.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
}

/// A value read from bytes (`bytes.len()` must equal the size of `T`).
pub fn from_bytes<T: Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() != std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length matches and every bit pattern is a valid `T`;
    // `read_unaligned` copes with any alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const T) })
}
