//! Byte-stream rings: the console (`xencons_interface`) and store
//! (`xenstore_domain_interface`) protocols.
//!
//! A byte ring is a power-of-two data array with a free-running u32 consumer
//! and producer index somewhere in the same region. The producer copies
//! bytes into free space and publishes `prod` with a release store; the
//! consumer copies bytes out and publishes `cons` with a release store. The
//! peer's index is validated on every read: a producer more than the ring
//! size ahead of the consumer (or a consumer ahead of the producer) is an
//! error. Each side keeps its own index privately, so a peer rewriting it
//! in shared memory cannot make us reuse or skip data. These protocols have
//! no event indices: notify the peer after every non-empty transfer.

use core::mem::offset_of;
use core::sync::atomic::Ordering::{Acquire, Release};

use pv_abi::console::XenconsInterface;
use pv_abi::xs_wire::XenstoreDomainInterface;

use crate::memory::RingMemory;
use crate::RingError;

/// Where one byte ring lives inside a region (all offsets in bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRingLayout {
    /// Offset of the data array.
    pub data: usize,
    /// Size of the data array (a power of two).
    pub size: u32,
    /// Offset of the consumer index (u32, 4-aligned).
    pub cons: usize,
    /// Offset of the producer index (u32, 4-aligned).
    pub prod: usize,
}

impl ByteRingLayout {
    /// Console input (`in`): the VMM produces, the guest consumes.
    pub const CONSOLE_IN: Self = ByteRingLayout {
        data: offset_of!(XenconsInterface, in_),
        size: pv_abi::console::XENCONS_IN_SIZE as u32,
        cons: offset_of!(XenconsInterface, in_cons),
        prod: offset_of!(XenconsInterface, in_prod),
    };
    /// Console output (`out`): the guest produces, the VMM consumes.
    pub const CONSOLE_OUT: Self = ByteRingLayout {
        data: offset_of!(XenconsInterface, out),
        size: pv_abi::console::XENCONS_OUT_SIZE as u32,
        cons: offset_of!(XenconsInterface, out_cons),
        prod: offset_of!(XenconsInterface, out_prod),
    };
    /// Store requests (`req`): the guest produces, the store consumes.
    pub const STORE_REQ: Self = ByteRingLayout {
        data: offset_of!(XenstoreDomainInterface, req),
        size: pv_abi::xs_wire::XENSTORE_RING_SIZE as u32,
        cons: offset_of!(XenstoreDomainInterface, req_cons),
        prod: offset_of!(XenstoreDomainInterface, req_prod),
    };
    /// Store replies and watch events (`rsp`): the store produces, the guest
    /// consumes.
    pub const STORE_RSP: Self = ByteRingLayout {
        data: offset_of!(XenstoreDomainInterface, rsp),
        size: pv_abi::xs_wire::XENSTORE_RING_SIZE as u32,
        cons: offset_of!(XenstoreDomainInterface, rsp_cons),
        prod: offset_of!(XenstoreDomainInterface, rsp_prod),
    };

    fn check(&self, len: usize) -> Result<(), RingError> {
        let fits = |off: usize, n: usize| off.checked_add(n).is_some_and(|end| end <= len);
        if !self.size.is_power_of_two()
            || !fits(self.data, self.size as usize)
            || !fits(self.cons, 4)
            || !fits(self.prod, 4)
            || self.cons % 4 != 0
            || self.prod % 4 != 0
        {
            return Err(RingError::BadLayout);
        }
        Ok(())
    }

    /// Copies out of the ring starting at free-running index `idx`,
    /// splitting at the wrap.
    fn copy_out<M: RingMemory>(&self, mem: &M, idx: u32, dst: &mut [u8]) {
        let start = (idx & (self.size - 1)) as usize;
        let first = dst.len().min(self.size as usize - start);
        let (a, b) = dst.split_at_mut(first);
        mem.read_bytes(self.data + start, a);
        mem.read_bytes(self.data, b);
    }

