//! Direct paging: `mmu_update` and `mmuext_op` entries (Xen's `public/xen.h`).
//!
//! `mmu_update` arguments: `rdi` = guest-physical address of an array of
//! [`MmuUpdate`], `rsi` = count, `rdx` = guest-physical address of a u32
//! receiving the number done (0 for none), `r10` = domain
//! ([`DOMID_SELF`](crate::event_channel::DOMID_SELF)). `mmuext_op` takes the
//! same shape with [`MmuextOp`] entries. Addresses are guest-physical: on
//! KVM the guest's "machine" addresses are its guest-physical ones.

/// `MmuUpdate::ptr` low bits: a checked `*ptr = val` to a page-table entry.
pub const MMU_NORMAL_PT_UPDATE: u64 = 0;
/// `MmuUpdate::ptr` low bits: machine-to-physical update (not supported).
pub const MMU_MACHPHYS_UPDATE: u64 = 1;
/// `MmuUpdate::ptr` low bits: as normal, preserving the entry's A/D bits.
pub const MMU_PT_UPDATE_PRESERVE_AD: u64 = 2;
/// `MmuUpdate::ptr` low bits: as normal, without translating `val`.
pub const MMU_PT_UPDATE_NO_TRANSLATE: u64 = 3;
/// Mask of the command bits in `MmuUpdate::ptr`.
pub const MMU_UPDATE_CMD_MASK: u64 = 3;

/// Set in the `count` of a continued `mmu_update`/`mmuext_op` (Xen's
/// `MMU_UPDATE_PREEMPTED`): the rest of a batch the VMM preempted;
/// `*pdone` already holds the number done before.
pub const MMU_UPDATE_PREEMPTED: u64 = 0x8000_0000;

/// One page-table update (Xen's `mmu_update`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmuUpdate {
    /// Guest-physical address of the 8-byte entry to write, with an
    /// `MMU_*` command in bits 1:0.
    pub ptr: u64,
    /// The new entry value.
    pub val: u64,
}
crate::assert_layout!(MmuUpdate, size = 16, ptr = 0, val = 8);

impl MmuUpdate {
    /// A normal checked update of the entry at guest-physical `pte_gpa`
    /// (8-byte aligned) to `val`.
    pub const fn normal(pte_gpa: u64, val: u64) -> Self {
        MmuUpdate { ptr: (pte_gpa & !MMU_UPDATE_CMD_MASK) | MMU_NORMAL_PT_UPDATE, val }
    }
    /// The command in the low bits of `ptr`.
    pub const fn cmd(&self) -> u64 {
        self.ptr & MMU_UPDATE_CMD_MASK
    }
    /// The entry address without the command bits.
    pub const fn addr(&self) -> u64 {
        self.ptr & !MMU_UPDATE_CMD_MASK
    }
}

/// Pin a page as an L1 (page-table) page.
pub const MMUEXT_PIN_L1_TABLE: u32 = 0;
/// Pin a page as an L2 (page-directory) page.
pub const MMUEXT_PIN_L2_TABLE: u32 = 1;
/// Pin a page as an L3 (PDPT) page.
pub const MMUEXT_PIN_L3_TABLE: u32 = 2;
/// Pin a page as an L4 (PML4) page.
pub const MMUEXT_PIN_L4_TABLE: u32 = 3;
/// Unpin a page-table page of any level.
pub const MMUEXT_UNPIN_TABLE: u32 = 4;
/// Switch `cr3` to a pinned L4 (`arg1.mfn`).
pub const MMUEXT_NEW_BASEPTR: u32 = 5;
/// Flush this vCPU's TLB.
pub const MMUEXT_TLB_FLUSH_LOCAL: u32 = 6;
/// Invalidate one linear address (`arg1.linear_addr`) on this vCPU.
pub const MMUEXT_INVLPG_LOCAL: u32 = 7;
/// Flush the TLBs of a vCPU set.
pub const MMUEXT_TLB_FLUSH_MULTI: u32 = 8;
/// Invalidate one linear address on a vCPU set.
pub const MMUEXT_INVLPG_MULTI: u32 = 9;
/// Flush all vCPUs' TLBs.
pub const MMUEXT_TLB_FLUSH_ALL: u32 = 10;
/// Invalidate one linear address on all vCPUs.
pub const MMUEXT_INVLPG_ALL: u32 = 11;
/// Write back and invalidate caches.
pub const MMUEXT_FLUSH_CACHE: u32 = 12;
/// Set the LDT (not supported).
pub const MMUEXT_SET_LDT: u32 = 13;
/// Set the user-mode base pointer (not supported).
pub const MMUEXT_NEW_USER_BASEPTR: u32 = 15;
/// Zero a page.
pub const MMUEXT_CLEAR_PAGE: u32 = 16;
/// Copy a page.
pub const MMUEXT_COPY_PAGE: u32 = 17;
/// Flush caches on all CPUs.
pub const MMUEXT_FLUSH_CACHE_GLOBAL: u32 = 18;
/// Mark a superpage (not supported).
pub const MMUEXT_MARK_SUPER: u32 = 19;
/// Unmark a superpage (not supported).
pub const MMUEXT_UNMARK_SUPER: u32 = 20;

