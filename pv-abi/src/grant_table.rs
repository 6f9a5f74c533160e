//! Grant tables: `grant_table_op` sub-operations, the v1 grant entry and
//! its flags.
//!
//! Byte-compatible with Xen's `public/grant_table.h` (x86-64). Arguments:
//! `rdi` = sub-operation (`GNTTABOP_*`), `rsi` = guest-physical address of an
//! array of argument structures, `rdx` = number of elements. Where Xen's
//! structures hold a guest handle (a pointer, 8 bytes on x86-64) we carry a
//! guest-physical address of the same size.

use crate::event_channel::DomId;

/// A grant reference: an index into the grant table (Xen's `grant_ref_t`).
pub type GrantRef = u32;

/// `GNTTABOP_map_grant_ref` (not implemented: back-ends copy).
pub const GNTTABOP_MAP_GRANT_REF: u32 = 0;
/// `GNTTABOP_unmap_grant_ref` (not implemented).
pub const GNTTABOP_UNMAP_GRANT_REF: u32 = 1;
/// `GNTTABOP_setup_table`: register the guest-owned grant-table frames.
pub const GNTTABOP_SETUP_TABLE: u32 = 2;
/// `GNTTABOP_copy`: copy between granted pages and/or local frames.
pub const GNTTABOP_COPY: u32 = 5;
/// `GNTTABOP_query_size`: current and maximum number of table frames.
pub const GNTTABOP_QUERY_SIZE: u32 = 6;

/// One grant-table frame holds this many v1 entries.
pub const GRANT_ENTRIES_PER_FRAME: usize = crate::layout::PAGE_SIZE as usize / core::mem::size_of::<GrantEntryV1>();

/// A version-1 grant entry (Xen's `grant_entry_v1`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantEntryV1 {
    /// `GTF_*` type and flag bits. The guest writes the type last (after a
    /// write barrier); the VMM sets and clears `GTF_READING`/`GTF_WRITING`.
    pub flags: u16,
    /// The domain allowed to use the grant.
    pub domid: DomId,
    /// The granted guest frame number.
    pub frame: u32,
}
crate::assert_layout!(GrantEntryV1, size = 8, flags = 0, domid = 2, frame = 4);

impl GrantEntryV1 {
    /// An entry permitting `domid` to access `frame`, read-only if asked.
    pub const fn permit_access(domid: DomId, frame: u32, readonly: bool) -> Self {
        let ro = if readonly { GTF_READONLY } else { 0 };
        GrantEntryV1 { flags: GTF_PERMIT_ACCESS | ro, domid, frame }
    }

    /// The entry as the one 64-bit word both sides update atomically (an
    /// aligned little-endian load of the struct's 8 bytes: `flags` in bits
    /// 0..16, `domid` in 16..32, `frame` in 32..64).
    pub const fn to_word(self) -> u64 {
        self.flags as u64 | (self.domid as u64) << 16 | (self.frame as u64) << 32
    }

