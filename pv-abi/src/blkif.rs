//! The block-device ring protocol (Xen's `io/blkif.h`, x86-64 layout).
//!
//! Requests are 112 bytes and carry up to [`BLKIF_MAX_SEGMENTS_PER_REQUEST`]
//! segments of 512-byte sectors within granted pages; indirect requests
//! carry grant references of pages full of segments instead.

use crate::grant_table::GrantRef;

/// A virtual device handle (Xen's `blkif_vdev_t`).
pub type BlkifVdev = u16;
/// A 512-byte sector number (Xen's `blkif_sector_t`).
pub type BlkifSector = u64;

/// Device type name in the store (Xen's virtual block device:
/// `device/vbd/<vdev>`).
pub const DEVICE_TYPE: &str = "vbd";

/// `info` bit: the disk is read-only (Xen's `VDISK_READONLY`).
pub const VDISK_READONLY: u32 = 4;

/// Store keys of a virtual block device (beyond `xenbus::keys`), as in
/// Xen's `io/blkif.h`.
pub mod keys {
    /// Back end: size in 512-byte sectors.
    pub const SECTORS: &str = "sectors";
    /// Back end: logical sector size in bytes.
    pub const SECTOR_SIZE: &str = "sector-size";
    /// Back end: physical sector size in bytes.
    pub const PHYSICAL_SECTOR_SIZE: &str = "physical-sector-size";
    /// Back end: `VDISK_*` bits.
    pub const INFO: &str = "info";
    /// Back end: `r` or `w`.
    pub const MODE: &str = "mode";
    /// Back end: `BLKIF_OP_FLUSH_DISKCACHE` is supported (`1`).
    pub const FEATURE_FLUSH_CACHE: &str = "feature-flush-cache";
    /// Back end: `BLKIF_OP_DISCARD` is supported (`1`).
    pub const FEATURE_DISCARD: &str = "feature-discard";
    /// Back end: discard granularity in bytes.
    pub const DISCARD_GRANULARITY: &str = "discard-granularity";
    /// Back end: discard alignment in bytes.
    pub const DISCARD_ALIGNMENT: &str = "discard-alignment";
    /// Back end: most segments of an indirect request (0 or absent: none).
    pub const FEATURE_MAX_INDIRECT_SEGMENTS: &str = "feature-max-indirect-segments";
}

/// Sector size the protocol counts in.
pub const SECTOR_SIZE: u64 = 512;
/// Sectors per page.
pub const SECTORS_PER_PAGE: u64 = crate::layout::PAGE_SIZE / SECTOR_SIZE;

/// Read sectors into granted pages.
pub const BLKIF_OP_READ: u8 = 0;
/// Write sectors from granted pages.
pub const BLKIF_OP_WRITE: u8 = 1;
/// Write barrier (obsolete; not supported).
pub const BLKIF_OP_WRITE_BARRIER: u8 = 2;
/// Flush the disk cache before responding (`fdatasync`).
pub const BLKIF_OP_FLUSH_DISKCACHE: u8 = 3;
/// Reserved.
pub const BLKIF_OP_RESERVED_1: u8 = 4;
/// Discard sectors (see [`BlkifRequestDiscard`]).
pub const BLKIF_OP_DISCARD: u8 = 5;
/// Indirect request (see [`BlkifRequestIndirect`]).
pub const BLKIF_OP_INDIRECT: u8 = 6;

/// Segments in a direct request.
pub const BLKIF_MAX_SEGMENTS_PER_REQUEST: usize = 11;
/// Maximum indirect pages in an indirect request.
pub const BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST: usize = 8;
/// Segments per indirect page.
pub const BLKIF_SEGS_PER_INDIRECT_FRAME: usize =
    crate::layout::PAGE_SIZE as usize / core::mem::size_of::<BlkifRequestSegment>();

/// `BlkifRequestDiscard::flag`: securely erase.
pub const BLKIF_DISCARD_SECURE: u8 = 1 << 0;

/// Response status: success.
pub const BLKIF_RSP_OKAY: i16 = 0;
/// Response status: I/O error.
pub const BLKIF_RSP_ERROR: i16 = -1;
/// Response status: operation not supported.
pub const BLKIF_RSP_EOPNOTSUPP: i16 = -2;