/// First argument of an [`MmuextOp`] (Xen's anonymous union `arg1`).
#[repr(C)]
#[derive(Clone, Copy)]
pub union MmuextArg1 {
    /// A guest frame number (pin/unpin, new_baseptr, clear/copy page).
    pub mfn: u64,
    /// A linear address (invlpg).
    pub linear_addr: u64,
}
crate::assert_layout!(MmuextArg1, size = 8);

/// Second argument of an [`MmuextOp`] (Xen's anonymous union `arg2`).
#[repr(C)]
#[derive(Clone, Copy)]
pub union MmuextArg2 {
    /// Number of LDT entries (set_ldt).
    pub nr_ents: u32,
    /// Guest-physical address of a vCPU bitmap (flush/invlpg multi; Xen: a
    /// guest handle).
    pub vcpumask: u64,
    /// Source frame (copy_page).
    pub src_mfn: u64,
}
crate::assert_layout!(MmuextArg2, size = 8);

/// One extended MMU operation (Xen's `mmuext_op`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MmuextOp {
    /// One of the `MMUEXT_*` commands.
    pub cmd: u32,
    /// Zero (alignment hole in Xen's layout).
    pub _pad: u32,
    /// First argument.
    pub arg1: MmuextArg1,
    /// Second argument.
    pub arg2: MmuextArg2,
}
crate::assert_layout!(MmuextOp, size = 24, cmd = 0, arg1 = 8, arg2 = 16);

impl MmuextOp {
    /// An operation with a frame argument (pin, unpin, new_baseptr).
    pub const fn with_mfn(cmd: u32, mfn: u64) -> Self {
        MmuextOp { cmd, _pad: 0, arg1: MmuextArg1 { mfn }, arg2: MmuextArg2 { src_mfn: 0 } }
    }
    /// An operation with a linear-address argument (invlpg).
    pub const fn with_linear_addr(cmd: u32, linear_addr: u64) -> Self {
        MmuextOp { cmd, _pad: 0, arg1: MmuextArg1 { linear_addr }, arg2: MmuextArg2 { src_mfn: 0 } }
    }
    /// An operation without arguments (TLB flushes).
    pub const fn plain(cmd: u32) -> Self {
        Self::with_mfn(cmd, 0)
    }
    /// `arg1` as a raw 64-bit value (both members are u64).
    pub const fn arg1_raw(&self) -> u64 {
        // SAFETY: both members of `MmuextArg1` are u64 covering the whole
        // union, so any bit pattern is a valid u64.
        unsafe { self.arg1.mfn }
    }
    /// `arg2` as a raw 64-bit value (its widest members are u64).
    pub const fn arg2_raw(&self) -> u64 {
        // SAFETY: `src_mfn` is a u64 covering the whole 8-byte union, so
        // any bit pattern is a valid u64.
        unsafe { self.arg2.src_mfn }
    }
}

impl Default for MmuextOp {
    fn default() -> Self {
        Self::plain(0)
    }
}

