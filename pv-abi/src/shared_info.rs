//! The shared-info page: per-vCPU event state and the 2-level event-channel
//! bitmaps.
//!
//! Byte-compatible with Xen's `struct shared_info` on x86-64
//! (`public/xen.h`, `public/arch-x86/xen.h`). Both sides access the bitmaps
//! and `vcpu_info` flags only with atomic operations on the shared page;
//! these structures give the offsets.

/// Number of `vcpu_info` slots in the shared-info page
/// (Xen's `XEN_LEGACY_MAX_VCPUS`).
pub const MAX_LEGACY_VCPUS: usize = 32;
/// Number of 64-bit words in each event-channel bitmap.
pub const EVTCHN_WORDS: usize = 64;
/// Bits per bitmap word (Xen's `BITS_PER_XEN_ULONG`).
pub const BITS_PER_WORD: u32 = 64;

/// Which bitmap word and bit hold an event-channel port: `(word, bit)`.
/// Ports at or beyond [`EVTCHN_2L_NR_CHANNELS`](crate::event_channel::EVTCHN_2L_NR_CHANNELS)
/// return `None`.
pub const fn evtchn_word_bit(port: u32) -> Option<(usize, u32)> {
    if port >= crate::event_channel::EVTCHN_2L_NR_CHANNELS {
        None
    } else {
        Some(((port / BITS_PER_WORD) as usize, port % BITS_PER_WORD))
    }
}

/// `XEN_PVCLOCK_TSC_STABLE_BIT` in [`VcpuTimeInfo::flags`]: the TSC is
/// stable across vCPUs, so the guest need not keep a global maximum.
pub const PVCLOCK_TSC_STABLE: u8 = 1;

/// Per-vCPU time information (Xen's `vcpu_time_info`). Unused by the VMM
/// today (zero), present for byte compatibility.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuTimeInfo {
    /// Seqlock-style version: odd while an update is in progress.
    pub version: u32,
    /// Zero.
    pub pad0: u32,
    /// TSC at the last update of the time values.
    pub tsc_timestamp: u64,
    /// Nanoseconds since boot at `tsc_timestamp`.
    pub system_time: u64,
    /// TSC-to-nanoseconds multiplier (32.32 fixed point).
    pub tsc_to_system_mul: u32,
    /// TSC shift applied before the multiplication.
    pub tsc_shift: i8,
    /// `XEN_PVCLOCK_*` flags.
    pub flags: u8,
    /// Zero.
    pub pad1: [u8; 2],
}
crate::assert_layout!(
    VcpuTimeInfo,
    size = 32,
    version = 0,
    pad0 = 4,
    tsc_timestamp = 8,
    system_time = 16,
    tsc_to_system_mul = 24,
    tsc_shift = 28,
    flags = 29,
    pad1 = 30
);

/// x86-64 architecture part of `vcpu_info` (Xen's `arch_vcpu_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArchVcpuInfo {
    /// Faulting address of the last page fault (PV guests; unused here).
    pub cr2: u64,
    /// Zero (makes `vcpu_info` 64 bytes).
    pub pad: u64,
}
crate::assert_layout!(ArchVcpuInfo, size = 16, cr2 = 0, pad = 8);

/// Per-vCPU event state (Xen's `vcpu_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuInfo {
    /// Set (to 1) by the VMM when an unmasked event became pending; the
    /// guest's upcall handler clears it before scanning.
    pub upcall_pending: u8,
    /// Non-zero while the guest masks event upcalls (like `cli` for events).
    pub upcall_mask: u8,
    /// Zero (alignment hole in Xen's layout).
    pub _pad: [u8; 6],
    /// Selector: bit `i` set means word `i` of `evtchn_pending` may have
    /// pending, unmasked ports.
    pub evtchn_pending_sel: u64,
    /// Architecture-specific state.
    pub arch: ArchVcpuInfo,
    /// Time information.
    pub time: VcpuTimeInfo,
}
crate::assert_layout!(
    VcpuInfo,
    size = 64,
    upcall_pending = 0,
    upcall_mask = 1,
    evtchn_pending_sel = 8,
    arch = 16,
    time = 32
);

