//! The one memory trait the ring logic is written against, the plain-data
//! marker for ring entries, and the raw-pointer implementation the guest
//! uses.
//!
//! This module and [`vm`](crate::vm) hold all of the crate's `unsafe`.

use core::sync::atomic::{fence, AtomicU32, Ordering};

pub use pv_abi::Pod;

/// Shared memory as the ring logic sees it: a region of `len()` bytes with
/// atomic 32-bit index access, whole-entry copies and a full fence.
///
/// Offsets are bytes from the start of the region. The ring views only pass
/// offsets that are in bounds and naturally aligned for the access
/// (u32 indices at multiples of 4, entries at multiples of their alignment,
/// given a region base aligned to [`RING_ALIGN`]); implementations may
/// panic on a violation, which would be a bug in this crate, never
/// something a peer can cause.
///
/// Index accesses must be real atomic operations on the shared location so
/// that the `Acquire`/`Release`/`SeqCst` orderings hold against a peer on
/// another CPU.
pub trait RingMemory {
    /// Size of the region in bytes.
    fn len(&self) -> usize;
    /// Whether the region is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Atomically loads the u32 at `offset`.
    fn load_u32(&self, offset: usize, order: Ordering) -> u32;
    /// Atomically stores `val` at `offset`.
    fn store_u32(&self, offset: usize, val: u32, order: Ordering);
    /// Copies the entry at `offset` out of shared memory.
    fn read<T: Pod>(&self, offset: usize) -> T;
    /// Copies `val` into shared memory at `offset`.
    fn write<T: Pod>(&self, offset: usize, val: &T);
    /// Copies `dst.len()` bytes at `offset` out of shared memory.
    fn read_bytes(&self, offset: usize, dst: &mut [u8]);
    /// Copies `src` into shared memory at `offset`.
    fn write_bytes(&self, offset: usize, src: &[u8]);
    /// A full (sequentially consistent) memory barrier: Xen's `mb()`.
    fn fence(&self) {
        fence(Ordering::SeqCst);
    }
}

/// A shared reference to ring memory is ring memory (so one region can
/// back several views, e.g. both halves of a byte-ring pair).
impl<M: RingMemory + ?Sized> RingMemory for &M {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn load_u32(&self, offset: usize, order: Ordering) -> u32 {
        (**self).load_u32(offset, order)
    }
    fn store_u32(&self, offset: usize, val: u32, order: Ordering) {
        (**self).store_u32(offset, val, order)
    }
    fn read<T: Pod>(&self, offset: usize) -> T {
        (**self).read(offset)
    }
    fn write<T: Pod>(&self, offset: usize, val: &T) {
        (**self).write(offset, val)
    }
    fn read_bytes(&self, offset: usize, dst: &mut [u8]) {
        (**self).read_bytes(offset, dst)
    }
    fn write_bytes(&self, offset: usize, src: &[u8]) {
        (**self).write_bytes(offset, src)
    }
    fn fence(&self) {
        (**self).fence()
    }
}

/// Alignment the base of a ring region must have.
pub const RING_ALIGN: usize = 64;

/// Shared memory reached through a raw pointer (the guest side, or any
/// process-local buffer in tests and benchmarks).
#[derive(Clone, Copy, Debug)]
pub struct RawMemory {
    base: *mut u8,
    len: usize,
}

// SAFETY: `RawMemory` is a pointer to memory that is shared by design; all
// index accesses are atomic and entry copies are volatile, and the
// constructor's contract requires the region to stay valid for as long as
// any copy exists, on any thread.
unsafe impl Send for RawMemory {}
// SAFETY: as for `Send`: every access goes through `&self` methods that are
// atomic or volatile copies of plain data.
unsafe impl Sync for RawMemory {}

impl RawMemory {
    /// Wraps `len` bytes at `base`.
    ///
    /// Returns [`RingError::Misaligned`](crate::RingError::Misaligned) unless
    /// `base` is aligned to [`RING_ALIGN`].
    ///
    /// # Safety
    ///
    /// For as long as this value or any copy of it is used, `base..base+len`
    /// must be valid for reads and writes, and must not be accessed through
    /// Rust references (`&`/`&mut`) by anyone: only through `RawMemory`
    /// copies, other atomic/volatile accesses, or a peer outside the Rust
    /// abstract machine (another VM, the VMM).
    pub unsafe fn new(base: *mut u8, len: usize) -> Result<Self, crate::RingError> {
        if (base as usize) % RING_ALIGN != 0 {
            return Err(crate::RingError::Misaligned);
        }
        if (base as usize).checked_add(len).is_none() {
            return Err(crate::RingError::BadLayout);
        }
        Ok(RawMemory { base, len })
    }

    /// The base pointer.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base
    }

    #[inline(always)]
    fn check(&self, offset: usize, size: usize, align: usize) -> *mut u8 {
        assert!(
            offset <= self.len && size <= self.len - offset && offset % align == 0,
            "ring-buffers bug: access {offset}+{size} outside a {}-byte region",
            self.len
        );
        self.base.wrapping_add(offset)
    }
}