    /// The entry held in a 64-bit word (see [`to_word`](Self::to_word)).
    pub const fn from_word(w: u64) -> Self {
        GrantEntryV1 { flags: w as u16, domid: (w >> 16) as DomId, frame: (w >> 32) as u32 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_is_the_struct_in_memory() {
        let e = GrantEntryV1 { flags: 0x1234, domid: 0x5678, frame: 0x9abc_def0 };
        // SAFETY: `GrantEntryV1` is 8 bytes of integers with no padding.
        let bytes: [u8; 8] = unsafe { core::mem::transmute(e) };
        assert_eq!(u64::from_le_bytes(bytes), e.to_word());
        assert_eq!(GrantEntryV1::from_word(e.to_word()), e);
    }
}

/// Grant type: the entry is not in use.
pub const GTF_INVALID: u16 = 0;
/// Grant type: the domain may map or copy the frame.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// Grant type: the domain may transfer a frame to us (not implemented).
pub const GTF_ACCEPT_TRANSFER: u16 = 2;
/// Grant type: transitive grant (not implemented).
pub const GTF_TRANSITIVE: u16 = 3;
/// Mask of the type bits.
pub const GTF_TYPE_MASK: u16 = 3;
/// The grantee may only read.
pub const GTF_READONLY: u16 = 1 << 2;
/// Set by the VMM while the grantee reads the frame.
pub const GTF_READING: u16 = 1 << 3;
/// Set by the VMM while the grantee writes the frame.
pub const GTF_WRITING: u16 = 1 << 4;
/// Map write-through (not used).
pub const GTF_PWT: u16 = 1 << 5;
/// Map uncached (not used).
pub const GTF_PCD: u16 = 1 << 6;
/// Map with PAT (not used).
pub const GTF_PAT: u16 = 1 << 7;
/// Sub-page grant (v2 only; not used).
pub const GTF_SUB_PAGE: u16 = 1 << 8;

/// `GnttabCopyPtr::u` names a grant reference (else a local frame).
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
/// `GnttabCopyPtr::u` of the destination names a grant reference.
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;

/// Grant status: success.
pub const GNTST_OKAY: i16 = 0;
/// Grant status: unspecified error.
pub const GNTST_GENERAL_ERROR: i16 = -1;
/// Grant status: unknown domain.
pub const GNTST_BAD_DOMAIN: i16 = -2;
/// Grant status: bad grant reference.
pub const GNTST_BAD_GNTREF: i16 = -3;
/// Grant status: bad handle.
pub const GNTST_BAD_HANDLE: i16 = -4;
/// Grant status: bad virtual address.
pub const GNTST_BAD_VIRT_ADDR: i16 = -5;
/// Grant status: bad device address.
pub const GNTST_BAD_DEV_ADDR: i16 = -6;
/// Grant status: no I/O MMU space.
pub const GNTST_NO_DEVICE_SPACE: i16 = -7;
/// Grant status: permission denied (e.g. write to a read-only grant).
pub const GNTST_PERMISSION_DENIED: i16 = -8;
/// Grant status: bad page.
pub const GNTST_BAD_PAGE: i16 = -9;
/// Grant status: copy crosses a page boundary.
pub const GNTST_BAD_COPY_ARG: i16 = -10;
/// Grant status: address too large.
pub const GNTST_ADDRESS_TOO_BIG: i16 = -11;
/// Grant status: try again.
pub const GNTST_EAGAIN: i16 = -12;
/// Grant status: out of space.
pub const GNTST_NO_SPACE: i16 = -13;

/// Argument of `GNTTABOP_setup_table` (Xen's `gnttab_setup_table`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabSetupTable {
    /// IN: the domain ([`DOMID_SELF`](crate::event_channel::DOMID_SELF)).
    pub dom: DomId,
    /// Zero (alignment hole in Xen's layout).
    pub _pad0: u16,
    /// IN: number of table frames.
    pub nr_frames: u32,
    /// OUT: a `GNTST_*` status.
    pub status: i16,
    /// Zero (alignment hole in Xen's layout).
    pub _pad1: [u8; 6],
    /// IN: guest-physical address of an array of `nr_frames` u64 frame
    /// numbers (Xen: a guest handle to `xen_pfn_t`). In our guest-owned
    /// model the guest fills it with the frames holding its table.
    pub frame_list: u64,
}
crate::assert_layout!(GnttabSetupTable, size = 24, dom = 0, nr_frames = 4, status = 8, frame_list = 16);

/// `GNTTABOP_dump_table`.
pub const GNTTABOP_DUMP_TABLE: u32 = 3;
/// `GNTTABOP_set_version`.
pub const GNTTABOP_SET_VERSION: u32 = 8;
/// `GNTTABOP_get_version`.
pub const GNTTABOP_GET_VERSION: u32 = 10;

/// `GNTTABOP_setup_table` argument as a 32-bit guest lays it out
/// (`compat_gnttab_setup_table`: a 4-byte handle to 32-bit frame numbers).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompatGnttabSetupTable {
    /// IN: the domain.
    pub dom: DomId,
    /// Zero.
    pub _pad0: u16,
    /// IN: number of frames.
    pub nr_frames: u32,
    /// OUT: a `GNTST_*` status.
    pub status: i16,
    /// Zero.
    pub _pad1: u16,
    /// OUT: guest address of an array of `nr_frames` u32 frame numbers.
    pub frame_list: u32,
}
crate::assert_layout!(CompatGnttabSetupTable, size = 16, dom = 0, nr_frames = 4, status = 8, frame_list = 12);

/// Argument of `GNTTABOP_set_version` (`gnttab_set_version`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabSetVersion {
    /// IN: 1 (or 0 to query); OUT: the version in force.
    pub version: u32,
}
crate::assert_layout!(GnttabSetVersion, size = 4, version = 0);

