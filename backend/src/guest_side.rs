//! The guest half every host-side front end needs (the block and net
//! harnesses): guest memory laid out like a small guest, a v1 grant table
//! in it that the harness fills as the guest would, and data pages each
//! granted to domain 0 under a reference of its own. Back ends reach all of
//! it only through the [`GrantTable`], exactly as in the VMM.

use pv_abi::event_channel::DOMID_VMM;
use pv_abi::grant_table::{GrantEntryV1, GrantRef, GRANT_ENTRIES_PER_FRAME, GTF_PERMIT_ACCESS};
use pv_abi::layout::PAGE_SIZE;
use std::sync::Arc;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use xen_domain::grant_table::GrantTable;

/// Guest-physical address of the grant table.
pub const TABLE: u64 = 0x10_0000;
/// Grant-table frames (2048 references).
pub const TABLE_FRAMES: u64 = 4;
/// Guest-physical address of the first page after the grant table: where a
/// harness puts its ring pages.
pub const AFTER_TABLE: u64 = TABLE + TABLE_FRAMES * PAGE_SIZE;
/// First data page's grant reference (lower references are the harness's
/// rings and indirect pages).
pub const FIRST_DATA_GREF: GrantRef = 16;
/// Most data pages a harness can have.
pub const MAX_DATA_PAGES: u32 = (TABLE_FRAMES as u32) * GRANT_ENTRIES_PER_FRAME as u32 - FIRST_DATA_GREF;

/// Guest memory, its grant table and its granted data pages.
pub struct GuestSide {
    mem: GuestMemoryMmap,
    grants: Arc<GrantTable>,
    data: u64,
    pages: u32,
}

impl std::fmt::Debug for GuestSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestSide").field("data", &self.data).field("pages", &self.pages).finish_non_exhaustive()
    }
}

impl GuestSide {
    /// Memory up to the end of `pages` data pages (at most
    /// [`MAX_DATA_PAGES`]) starting at `data`, the grant table set up, and
    /// every data page granted read-write.
    pub fn new(data: u64, pages: u32) -> std::io::Result<Self> {
        let pages = pages.min(MAX_DATA_PAGES);
        let end = data + u64::from(pages) * PAGE_SIZE;
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), end as usize)]).map_err(std::io::Error::other)?;
        let grants = Arc::new(GrantTable::new(mem.clone(), TABLE, end));
        let frames: Vec<u64> = (0..TABLE_FRAMES).map(|i| TABLE / PAGE_SIZE + i).collect();
        grants.setup(&frames).map_err(|e| std::io::Error::other(format!("grant setup: {e}")))?;
        let side = GuestSide { mem, grants, data, pages };
        for i in 0..pages {
            side.set_grant(side.page_gref(i), side.page_gpa(i), GTF_PERMIT_ACCESS);
        }
        Ok(side)
    }

    /// The guest memory.
    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The grant table back ends map through.
    pub fn grants(&self) -> &Arc<GrantTable> {
        &self.grants
    }

    /// Number of data pages.
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// The grant reference of data page `i`.
    pub fn page_gref(&self, i: u32) -> GrantRef {
        FIRST_DATA_GREF + i
    }

    /// The guest-physical address of data page `i`.
    pub fn page_gpa(&self, i: u32) -> u64 {
        assert!(i < self.pages, "data page {i} of {}", self.pages);
        self.data + u64::from(i) * PAGE_SIZE
    }

    /// Writes a grant entry as the guest would (any values: hostile tests
    /// forge entries with this).
    pub fn set_grant(&self, gref: GrantRef, gpa: u64, flags: u16) {
        let at = TABLE + u64::from(gref) * std::mem::size_of::<GrantEntryV1>() as u64;
        let e = GrantEntryV1 { flags, domid: DOMID_VMM, frame: (gpa / PAGE_SIZE) as u32 };
        self.mem.write_obj(e.to_word(), GuestAddress(at)).expect("grant table inside harness memory");
    }

    /// Writes `data` into data page `i` at `offset`.
    pub fn write_page(&self, i: u32, offset: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(self.page_gpa(i) + offset)).expect("inside the page area");
    }

    /// Reads data page `i` at `offset`.
    pub fn read_page(&self, i: u32, offset: u64, buf: &mut [u8]) {
        self.mem.read_slice(buf, GuestAddress(self.page_gpa(i) + offset)).expect("inside the page area");
    }
}
