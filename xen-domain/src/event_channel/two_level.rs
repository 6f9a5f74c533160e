//! Xen's 2-level event-channel ABI on the shared-info page
//! (`xen/common/event_2l.c`): the `evtchn_pending` and `evtchn_mask`
//! bitmaps, the per-vCPU `evtchn_pending_sel` selector and
//! `evtchn_upcall_pending`, in the x86-64 or the x86_32 page layout.
//!
//! Every bit is changed with an atomic read-modify-write on the guest's
//! page, as the guest changes them concurrently.

use crate::guest_memory::{BadGuestRange, GuestRam};
use pv_abi::shared_info::MAX_LEGACY_VCPUS;
use pv_abi::shared_info::{EvtchnLayout, SharedInfo, VcpuInfo, LAYOUT_64, LAYOUT_X86_32};
use std::mem::size_of;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// An atomic read-modify-write on one bitmap or selector word.
#[derive(Clone, Copy)]
enum WordOp {
    Load,
    Or,
    Clear,
}

/// The bitmaps of one shared-info page.
#[derive(Debug)]
pub struct TwoLevel {
    ram: GuestRam,
    shared_info: u64,
    /// The page uses Xen's x86_32 layout.
    compat_layout: AtomicBool,
    /// Each vCPU's `vcpu_info` moved by `VCPUOP_register_vcpu_info`
    /// (guest-physical address; 0: still in the shared-info page).
    /// Registered once and never moved again, so a plain load suffices.
    vcpu_info: [AtomicU64; MAX_LEGACY_VCPUS],
}