/// Argument of `GNTTABOP_get_version` (`gnttab_get_version`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabGetVersion {
    /// IN: the domain.
    pub dom: DomId,
    /// Zero.
    pub _pad: u16,
    /// OUT: the version.
    pub version: u32,
}
crate::assert_layout!(GnttabGetVersion, size = 8, dom = 0, version = 4);

/// Argument of `GNTTABOP_dump_table` (`gnttab_dump_table`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabDumpTable {
    /// IN: the domain.
    pub dom: DomId,
    /// OUT: a `GNTST_*` status.
    pub status: i16,
}
crate::assert_layout!(GnttabDumpTable, size = 4, dom = 0, status = 2);

/// Argument of `GNTTABOP_query_size` (Xen's `gnttab_query_size`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabQuerySize {
    /// IN: the domain ([`DOMID_SELF`](crate::event_channel::DOMID_SELF)).
    pub dom: DomId,
    /// Zero (alignment hole in Xen's layout).
    pub _pad0: u16,
    /// OUT: current number of frames.
    pub nr_frames: u32,
    /// OUT: maximum number of frames.
    pub max_nr_frames: u32,
    /// OUT: a `GNTST_*` status.
    pub status: i16,
    /// Zero (tail padding in Xen's layout).
    pub _pad1: u16,
}
crate::assert_layout!(GnttabQuerySize, size = 16, dom = 0, nr_frames = 4, max_nr_frames = 8, status = 12);

/// Either a grant reference or a local frame number (Xen's anonymous union
/// in `gnttab_copy_ptr`); which one is given by the `GNTCOPY_*` flags.
#[repr(C)]
#[derive(Clone, Copy)]
pub union GnttabCopyPtrU {
    /// A grant reference of the granting domain.
    pub gref: GrantRef,
    /// A local guest frame number.
    pub gmfn: u64,
}
crate::assert_layout!(GnttabCopyPtrU, size = 8);

impl Default for GnttabCopyPtrU {
    fn default() -> Self {
        GnttabCopyPtrU { gmfn: 0 }
    }
}

impl GnttabCopyPtrU {
    /// The union holding grant reference `gref` (upper bytes zero).
    pub fn from_gref(gref: GrantRef) -> Self {
        GnttabCopyPtrU { gmfn: gref as u64 }
    }

    /// The union holding frame number `gmfn`.
    pub fn from_gmfn(gmfn: u64) -> Self {
        GnttabCopyPtrU { gmfn }
    }

    /// The whole 8 bytes, as a frame number.
    pub fn gmfn(self) -> u64 {
        // SAFETY: both members are plain integers and `gmfn` covers the
        // whole union, so any bit pattern is a valid read.
        unsafe { self.gmfn }
    }

    /// The grant reference: the union's first 4 bytes (x86-64 is little
    /// endian, so the low half of [`gmfn`](Self::gmfn)).
    pub fn gref(self) -> GrantRef {
        self.gmfn() as GrantRef
    }
}

impl core::fmt::Debug for GnttabCopyPtrU {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "GnttabCopyPtrU({:#x})", self.gmfn())
    }
}

/// One side of a grant copy (Xen's `gnttab_copy_ptr`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabCopyPtr {
    /// The grant reference or frame.
    pub u: GnttabCopyPtrU,
    /// The domain owning the page.
    pub domid: DomId,
    /// Byte offset within the page.
    pub offset: u16,
    /// Zero (tail padding in Xen's layout).
    pub _pad: u32,
}
crate::assert_layout!(GnttabCopyPtr, size = 16, u = 0, domid = 8, offset = 10);

/// One element of a `GNTTABOP_copy` batch (Xen's `gnttab_copy`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabCopy {
    /// IN: where to copy from.
    pub source: GnttabCopyPtr,
    /// IN: where to copy to.
    pub dest: GnttabCopyPtr,
    /// IN: bytes to copy; neither side may cross a page boundary.
    pub len: u16,
    /// IN: `GNTCOPY_*` flags.
    pub flags: u16,
    /// OUT: a `GNTST_*` status.
    pub status: i16,
    /// Zero (tail padding in Xen's layout).
    pub _pad: u16,
}
crate::assert_layout!(GnttabCopy, size = 40, source = 0, dest = 16, len = 32, flags = 34, status = 36);