/// x86-64 architecture part of the shared-info page (Xen's
/// `arch_shared_info`). Unused (zero) here; present for byte compatibility.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArchSharedInfo {
    /// Number of valid p2m entries (PV MMU; unused).
    pub max_pfn: u64,
    /// Frame of the p2m frame-list list (unused).
    pub pfn_to_mfn_frame_list_list: u64,
    /// NMI reason bits (unused).
    pub nmi_reason: u64,
    /// Root of the address space holding the linear p2m list (unused).
    pub p2m_cr3: u64,
    /// Virtual address of the linear p2m list (unused).
    pub p2m_vaddr: u64,
    /// Generation counter of the p2m list (unused).
    pub p2m_generation: u64,
}
crate::assert_layout!(
    ArchSharedInfo,
    size = 48,
    max_pfn = 0,
    pfn_to_mfn_frame_list_list = 8,
    nmi_reason = 16,
    p2m_cr3 = 24,
    p2m_vaddr = 32,
    p2m_generation = 40
);

/// The shared-info page (Xen's `shared_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedInfo {
    /// Per-vCPU event state; only slot 0 is used by our single-vCPU guests.
    pub vcpu_info: [VcpuInfo; MAX_LEGACY_VCPUS],
    /// Pending bitmap: bit `p` set means port `p` has an event. Set by the
    /// VMM, cleared by the guest.
    pub evtchn_pending: [u64; EVTCHN_WORDS],
    /// Mask bitmap: bit `p` set means port `p` raises no upcall. Written by
    /// the guest only.
    pub evtchn_mask: [u64; EVTCHN_WORDS],
    /// Wall-clock version counter (seqlock-style, like `VcpuTimeInfo::version`).
    pub wc_version: u32,
    /// Wall-clock seconds since the epoch (low 32 bits).
    pub wc_sec: u32,
    /// Wall-clock nanoseconds.
    pub wc_nsec: u32,
    /// Wall-clock seconds, high 32 bits.
    pub wc_sec_hi: u32,
    /// Architecture-specific part.
    pub arch: ArchSharedInfo,
}
crate::assert_layout!(
    SharedInfo,
    size = 3136,
    vcpu_info = 0,
    evtchn_pending = 2048,
    evtchn_mask = 2560,
    wc_version = 3072,
    wc_sec = 3076,
    wc_nsec = 3080,
    wc_sec_hi = 3084,
    arch = 3088
);
const _: () = assert!(core::mem::size_of::<SharedInfo>() <= crate::layout::PAGE_SIZE as usize);

impl SharedInfo {
    /// An all-zero shared-info page: no events pending, none masked.
    pub const fn zeroed() -> Self {
        const V: VcpuInfo = VcpuInfo {
            upcall_pending: 0,
            upcall_mask: 0,
            _pad: [0; 6],
            evtchn_pending_sel: 0,
            arch: ArchVcpuInfo { cr2: 0, pad: 0 },
            time: VcpuTimeInfo {
                version: 0,
                pad0: 0,
                tsc_timestamp: 0,
                system_time: 0,
                tsc_to_system_mul: 0,
                tsc_shift: 0,
                flags: 0,
                pad1: [0; 2],
            },
        };
        SharedInfo {
            vcpu_info: [V; MAX_LEGACY_VCPUS],
            evtchn_pending: [0; EVTCHN_WORDS],
            evtchn_mask: [0; EVTCHN_WORDS],
            wc_version: 0,
            wc_sec: 0,
            wc_nsec: 0,
            wc_sec_hi: 0,
            arch: ArchSharedInfo {
                max_pfn: 0,
                pfn_to_mfn_frame_list_list: 0,
                nmi_reason: 0,
                p2m_cr3: 0,
                p2m_vaddr: 0,
                p2m_generation: 0,
            },
        }
    }

