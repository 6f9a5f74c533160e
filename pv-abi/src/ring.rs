//! The shared-ring header of Xen's `io/ring.h`.
//!
//! A request/response ring is one page (or 2^n pages) starting with this
//! 64-byte header, followed by a power-of-two array of slots, each a union of
//! the request and response types. The `ring-buffers` crate implements the
//! protocol; this module fixes the layout.

/// A free-running ring index (Xen's `RING_IDX`): it wraps at 2^32 and is
/// reduced modulo the ring size only when a slot is addressed.
pub type RingIdx = u32;

/// The header at the start of every shared request/response ring (the fixed
/// part of Xen's `struct *_sring`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SringHeader {
    /// Requests produced so far by the front end.
    pub req_prod: RingIdx,
    /// The back end wants a notification when `req_prod` passes this value.
    pub req_event: RingIdx,
    /// Responses produced so far by the back end.
    pub rsp_prod: RingIdx,
    /// The front end wants a notification when `rsp_prod` passes this value.
    pub rsp_event: RingIdx,
    /// Protocol-private bytes (Xen's `pvt` union: netif smartpoll etc.).
    pub pvt: [u8; 4],
    /// Zero: pads the header to 64 bytes.
    pub pad: [u8; 44],
}
crate::assert_layout!(
    SringHeader,
    size = 64,
    req_prod = 0,
    req_event = 4,
    rsp_prod = 8,
    rsp_event = 12,
    pvt = 16,
    pad = 20
);

/// Byte offset of the first slot (Xen's `offsetof(struct *_sring, ring)`).
pub const SRING_HEADER_SIZE: usize = core::mem::size_of::<SringHeader>();

impl SringHeader {
    /// The header of a freshly initialised ring (Xen's `SHARED_RING_INIT`):
    /// producers at 0, both event indices at 1.
    pub const fn new() -> Self {
        SringHeader { req_prod: 0, req_event: 1, rsp_prod: 0, rsp_event: 1, pvt: [0; 4], pad: [0; 44] }
    }
}

impl Default for SringHeader {
    fn default() -> Self {
        Self::new()
    }
}

/// Number of slots in a ring of `bytes` bytes whose slots are `slot_size`
/// bytes (Xen's `__RING_SIZE`): the space after the header divided by the
/// slot size, rounded down to a power of two. Returns 0 if not even one slot
/// fits or `slot_size` is 0.
pub const fn ring_size(bytes: usize, slot_size: usize) -> u32 {
    if slot_size == 0 || bytes < SRING_HEADER_SIZE + slot_size {
        return 0;
    }
    let n = (bytes - SRING_HEADER_SIZE) / slot_size;
    let n = if n > (1 << 31) { 1 << 31 } else { n };
    // Round down to a power of two.
    1u32 << (usize::BITS - 1 - n.leading_zeros())
}

/// The slot size of a ring carrying `Req` requests and `Rsp` responses: the
/// size of their union (the larger size, rounded up to the larger alignment).
pub const fn slot_size<Req, Rsp>() -> usize {
    let s = max(core::mem::size_of::<Req>(), core::mem::size_of::<Rsp>());
    let a = max(core::mem::align_of::<Req>(), core::mem::align_of::<Rsp>());
    s.div_ceil(a) * a
}

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_match_xen() {
        // blkif: 112-byte slots in one page -> 32 entries.
        assert_eq!(ring_size(4096, 112), 32);
        // netif tx: 12-byte slots -> 256.
        assert_eq!(ring_size(4096, 12), 256);
        // 8-byte slots -> 504 -> 256.
        assert_eq!(ring_size(4096, 8), 256);
        // Two pages of 64-byte slots: 8128/64 = 127 -> 64.
        assert_eq!(ring_size(8192, 64), 64);
        assert_eq!(ring_size(64, 8), 0);
        assert_eq!(ring_size(4096, 0), 0);
        assert_eq!(slot_size::<u64, [u8; 3]>(), 8);
        assert_eq!(slot_size::<[u8; 9], u32>(), 12);
    }
}
