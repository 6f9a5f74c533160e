//! The guest-physical memory layout the VMM builds before entry.
//!
//! Guest RAM starts at guest-physical 0. The first megabyte is reserved for
//! VMM-built structures (boot page tables, GDT, start-info and the shared
//! pages); the guest image is linked at [`KERNEL_BASE`]. The page-table pool
//! (direct paging) sits at the top of RAM. The identity map built by the VMM
//! covers the first 4 GiB with 2 MiB pages, so RAM and the local APIC are
//! reachable at equal virtual and physical addresses from the first
//! instruction.

/// Size of a page.
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// Boot PML4 (level-4 page table) built by the VMM.
pub const BOOT_PML4: u64 = 0x1000;
/// Boot PDPT (level-3) built by the VMM.
pub const BOOT_PDPT: u64 = 0x2000;
/// First of [`BOOT_PD_COUNT`] boot page directories (level-2, 2 MiB pages).
pub const BOOT_PD: u64 = 0x3000;
/// Number of boot page directories: one per GiB of identity map.
pub const BOOT_PD_COUNT: u64 = 4;
/// The GDT: null, 64-bit code (selector 0x08), data (selector 0x10).
pub const BOOT_GDT: u64 = 0x7000;
/// The start-info page; its address is passed in `rdi` at entry.
pub const START_INFO: u64 = 0x8000;
/// The shared-info page (event-channel bitmaps, `vcpu_info`).
pub const SHARED_INFO: u64 = 0x9000;
/// The PV console ring page.
pub const CONSOLE_RING: u64 = 0xa000;
/// The store ring page.
pub const STORE_RING: u64 = 0xb000;
/// Initial stack top handed to the guest in `rsp` (stack grows down into
/// the reserved megabyte; guests normally switch to their own at once).
pub const BOOT_STACK_TOP: u64 = 0x80000;
/// End of the reserved low region; the guest image must load at or above it.
pub const KERNEL_BASE: u64 = 0x10_0000;

/// GDT selector of the 64-bit code segment.
pub const SELECTOR_CODE64: u16 = 0x08;
/// GDT selector of the data segment.
pub const SELECTOR_DATA: u16 = 0x10;

/// Guest-physical base of the local APIC (inside the identity map, outside RAM).
pub const LAPIC_BASE: u64 = 0xfee0_0000;
/// Largest RAM size the layout supports: RAM must stay below the APIC hole.
pub const MAX_MEM_BYTES: u64 = 0xc000_0000;
/// Smallest RAM size that boots: the reserved megabyte plus room for an image.
pub const MIN_MEM_BYTES: u64 = 4 << 20;
