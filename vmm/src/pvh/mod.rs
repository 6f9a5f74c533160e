//! Unmodified Xen PVH guests (DESIGN.md "Xen PVH guests").
//!
//! Such a guest boots in 32-bit protected mode ([`boot`]), finds the
//! hypervisor by CPUID ([`cpuid`]), asks for a hypercall page by writing an
//! MSR ([`hypercall_page`]) whose stubs enter the VMM through the project's
//! port-I/O transport, places the shared-info page and grant frames itself
//! ([`memory_op`]), reads its store and console rings from HVM parameters
//! ([`hvm_op`]) and reads time from the shared-info page ([`time`]).
//!
//! The VMM's own pages for such a guest (start-info, shared info, console
//! and store rings, grant frames) sit in the last pages of RAM, which the
//! memory map calls reserved; the guest may use every other page, low
//! memory included. Frames the guest places in the hole above RAM are
//! extra KVM memory slots aliasing those VMM pages.

pub mod boot;
pub mod callback;
pub mod cpuid;
pub mod elf;
pub mod gnttab;
pub mod hvm_op;
pub mod hypercall_page;
pub mod memory_op;
pub mod time;
pub mod timer;
pub mod xenstore;

use backend::grant::MAX_GRANT_FRAMES;
use kvm_ioctls::VmFd;
use pv_abi::layout::PAGE_SIZE;
use std::sync::Arc;

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
/// KVM memory slot of the first placed page (slots 0 and 1 are RAM).
const FIRST_ALIAS_SLOT: u32 = 2;

/// The VMM-side state of a PVH guest.
pub struct PvhState {
    /// Where the VMM's pages are.
    pub layout: PvhLayout,
    vm: Arc<VmFd>,
    ram: crate::memory::GuestRam,
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
    pub clock: time::PvClock,
    /// The callback-vector line (`HVM_PARAM_CALLBACK_IRQ`, vector type).
    pub callback: Arc<callback::CallbackLine>,
    /// The one-shot timer (its thread starts with the VM, before the
    /// vCPU thread's seccomp filter forbids creating threads).
    pub timer: Option<timer::Timer>,
}

impl std::fmt::Debug for PvhState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PvhState").field("layout", &self.layout).field("placed", &self.placed).finish_non_exhaustive()
    }
}

impl PvhState {
    /// State for a freshly booted PVH guest.
    pub fn new(layout: PvhLayout, vm: Arc<VmFd>, ram: crate::memory::GuestRam, clock: time::PvClock) -> Self {
        PvhState {
            layout,
            vm,
            ram,
            hypercall_page: None,
            callback_irq: 0,
            upcall_vector: None,
            console_evtchn: 0,
            store_evtchn: 0,
            placed: [None; PLACEABLE],
            grant_frames: 0,
            clock,
            callback: Arc::default(),
            timer: None,
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

    /// Maps (or, with `gpfn = None`, unmaps) placeable page `idx` as its
    /// own KVM slot at `gpfn`.
    pub fn set_placement(&mut self, idx: usize, gpfn: Option<u64>) -> Result<(), kvm_ioctls::Error> {
        let host = self.ram.host_address(self.page_of(idx)).ok_or(kvm_ioctls::Error::new(libc::EFAULT))?;
        let slot = FIRST_ALIAS_SLOT + idx as u32;
        let region = |gpa: u64, size: u64| kvm_bindings::kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: host as u64,
        };
        if let Some(old) = self.placed[idx].take() {
            // SAFETY: deleting a slot (size 0) this state created; no
            // host memory is handed to KVM.
            unsafe { self.vm.set_user_memory_region(region(old * PAGE_SIZE, 0)) }?;
        }
        if let Some(g) = gpfn {
            // SAFETY: `host` is one page of guest RAM's mmap, which lives as
            // long as the VM (both owned by `Vm`); the caller checked that
            // `g` lies in the hole, where no other slot is.
            unsafe { self.vm.set_user_memory_region(region(g * PAGE_SIZE, PAGE_SIZE)) }?;
            self.placed[idx] = Some(g);
        }
        Ok(())
    }

    /// The placeable index mapped at `gpfn`.
    pub fn placed_at(&self, gpfn: u64) -> Option<usize> {
        self.placed.iter().position(|p| *p == Some(gpfn))
    }
}

/// `EFER.LMA`.
const EFER_LMA: u64 = 1 << 10;

/// Whether the vCPU runs 64-bit code (long mode and a 64-bit CS).
pub fn long_mode(sregs: &kvm_bindings::kvm_sregs) -> bool {
    sregs.efer & EFER_LMA != 0 && sregs.cs.l != 0
}

/// Hypercall number and arguments: Xen's 64-bit convention (`rdi, rsi,
/// rdx, r10, r8`) or, from 32-bit code, `ebx, ecx, edx, esi, edi`.
pub fn hypercall_args(r: &kvm_bindings::kvm_regs, compat: bool) -> (u64, [u64; 5]) {
    if compat {
        let w = |v: u64| v & 0xffff_ffff;
        (w(r.rax), [w(r.rbx), w(r.rcx), w(r.rdx), w(r.rsi), w(r.rdi)])
    } else {
        (r.rax, [r.rdi, r.rsi, r.rdx, r.r10, r.r8])
    }
}

/// A filtered `wrmsr` exit: 0 when handled, 1 to make KVM inject `#GP`.
pub fn wrmsr_exit(dom: &mut crate::domain::Domain, msr: u32, value: u64) -> u8 {
    let Some(pvh) = dom.pvh.as_mut() else { return 1 };
    match hypercall_page::wrmsr(pvh, &dom.ram, msr, value) {
        Ok(()) => 0,
        Err(e) => {
            tracing::debug!(msr, value, error = %e, "wrmsr refused");
            1
        }
    }
}