/// One segment: a sector range within a granted page
/// (Xen's `blkif_request_segment`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkifRequestSegment {
    /// Grant reference of the data page.
    pub gref: GrantRef,
    /// First sector within the page (inclusive, 0..=7).
    pub first_sect: u8,
    /// Last sector within the page (inclusive, `first_sect..=7`).
    pub last_sect: u8,
    /// Zero (tail padding in Xen's layout).
    pub _pad: u16,
}
crate::assert_layout!(BlkifRequestSegment, size = 8, gref = 0, first_sect = 4, last_sect = 5);

/// A block request (Xen's `blkif_request`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkifRequest {
    /// `BLKIF_OP_*`.
    pub operation: u8,
    /// Number of valid entries in `seg` (1..=11 for read/write).
    pub nr_segments: u8,
    /// Device handle (read/write only).
    pub handle: BlkifVdev,
    /// Zero (alignment hole in Xen's layout).
    pub _pad: u32,
    /// Private front-end value echoed in the response.
    pub id: u64,
    /// First sector on the disk (read/write only).
    pub sector_number: BlkifSector,
    /// The segments.
    pub seg: [BlkifRequestSegment; BLKIF_MAX_SEGMENTS_PER_REQUEST],
}
crate::assert_layout!(
    BlkifRequest,
    size = 112,
    operation = 0,
    nr_segments = 1,
    handle = 2,
    id = 8,
    sector_number = 16,
    seg = 24
);

/// A discard request, overlaid on a [`BlkifRequest`] slot when `operation`
/// is [`BLKIF_OP_DISCARD`] (Xen's `blkif_request_discard`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkifRequestDiscard {
    /// [`BLKIF_OP_DISCARD`].
    pub operation: u8,
    /// [`BLKIF_DISCARD_SECURE`] or 0.
    pub flag: u8,
    /// Device handle.
    pub handle: BlkifVdev,
    /// Zero (alignment hole in Xen's layout).
    pub _pad: u32,
    /// Private front-end value echoed in the response.
    pub id: u64,
    /// First sector to discard.
    pub sector_number: BlkifSector,
    /// Number of sectors to discard.
    pub nr_sectors: u64,
}
crate::assert_layout!(
    BlkifRequestDiscard,
    size = 32,
    operation = 0,
    flag = 1,
    handle = 2,
    id = 8,
    sector_number = 16,
    nr_sectors = 24
);

/// An indirect request, overlaid on a [`BlkifRequest`] slot when
/// `operation` is [`BLKIF_OP_INDIRECT`] (Xen's `blkif_request_indirect`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkifRequestIndirect {
    /// [`BLKIF_OP_INDIRECT`].
    pub operation: u8,
    /// The real operation: [`BLKIF_OP_READ`] or [`BLKIF_OP_WRITE`].
    pub indirect_op: u8,
    /// Number of segments, spread over the indirect pages.
    pub nr_segments: u16,
    /// Zero (alignment hole in Xen's layout).
    pub _pad0: u32,
    /// Private front-end value echoed in the response.
    pub id: u64,
    /// First sector on the disk.
    pub sector_number: BlkifSector,
    /// Device handle.
    pub handle: BlkifVdev,
    /// Zero (alignment hole in Xen's layout).
    pub _pad1: u16,
    /// Grant references of pages full of [`BlkifRequestSegment`]s.
    pub indirect_grefs: [GrantRef; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST],
    /// Zero (tail padding in Xen's layout).
    pub _pad2: u32,
}
crate::assert_layout!(
    BlkifRequestIndirect,
    size = 64,
    operation = 0,
    indirect_op = 1,
    nr_segments = 2,
    id = 8,
    sector_number = 16,
    handle = 24,
    indirect_grefs = 28
);
const _: () = assert!(core::mem::size_of::<BlkifRequestIndirect>() <= core::mem::size_of::<BlkifRequest>());
const _: () = assert!(core::mem::size_of::<BlkifRequestDiscard>() <= core::mem::size_of::<BlkifRequest>());

