//! The Xen HVM/PVH guest interface: PVH boot (`hvm/start_info.h`), discovery
//! by CPUID and the hypercall-page MSR (`arch-x86/cpuid.h`), `memory_op`
//! (`memory.h`), `hvm_op` (`hvm/hvm_op.h`, `hvm/params.h`) and the
//! `xen_version` feature bits (`features.h`).
//!
//! Structures used by 32-bit guests have their own `Compat*` layout where it
//! differs (handles and `xen_ulong_t` are 4 bytes, 64-bit fields 4-byte
//! aligned); `pv-abi/tests/xen_layout.rs` checks both against Xen's headers.

/// ELF note owner of Xen's notes.
pub const XEN_ELFNOTE_OWNER: &[u8] = b"Xen";
/// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit physical PVH entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// `XEN_HVM_START_MAGIC_VALUE`.
pub const HVM_START_MAGIC: u32 = 0x336e_c578;
/// The `hvm_start_info` version we write (1: has the memory map).
pub const HVM_START_VERSION: u32 = 1;

/// Xen's `hvm_start_info` (version 1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HvmStartInfo {
    /// [`HVM_START_MAGIC`].
    pub magic: u32,
    /// [`HVM_START_VERSION`].
    pub version: u32,
    /// `SIF_*` flags (none).
    pub flags: u32,
    /// Number of modules (none).
    pub nr_modules: u32,
    /// Physical address of the module list.
    pub modlist_paddr: u64,
    /// Physical address of the NUL-terminated command line.
    pub cmdline_paddr: u64,
    /// Physical address of the ACPI RSDP (none: 0).
    pub rsdp_paddr: u64,
    /// Physical address of the memory map (array of [`HvmMemmapEntry`]).
    pub memmap_paddr: u64,
    /// Entries in the memory map.
    pub memmap_entries: u32,
    /// Zero.
    pub reserved: u32,
}
crate::assert_layout!(
    HvmStartInfo,
    size = 56,
    magic = 0,
    version = 4,
    flags = 8,
    nr_modules = 12,
    modlist_paddr = 16,
    cmdline_paddr = 24,
    rsdp_paddr = 32,
    memmap_paddr = 40,
    memmap_entries = 48,
    reserved = 52
);

/// `XEN_HVM_MEMMAP_TYPE_RAM`.
pub const MEMMAP_RAM: u32 = 1;
/// `XEN_HVM_MEMMAP_TYPE_RESERVED`.
pub const MEMMAP_RESERVED: u32 = 2;

/// Xen's `hvm_memmap_table_entry` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HvmMemmapEntry {
    /// Start.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`MEMMAP_RAM`] or [`MEMMAP_RESERVED`].
    pub kind: u32,
    /// Zero.
    pub reserved: u32,
}
crate::assert_layout!(HvmMemmapEntry, size = 24, addr = 0, size = 8, kind = 16, reserved = 20);

/// One e820 entry as `XENMEM_memory_map` returns it (Xen's `struct
/// e820entry`: packed, 20 bytes).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct E820Entry {
    /// Start.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// `E820_RAM` 1, `E820_RESERVED` 2.
    pub kind: u32,
}
crate::assert_layout!(E820Entry, size = 20, addr = 0, size = 8, kind = 16);

/// CPUID leaves of the hypervisor (Xen's `arch-x86/cpuid.h`).
pub mod cpuid {
    /// First leaf: highest leaf in `eax`, "XenVMMXenVMM" in `ebx, ecx, edx`.
    pub const XEN_CPUID_BASE: u32 = 0x4000_0000;
    /// Highest leaf we offer: base + `XEN_CPUID_MAX_NUM_LEAVES` (5), Xen's
    /// default limit (`cpuid_hypervisor_leaves()`); leaf 5 (PV-specific
    /// parameters) reads zero for an HVM guest.
    pub const XEN_CPUID_MAX: u32 = XEN_CPUID_BASE + 5;
    /// "XenV" "MMXe" "nVMM".
    pub const XEN_CPUID_SIGNATURE: [u32; 3] = [0x566e_6558, 0x6558_4d4d, 0x4d4d_566e];
    /// The hypercall-page MSR named in leaf base + 2, `ebx`.
    pub const XEN_HYPERCALL_MSR: u32 = 0x4000_0000;
    /// Leaf base + 4, `eax`: `XEN_HVM_CPUID_VCPU_ID_PRESENT` (vCPU id in `ebx`).
    pub const XEN_HVM_CPUID_VCPU_ID_PRESENT: u32 = 1 << 3;
    /// Leaf base + 4, `eax`: `XEN_HVM_CPUID_DOMID_PRESENT` (domain id in `ecx`).
    pub const XEN_HVM_CPUID_DOMID_PRESENT: u32 = 1 << 4;
    /// Leaf base + 4, `eax`: `XEN_HVM_CPUID_UPCALL_VECTOR` (per-vCPU upcall vector).
    pub const XEN_HVM_CPUID_UPCALL_VECTOR: u32 = 1 << 6;
}

