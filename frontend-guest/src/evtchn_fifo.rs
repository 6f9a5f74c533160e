//! FIFO event channels, guest side: Xen's FIFO ABI
//! (`xen/include/public/event_channel.h`) used as Linux's
//! `drivers/xen/events/events_fifo.c` uses it. [`crate::evtchn`] picks it
//! when `EVTCHNOP_init_control` succeeds and falls back to 2-level
//! otherwise.
//!
//! One control block per vCPU (vCPU 0's at [`init`], the others' at
//! [`init_cpu`] before they come up: Xen's queues are per vCPU) and one
//! event-array page (1024 ports, all a guest of ours may have), all pages
//! of the guest's own RAM, zeroed, so every port starts unmasked as on the
//! 2-level bitmaps. The upcall walks the running vCPU's ready queues from
//! the highest priority down, unlinking each event and counting it if it
//! is pending and unmasked.

use crate::arch;
use crate::hypercall::Errno;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use pv_abi::errno::ENOMEM;
use pv_abi::event_channel::*;
use pv_abi::layout::PAGE_SIZE;

use crate::cpu::MAX_CPUS;

/// Per vCPU: its control block (0: none).
static CONTROL_BLOCK: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static ARRAY: AtomicU64 = AtomicU64::new(0);
/// Per vCPU, our copy of each queue's head: the next event to consume, 0
/// when we reached the tail last time (then the control block's head is
/// read). Only the vCPU itself touches its row.
static HEADS: [[AtomicU32; EVTCHN_FIFO_MAX_QUEUES]; MAX_CPUS] =
    [const { [const { AtomicU32::new(0) }; EVTCHN_FIFO_MAX_QUEUES] }; MAX_CPUS];

const PENDING: u32 = 1 << EVTCHN_FIFO_PENDING;
const MASKED: u32 = 1 << EVTCHN_FIFO_MASKED;

/// Registers the control block and the first event-array page. On an
/// error from `EVTCHNOP_init_control` the VMM left the domain on 2-level.
pub fn init() -> Result<(), Errno> {
    let (cb, array) = match (crate::pages::alloc(1), crate::pages::alloc(1)) {
        (Some(cb), Some(array)) => (cb, array),
        _ => return Err(Errno(ENOMEM)),
    };
    // Set before the hypercalls: an event carried over from 2-level is
    // linked as soon as the array page is added.
    ARRAY.store(array, SeqCst);
    register_control_block(0, cb)?;
    let mut x = EvtchnExpandArray { array_gfn: array / PAGE_SIZE };
    crate::hypercall::event_channel_op(EVTCHNOP_EXPAND_ARRAY, &mut x).map(|_| ())
}

/// `EVTCHNOP_init_control` for vCPU `cpu` with the page at `cb`.
fn register_control_block(cpu: u32, cb: u64) -> Result<(), Errno> {
    let slot = CONTROL_BLOCK.get(cpu as usize).ok_or(Errno(pv_abi::errno::ENOENT))?;
    slot.store(cb, SeqCst);
    let mut a = EvtchnInitControl { control_gfn: cb / PAGE_SIZE, offset: 0, vcpu: cpu, ..Default::default() };
    if let Err(e) = crate::hypercall::event_channel_op(EVTCHNOP_INIT_CONTROL, &mut a) {
        slot.store(0, SeqCst);
        return Err(e);
    }
    Ok(())
}

/// Gives vCPU `cpu` (not running yet) its control block: its queues.
/// Does nothing on 2-level.
pub fn init_cpu(cpu: u32) -> Result<(), Errno> {
    if !active() {
        return Ok(());
    }
    let cb = crate::pages::alloc(1).ok_or(Errno(ENOMEM))?;
    register_control_block(cpu, cb)
}

/// Whether [`init`] switched this guest to FIFO.
pub fn active() -> bool {
    CONTROL_BLOCK[0].load(SeqCst) != 0
}

