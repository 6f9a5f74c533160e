//! A shared ring page reached through a grant (or a VMM-owned page), as
//! `RingMemory` for the ring views.

use ring_buffers::{Pod, RawMemory, RingError, RingMemory};
use std::sync::atomic::Ordering;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use xen_domain::grant_table::GrantMapping;

/// One guest page used as a ring, with whatever keeps it valid: a grant
/// mapping (so the guest cannot revoke it while the back-end uses it) or
/// a clone of guest memory (for VMM-assigned pages such as the console).
pub struct RingPage {
    raw: RawMemory,
    _grant: Option<GrantMapping>,
    _mem: GuestMemoryMmap,
}

impl std::fmt::Debug for RingPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingPage").field("base", &self.raw.as_ptr()).finish_non_exhaustive()
    }
}

/// Why a ring page could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RingPageError {
    /// The page is not inside guest memory.
    #[error("ring page {0:#x} is not inside guest RAM")]
    OutOfRange(u64),
    /// The ring layer refused the region.
    #[error("ring page: {0}")]
    Ring(#[from] RingError),
}

impl RingPage {
    fn from_gpa(mem: &GuestMemoryMmap, gpa: u64, grant: Option<GrantMapping>) -> Result<Self, RingPageError> {
        let page = pv_abi::layout::PAGE_SIZE as usize;
        if gpa % page as u64 != 0
            || !vm_memory::GuestMemory::check_range(mem, GuestAddress(gpa), page, vm_memory::Permissions::ReadWrite)
        {
            return Err(RingPageError::OutOfRange(gpa));
        }
        let host = mem.get_host_address(GuestAddress(gpa)).map_err(|_| RingPageError::OutOfRange(gpa))?;
        // The page must not straddle two host mappings.
        let last =
            mem.get_host_address(GuestAddress(gpa + page as u64 - 1)).map_err(|_| RingPageError::OutOfRange(gpa))?;
        if last as usize != host as usize + page - 1 {
            return Err(RingPageError::OutOfRange(gpa));
        }
        // SAFETY: `host..host+page` is mapped guest memory (checked above)
        // that stays mapped while `_mem` (a clone sharing the mmap regions)
        // is alive, which is as long as this `RingPage`. The guest may write
        // it concurrently; `RawMemory` only uses volatile copies and atomics.
        let raw = unsafe { RawMemory::new(host, page) }?;
        Ok(RingPage { raw, _grant: grant, _mem: mem.clone() })
    }

    /// A ring in a granted page; the grant stays mapped while this lives.
    pub fn granted(mapping: GrantMapping) -> Result<Self, RingPageError> {
        let mem = mapping.memory().clone();
        let gpa = mapping.gpa();
        Self::from_gpa(&mem, gpa, Some(mapping))
    }

    /// A ring in a page the VMM assigned at boot (console, store).
    pub fn assigned(mem: &GuestMemoryMmap, gpa: u64) -> Result<Self, RingPageError> {
        Self::from_gpa(mem, gpa, None)
    }
}

impl RingMemory for RingPage {
    fn len(&self) -> usize {
        self.raw.len()
    }
    fn load_u32(&self, offset: usize, order: Ordering) -> u32 {
        self.raw.load_u32(offset, order)
    }
    fn store_u32(&self, offset: usize, val: u32, order: Ordering) {
        self.raw.store_u32(offset, val, order)
    }
    fn read<T: Pod>(&self, offset: usize) -> T {
        self.raw.read(offset)
    }
    fn write<T: Pod>(&self, offset: usize, val: &T) {
        self.raw.write(offset, val)
    }
    fn read_bytes(&self, offset: usize, dst: &mut [u8]) {
        self.raw.read_bytes(offset, dst)
    }
    fn write_bytes(&self, offset: usize, src: &[u8]) {
        self.raw.write_bytes(offset, src)
    }
    fn fence(&self) {
        self.raw.fence()
    }
}

/// Why a back end could not connect to its front end: attach to its
/// ring, read its keys or bind its event channel.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A front-end key is missing or malformed (the store's message).
    #[error("{0}")]
    FrontendKey(String),
    /// The front end does not request rx-copy, the only receive mode a
    /// net back end offers.
    #[error("front end does not request rx-copy (the only receive mode offered)")]
    NoRxCopy,
    /// The front end's `protocol` is neither ring layout we serve.
    #[error(
        "front end's protocol {0:?} is neither {abi64} nor {abi32}",
        abi64 = pv_abi::xenbus::XEN_IO_PROTO_ABI_X86_64,
        abi32 = pv_abi::xenbus::XEN_IO_PROTO_ABI_X86_32
    )]
    Protocol(String),
    /// The front end asked for more ring pages than offered.
    #[error(
        "{order} above {max} {0}",
        order = pv_abi::xenbus::keys::RING_PAGE_ORDER,
        max = pv_abi::xenbus::keys::MAX_RING_PAGE_ORDER
    )]
    RingOrder(u32),
    /// The event channel could not be bound.
    #[error(transparent)]
    Bind(#[from] crate::bind_error::BindError),
    /// The ring grant was refused.
    #[error("ring-ref refused: {0}")]
    Grant(#[from] xen_domain::grant_table::GrantError),
    /// The ring page is unusable.
    #[error(transparent)]
    Ring(#[from] RingPageError),
    /// The ring header is unusable.
    #[error("ring: {0}")]
    RingHeader(#[from] RingError),
}

/// Maps the front end's ring page (grant `ring_ref`, writable; it stays
/// mapped while the ring lives) and attaches a back view to it: the first
/// step of every split back end's `connect`.
pub fn attach_back_ring<Req: Pod, Rsp: Pod>(
    grants: &std::sync::Arc<xen_domain::grant_table::GrantTable>,
    ring_ref: u32,
) -> Result<ring_buffers::BackRing<RingPage, Req, Rsp>, ConnectError> {
    let page = RingPage::granted(grants.map(ring_ref, true)?)?;
    Ok(ring_buffers::BackRing::attach(page)?)
}
