//! Xen `ring.h` semantics over shared memory.
//!
//! Request/response rings with free-running producer indices, Xen's
//! notification-avoidance rule and copy-before-validate consumption, plus the
//! byte-stream rings used by the console and the store. The ring logic is
//! written once over a small memory trait so the guest (raw pointers) and
//! the VMM (`vm-memory`) share it.
#![no_std]