    fn copy_in<M: RingMemory>(&self, mem: &M, idx: u32, src: &[u8]) {
        let start = (idx & (self.size - 1)) as usize;
        let first = src.len().min(self.size as usize - start);
        let (a, b) = src.split_at(first);
        mem.write_bytes(self.data + start, a);
        mem.write_bytes(self.data, b);
    }
}

/// The producing side of a byte ring.
#[derive(Debug)]
pub struct ByteProducer<M> {
    mem: M,
    layout: ByteRingLayout,
    prod: u32,
}

impl<M: RingMemory> ByteProducer<M> {
    /// A producer continuing from the producer index currently in memory.
    pub fn new(mem: M, layout: ByteRingLayout) -> Result<Self, RingError> {
        layout.check(mem.len())?;
        let prod = mem.load_u32(layout.prod, Acquire);
        Ok(ByteProducer { mem, layout, prod })
    }

    /// Our producer index.
    pub fn prod(&self) -> u32 {
        self.prod
    }

    /// Free space in bytes, after validating the consumer index.
    pub fn space(&self) -> Result<u32, RingError> {
        let cons = self.mem.load_u32(self.layout.cons, Acquire);
        let used = self.prod.wrapping_sub(cons);
        if used > self.layout.size {
            return Err(RingError::CorruptConsumer { prod: self.prod, cons });
        }
        Ok(self.layout.size - used)
    }

    /// Copies as much of `data` as fits and publishes it; returns the number
    /// of bytes written (0 if the ring is full).
    pub fn write(&mut self, data: &[u8]) -> Result<usize, RingError> {
        let n = (self.space()? as usize).min(data.len());
        if n == 0 {
            return Ok(0);
        }
        self.layout.copy_in(&self.mem, self.prod, &data[..n]);
        self.prod = self.prod.wrapping_add(n as u32);
        self.mem.store_u32(self.layout.prod, self.prod, Release);
        Ok(n)
    }
}

/// The consuming side of a byte ring.
#[derive(Debug)]
pub struct ByteConsumer<M> {
    mem: M,
    layout: ByteRingLayout,
    cons: u32,
}

impl<M: RingMemory> ByteConsumer<M> {
    /// A consumer continuing from the consumer index currently in memory.
    pub fn new(mem: M, layout: ByteRingLayout) -> Result<Self, RingError> {
        layout.check(mem.len())?;
        let cons = mem.load_u32(layout.cons, Acquire);
        Ok(ByteConsumer { mem, layout, cons })
    }

    /// Our consumer index.
    pub fn cons(&self) -> u32 {
        self.cons
    }

    /// Bytes available, after validating the producer index.
    pub fn available(&self) -> Result<u32, RingError> {
        let prod = self.mem.load_u32(self.layout.prod, Acquire);
        let avail = prod.wrapping_sub(self.cons);
        if avail > self.layout.size {
            return Err(RingError::PeerOverrun { prod, cons: self.cons });
        }
        Ok(avail)
    }

    /// Copies up to `buf.len()` available bytes out without consuming them.
    pub fn peek(&self, buf: &mut [u8]) -> Result<usize, RingError> {
        let n = (self.available()? as usize).min(buf.len());
        self.layout.copy_out(&self.mem, self.cons, &mut buf[..n]);
        Ok(n)
    }

    /// Drops up to `n` available bytes; returns how many were dropped.
    pub fn consume(&mut self, n: usize) -> Result<usize, RingError> {
        let n = (self.available()? as usize).min(n);
        self.cons = self.cons.wrapping_add(n as u32);
        self.mem.store_u32(self.layout.cons, self.cons, Release);
        Ok(n)
    }

    /// Copies up to `buf.len()` bytes out and consumes them; returns the
    /// number of bytes read (0 if the ring is empty).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, RingError> {
        let n = self.peek(buf)?;
        if n > 0 {
            self.cons = self.cons.wrapping_add(n as u32);
            self.mem.store_u32(self.layout.cons, self.cons, Release);
        }
        Ok(n)
    }
}