    /// Byte offset of `vcpu_info[vcpu].upcall_pending` in the page.
    pub const fn upcall_pending_offset(vcpu: usize) -> usize {
        vcpu * core::mem::size_of::<VcpuInfo>() + core::mem::offset_of!(VcpuInfo, upcall_pending)
    }
    /// Byte offset of `vcpu_info[vcpu].upcall_mask` in the page.
    pub const fn upcall_mask_offset(vcpu: usize) -> usize {
        vcpu * core::mem::size_of::<VcpuInfo>() + core::mem::offset_of!(VcpuInfo, upcall_mask)
    }
    /// Byte offset of `vcpu_info[vcpu].evtchn_pending_sel` in the page.
    pub const fn pending_sel_offset(vcpu: usize) -> usize {
        vcpu * core::mem::size_of::<VcpuInfo>() + core::mem::offset_of!(VcpuInfo, evtchn_pending_sel)
    }
    /// Byte offset of word `word` of `evtchn_pending` in the page.
    pub const fn pending_word_offset(word: usize) -> usize {
        core::mem::offset_of!(SharedInfo, evtchn_pending) + word * 8
    }
    /// Byte offset of word `word` of `evtchn_mask` in the page.
    pub const fn mask_word_offset(word: usize) -> usize {
        core::mem::offset_of!(SharedInfo, evtchn_mask) + word * 8
    }
}

impl Default for SharedInfo {
    fn default() -> Self {
        Self::zeroed()
    }
}

/// Where the 2-level event-channel state and the wall clock sit in one
/// shared-info layout: Xen's x86-64 layout ([`LAYOUT_64`]) or the x86_32
/// (compat) one ([`LAYOUT_X86_32`]), whose bitmap words and selector are
/// 32-bit `xen_ulong_t`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvtchnLayout {
    /// Bytes per bitmap word (and of the selector): 8 or 4.
    pub word_bytes: usize,
    /// Ports the 2-level bitmaps hold (`BITS_PER_XEN_ULONG` squared).
    pub nr_channels: u32,
    /// Offset of `evtchn_pending`.
    pub pending: usize,
    /// Offset of `evtchn_mask`.
    pub mask: usize,
    /// Offset of `vcpu_info[0].evtchn_pending_sel`.
    pub pending_sel: usize,
    /// Offset of `wc_version` (then `wc_sec`, `wc_nsec`).
    pub wc_version: usize,
    /// Offset of the wall clock's high seconds (`wc_sec_hi`; in
    /// `arch_shared_info` on x86_32).
    pub wc_sec_hi: usize,
}

impl EvtchnLayout {
    /// Bits per bitmap word.
    pub const fn word_bits(&self) -> u32 {
        self.word_bytes as u32 * 8
    }
    /// `(word, bit)` of `port`, `None` beyond this layout's bitmaps.
    pub const fn word_bit(&self, port: u32) -> Option<(usize, u32)> {
        if port >= self.nr_channels {
            None
        } else {
            Some(((port / self.word_bits()) as usize, port % self.word_bits()))
        }
    }
    /// Byte offset of word `word` of `evtchn_pending`.
    pub const fn pending_word(&self, word: usize) -> usize {
        self.pending + word * self.word_bytes
    }
    /// Byte offset of word `word` of `evtchn_mask`.
    pub const fn mask_word(&self, word: usize) -> usize {
        self.mask + word * self.word_bytes
    }
}

/// Xen's x86-64 shared-info layout (our own guests and 64-bit PVH guests).
pub const LAYOUT_64: EvtchnLayout = EvtchnLayout {
    word_bytes: 8,
    nr_channels: (EVTCHN_WORDS * EVTCHN_WORDS) as u32,
    pending: core::mem::offset_of!(SharedInfo, evtchn_pending),
    mask: core::mem::offset_of!(SharedInfo, evtchn_mask),
    pending_sel: SharedInfo::pending_sel_offset(0),
    wc_version: core::mem::offset_of!(SharedInfo, wc_version),
    wc_sec_hi: core::mem::offset_of!(SharedInfo, wc_sec_hi),
};