/// The hypercall page: 128 stubs of 32 bytes.
pub mod hypercall_page {
    /// Bytes per stub.
    pub const STUB_SIZE: u64 = 32;
    /// Stubs per page.
    pub const NR_STUBS: u64 = 128;
    /// `__HYPERVISOR_iret`: its slot is `ud2` (as in Xen's HVM page).
    pub const HYPERVISOR_IRET: u64 = 23;
}

/// `memory_op` (hypercall 12) commands and structures.
pub mod memory_op {
    /// `XENMEM_current_reservation`.
    pub const CURRENT_RESERVATION: u64 = 3;
    /// `XENMEM_maximum_reservation`.
    pub const MAXIMUM_RESERVATION: u64 = 4;
    /// `XENMEM_add_to_physmap`.
    pub const ADD_TO_PHYSMAP: u64 = 7;
    /// `XENMEM_memory_map`.
    pub const MEMORY_MAP: u64 = 9;
    /// `XENMEM_set_memory_map`.
    pub const SET_MEMORY_MAP: u64 = 13;
    /// `XENMEM_remove_from_physmap`.
    pub const REMOVE_FROM_PHYSMAP: u64 = 15;
    /// Low bits of the command; the rest is a continuation start extent.
    pub const CMD_MASK: u64 = 0x3f;

    /// `XENMAPSPACE_shared_info`.
    pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
    /// `XENMAPSPACE_grant_table`.
    pub const XENMAPSPACE_GRANT_TABLE: u32 = 1;
    /// `XENMAPIDX_grant_table_status` bit of `idx` (grant v2 status frames).
    pub const XENMAPIDX_GRANT_TABLE_STATUS: u64 = 1 << 31;

    /// `struct xen_add_to_physmap` (64-bit layout).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct AddToPhysmap {
        /// Domain ([`DOMID_SELF`](crate::event_channel::DOMID_SELF)).
        pub domid: u16,
        /// Number of pages for `XENMAPSPACE_gmfn_range`.
        pub size: u16,
        /// `XENMAPSPACE_*`.
        pub space: u32,
        /// Index in the space (frame number of the grant table, 0 for shared info).
        pub idx: u64,
        /// Guest frame to place it at.
        pub gpfn: u64,
    }
    crate::assert_layout!(AddToPhysmap, size = 24, domid = 0, size = 2, space = 4, idx = 8, gpfn = 16);

    /// `struct compat_add_to_physmap` (32-bit guests).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct CompatAddToPhysmap {
        /// Domain.
        pub domid: u16,
        /// Pages for a range.
        pub size: u16,
        /// `XENMAPSPACE_*`.
        pub space: u32,
        /// Index in the space.
        pub idx: u32,
        /// Guest frame.
        pub gpfn: u32,
    }
    crate::assert_layout!(CompatAddToPhysmap, size = 16, domid = 0, size = 2, space = 4, idx = 8, gpfn = 12);

    /// `struct xen_remove_from_physmap` (64-bit layout).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct RemoveFromPhysmap {
        /// Domain.
        pub domid: u16,
        /// Zero.
        pub _pad: [u16; 3],
        /// Guest frame to remove.
        pub gpfn: u64,
    }
    crate::assert_layout!(RemoveFromPhysmap, size = 16, domid = 0, gpfn = 8);

    /// `struct compat_remove_from_physmap`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct CompatRemoveFromPhysmap {
        /// Domain.
        pub domid: u16,
        /// Zero.
        pub _pad: u16,
        /// Guest frame to remove.
        pub gpfn: u32,
    }
    crate::assert_layout!(CompatRemoveFromPhysmap, size = 8, domid = 0, gpfn = 4);

    /// `struct xen_memory_map` (64-bit layout).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct MemoryMap {
        /// IN: entries the buffer holds; OUT: entries written.
        pub nr_entries: u32,
        /// Zero.
        pub _pad: u32,
        /// Guest address of an array of [`E820Entry`](super::E820Entry).
        pub buffer: u64,
    }
    crate::assert_layout!(MemoryMap, size = 16, nr_entries = 0, buffer = 8);

    /// `struct compat_memory_map`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct CompatMemoryMap {
        /// IN/OUT entries.
        pub nr_entries: u32,
        /// Guest address of the array.
        pub buffer: u32,
    }
    crate::assert_layout!(CompatMemoryMap, size = 8, nr_entries = 0, buffer = 4);
}

