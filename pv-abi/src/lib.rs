//! The contract between a PV guest and the VMM.
//!
//! Everything both sides must agree on lives here and only here: hypercall
//! numbers and the port-I/O calling convention, errno values, the guest
//! physical memory layout, the start-info page, and the Xen-compatible shared
//! structures (shared-info, grant entries, rings, blkif/netif, console, store).
//! Every wire structure is `#[repr(C)]` with compile-time size and offset
//! assertions, so a layout change breaks the build instead of the protocol.
//! The crate is `no_std` so the guest links it directly; `std` is only an
//! optional feature for host conveniences.
#![cfg_attr(not(feature = "std"), no_std)]

/// Asserts a struct's size and each listed field's offset at compile time.
#[macro_export]
macro_rules! assert_layout {
    ($ty:ty, size = $size:expr $(, $field:ident = $off:expr)* $(,)?) => {
        const _: () = assert!(::core::mem::size_of::<$ty>() == $size);
        $(const _: () = assert!(::core::mem::offset_of!($ty, $field) == $off);)*
    };
}

pub mod blkif;
pub mod console;
pub mod echo;
pub mod errno;
pub mod event_channel;
pub mod grant_table;
pub mod hvm;
pub mod hypercall;
pub mod layout;
pub mod mmu;
pub mod multicall;
pub mod netif;
pub mod pod;
pub use pod::Pod;
pub mod ring;
pub mod shared_info;
pub mod start_info;
pub mod vdev;
pub mod virtio;
pub mod xenbus;
pub mod xs_wire;
