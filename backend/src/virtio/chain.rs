//! A descriptor chain taken off a virtqueue, checked before the device
//! logic sees it.
//!
//! The guest wrote every descriptor and may change them at any time, so
//! each one is copied once (by `virtio-queue`'s iterator, which also bounds
//! the walk by the queue size) and checked here: the buffer lies inside the
//! guest RAM the device may touch, its length is not zero, and the chain
//! really ends (a `NEXT` flag on the last descriptor the walk yielded means
//! the walk was cut short: a loop, a chain longer than the queue, or a
//! `next` index past the table). The device logic then only ever sees
//! [`Buf`]s it may trust for address, length and direction.

use std::ops::{Deref, Range};
use virtio_queue::DescriptorChain;
use vm_memory::{GuestAddress, GuestMemory, Permissions};

/// One checked buffer of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buf {
    /// Guest-physical address.
    pub addr: u64,
    /// Length in bytes (never zero).
    pub len: u32,
    /// Whether the device may write it (`VIRTQ_DESC_F_WRITE`); a
    /// device-readable buffer is never written.
    pub writable: bool,
}

/// A checked descriptor chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Index of the head descriptor (what goes into the used ring).
    pub head: u16,
    /// The buffers, in chain order.
    pub bufs: Vec<Buf>,
}

impl Chain {
    /// The device-readable buffers (the driver puts them first).
    pub fn readable(&self) -> impl Iterator<Item = &Buf> {
        self.bufs.iter().filter(|b| !b.writable)
    }

    /// The device-writable buffers.
    pub fn writable(&self) -> impl Iterator<Item = &Buf> {
        self.bufs.iter().filter(|b| b.writable)
    }
}

/// Why a chain is refused (the request fails; the queue goes on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The head names no descriptor (index past the table, or an indirect
    /// table outside RAM).
    #[error("the chain has no descriptors")]
    Empty,
    /// A buffer outside the guest RAM the device may use.
    #[error("descriptor {index}: {addr:#x}+{len:#x} is outside guest RAM")]
    OutsideRam {
        /// Position in the chain.
        index: usize,
        /// Its address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// A zero-length buffer.
    #[error("descriptor {0} has length zero")]
    ZeroLength(usize),
    /// The walk stopped with `NEXT` still set: a loop, a chain longer than
    /// the queue, or a `next` index past the descriptor table.
    #[error("the chain does not end within {0} descriptors (a loop, or a bad next index)")]
    Unterminated(usize),
    /// A device-readable buffer after a device-writable one (virtio 1.x
    /// 2.7.4.2: readable descriptors come first).
    #[error("descriptor {0} is device-readable after a device-writable one")]
    ReadableAfterWritable(usize),
}

/// Walks `chain`, at most `max_len` descriptors (the queue size: virtio
/// 1.x 2.7.5.3.1 bounds a chain, indirect tables included, by it),
/// checking every buffer against `usable` (the guest-physical range the
/// device may touch) and guest memory.
pub fn check<M>(chain: DescriptorChain<M>, usable: &Range<u64>, max_len: usize) -> Result<Chain, ChainError>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let head = chain.head_index();
    let mem_ok = |addr: u64, len: u32, writable: bool| {
        let access = if writable { Permissions::Write } else { Permissions::Read };
        chain.memory().check_range(GuestAddress(addr), len as usize, access)
    };
    let mut bufs = Vec::new();
    let mut last_has_next = false;
    // Collect first (the iterator borrows nothing but a clone of `mem`).
    let descs: Vec<_> = chain.clone().take(max_len + 1).collect();
    if descs.len() > max_len {
        return Err(ChainError::Unterminated(max_len));
    }
    for (index, d) in descs.iter().enumerate() {
        let (addr, len) = (d.addr().0, d.len());
        if len == 0 {
            return Err(ChainError::ZeroLength(index));
        }
        let writable = d.is_write_only();
        let end = addr.checked_add(len as u64);
        if !end.is_some_and(|e| addr >= usable.start && e <= usable.end) || !mem_ok(addr, len, writable) {
            return Err(ChainError::OutsideRam { index, addr, len });
        }
        if !writable && bufs.last().is_some_and(|b: &Buf| b.writable) {
            return Err(ChainError::ReadableAfterWritable(index));
        }
        bufs.push(Buf { addr, len, writable });
        last_has_next = d.has_next();
    }
    if bufs.is_empty() {
        return Err(ChainError::Empty);
    }
    if last_has_next {
        return Err(ChainError::Unterminated(bufs.len()));
    }
    Ok(Chain { head, bufs })
}
