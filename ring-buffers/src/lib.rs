//! Xen `ring.h` semantics over shared memory.
//!
//! Request/response rings with free-running producer indices, Xen's
//! notification-avoidance rule and copy-before-validate consumption, plus the
//! byte-stream rings used by the console and the store. The ring logic is
//! written once over a small memory trait so the guest (raw pointers) and
//! the VMM (`vm-memory`) share it.
//!
//! * [`RingMemory`]: the memory trait; [`RawMemory`] implements it over a
//!   raw pointer, [`vm::GuestRingMemory`] (feature `vm-memory`) over guest
//!   memory.
//! * [`FrontRing`] / [`BackRing`]: the two views of a request/response ring.
//! * [`ByteProducer`] / [`ByteConsumer`]: the byte-stream rings.
#![cfg_attr(not(feature = "std"), no_std)]

mod byte_ring;
mod error;
mod memory;
mod ring;
#[cfg(feature = "vm-memory")]
pub mod vm;

pub use byte_ring::{ByteConsumer, ByteProducer, ByteRingLayout};
pub use error::RingError;
pub use memory::{Pod, RawMemory, RingMemory, RING_ALIGN};
pub use ring::{geometry, need_notify, BackRing, FrontRing};