/// A block response (Xen's `blkif_response`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkifResponse {
    /// The request's `id`.
    pub id: u64,
    /// The request's `operation`.
    pub operation: u8,
    /// Zero (alignment hole in Xen's layout).
    pub _pad0: u8,
    /// `BLKIF_RSP_*`.
    pub status: i16,
    /// Zero (tail padding in Xen's layout).
    pub _pad1: u32,
}
crate::assert_layout!(BlkifResponse, size = 16, id = 0, operation = 8, status = 10);

crate::pod::impl_pod!(BlkifRequest, BlkifRequestSegment, BlkifRequestDiscard, BlkifRequestIndirect, BlkifResponse);
crate::pod::impl_pod!(x86_32::Request, x86_32::Response);

/// Slots in a one-page block ring (Xen's `__CONST_RING_SIZE(blkif, 4096)`).
pub const BLKIF_RING_SIZE: u32 =
    crate::ring::ring_size(crate::layout::PAGE_SIZE as usize, crate::ring::slot_size::<BlkifRequest, BlkifResponse>());
const _: () = assert!(BLKIF_RING_SIZE == 32);

impl BlkifRequestSegment {
    /// Sectors `first_sect..=last_sect` of the page granted as `gref`.
    pub const fn new(gref: GrantRef, first_sect: u8, last_sect: u8) -> Self {
        BlkifRequestSegment { gref, first_sect, last_sect, _pad: 0 }
    }
}

impl BlkifRequest {
    /// A direct request (read, write or flush) of `segs` (at most
    /// [`BLKIF_MAX_SEGMENTS_PER_REQUEST`]; more are ignored) from `sector`.
    pub fn direct(operation: u8, id: u64, sector_number: BlkifSector, segs: &[BlkifRequestSegment]) -> Self {
        let n = segs.len().min(BLKIF_MAX_SEGMENTS_PER_REQUEST);
        let mut r = BlkifRequest { operation, nr_segments: n as u8, id, sector_number, ..Default::default() };
        r.seg[..n].copy_from_slice(&segs[..n]);
        r
    }
    /// Reinterprets this slot as a discard request.
    pub fn as_discard(&self) -> BlkifRequestDiscard {
        let mut out = BlkifRequestDiscard::default();
        copy_prefix(self, &mut out);
        out
    }
    /// Reinterprets this slot as an indirect request.
    pub fn as_indirect(&self) -> BlkifRequestIndirect {
        let mut out = BlkifRequestIndirect::default();
        copy_prefix(self, &mut out);
        out
    }
    /// Builds a request slot holding a discard request.
    pub fn from_discard(d: &BlkifRequestDiscard) -> Self {
        let mut out = BlkifRequest::default();
        copy_prefix(d, &mut out);
        out
    }
    /// Builds a request slot holding an indirect request.
    pub fn from_indirect(d: &BlkifRequestIndirect) -> Self {
        let mut out = BlkifRequest::default();
        copy_prefix(d, &mut out);
        out
    }
}

/// Copies the first `min(size_of::<A>(), size_of::<B>())` bytes of `src`
/// into `dst`. Both types are plain integers with every bit pattern valid.
fn copy_prefix<A: Copy, B: Copy>(src: &A, dst: &mut B) {
    let n = core::cmp::min(core::mem::size_of::<A>(), core::mem::size_of::<B>());
    // SAFETY: both pointers come from references valid for at least `n`
    // bytes, they do not overlap (`dst` is a distinct `&mut`), and only this
    // module calls it with the all-integer blkif types, so any bytes form a
    // valid `B`.
    unsafe { core::ptr::copy_nonoverlapping(src as *const A as *const u8, dst as *mut B as *mut u8, n) };
}

/// The 32-bit x86 ring layout (front ends that write `protocol =
/// x86_32-abi`, Xen's `blkif_x86_32_request` in `io/protocols.h` users):
/// 64-bit fields are only 4-byte aligned, so the request is 108 bytes and
/// the response 12.
pub mod x86_32 {
    use super::{BlkifRequestSegment, BlkifSector, BlkifVdev, BLKIF_MAX_SEGMENTS_PER_REQUEST};
    use crate::grant_table::GrantRef;

