//! The start-info page: everything the guest learns at boot.
//!
//! The VMM fills it at [`START_INFO`](crate::layout::START_INFO) and passes
//! its guest-physical address in `rdi`. Nothing else is discovered by
//! probing hardware. The role is that of Xen's `start_info_t`; the layout is
//! our own (Xen's carries PV-MMU frame lists we do not need).

/// `magic` value: identifies the page and the ABI family.
pub const START_INFO_MAGIC: [u8; 16] = *b"pv-kvm-start\0\0\0\0";

use crate::virtio::{VirtioMmioDevice, MAX_VIRTIO_DEVICES};

/// Maximum entries in [`StartInfo::mem_map`].
pub const MAX_MEM_REGIONS: usize = 8;
/// Size of the command-line buffer, including the terminating NUL.
pub const MAX_CMDLINE: usize = 1024;

/// Kind of a [`MemRegion`].
pub mod mem_kind {
    /// Ordinary RAM (the guest image and free RAM live here).
    pub const RAM: u32 = 1;
    /// Reserved for VMM-built structures; do not allocate.
    pub const RESERVED: u32 = 2;
    /// The page-table pool: page-table pages must come from here.
    pub const PT_POOL: u32 = 3;
}

/// Paging modes, chosen per VM (`StartInfo::paging_mode`).
pub mod paging_mode {
    /// The pool is writable; the guest writes its own PTEs.
    pub const NATIVE: u32 = 0;
    /// The pool is read-only; every PTE write traps and is emulated.
    pub const TRAPPED: u32 = 1;
    /// The pool is read-only; the guest batches updates into `mmu_update`.
    pub const PV: u32 = 2;
}

/// `StartInfo::flags` bits.
pub mod flags {
    /// The VMM will tell the guest to print extra diagnostics.
    pub const VERBOSE: u32 = 1 << 0;
}

/// One region of guest-physical memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemRegion {
    /// Guest-physical start address (page-aligned).
    pub start: u64,
    /// Length in bytes (a multiple of the page size).
    pub len: u64,
    /// One of [`mem_kind`].
    pub kind: u32,
    /// Zero.
    pub _pad: u32,
}
crate::assert_layout!(MemRegion, size = 24, start = 0, len = 8, kind = 16);

/// A shared ring page and the event channel that signals it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingInfo {
    /// Guest-physical address of the ring page (0 if absent).
    pub gpa: u64,
    /// Event-channel port bound to the ring (0 if none yet).
    pub evtchn: u32,
    /// Zero.
    pub _pad: u32,
}
crate::assert_layout!(RingInfo, size = 16, gpa = 0, evtchn = 8);

/// The start-info page.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StartInfo {
    /// [`START_INFO_MAGIC`].
    pub magic: [u8; 16],
    /// [`ABI_VERSION`](crate::hypercall::ABI_VERSION) the VMM speaks.
    pub abi_version: u32,
    /// [`flags`] bits.
    pub flags: u32,
    /// Total guest RAM in bytes (guest-physical `0..mem_bytes`).
    pub mem_bytes: u64,
    /// First free RAM byte after the loaded image (page-aligned).
    pub free_start: u64,
    /// End of free RAM (exclusive, page-aligned): the pool starts here.
    pub free_end: u64,
    /// Guest-physical address of the shared-info page.
    pub shared_info: u64,
    /// The PV console ring.
    pub console: RingInfo,
    /// The store ring.
    pub store: RingInfo,
    /// Start of the page-table pool (page-aligned).
    pub pt_pool_start: u64,
    /// End of the page-table pool (exclusive).
    pub pt_pool_end: u64,
    /// Guest-physical address of the PML4 the VMM booted the guest with.
    pub boot_pml4: u64,
    /// One of [`paging_mode`].
    pub paging_mode: u32,
    /// Number of valid entries in `mem_map`.
    pub nr_mem_regions: u32,
    /// The memory map, sorted by address.
    pub mem_map: [MemRegion; MAX_MEM_REGIONS],
    /// Length of the command line in bytes, excluding the NUL.
    pub cmdline_len: u32,
    /// Zero.
    pub _pad: u32,
    /// The command line, NUL-terminated.
    pub cmdline: [u8; MAX_CMDLINE],
    /// Number of valid entries in `virtio`.
    pub nr_virtio: u32,
    /// Zero.
    pub _pad2: u32,
    /// The virtio-mmio devices, in the order the VMM was given them.
    pub virtio: [VirtioMmioDevice; MAX_VIRTIO_DEVICES],
}
crate::assert_layout!(
    StartInfo,
    size = 1608,
    magic = 0,
    abi_version = 16,
    flags = 20,
    mem_bytes = 24,
    free_start = 32,
    free_end = 40,
    shared_info = 48,
    console = 56,
    store = 72,
    pt_pool_start = 88,
    pt_pool_end = 96,
    boot_pml4 = 104,
    paging_mode = 112,
    nr_mem_regions = 116,
    mem_map = 120,
    cmdline_len = 312,
    cmdline = 320,
    nr_virtio = 1344,
    virtio = 1352,
);
const _: () = assert!(core::mem::size_of::<StartInfo>() <= crate::layout::PAGE_SIZE as usize);

impl StartInfo {
    /// An all-zero start-info with the magic and version filled in.
    pub const fn new() -> Self {
        StartInfo {
            magic: START_INFO_MAGIC,
            abi_version: crate::hypercall::ABI_VERSION,
            flags: 0,
            mem_bytes: 0,
            free_start: 0,
            free_end: 0,
            shared_info: 0,
            console: RingInfo { gpa: 0, evtchn: 0, _pad: 0 },
            store: RingInfo { gpa: 0, evtchn: 0, _pad: 0 },
            pt_pool_start: 0,
            pt_pool_end: 0,
            boot_pml4: 0,
            paging_mode: 0,
            nr_mem_regions: 0,
            mem_map: [MemRegion { start: 0, len: 0, kind: 0, _pad: 0 }; MAX_MEM_REGIONS],
            cmdline_len: 0,
            _pad: 0,
            cmdline: [0; MAX_CMDLINE],
            nr_virtio: 0,
            _pad2: 0,
            virtio: [VirtioMmioDevice { base: 0, size: 0, device_id: 0, vector: 0, gsi: 0, _pad: 0 };
                MAX_VIRTIO_DEVICES],
        }
    }

    /// The command line as bytes (without the NUL), clamped to the buffer.
    pub fn cmdline_bytes(&self) -> &[u8] {
        let len = (self.cmdline_len as usize).min(MAX_CMDLINE - 1);
        &self.cmdline[..len]
    }

    /// The valid virtio-mmio device entries, clamped to the array.
    pub fn virtio_devices(&self) -> &[VirtioMmioDevice] {
        let n = (self.nr_virtio as usize).min(MAX_VIRTIO_DEVICES);
        &self.virtio[..n]
    }

    /// The valid memory-map entries, clamped to the array.
    pub fn mem_regions(&self) -> &[MemRegion] {
        let n = (self.nr_mem_regions as usize).min(MAX_MEM_REGIONS);
        &self.mem_map[..n]
    }
}

impl Default for StartInfo {
    fn default() -> Self {
        Self::new()
    }
}
