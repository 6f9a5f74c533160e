//! The VMM-side state of an unmodified Xen PVH guest (DESIGN.md "Xen PVH
//! guests"): where the VMM's pages are ([`PvhLayout`]) and what the guest
//! has set up ([`PvhState`]: hypercall page, HVM parameters, the frames it
//! placed, the pvclock and the one-shot timer).
//!
//! The VMM's own pages for such a guest (start-info, shared info, console
//! and store rings, grant frames) sit in the last pages of RAM, which the
//! memory map calls reserved; the guest may use every other page, low
//! memory included. Frames the guest places (in the hole above RAM or over
//! one of its RAM frames, which Xen frees) alias those VMM pages
//! ([`Platform::place_page`]).

use crate::grant_table::mapper::MAX_GRANT_FRAMES;
use crate::guest_memory::{BadGuestRange, GuestRam};
use crate::platform::{Platform, PlatformError};
use crate::time::PvClock;
use crate::timer::Timer;
use pv_abi::layout::PAGE_SIZE;
use pv_abi::shared_info::EvtchnLayout;
use std::sync::Arc;

pub mod state;

/// VMM pages before the grant frames: start-info, shared info, console, store.
const FIXED_PAGES: u64 = 4;
/// All VMM pages at the top of a PVH guest's RAM.
pub const VMM_PAGES: u64 = FIXED_PAGES + MAX_GRANT_FRAMES as u64;
/// Start of the local APIC / IO-APIC region the hole ends at.
pub const HOLE_END: u64 = 0xfec0_0000;
/// The legacy VGA/BIOS range below 1 MiB the memory map reserves.
pub const LEGACY_HOLE: (u64, u64) = (0xa_0000, 0x10_0000);

/// Where a PVH guest's VMM-owned pages are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PvhLayout {
    /// Guest RAM in bytes.
    pub mem_bytes: u64,
    /// First VMM page (the memory map calls `vmm_base..mem_bytes` reserved).
    pub vmm_base: u64,
}

impl PvhLayout {
    /// The layout for `mem_bytes` of RAM.
    pub fn new(mem_bytes: u64) -> Self {
        PvhLayout { mem_bytes, vmm_base: mem_bytes - VMM_PAGES * PAGE_SIZE }
    }
    /// The `hvm_start_info` page (memory map and command line follow it).
    pub fn start_info(&self) -> u64 {
        self.vmm_base
    }
    /// The shared-info page (aliased where the guest places it).
    pub fn shared_info(&self) -> u64 {
        self.vmm_base + PAGE_SIZE
    }
    /// The console ring page.
    pub fn console(&self) -> u64 {
        self.vmm_base + 2 * PAGE_SIZE
    }
    /// The store ring page.
    pub fn store(&self) -> u64 {
        self.vmm_base + 3 * PAGE_SIZE
    }
    /// Grant-table frame `i` (VMM-owned model).
    pub fn grant_frame(&self, i: u32) -> u64 {
        self.vmm_base + (FIXED_PAGES + u64::from(i)) * PAGE_SIZE
    }
    /// Whether `gpa`'s page is one of the VMM's.
    pub fn is_vmm_page(&self, gpa: u64) -> bool {
        gpa >= self.vmm_base && gpa < self.mem_bytes
    }
    /// The memory map: `(start, length, XEN_HVM_MEMMAP_TYPE_*)`; the hole
    /// between RAM and [`HOLE_END`] is left out, for frames the guest places.
    pub fn memory_map(&self) -> [(u64, u64, u32); 5] {
        use pv_abi::hvm::{MEMMAP_RAM, MEMMAP_RESERVED};
        [
            (0, LEGACY_HOLE.0, MEMMAP_RAM),
            (LEGACY_HOLE.0, LEGACY_HOLE.1 - LEGACY_HOLE.0, MEMMAP_RESERVED),
            (LEGACY_HOLE.1, self.vmm_base - LEGACY_HOLE.1, MEMMAP_RAM),
            (self.vmm_base, self.mem_bytes - self.vmm_base, MEMMAP_RESERVED),
            (HOLE_END, (1 << 32) - HOLE_END, MEMMAP_RESERVED),
        ]
    }
}