/// `hvm_op` (hypercall 34) commands, structures and parameters.
pub mod hvm_op {
    /// `HVMOP_set_param`.
    pub const SET_PARAM: u64 = 0;
    /// `HVMOP_get_param`.
    pub const GET_PARAM: u64 = 1;
    /// `HVMOP_get_time`: `struct xen_hvm_get_time { uint64_t now; }`, system time in ns.
    pub const GET_TIME: u64 = 10;
    /// `HVMOP_set_evtchn_upcall_vector`.
    pub const SET_EVTCHN_UPCALL_VECTOR: u64 = 23;

    /// `HVM_PARAM_CALLBACK_IRQ`: how events reach the guest (type in bits 63..56).
    pub const PARAM_CALLBACK_IRQ: u32 = 0;
    /// `HVM_PARAM_STORE_PFN`.
    pub const PARAM_STORE_PFN: u32 = 1;
    /// `HVM_PARAM_STORE_EVTCHN`.
    pub const PARAM_STORE_EVTCHN: u32 = 2;
    /// `HVM_PARAM_CONSOLE_PFN`.
    pub const PARAM_CONSOLE_PFN: u32 = 17;
    /// `HVM_PARAM_CONSOLE_EVTCHN`.
    pub const PARAM_CONSOLE_EVTCHN: u32 = 18;
    /// `HVM_PARAM_ALTP2M` (read-only to the guest).
    pub const PARAM_ALTP2M: u32 = 35;
    /// The deprecated `HVM_PARAM_*` indices (`PAE_ENABLED`, `DM_DOMAIN`,
    /// `MEMORY_EVENT_CR0`/`CR3`/`CR4`/`INT3`, `NESTEDHVM`,
    /// `MEMORY_EVENT_SINGLE_STEP`, `BUFIOREQ_EVTCHN`, `MEMORY_EVENT_MSR`).
    pub const DEPRECATED_PARAMS: [u32; 10] = [4, 13, 20, 21, 22, 23, 24, 25, 26, 30];
    /// `HVM_NR_PARAMS`: parameter indices are below this.
    pub const NR_PARAMS: u32 = 39;

    /// `HVM_PARAM_CALLBACK_TYPE_GSI`.
    pub const CALLBACK_TYPE_GSI: u64 = 0;
    /// `HVM_PARAM_CALLBACK_TYPE_PCI_INTX`.
    pub const CALLBACK_TYPE_PCI_INTX: u64 = 1;
    /// `HVM_PARAM_CALLBACK_TYPE_VECTOR`: the low 8 bits are the vector.
    pub const CALLBACK_TYPE_VECTOR: u64 = 2;
    /// Shift of the callback type in `HVM_PARAM_CALLBACK_IRQ`.
    pub const CALLBACK_TYPE_SHIFT: u32 = 56;

    /// `struct xen_hvm_param` (same layout for 32- and 64-bit guests).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct HvmParam {
        /// Domain ([`DOMID_SELF`](crate::event_channel::DOMID_SELF)).
        pub domid: u16,
        /// Zero.
        pub _pad: u16,
        /// `HVM_PARAM_*`.
        pub index: u32,
        /// The value.
        pub value: u64,
    }
    crate::assert_layout!(HvmParam, size = 16, domid = 0, index = 4, value = 8);

    /// `struct xen_hvm_evtchn_upcall_vector`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct EvtchnUpcallVector {
        /// The vCPU.
        pub vcpu: u32,
        /// The vector (0x10..=0xff).
        pub vector: u8,
        /// Zero.
        pub _pad: [u8; 3],
    }
    crate::assert_layout!(EvtchnUpcallVector, size = 8, vcpu = 0, vector = 4);
}