impl TwoLevel {
    /// The bitmaps of the shared-info page at `shared_info` (x86-64 layout).
    pub fn new(ram: GuestRam, shared_info: u64) -> Self {
        TwoLevel {
            ram,
            shared_info,
            compat_layout: AtomicBool::new(false),
            vcpu_info: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Clears the whole page (before the guest runs).
    pub fn reset(&self) -> Result<(), BadGuestRange> {
        self.ram.write_obj(self.shared_info, &SharedInfo::zeroed())
    }

    /// Where `vcpu`'s `vcpu_info` is: the address registered with
    /// `VCPUOP_register_vcpu_info`, else its slot in the shared-info
    /// page. `None` beyond the page's 32 slots.
    pub fn vcpu_info(&self, vcpu: u32) -> Option<u64> {
        let moved = self.vcpu_info.get(vcpu as usize)?.load(Ordering::SeqCst);
        Some(if moved != 0 { moved } else { self.shared_info + (vcpu as usize * size_of::<VcpuInfo>()) as u64 })
    }

    /// Whether `vcpu`'s `vcpu_info` was moved.
    pub fn vcpu_info_registered(&self, vcpu: u32) -> bool {
        self.vcpu_info.get(vcpu as usize).is_some_and(|a| a.load(Ordering::SeqCst) != 0)
    }

    /// Xen's `map_guest_area()` + `vcpu_info_populate()` for
    /// `VCPUOP_register_vcpu_info`: copies `vcpu`'s `vcpu_info` to `gpa`
    /// and makes that its home; then marks every selector bit and
    /// `upcall_pending` ("the domain will get a spurious event, but it can
    /// cope"). Returns whether the vCPU is to be interrupted. `Err(false)`:
    /// already moved (Xen's `-EBUSY`); the caller checked `gpa`.
    pub fn move_vcpu_info(&self, vcpu: u32, gpa: u64) -> Result<bool, Option<BadGuestRange>> {
        let (Some(slot), Some(old)) = (self.vcpu_info.get(vcpu as usize), self.vcpu_info(vcpu)) else {
            return Err(None);
        };
        if slot.load(Ordering::SeqCst) != 0 {
            return Err(None);
        }
        // Hypercalls are serialised (the domain lock), so nothing moves
        // it between the check and the store.
        let info: [u8; size_of::<VcpuInfo>()] = self.ram.read_obj(old).map_err(Some)?;
        self.ram.write_obj(gpa, &info).map_err(Some)?;
        slot.store(gpa, Ordering::SeqCst);
        let l = self.layout();
        self.word_op(l, gpa + l.pending_sel as u64, WordOp::Or, u64::MAX).map_err(Some)?;
        self.mark_events_pending(vcpu).map_err(Some)
    }

    /// The shared-info page (guest-physical).
    pub fn shared_info(&self) -> u64 {
        self.shared_info
    }

    /// Whether the page uses Xen's x86_32 layout.
    pub fn is_compat_layout(&self) -> bool {
        self.compat_layout.load(Ordering::Relaxed)
    }

    /// A restore: `vcpu`'s `vcpu_info` is at `gpa` (0: its shared-info
    /// slot); guest memory already holds it, so nothing is copied.
    pub fn restore_vcpu_info(&self, vcpu: u32, gpa: u64) {
        if let Some(slot) = self.vcpu_info.get(vcpu as usize) {
            slot.store(gpa, Ordering::SeqCst);
        }
    }

    /// Chooses the page layout: Xen's x86_32 one (`true`) or x86-64.
    pub fn set_compat_layout(&self, compat: bool) {
        self.compat_layout.store(compat, Ordering::Relaxed);
    }

    /// The layout in use.
    pub fn layout(&self) -> &'static EvtchnLayout {
        if self.compat_layout.load(Ordering::Relaxed) {
            &LAYOUT_X86_32
        } else {
            &LAYOUT_64
        }
    }

    /// `op` on the bitmap word (of `l`'s width) at page offset `off`,
    /// with `bits`; returns the word's previous value.
    fn page_op(&self, l: &EvtchnLayout, off: usize, op: WordOp, bits: u64) -> Result<u64, BadGuestRange> {
        self.word_op(l, self.shared_info + off as u64, op, bits)
    }

    /// `op` on the word (of `l`'s width) at guest address `at`.
    fn word_op(&self, l: &EvtchnLayout, at: u64, op: WordOp, bits: u64) -> Result<u64, BadGuestRange> {
        if l.word_bytes == 8 {
            self.ram.with_atomic(at, |w: &AtomicU64| match op {
                WordOp::Load => w.load(Ordering::SeqCst),
                WordOp::Or => w.fetch_or(bits, Ordering::SeqCst),
                WordOp::Clear => w.fetch_and(!bits, Ordering::SeqCst),
            })
        } else {
            let b = bits as u32;
            self.ram.with_atomic(at, |w: &AtomicU32| {
                u64::from(match op {
                    WordOp::Load => w.load(Ordering::SeqCst),
                    WordOp::Or => w.fetch_or(b, Ordering::SeqCst),
                    WordOp::Clear => w.fetch_and(!b, Ordering::SeqCst),
                })
            })
        }
    }

    /// Whether `port`'s pending bit is set.
    pub fn is_pending(&self, port: u32) -> bool {
        let l = self.layout();
        let Some((word, bit)) = l.word_bit(port) else { return false };
        self.page_op(l, l.pending_word(word), WordOp::Load, 0).is_ok_and(|w| w & (1 << bit) != 0)
    }

    /// Xen's `evtchn_2l_set_pending`: sets `port`'s pending bit; returns
    /// whether the vCPU must be interrupted (a 0->1 edge of an unmasked
    /// port that also set the selector bit and `upcall_pending`). `None`:
    /// the port is beyond the bitmaps.
    pub fn set_pending(&self, port: u32, vcpu: u32) -> Result<Option<bool>, BadGuestRange> {
        let l = self.layout();
        let Some((word, bit)) = l.word_bit(port) else { return Ok(None) };
        let mask = 1u64 << bit;
        let was_pending = self.page_op(l, l.pending_word(word), WordOp::Or, mask)?;
        if was_pending & mask != 0 {
            return Ok(Some(false));
        }
        self.raise_if_unmasked(l, word, mask, vcpu).map(Some)
    }

    /// Xen's `evtchn_2l_clear_pending`: clears `port`'s pending bit (the
    /// selector and `upcall_pending` are the guest's to clear).
    pub fn clear_pending(&self, port: u32) -> Result<(), BadGuestRange> {
        let l = self.layout();
        let Some((word, bit)) = l.word_bit(port) else { return Ok(()) };
        self.page_op(l, l.pending_word(word), WordOp::Clear, 1 << bit).map(|_| ())
    }

    /// Xen's `evtchn_2l_unmask`: clears the mask bit; an event that arrived
    /// while masked is delivered now (the return value as for
    /// [`set_pending`](Self::set_pending)).
    pub fn unmask(&self, port: u32, vcpu: u32) -> Result<Option<bool>, BadGuestRange> {
        let l = self.layout();
        let Some((word, bit)) = l.word_bit(port) else { return Ok(None) };
        let mask = 1u64 << bit;
        self.page_op(l, l.mask_word(word), WordOp::Clear, mask)?;
        let pending = self.page_op(l, l.pending_word(word), WordOp::Load, 0)?;
        if pending & mask == 0 {
            return Ok(Some(false));
        }
        self.raise_if_unmasked(l, word, mask, vcpu).map(Some)
    }

    /// The tail of set-pending and unmask: if the port is unmasked, set the
    /// selector bit in `vcpu`'s `vcpu_info` (the port's notify vCPU); on
    /// its 0->1 edge set that `upcall_pending`; on that edge, the vCPU is
    /// to be interrupted. `vcpu_info` is 64 bytes in both layouts, in the
    /// shared-info page or where the guest registered it.
    fn raise_if_unmasked(&self, l: &EvtchnLayout, word: usize, mask: u64, vcpu: u32) -> Result<bool, BadGuestRange> {
        let Some(info) = self.vcpu_info(vcpu) else { return Ok(false) };
        let masked = self.page_op(l, l.mask_word(word), WordOp::Load, 0)?;
        if masked & mask != 0 {
            return Ok(false);
        }
        let sel_bit = 1u64 << word;
        let sel_was = self.word_op(l, info + l.pending_sel as u64, WordOp::Or, sel_bit)?;
        if sel_was & sel_bit != 0 {
            return Ok(false);
        }
        self.mark_events_pending(vcpu)
    }

    /// Xen's `vcpu_mark_events_pending()`: sets `vcpu`'s
    /// `evtchn_upcall_pending`; on its 0->1 edge the vCPU is to be
    /// interrupted. Both ABIs end here (the FIFO one on a `ready` edge).
    pub fn mark_events_pending(&self, vcpu: u32) -> Result<bool, BadGuestRange> {
        let Some(info) = self.vcpu_info(vcpu) else { return Ok(false) };
        let upcall_at = info + SharedInfo::upcall_pending_offset(0) as u64;
        let upcall_was = self.ram.with_atomic(upcall_at, |b: &AtomicU8| b.swap(1, Ordering::SeqCst))?;
        Ok(upcall_was == 0)
    }
}
