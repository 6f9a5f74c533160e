//! Plain old data: the marker for wire structures that may be copied out of
//! memory a hostile peer controls.

/// `Copy`, and **every bit pattern of `size_of::<T>()` bytes is a valid
/// value**, so an entry copied out of shared memory is always a valid `T`
/// (its *contents* still need checking). Every wire structure of this crate
/// is `Pod`: `#[repr(C)]`, made only of integers, integer arrays and
/// unions of those, with explicit padding fields.
///
/// # Safety
///
/// Implement only for types for which any initialised byte pattern is a
/// valid value.
pub unsafe trait Pod: Copy + 'static {}

/// Marks types as [`Pod`]. Only for this crate's integer types and
/// `#[repr(C)]` wire structures made of integers, integer arrays and unions
/// of those; a protocol module calls it next to its structures (see
/// `echo.rs`), so adding a protocol does not touch this file.
macro_rules! impl_pod {
    ($($t:ty),* $(,)?) => { $(
        // SAFETY: integer types (and `#[repr(C)]` ABI structs and unions made
        // only of integers and integer arrays) accept every bit pattern.
        unsafe impl $crate::pod::Pod for $t {}
    )* };
}
pub(crate) use impl_pod;
impl_pod!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128, usize, isize);
// SAFETY: an array of `Pod` elements accepts every bit pattern.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}

/// The bytes of a value, for copying it into memory a peer reads.
pub fn as_bytes<T: Pod>(v: &T) -> &[u8] {
    // SAFETY: `T: Pod` is `#[repr(C)]` with explicit padding, so all
    // `size_of::<T>()` bytes are initialised; the slice borrows `v`.
    unsafe { core::slice::from_raw_parts(v as *const T as *const u8, core::mem::size_of::<T>()) }
}

/// The bytes of a value, writable: any bytes written leave a valid `T`.
pub fn as_bytes_mut<T: Pod>(v: &mut T) -> &mut [u8] {
    // SAFETY: as `as_bytes`, and every bit pattern is a valid `T`, so
    // writes through the slice cannot make `*v` invalid.
    unsafe { core::slice::from_raw_parts_mut(v as *mut T as *mut u8, core::mem::size_of::<T>()) }
}

/// The all-zero value of `T`.
pub fn zeroed<T: Pod>() -> T {
    // SAFETY: every bit pattern, zero included, is a valid `T`.
    unsafe { core::mem::zeroed() }
}

/// A value read from bytes (`None` unless `bytes.len()` is the size of `T`).
pub fn from_bytes<T: Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() != core::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length matches and every bit pattern is a valid `T`;
    // `read_unaligned` copes with any alignment.
    Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr() as *const T) })
}
impl_pod!(
    crate::netif::NetifTxRequest,
    crate::netif::NetifTxResponse,
    crate::netif::NetifRxRequest,
    crate::netif::NetifRxResponse,
    crate::netif::NetifExtraInfo,
    crate::xs_wire::XsdSockmsg,
    crate::ring::SringHeader,
    crate::start_info::StartInfo,
    crate::start_info::MemRegion,
    crate::start_info::RingInfo,
    crate::virtio::VirtioMmioDevice,
    crate::hypercall::sched_op::SchedShutdown,
    crate::hypercall::sched_op::SchedRemoteShutdown,
    crate::hypercall::sched_op::SchedWatchdog,
    crate::hypercall::sched_op::SchedPinOverride,
    crate::hypercall::xen_version::FeatureInfo,
    crate::event_channel::EvtchnAllocUnbound,
    crate::event_channel::EvtchnBindInterdomain,
    crate::event_channel::EvtchnSend,
    crate::event_channel::EvtchnClose,
    crate::event_channel::EvtchnUnmask,
    crate::event_channel::EvtchnStatus,
    crate::event_channel::EvtchnBindVirq,
    crate::event_channel::EvtchnInitControl,
    crate::event_channel::EvtchnExpandArray,
    crate::event_channel::EvtchnSetPriority,
    crate::event_channel::EvtchnFifoControlBlock,
    crate::grant_table::GrantEntryV1,
    crate::grant_table::GnttabSetupTable,
    crate::grant_table::GnttabQuerySize,
    crate::grant_table::GnttabCopy,
    crate::shared_info::SharedInfo,
    crate::shared_info::VcpuTimeInfo,
    crate::mmu::MmuUpdate,
    crate::mmu::MmuextOp,
    crate::multicall::MulticallEntry,
    crate::grant_table::CompatGnttabSetupTable,
    crate::grant_table::GnttabSetVersion,
    crate::grant_table::GnttabGetVersion,
    crate::grant_table::GnttabDumpTable,
    crate::hypercall::vcpu_op::VcpuRunstateInfo,
    crate::hypercall::vcpu_op::CompatVcpuRunstateInfo,
    crate::hypercall::vcpu_op::VcpuRegisterRunstateMemoryArea,
    crate::hypercall::vcpu_op::VcpuRegisterVcpuInfo,
);
