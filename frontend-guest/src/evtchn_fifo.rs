//! FIFO event channels, guest side: Xen's FIFO ABI
//! (`xen/include/public/event_channel.h`) used as Linux's
//! `drivers/xen/events/events_fifo.c` uses it. [`crate::evtchn`] picks it
//! when `EVTCHNOP_init_control` succeeds and falls back to 2-level
//! otherwise.
//!
//! One control block (vCPU 0) and one event-array page (1024 ports, all a
//! guest of ours may have), both pages of the guest's own RAM, zeroed, so
//! every port starts unmasked as on the 2-level bitmaps. The upcall walks
//! the ready queues from the highest priority down, unlinking each event
//! and counting it if it is pending and unmasked.

use crate::arch;
use crate::hypercall::Errno;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use pv_abi::errno::ENOMEM;
use pv_abi::event_channel::*;
use pv_abi::layout::PAGE_SIZE;

static CONTROL_BLOCK: AtomicU64 = AtomicU64::new(0);
static ARRAY: AtomicU64 = AtomicU64::new(0);
/// Our copy of each queue's head: the next event to consume, 0 when we
/// reached the tail last time (then the control block's head is read).
static HEADS: [AtomicU32; EVTCHN_FIFO_MAX_QUEUES] = [const { AtomicU32::new(0) }; EVTCHN_FIFO_MAX_QUEUES];

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
    CONTROL_BLOCK.store(cb, SeqCst);
    ARRAY.store(array, SeqCst);
    let mut a = EvtchnInitControl { control_gfn: cb / PAGE_SIZE, offset: 0, vcpu: 0, ..Default::default() };
    if let Err(e) = crate::hypercall::event_channel_op(EVTCHNOP_INIT_CONTROL, &mut a) {
        CONTROL_BLOCK.store(0, SeqCst);
        return Err(e);
    }
    let mut x = EvtchnExpandArray { array_gfn: array / PAGE_SIZE };
    crate::hypercall::event_channel_op(EVTCHNOP_EXPAND_ARRAY, &mut x).map(|_| ())
}

/// Whether [`init`] switched this guest to FIFO.
pub fn active() -> bool {
    CONTROL_BLOCK.load(SeqCst) != 0
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

fn control(off: u64) -> &'static AtomicU32 {
    let cb = CONTROL_BLOCK.load(SeqCst);
    // SAFETY: the control block lies at the start of a page of this
    // guest's RAM allocated for its whole life; `off` is a 4-byte aligned
    // offset inside the 72-byte block.
    unsafe { arch::shared_u32(cb + off) }
}

/// The upcall's work: every ready queue, highest priority first. `deliver`
/// gets each port that was pending and unmasked (its PENDING now clear);
/// `dequeued` every port taken off a queue.
pub fn handle_events(mut deliver: impl FnMut(u32), mut dequeued: impl FnMut(u32)) {
    // Bits above the last queue are not Xen's to set: ignored, never an
    // index out of bounds.
    const QUEUES: u32 = ((1u64 << EVTCHN_FIFO_MAX_QUEUES) - 1) as u32;
    let ready_word = control(0);
    let mut ready = ready_word.swap(0, SeqCst) & QUEUES;
    while ready != 0 {
        let q = ready.trailing_zeros() as usize;
        consume_one(q, &mut ready, &mut deliver, &mut dequeued);
        ready |= ready_word.swap(0, SeqCst) & QUEUES;
    }
}

/// Linux's `consume_one_event()`: takes the head of queue `q` off.
fn consume_one(q: usize, ready: &mut u32, deliver: &mut impl FnMut(u32), dequeued: &mut impl FnMut(u32)) {
    let mut port = HEADS[q].load(SeqCst);
    if port == 0 {
        port = control(8 + 4 * q as u64).load(SeqCst);
    }
    let Some(w) = word(port) else {
        *ready &= !(1 << q);
        HEADS[q].store(0, SeqCst);
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
    HEADS[q].store(next, SeqCst);
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