/// Index of a placeable VMM page: 0 is the shared-info page, `1 + i` grant
/// frame `i`.
pub const PLACEABLE: usize = 1 + MAX_GRANT_FRAMES as usize;

/// The VMM-side state of a PVH guest.
pub struct PvhState {
    /// Where the VMM's pages are.
    pub layout: PvhLayout,
    platform: Arc<dyn Platform>,
    /// The hypercall page, once the guest asked for it.
    pub hypercall_page: Option<u64>,
    /// `HVM_PARAM_CALLBACK_IRQ` as the guest set it.
    pub callback_irq: u64,
    /// The per-vCPU upcall vector (`HVMOP_set_evtchn_upcall_vector`).
    pub upcall_vector: Option<u8>,
    /// The console's event channel (`HVM_PARAM_CONSOLE_EVTCHN`).
    pub console_evtchn: u32,
    /// The store's event channel (`HVM_PARAM_STORE_EVTCHN`).
    pub store_evtchn: u32,
    /// Guest frame each placeable page is mapped at, if any.
    pub placed: [Option<u64>; PLACEABLE],
    /// Grant frames of the VMM-owned table in use (0: the guest has not
    /// asked for one).
    pub grant_frames: u32,
    /// The pvclock parameters.
    pub clock: PvClock,
    /// The one-shot timer (its thread starts with the VM, before the
    /// vCPU thread's seccomp filter forbids creating threads).
    pub timer: Option<Timer>,
    /// Which guest frames hold a page and how many the guest owns.
    pub reservation: Reservation,
    /// The memory map `XENMEM_memory_map` returns (the boot map until the
    /// guest sets its own with `XENMEM_set_memory_map`).
    pub memory_map: Vec<(u64, u64, u32)>,
    /// The reason recorded by `SCHEDOP_shutdown_code`, which the next
    /// shutdown reports instead of its own (Xen's `d->shutdown_code`).
    pub shutdown_code: Option<u8>,
    /// The domain watchdogs (`SCHEDOP_watchdog`): the expiry of each slot
    /// in use (Xen's `watchdog_inuse_map` and `watchdog_timer`).
    pub watchdogs: [Option<std::time::Instant>; pv_abi::hypercall::sched_op::NR_DOMAIN_WATCHDOG_TIMERS as usize],
}

/// Xen's `tot_pages` / `max_pages` and the p2m's "is there a page at this
/// gfn" for the guest's RAM frames (`xen/common/memory.c`).
///
/// Frames below [`PvhLayout::vmm_base`] are the guest's: each holds a page
/// unless the guest gave it back (`decrease_reservation`), placed a frame
/// over it (`add_to_physmap`) or removed it (`remove_from_physmap`); the
/// legacy hole starts empty. The console and store rings are counted as
/// owned (toolstack special pages, as Xen counts them); the shared-info page
/// and grant frames are not (Xen-heap pages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Pages the domain owns (`domain_tot_pages()`).
    pub tot_pages: u64,
    /// The toolstack's maximum (`d->max_pages`).
    pub max_pages: u64,
    /// The highest frame ever mapped (`XENMEM_maximum_gpfn`,
    /// `domain_get_maximum_gpfn()`: the p2m's `max_mapped_pfn`, which never falls).
    pub max_gpfn: u64,
    /// One bit per frame below `vmm_base`: set = no page there.
    empty: Vec<u64>,
    frames: u64,
}