impl core::fmt::Debug for MmuextOp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MmuextOp")
            .field("cmd", &self.cmd)
            .field("arg1", &format_args!("{:#x}", self.arg1_raw()))
            .field("arg2", &format_args!("{:#x}", self.arg2_raw()))
            .finish()
    }
}

/// x86-64 page-table entry bits, as both the guest MMU and the VMM's
/// validator use them.
pub mod pte {
    /// Present.
    pub const P: u64 = 1 << 0;
    /// Writable.
    pub const RW: u64 = 1 << 1;
    /// User-accessible.
    pub const US: u64 = 1 << 2;
    /// Write-through.
    pub const PWT: u64 = 1 << 3;
    /// Cache disable.
    pub const PCD: u64 = 1 << 4;
    /// Accessed (set by the validator on every installed entry).
    pub const A: u64 = 1 << 5;
    /// Dirty (set by the validator on writable leaf entries).
    pub const D: u64 = 1 << 6;
    /// Page size: a 2 MiB leaf in an L2 entry.
    pub const PS: u64 = 1 << 7;
    /// Global (leaf entries).
    pub const G: u64 = 1 << 8;
    /// Bits 9..=11, ignored by the hardware and free for the guest.
    pub const AVAIL: u64 = 0x7 << 9;
    /// PAT bit of a 2 MiB leaf.
    pub const PAT_LARGE: u64 = 1 << 12;
    /// No-execute.
    pub const NX: u64 = 1 << 63;
    /// The frame address of a 4 KiB leaf or of a next-level table.
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
    /// The frame address of a 2 MiB leaf.
    pub const ADDR_MASK_2M: u64 = 0x000f_ffff_ffe0_0000;
    /// Bits 52..=62: ignored or protection keys on hardware; rejected here.
    pub const HIGH_RESERVED: u64 = 0x7ff0_0000_0000_0000;
}

/// The errno (positive; negated in `rax`) for each direct-paging
/// validation rule. An update that breaks a rule is not applied; with
/// `mmu_update`, the updates before it in the batch stay applied, the rest
/// are not processed and `*done` counts the applied ones (Xen's semantics).
pub mod mmu_err {
    use crate::errno;
    /// The target entry is not 8-byte aligned.
    pub const MISALIGNED: i64 = errno::EINVAL;
    /// The target entry (or the table to pin) is outside the page-table
    /// pool, or in a pool frame not (yet) in use as a page table.
    pub const NOT_IN_POOL: i64 = errno::EPERM;
    /// A present entry names a frame outside guest RAM.
    pub const FRAME_NOT_RAM: i64 = errno::ERANGE;
    /// A present upper-level entry does not point at a pool frame usable
    /// as a table of the level below.
    pub const UPPER_NOT_POOL: i64 = errno::EACCES;
    /// A writable leaf maps a frame of the page-table pool (`pv` mode).
    pub const WRITABLE_POOL: i64 = errno::EROFS;
    /// Reserved or unsupported bits: bits 52..=62, a large page above L2,
    /// reserved bits of a 2 MiB leaf, bits 6..=8 of an upper-level entry.
    pub const BAD_BITS: i64 = errno::EOPNOTSUPP;
    /// An unknown or unsupported command (`mmu_update` command bits,
    /// `mmuext_op` cmd).
    pub const UNKNOWN_CMD: i64 = errno::ENOSYS;
    /// `new_baseptr` to a frame that is not a pinned L4.
    pub const NOT_PINNED: i64 = errno::EBADF;
    /// Pinning a frame that is already pinned.
    pub const ALREADY_PINNED: i64 = errno::EEXIST;
    /// Unpinning a frame that is not pinned.
    pub const NOT_PINNED_UNPIN: i64 = errno::ENOENT;
    /// Unpinning the current base table.
    pub const IN_USE: i64 = errno::EBUSY;
    /// The request array (or the `done` pointer) is outside guest RAM.
    pub const BAD_ARRAY: i64 = errno::EFAULT;
    /// The hypercall is not available in this paging mode (`native`).
    pub const WRONG_MODE: i64 = errno::ENODEV;
}