/// `xen_version` (hypercall 17) commands beyond the project's own, and the
/// real `XENFEAT_*` bits (`features.h`) reported to HVM/PVH guests.
pub mod xen_version {
    /// The Xen version reported to PVH guests (major << 16 | minor): 4.17,
    /// by `XENVER_version` and CPUID leaf 0x40000001.
    pub const XEN_VERSION: u32 = (4 << 16) | 17;
    /// `XENVER_extraversion`: 16 bytes of text.
    pub const EXTRAVERSION: u64 = 1;
    /// `XENVER_compile_info`: `struct xen_compile_info` (4 strings, 64+16+32+32).
    pub const COMPILE_INFO: u64 = 2;
    /// `XENVER_capabilities`: 1024 bytes of text.
    pub const CAPABILITIES: u64 = 3;
    /// `XENVER_changeset`: 64 bytes of text.
    pub const CHANGESET: u64 = 4;
    /// `XENVER_platform_parameters`: `{xen_ulong_t virt_start}`.
    pub const PLATFORM_PARAMETERS: u64 = 5;
    /// `XENVER_pagesize`.
    pub const PAGESIZE: u64 = 7;
    /// `XENVER_guest_handle`: the 16-byte domain handle.
    pub const GUEST_HANDLE: u64 = 8;
    /// `XENVER_commandline`: 1024 bytes of text.
    pub const COMMANDLINE: u64 = 9;
    /// `XENVER_build_id`; 11..=14 are the `*2` variable-length sub-ops.
    pub const BUILD_ID: u64 = 10;
    /// `XENVER_extraversion2`: `struct xen_varbuf` (`u32 len`, then the text).
    pub const EXTRAVERSION2: u64 = 11;
    /// `XENVER_capabilities2`: `struct xen_varbuf`.
    pub const CAPABILITIES2: u64 = 12;
    /// `XENVER_changeset2`: `struct xen_varbuf`.
    pub const CHANGESET2: u64 = 13;
    /// `XENVER_commandline2`: `struct xen_varbuf` (XSM_PRIV).
    pub const COMMANDLINE2: u64 = 14;
    /// Size of `struct xen_compile_info`.
    pub const COMPILE_INFO_SIZE: u64 = 144;

    /// `XENFEAT_writable_page_tables`.
    pub const XENFEAT_WRITABLE_PAGE_TABLES: u32 = 0;
    /// `XENFEAT_writable_descriptor_tables`.
    pub const XENFEAT_WRITABLE_DESCRIPTOR_TABLES: u32 = 1;
    /// `XENFEAT_auto_translated_physmap`.
    pub const XENFEAT_AUTO_TRANSLATED_PHYSMAP: u32 = 2;
    /// `XENFEAT_supervisor_mode_kernel`.
    pub const XENFEAT_SUPERVISOR_MODE_KERNEL: u32 = 3;
    /// `XENFEAT_hvm_callback_vector`.
    pub const XENFEAT_HVM_CALLBACK_VECTOR: u32 = 8;
    /// `XENFEAT_hvm_safe_pvclock`.
    pub const XENFEAT_HVM_SAFE_PVCLOCK: u32 = 9;
    /// `XENFEAT_hvm_pirqs` (not offered).
    pub const XENFEAT_HVM_PIRQS: u32 = 10;

    /// `XENFEAT_not_direct_mapped`.
    pub const XENFEAT_NOT_DIRECT_MAPPED: u32 = 16;
    /// `XENFEAT_dm_msix_all_writes`.
    pub const XENFEAT_DM_MSIX_ALL_WRITES: u32 = 20;

    /// The feature word Xen's `do_xen_version()` (`xen/common/kernel.c`)
    /// reports to an HVM/PVH domU (translated, not direct-mapped), without
    /// the bits that promise hypercalls we lack (`memory_op_vnode_supported`
    /// 13, `runstate_phys_area` 18, `vcpu_time_phys_area` 19). Never the PV
    /// bits `writable_descriptor_tables` (1) or `supervisor_mode_kernel` (3).
    pub const PVH_FEATURES: u32 = (1 << XENFEAT_WRITABLE_PAGE_TABLES)
        | (1 << XENFEAT_AUTO_TRANSLATED_PHYSMAP)
        | (1 << XENFEAT_HVM_CALLBACK_VECTOR)
        | (1 << XENFEAT_HVM_SAFE_PVCLOCK)
        | (1 << XENFEAT_NOT_DIRECT_MAPPED)
        | (1 << XENFEAT_DM_MSIX_ALL_WRITES);
}

/// Xen's HVM debug console port (`XEN_HVM_DEBUGCONS_IOPORT`): bytes written
/// here go to the console (GRUB prints its early panics there).
pub const DEBUGCONS_PORT: u16 = 0xe9;

/// `VIRQ_TIMER`: the per-vCPU one-shot timer (`set_timer_op`, `vcpu_op`).
pub const VIRQ_TIMER: u32 = 0;