impl Reservation {
    /// The boot state for `layout`: every RAM frame of the memory map holds
    /// a page; the guest may not grow beyond that (the VMM cannot back more).
    pub fn new(layout: &PvhLayout) -> Self {
        let frames = layout.vmm_base / PAGE_SIZE;
        let empty = vec![0; frames.div_ceil(64) as usize];
        let max_gpfn = layout.mem_bytes / PAGE_SIZE - 1;
        let mut r = Reservation { tot_pages: 0, max_pages: 0, max_gpfn, empty, frames };
        for gfn in LEGACY_HOLE.0 / PAGE_SIZE..LEGACY_HOLE.1 / PAGE_SIZE {
            r.set_empty(gfn, true);
        }
        let legacy = (LEGACY_HOLE.1 - LEGACY_HOLE.0) / PAGE_SIZE;
        // Plus the console and store rings.
        r.tot_pages = frames - legacy + 2;
        r.max_pages = r.tot_pages;
        r
    }

    /// Whether `gfn` is a guest RAM frame (not a VMM page, not beyond RAM).
    pub fn is_guest_frame(&self, gfn: u64) -> bool {
        gfn < self.frames
    }

    /// Whether guest frame `gfn` holds a page (false outside the guest's frames).
    pub fn has_page(&self, gfn: u64) -> bool {
        self.is_guest_frame(gfn) && self.empty[(gfn / 64) as usize] & (1 << (gfn % 64)) == 0
    }

    /// Marks guest frame `gfn` empty or populated (no-op outside).
    pub fn set_empty(&mut self, gfn: u64, empty: bool) {
        if !self.is_guest_frame(gfn) {
            return;
        }
        let (w, b) = ((gfn / 64) as usize, 1u64 << (gfn % 64));
        if empty {
            self.empty[w] |= b;
        } else {
            self.empty[w] &= !b;
        }
    }
}

impl std::fmt::Debug for PvhState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PvhState").field("layout", &self.layout).field("placed", &self.placed).finish_non_exhaustive()
    }
}

impl PvhState {
    /// State for a freshly booted PVH guest.
    pub fn new(layout: PvhLayout, platform: Arc<dyn Platform>, clock: PvClock) -> Self {
        PvhState {
            layout,
            platform,
            hypercall_page: None,
            callback_irq: 0,
            upcall_vector: None,
            console_evtchn: 0,
            store_evtchn: 0,
            placed: [None; PLACEABLE],
            grant_frames: 0,
            clock,
            timer: None,
            reservation: Reservation::new(&layout),
            memory_map: layout.memory_map().to_vec(),
            shutdown_code: None,
            watchdogs: Default::default(),
        }
    }

    /// The VMM page behind placeable index `idx`.
    fn page_of(&self, idx: usize) -> u64 {
        if idx == 0 {
            self.layout.shared_info()
        } else {
            self.layout.grant_frame(idx as u32 - 1)
        }
    }

    /// The machine under the domain.
    pub fn platform(&self) -> &dyn Platform {
        &*self.platform
    }

    /// Maps (or, with `gpfn = None`, unmaps) placeable page `idx` at
    /// `gpfn` ([`Platform::place_page`]). The old frame, if any, becomes
    /// empty: it does not revert to RAM (`p2m_remove_page()`).
    pub fn set_placement(&mut self, idx: usize, gpfn: Option<u64>) -> Result<(), PlatformError> {
        if let Some(old) = self.placed[idx].take() {
            self.platform.remove_page(idx, old)?;
        }
        if let Some(g) = gpfn {
            self.platform.place_page(idx, self.page_of(idx), g)?;
            self.placed[idx] = Some(g);
        }
        Ok(())
    }

    /// Publishes the pvclock into vCPU 0's `vcpu_info` at `vcpu_info`
    /// (`None`: its shared-info slot) and the wall clock into the
    /// shared-info page (layout `l`), with the platform's TSC.
    pub fn publish_clock(
        &mut self,
        ram: &GuestRam,
        l: &EvtchnLayout,
        vcpu_info: Option<u64>,
    ) -> Result<(), BadGuestRange> {
        let tsc = self.platform.host_tsc();
        let si = self.layout.shared_info();
        self.clock.publish(ram, (si, vcpu_info.unwrap_or(si)), l, tsc)
    }

    /// The placeable index mapped at `gpfn`.
    pub fn placed_at(&self, gpfn: u64) -> Option<usize> {
        self.placed.iter().position(|p| *p == Some(gpfn))
    }
}