/// Copies a `T` (8-aligned, a whole number of words) out of shared memory
/// at `p` with one volatile 64-bit load per word, each word read once.
#[inline(always)]
fn read_words<T: Pod>(p: *mut u8) -> T {
    let words = core::mem::size_of::<T>() / 8;
    let mut out = core::mem::MaybeUninit::<T>::uninit();
    let (src, dst) = (p.cast::<u64>(), out.as_mut_ptr().cast::<u64>());
    for i in 0..words {
        // Word `i` (< size/8) of the range the caller checked (in the
        // region, 8-aligned) and of the 8-aligned local `out`.
        let (from, to) = (src.wrapping_add(i), dst.wrapping_add(i));
        // SAFETY: `from` is in bounds and aligned (above) and valid for
        // reads by `RawMemory::new`'s contract. Volatile: the peer may
        // write concurrently and the copy must happen here, once
        // (copy-before-validate).
        let w = unsafe { core::ptr::read_volatile(from) };
        // SAFETY: `to` is in bounds of `out` and aligned (above).
        unsafe { to.write(w) };
    }
    // SAFETY: every byte of `out` was written above, and `T: Pod` makes any
    // initialised bytes a valid `T`.
    unsafe { out.assume_init() }
}

impl RingMemory for RawMemory {
    #[inline(always)]
    fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    fn load_u32(&self, offset: usize, order: Ordering) -> u32 {
        let p = self.check(offset, 4, 4);
        // SAFETY: `check` proved `p` is in the region and 4-aligned (base is
        // RING_ALIGN-aligned); the constructor's contract makes it valid and
        // accessed only atomically/volatilely, as `AtomicU32::from_ptr` needs.
        unsafe { AtomicU32::from_ptr(p.cast::<u32>()) }.load(order)
    }

    #[inline(always)]
    fn store_u32(&self, offset: usize, val: u32, order: Ordering) {
        let p = self.check(offset, 4, 4);
        // SAFETY: as in `load_u32`.
        unsafe { AtomicU32::from_ptr(p.cast::<u32>()) }.store(val, order);
    }

    #[inline(always)]
    fn read<T: Pod>(&self, offset: usize) -> T {
        let (size, align) = (core::mem::size_of::<T>(), core::mem::align_of::<T>());
        let p = self.check(offset, size, align);
        if align >= 8 && size % 8 == 0 {
            // A whole-word copy: `read_volatile::<T>` of a struct is one
            // volatile load per field (a 112-byte blkif request is ~200
            // instructions), this is one per 8 bytes.
            return read_words(p);
        }
        // SAFETY: `p` is in bounds and aligned for `T` (checked above), valid
        // for reads by the constructor's contract; `T: Pod` makes any bytes
        // a valid `T`. Volatile: the peer may write concurrently, and the
        // copy must really happen here, once (copy-before-validate).
        unsafe { core::ptr::read_volatile(p.cast::<T>()) }
    }

    #[inline(always)]
    fn write<T: Pod>(&self, offset: usize, val: &T) {
        let p = self.check(offset, core::mem::size_of::<T>(), core::mem::align_of::<T>());
        // SAFETY: `p` is in bounds, aligned for `T` and valid for writes.
        unsafe { core::ptr::write_volatile(p.cast::<T>(), *val) };
    }

    fn read_bytes(&self, offset: usize, dst: &mut [u8]) {
        let p = self.check(offset, dst.len(), 1);
        // Volatile (the peer may be writing), but a word at a time where
        // aligned: byte rings move whole lines, and on an emulating host
        // every guest instruction counts.
        let mut i = 0;
        while i < dst.len() {
            let at = p.wrapping_add(i);
            if (at as usize) % 8 == 0 && dst.len() - i >= 8 {
                // SAFETY: `at..at+8` lies within the range checked above
                // and is 8-aligned.
                let w = unsafe { core::ptr::read_volatile(at.cast::<u64>()) };
                dst[i..i + 8].copy_from_slice(&w.to_ne_bytes());
                i += 8;
            } else {
                // SAFETY: `at` lies within the range checked above.
                dst[i] = unsafe { core::ptr::read_volatile(at) };
                i += 1;
            }
        }
    }

    fn write_bytes(&self, offset: usize, src: &[u8]) {
        let p = self.check(offset, src.len(), 1);
        let mut i = 0;
        while i < src.len() {
            let at = p.wrapping_add(i);
            if (at as usize) % 8 == 0 && src.len() - i >= 8 {
                let w = u64::from_ne_bytes(src[i..i + 8].try_into().expect("8 bytes"));
                // SAFETY: `at..at+8` lies within the range checked above
                // and is 8-aligned.
                unsafe { core::ptr::write_volatile(at.cast::<u64>(), w) };
                i += 8;
            } else {
                // SAFETY: `at` lies within the range checked above.
                unsafe { core::ptr::write_volatile(at, src[i]) };
                i += 1;
            }
        }
    }
}