/// Xen's x86_32 shared-info layout (a PVH guest in 32-bit mode).
pub const LAYOUT_X86_32: EvtchnLayout = EvtchnLayout {
    word_bytes: 4,
    nr_channels: (x86_32::EVTCHN_WORDS * x86_32::EVTCHN_WORDS) as u32,
    pending: core::mem::offset_of!(x86_32::SharedInfo, evtchn_pending),
    mask: core::mem::offset_of!(x86_32::SharedInfo, evtchn_mask),
    pending_sel: core::mem::offset_of!(x86_32::VcpuInfo, evtchn_pending_sel),
    wc_version: core::mem::offset_of!(x86_32::SharedInfo, wc_version),
    wc_sec_hi: core::mem::offset_of!(x86_32::SharedInfo, arch)
        + core::mem::offset_of!(x86_32::ArchSharedInfo, wc_sec_hi),
};

/// Xen's `shared_info` as a 32-bit (x86_32) guest sees it: `xen_ulong_t`
/// and `unsigned long` are 32 bits, so the selector, the bitmaps, and
/// everything after them differ from the x86-64 layout (the pending bits
/// of the first 1024 ports coincide).
pub mod x86_32 {
    use super::VcpuTimeInfo;

    /// Number of 32-bit words in each event-channel bitmap.
    pub const EVTCHN_WORDS: usize = 32;

    /// x86_32 `arch_vcpu_info`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ArchVcpuInfo {
        /// Faulting address of the last page fault (PV guests; unused here).
        pub cr2: u32,
        /// Zero (makes `vcpu_info` 64 bytes).
        pub pad: [u32; 5],
    }
    crate::assert_layout!(ArchVcpuInfo, size = 24, cr2 = 0, pad = 4);

    /// x86_32 `vcpu_info`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct VcpuInfo {
        /// As in the x86-64 layout.
        pub upcall_pending: u8,
        /// As in the x86-64 layout.
        pub upcall_mask: u8,
        /// Zero.
        pub _pad: [u8; 2],
        /// Selector: bit `i` for 32-bit word `i` of `evtchn_pending`.
        pub evtchn_pending_sel: u32,
        /// Architecture-specific state.
        pub arch: ArchVcpuInfo,
        /// Time information (same offset as in the x86-64 layout).
        pub time: VcpuTimeInfo,
    }
    crate::assert_layout!(
        VcpuInfo,
        size = 64,
        upcall_pending = 0,
        upcall_mask = 1,
        evtchn_pending_sel = 4,
        arch = 8,
        time = 32
    );

    /// x86_32 `arch_shared_info` (with the wall clock's `wc_sec_hi`).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ArchSharedInfo {
        /// Number of valid p2m entries (unused).
        pub max_pfn: u32,
        /// Frame of the p2m frame-list list (unused).
        pub pfn_to_mfn_frame_list_list: u32,
        /// NMI reason bits (unused).
        pub nmi_reason: u32,
        /// Unused.
        pub p2m_cr3: u32,
        /// Unused.
        pub p2m_vaddr: u32,
        /// Unused.
        pub p2m_generation: u32,
        /// Wall-clock seconds, high 32 bits.
        pub wc_sec_hi: u32,
    }
    crate::assert_layout!(
        ArchSharedInfo,
        size = 28,
        max_pfn = 0,
        pfn_to_mfn_frame_list_list = 4,
        nmi_reason = 8,
        p2m_cr3 = 12,
        p2m_vaddr = 16,
        p2m_generation = 20,
        wc_sec_hi = 24
    );

    /// x86_32 `shared_info`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SharedInfo {
        /// Per-vCPU event state.
        pub vcpu_info: [VcpuInfo; super::MAX_LEGACY_VCPUS],
        /// Pending bitmap (32-bit words).
        pub evtchn_pending: [u32; EVTCHN_WORDS],
        /// Mask bitmap (32-bit words).
        pub evtchn_mask: [u32; EVTCHN_WORDS],
        /// Wall-clock version counter.
        pub wc_version: u32,
        /// Wall-clock seconds (low 32 bits).
        pub wc_sec: u32,
        /// Wall-clock nanoseconds.
        pub wc_nsec: u32,
        /// Architecture-specific part.
        pub arch: ArchSharedInfo,
    }
    crate::assert_layout!(
        SharedInfo,
        size = 2344,
        vcpu_info = 0,
        evtchn_pending = 2048,
        evtchn_mask = 2176,
        wc_version = 2304,
        wc_sec = 2308,
        wc_nsec = 2312,
        arch = 2316
    );
}
