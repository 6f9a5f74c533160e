//! [`RingMemory`] over `vm-memory` guest memory (the VMM side).
//!
//! Build with the `vm-memory` feature. The ring region is resolved once to
//! a [`VolatileSlice`] of one guest memory region; every access then goes
//! through `vm-memory`'s volatile copies and atomic loads/stores (which also
//! keep a dirty bitmap, if the memory has one).

use core::sync::atomic::Ordering;

use vm_memory::bitmap::{BitmapSlice, WithBitmapSlice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, VolatileSlice};

use crate::memory::{Pod, RingMemory, RING_ALIGN};
use crate::RingError;

/// A ring region in guest memory.
#[derive(Clone, Copy, Debug)]
pub struct GuestRingMemory<'a, B: BitmapSlice = ()> {
    slice: VolatileSlice<'a, B>,
}

impl<'a, B: BitmapSlice> GuestRingMemory<'a, B> {
    /// The `len` bytes at guest-physical `gpa` of `mem` (for example a
    /// `GuestMemoryMmap`). Fails with [`RingError::Misaligned`] unless
    /// `gpa` is [`RING_ALIGN`]-aligned, and with [`RingError::OutOfRange`]
    /// unless the range lies inside one region of guest memory.
    pub fn new<M, RB>(mem: &'a M, gpa: GuestAddress, len: usize) -> Result<Self, RingError>
    where
        M: GuestMemoryBackend,
        M::R: GuestMemoryRegion<B = RB>,
        RB: WithBitmapSlice<'a, S = B>,
    {
        if gpa.0 % RING_ALIGN as u64 != 0 {
            return Err(RingError::Misaligned);
        }
        let slice = mem.get_slice(gpa, len).map_err(|_| RingError::OutOfRange)?;
        if slice.len() != len || (slice.ptr_guard().as_ptr() as usize) % RING_ALIGN != 0 {
            return Err(RingError::OutOfRange);
        }
        Ok(GuestRingMemory { slice })
    }
}

fn bug<E: core::fmt::Debug>(e: E) -> ! {
    panic!("ring-buffers bug: guest memory access out of range: {e:?}")
}

impl<B: BitmapSlice> RingMemory for GuestRingMemory<'_, B> {
    fn len(&self) -> usize {
        self.slice.len()
    }

    fn load_u32(&self, offset: usize, order: Ordering) -> u32 {
        self.slice.load::<u32>(offset, order).unwrap_or_else(|e| bug(e))
    }

    fn store_u32(&self, offset: usize, val: u32, order: Ordering) {
        self.slice.store(val, offset, order).unwrap_or_else(|e| bug(e))
    }

    fn read<T: Pod>(&self, offset: usize) -> T {
        let mut v = core::mem::MaybeUninit::<T>::zeroed();
        // SAFETY: `v` is zero-initialised, so all `size_of::<T>()` bytes are
        // initialised `u8`s, and the slice lives only within this call.
        let bytes = unsafe { core::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), core::mem::size_of::<T>()) };
        self.slice.read_slice(bytes, offset).unwrap_or_else(|e| bug(e));
        // SAFETY: every byte is initialised (zeroed, then overwritten), and
        // `T: Pod` accepts any bit pattern.
        unsafe { v.assume_init() }
    }

    fn write<T: Pod>(&self, offset: usize, val: &T) {
        // SAFETY: `val` is a valid `T`, so its `size_of::<T>()` bytes are
        // readable for the life of the borrow. `Pod` types used as ring
        // entries are `#[repr(C)]` with explicit padding fields, so the bytes
        // are initialised.
        let bytes = unsafe { core::slice::from_raw_parts((val as *const T).cast::<u8>(), core::mem::size_of::<T>()) };
        self.slice.write_slice(bytes, offset).unwrap_or_else(|e| bug(e));
    }

    fn read_bytes(&self, offset: usize, dst: &mut [u8]) {
        self.slice.read_slice(dst, offset).unwrap_or_else(|e| bug(e));
    }

    fn write_bytes(&self, offset: usize, src: &[u8]) {
        self.slice.write_slice(src, offset).unwrap_or_else(|e| bug(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackRing, ByteConsumer, ByteProducer, ByteRingLayout, FrontRing};
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn rings_over_guest_memory() {
        let gm = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let ring = GuestAddress(0x2000);
        let front_mem = GuestRingMemory::new(&gm, ring, 4096).unwrap();
        let back_mem = GuestRingMemory::new(&gm, ring, 4096).unwrap();
        let mut front = FrontRing::<_, [u64; 8], u64>::init(front_mem).unwrap();
        let mut back = BackRing::<_, [u64; 8], u64>::attach(back_mem).unwrap();
        for round in 0..100u64 {
            for i in 0..5 {
                front.push_request(&[round * 10 + i; 8]).unwrap();
            }
            front.push_requests_and_check_notify();
            while let Some(r) = back.pop_request().unwrap() {
                back.push_response(&r[0]).unwrap();
            }
            back.push_responses_and_check_notify();
            for i in 0..5 {
                assert_eq!(front.pop_response().unwrap(), Some(round * 10 + i));
            }
        }
        // The indices are really in guest memory.
        assert_eq!(gm.read_obj::<u32>(ring).unwrap(), 500);

        let page = GuestRingMemory::new(&gm, GuestAddress(0x4000), 4096).unwrap();
        let mut tx = ByteProducer::new(page, ByteRingLayout::CONSOLE_OUT).unwrap();
        let mut rx = ByteConsumer::new(page, ByteRingLayout::CONSOLE_OUT).unwrap();
        assert_eq!(tx.write(b"hello").unwrap(), 5);
        let mut buf = [0u8; 8];
        assert_eq!(rx.read(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
    }

    #[test]
    fn bad_ranges_are_rejected() {
        let gm =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x2000), (GuestAddress(0x2000), 0x2000)]).unwrap();
        assert_eq!(GuestRingMemory::new(&gm, GuestAddress(0x1000), 0x2000).err(), Some(RingError::OutOfRange));
        assert_eq!(GuestRingMemory::new(&gm, GuestAddress(0x9000), 0x1000).err(), Some(RingError::OutOfRange));
        assert_eq!(GuestRingMemory::new(&gm, GuestAddress(0x1004), 0x100).err(), Some(RingError::Misaligned));
    }
}
