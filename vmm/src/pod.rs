//! Wire structures as bytes, for copying to and from guest memory without
//! long-lived references into it. The `Pod` marker itself is pv-abi's.

pub use pv_abi::Pod;

/// The bytes of a value.
pub fn as_bytes<T: Pod>(v: &T) -> &[u8] {
    // SAFETY: `T: Pod` is `#[repr(C)]` with explicit padding, so all
    // `size_of::<T>()` bytes are initialised; the slice borrows `v`.
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