/// `VCPUOP_initialise`'s argument for an HVM/PVH vCPU
/// (`xen/include/public/hvm/hvm_vcpu.h`): the mode, then the 32- or
/// 64-bit register set in a union (here two views of one byte array).
pub mod vcpu_hvm {
    /// `VCPU_HVM_MODE_32B`: [`VcpuHvmX86_32`] is used.
    pub const MODE_32B: u32 = 0;
    /// `VCPU_HVM_MODE_64B`: [`VcpuHvmX86_64`] is used.
    pub const MODE_64B: u32 = 1;

    /// `struct vcpu_hvm_x86_32`: registers, control registers and the
    /// five segments as base, limit and attributes (Xen's packed `ar`
    /// format: type 0-3, s 4, dpl 5-6, p 7, avl 8, l 9, db 10, g 11).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    #[allow(missing_docs)]
    pub struct VcpuHvmX86_32 {
        pub eax: u32,
        pub ecx: u32,
        pub edx: u32,
        pub ebx: u32,
        pub esp: u32,
        pub ebp: u32,
        pub esi: u32,
        pub edi: u32,
        pub eip: u32,
        pub eflags: u32,
        pub cr0: u32,
        pub cr3: u32,
        pub cr4: u32,
        pub pad1: u32,
        pub efer: u64,
        pub cs_base: u32,
        pub ds_base: u32,
        pub ss_base: u32,
        pub es_base: u32,
        pub tr_base: u32,
        pub cs_limit: u32,
        pub ds_limit: u32,
        pub ss_limit: u32,
        pub es_limit: u32,
        pub tr_limit: u32,
        pub cs_ar: u16,
        pub ds_ar: u16,
        pub ss_ar: u16,
        pub es_ar: u16,
        pub tr_ar: u16,
        pub pad2: [u16; 3],
    }
    crate::assert_layout!(VcpuHvmX86_32, size = 120, efer = 56, cs_base = 64, cs_limit = 84, cs_ar = 104, pad2 = 114);

    /// `struct vcpu_hvm_x86_64`: the vCPU starts in long mode with flat
    /// segments Xen chooses.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    #[allow(missing_docs)]
    pub struct VcpuHvmX86_64 {
        pub rax: u64,
        pub rcx: u64,
        pub rdx: u64,
        pub rbx: u64,
        pub rsp: u64,
        pub rbp: u64,
        pub rsi: u64,
        pub rdi: u64,
        pub rip: u64,
        pub rflags: u64,
        pub cr0: u64,
        pub cr3: u64,
        pub cr4: u64,
        pub efer: u64,
    }
    crate::assert_layout!(VcpuHvmX86_64, size = 112, rip = 64, cr0 = 80, efer = 104);

    /// `struct vcpu_hvm_context`: `mode`, `pad` (must be 0), then the
    /// union `cpu_regs` (120 bytes: the 32-bit member's size).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct VcpuHvmContext {
        /// [`MODE_32B`] or [`MODE_64B`].
        pub mode: u32,
        /// Must be zero.
        pub pad: u32,
        /// `cpu_regs`, read as [`x86_32`](Self::x86_32) or [`x86_64`](Self::x86_64).
        pub cpu_regs: [u64; 15],
    }
    crate::assert_layout!(VcpuHvmContext, size = 128, mode = 0, pad = 4, cpu_regs = 8);

    impl VcpuHvmContext {
        /// `cpu_regs.x86_32`.
        pub fn x86_32(&self) -> VcpuHvmX86_32 {
            crate::pod::from_bytes(crate::pod::as_bytes(&self.cpu_regs)).expect("same size")
        }
        /// `cpu_regs.x86_64`.
        pub fn x86_64(&self) -> VcpuHvmX86_64 {
            crate::pod::from_bytes(&crate::pod::as_bytes(&self.cpu_regs)[..112]).expect("112 bytes")
        }
    }
}

// Every wire structure of this module is plain old data (here, not in
// `pod.rs`, so that file stays below the protocols that use its helpers).
crate::pod::impl_pod!(
    vcpu_hvm::VcpuHvmX86_32,
    vcpu_hvm::VcpuHvmX86_64,
    vcpu_hvm::VcpuHvmContext,
    HvmStartInfo,
    HvmMemmapEntry,
    E820Entry,
    memory_op::AddToPhysmap,
    memory_op::CompatAddToPhysmap,
    memory_op::RemoveFromPhysmap,
    memory_op::CompatRemoveFromPhysmap,
    memory_op::MemoryMap,
    memory_op::CompatMemoryMap,
    hvm_op::HvmParam,
    hvm_op::EvtchnUpcallVector,
);