    /// The `protocol` value naming this layout (`XEN_IO_PROTO_ABI_X86_32`).
    pub const PROTOCOL: &str = "x86_32-abi";

    /// `blkif_x86_32_request` (read/write layout; discard and indirect
    /// requests are overlaid as [`as_discard`](Self::as_discard) and
    /// [`as_indirect`](Self::as_indirect) read them).
    #[repr(C, packed(4))]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Request {
        /// `BLKIF_OP_*`.
        pub operation: u8,
        /// Segments in `seg`.
        pub nr_segments: u8,
        /// Device handle.
        pub handle: BlkifVdev,
        /// Echoed in the response.
        pub id: u64,
        /// First sector.
        pub sector_number: BlkifSector,
        /// The segments.
        pub seg: [BlkifRequestSegment; BLKIF_MAX_SEGMENTS_PER_REQUEST],
    }
    crate::assert_layout!(
        Request,
        size = 108,
        operation = 0,
        nr_segments = 1,
        handle = 2,
        id = 4,
        sector_number = 12,
        seg = 20
    );

    /// `blkif_x86_32_response`.
    #[repr(C, packed(4))]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Response {
        /// The request's `id`.
        pub id: u64,
        /// The request's `operation`.
        pub operation: u8,
        /// Zero.
        pub _pad0: u8,
        /// `BLKIF_RSP_*`.
        pub status: i16,
    }
    crate::assert_layout!(Response, size = 12, id = 0, operation = 8, status = 10);

    /// Slots in a one-page ring of this layout.
    pub const RING_SIZE: u32 =
        crate::ring::ring_size(crate::layout::PAGE_SIZE as usize, crate::ring::slot_size::<Request, Response>());
    const _: () = assert!(RING_SIZE == 32);

    fn u64_at(b: &[u8], at: usize) -> u64 {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(v)
    }

    impl Request {
        fn bytes(&self) -> [u8; 108] {
            let mut out = [0u8; 108];
            // SAFETY: `Request` is 108 bytes of plain integers (packed, no
            // padding bytes), so reading it as bytes is sound.
            unsafe { core::ptr::copy_nonoverlapping(self as *const Self as *const u8, out.as_mut_ptr(), 108) };
            out
        }

        /// The same request in the native (x86-64) layout.
        pub fn to_native(&self) -> super::BlkifRequest {
            let b = self.bytes();
            match self.operation {
                super::BLKIF_OP_DISCARD => super::BlkifRequest::from_discard(&super::BlkifRequestDiscard {
                    operation: b[0],
                    flag: b[1],
                    handle: u16::from_le_bytes([b[2], b[3]]),
                    id: u64_at(&b, 4),
                    sector_number: u64_at(&b, 12),
                    nr_sectors: u64_at(&b, 20),
                    ..Default::default()
                }),
                super::BLKIF_OP_INDIRECT => {
                    let mut grefs = [0 as GrantRef; super::BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
                    for (i, g) in grefs.iter_mut().enumerate() {
                        *g = u32::from_le_bytes(b[24 + i * 4..28 + i * 4].try_into().expect("4 bytes"));
                    }
                    super::BlkifRequest::from_indirect(&super::BlkifRequestIndirect {
                        operation: b[0],
                        indirect_op: b[1],
                        nr_segments: u16::from_le_bytes([b[2], b[3]]),
                        id: u64_at(&b, 4),
                        sector_number: u64_at(&b, 12),
                        handle: u16::from_le_bytes([b[20], b[21]]),
                        indirect_grefs: grefs,
                        ..Default::default()
                    })
                }
                _ => super::BlkifRequest {
                    operation: self.operation,
                    nr_segments: self.nr_segments,
                    handle: self.handle,
                    id: self.id,
                    sector_number: self.sector_number,
                    seg: self.seg,
                    ..Default::default()
                },
            }
        }
    }

    impl From<super::BlkifResponse> for Response {
        fn from(r: super::BlkifResponse) -> Self {
            Response { id: r.id, operation: r.operation, _pad0: 0, status: r.status }
        }
    }
}