/// `port`'s event word.
fn word(port: u32) -> Option<&'static AtomicU32> {
    let array = ARRAY.load(SeqCst);
    if array == 0 || port >= EVTCHN_FIFO_EVENT_WORDS_PER_PAGE {
        return None;
    }
    // SAFETY: the event-array page is a page of this guest's RAM allocated
    // for its whole life (identity mapped); `port` indexes its 1024 words.
    Some(unsafe { arch::shared_u32(array + u64::from(port) * 4) })
}

fn control(cb: u64, off: u64) -> &'static AtomicU32 {
    // SAFETY: the control block lies at the start of a page of this
    // guest's RAM allocated for its whole life; `off` is a 4-byte aligned
    // offset inside the 72-byte block.
    unsafe { arch::shared_u32(cb + off) }
}

/// The upcall's work on vCPU `cpu` (the running one): its ready queues,
/// highest priority first. `deliver` gets each port that was pending and
/// unmasked (its PENDING now clear); `dequeued` every port taken off a
/// queue. A vCPU without a control block has nothing to do.
pub fn handle_events(cpu: u32, mut deliver: impl FnMut(u32), mut dequeued: impl FnMut(u32)) {
    // Bits above the last queue are not Xen's to set: ignored, never an
    // index out of bounds.
    const QUEUES: u32 = ((1u64 << EVTCHN_FIFO_MAX_QUEUES) - 1) as u32;
    let (Some(cb), Some(heads)) = (CONTROL_BLOCK.get(cpu as usize), HEADS.get(cpu as usize)) else { return };
    let cb = cb.load(SeqCst);
    if cb == 0 {
        return;
    }
    let ready_word = control(cb, 0);
    let mut ready = ready_word.swap(0, SeqCst) & QUEUES;
    while ready != 0 {
        let q = ready.trailing_zeros() as usize;
        consume_one((cb, heads), q, &mut ready, &mut deliver, &mut dequeued);
        ready |= ready_word.swap(0, SeqCst) & QUEUES;
    }
}

/// Linux's `consume_one_event()`: takes the head of queue `q` off (of the
/// vCPU whose control block is at `cb` and whose head copies are `heads`).
fn consume_one(
    (cb, heads): (u64, &[AtomicU32; EVTCHN_FIFO_MAX_QUEUES]),
    q: usize,
    ready: &mut u32,
    deliver: &mut impl FnMut(u32),
    dequeued: &mut impl FnMut(u32),
) {
    let mut port = heads[q].load(SeqCst);
    if port == 0 {
        port = control(cb, 8 + 4 * q as u64).load(SeqCst);
    }
    let Some(w) = word(port) else {
        *ready &= !(1 << q);
        heads[q].store(0, SeqCst);
        return;
    };
    // Clear LINKED and LINK together; the old LINK is the next event.
    let mut old = w.load(SeqCst);
    loop {
        let new = old & !((1 << EVTCHN_FIFO_LINKED) | EVTCHN_FIFO_LINK_MASK);
        match w.compare_exchange(old, new, SeqCst, SeqCst) {
            Ok(_) => break,
            Err(now) => old = now,
        }
    }
    let next = old & EVTCHN_FIFO_LINK_MASK;
    if next == 0 {
        *ready &= !(1 << q);
    }
    dequeued(port);
    let now = w.load(SeqCst);
    if now & PENDING != 0 && now & MASKED == 0 {
        w.fetch_and(!PENDING, SeqCst);
        deliver(port);
    }
    heads[q].store(next, SeqCst);
}

/// Masks `port` (sets MASKED in its word).
pub fn mask(port: u32) {
    if let Some(w) = word(port) {
        w.fetch_or(MASKED, SeqCst);
    }
}

/// Whether `port`'s PENDING bit is set.
pub fn is_pending(port: u32) -> bool {
    word(port).is_some_and(|w| w.load(SeqCst) & PENDING != 0)
}

/// `EVTCHNOP_set_priority`: `port`'s events go to queue `priority` from
/// now on (0 highest, 15 lowest).
pub fn set_priority(port: u32, priority: u32) -> Result<(), Errno> {
    crate::hypercall::event_channel_op(EVTCHNOP_SET_PRIORITY, &mut EvtchnSetPriority { port, priority }).map(|_| ())
}
