//! A shared ring page reached through a grant (or a VMM-owned page), as
//! `RingMemory` for the ring views.

use ring_buffers::{Pod, RawMemory, RingError, RingMemory};
use std::sync::atomic::Ordering;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use xen_domain::grant_table::GrantMapping;

/// One guest page used as a ring, or the 2^n granted pages of a
/// multi-page ring (`ring-page-order`, `ring-refN`), with whatever keeps
/// them valid: grant mappings (so the guest cannot revoke them while the
/// back-end uses them) or a clone of guest memory (for VMM-assigned pages
/// such as the console).
///
/// A multi-page ring's pages need not be adjacent in guest memory (Xen
/// maps each `ring-refN` on its own, as `xenbus_map_ring_valloc` does):
/// when they are adjacent in the host mapping too (the usual case: a
/// front end allocates its ring as one block), `raw` covers all of them
/// and every access is as cheap as on one page; otherwise `split` holds
/// each page and accesses that straddle two pages are copied in pieces.
pub struct RingPage {
    raw: RawMemory,
    split: Option<Vec<RawMemory>>,
    _grants: Vec<GrantMapping>,
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
    /// A multi-page ring whose page count is not a power of two.
    #[error("a ring of {0} pages (must be a power of two)")]
    PageCount(usize),
    /// The ring layer refused the region.
    #[error("ring page: {0}")]
    Ring(#[from] RingError),
}

impl RingPage {
    /// The host address of the guest page at `gpa`, checked to be inside
    /// guest RAM and not to straddle two host mappings.
    fn host_page(mem: &GuestMemoryMmap, gpa: u64) -> Result<*mut u8, RingPageError> {
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
        Ok(host)
    }

    fn from_gpa(mem: &GuestMemoryMmap, gpa: u64, grant: Option<GrantMapping>) -> Result<Self, RingPageError> {
        let page = pv_abi::layout::PAGE_SIZE as usize;
        let host = Self::host_page(mem, gpa)?;
        // SAFETY: `host..host+page` is mapped guest memory (checked by
        // `host_page`) that stays mapped while `_mem` (a clone sharing the
        // mmap regions) is alive, which is as long as this `RingPage`. The
        // guest may write it concurrently; `RawMemory` only uses volatile
        // copies and atomics.
        let raw = unsafe { RawMemory::new(host, page) }?;
        Ok(RingPage { raw, split: None, _grants: grant.into_iter().collect(), _mem: mem.clone() })
    }

    /// A ring in a granted page; the grant stays mapped while this lives.
    pub fn granted(mapping: GrantMapping) -> Result<Self, RingPageError> {
        let mem = mapping.memory().clone();
        let gpa = mapping.gpa();
        Self::from_gpa(&mem, gpa, Some(mapping))
    }

    /// A ring over the granted pages `mappings`, in order (a multi-page
    /// ring: `ring-ref0`..`ring-ref<2^order - 1>`); the grants stay mapped
    /// while this lives.
    pub fn granted_pages(mappings: Vec<GrantMapping>) -> Result<Self, RingPageError> {
        let n = mappings.len();
        if !n.is_power_of_two() {
            return Err(RingPageError::PageCount(n));
        }
        if n == 1 {
            return Self::granted(mappings.into_iter().next().expect("one mapping"));
        }
        let page = pv_abi::layout::PAGE_SIZE as usize;
        let mem = mappings[0].memory().clone();
        let hosts = mappings.iter().map(|m| Self::host_page(&mem, m.gpa())).collect::<Result<Vec<_>, _>>()?;
        let adjacent = hosts.windows(2).all(|w| w[1] as usize == w[0] as usize + page);
        // SAFETY: each `host..host+page` is mapped guest memory (checked by
        // `host_page`), kept mapped by `_mem` for this value's life; when
        // `adjacent`, the pages form one range `hosts[0]..+n*page` of the
        // same mapping. Only volatile copies and atomics touch them.
        let raw = unsafe { RawMemory::new(hosts[0], if adjacent { n * page } else { page }) }?;
        let split = if adjacent {
            None
        } else {
            // SAFETY: as above, one page each.
            Some(hosts.iter().map(|&h| unsafe { RawMemory::new(h, page) }).collect::<Result<Vec<_>, _>>()?)
        };
        Ok(RingPage { raw, split, _grants: mappings, _mem: mem })
    }

    /// Calls `f(page, offset in page, range in the caller's buffer)` for
    /// each piece of `offset..offset+len` of a split ring, page by page.
    fn pieces(
        split: &[RawMemory],
        offset: usize,
        len: usize,
        mut f: impl FnMut(&RawMemory, usize, std::ops::Range<usize>),
    ) {
        let page = pv_abi::layout::PAGE_SIZE as usize;
        let mut done = 0;
        while done < len {
            let at = offset + done;
            let n = (page - at % page).min(len - done);
            let Some(p) = split.get(at / page) else {
                panic!("ring-buffers bug: access {offset}+{len} outside a {}-page ring", split.len());
            };
            f(p, at % page, done..done + n);
            done += n;
        }
    }

    /// A ring in a page the VMM assigned at boot (console, store).
    pub fn assigned(mem: &GuestMemoryMmap, gpa: u64) -> Result<Self, RingPageError> {
        Self::from_gpa(mem, gpa, None)
    }
}

impl RingMemory for RingPage {
    fn len(&self) -> usize {
        match &self.split {
            None => self.raw.len(),
            Some(pages) => pages.len() * pv_abi::layout::PAGE_SIZE as usize,
        }
    }
    // Indices live in the header, in the first page: `raw` in both cases.
    fn load_u32(&self, offset: usize, order: Ordering) -> u32 {
        self.raw.load_u32(offset, order)
    }
    fn store_u32(&self, offset: usize, val: u32, order: Ordering) {
        self.raw.store_u32(offset, val, order)
    }
    fn read<T: Pod>(&self, offset: usize) -> T {
        let Some(split) = &self.split else { return self.raw.read(offset) };
        let mut out = std::mem::MaybeUninit::<T>::zeroed();
        // SAFETY: `out` is a local of `size_of::<T>()` bytes, zeroed (so
        // initialised); the slice is its only access until `assume_init`.
        let bytes = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), std::mem::size_of::<T>()) };
        Self::pieces(split, offset, bytes.len(), |p, at, r| p.read_bytes(at, &mut bytes[r]));
        // SAFETY: every byte is initialised (zeroed, then copied into) and
        // `T: Pod` accepts any bytes.
        unsafe { out.assume_init() }
    }
    fn write<T: Pod>(&self, offset: usize, val: &T) {
        let Some(split) = &self.split else { return self.raw.write(offset, val) };
        // SAFETY: `val` is a live `T` of `size_of::<T>()` bytes, read only
        // here; `T: Pod` wire structures have explicit padding fields (see
        // `pv_abi::Pod`), so every byte is initialised.
        let bytes = unsafe { std::slice::from_raw_parts((val as *const T).cast::<u8>(), std::mem::size_of::<T>()) };
        Self::pieces(split, offset, bytes.len(), |p, at, r| p.write_bytes(at, &bytes[r]));
    }
    fn read_bytes(&self, offset: usize, dst: &mut [u8]) {
        let Some(split) = &self.split else { return self.raw.read_bytes(offset, dst) };
        Self::pieces(split, offset, dst.len(), |p, at, r| p.read_bytes(at, &mut dst[r]));
    }
    fn write_bytes(&self, offset: usize, src: &[u8]) {
        let Some(split) = &self.split else { return self.raw.write_bytes(offset, src) };
        Self::pieces(split, offset, src.len(), |p, at, r| p.write_bytes(at, &src[r]));
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
    /// The front end asked for no queue or more than offered (Linux's
    /// blkback and netback message).
    #[error("guest requested {requested} queues, exceeding the maximum of {max}.")]
    Queues {
        /// `multi-queue-num-queues`.
        requested: u32,
        /// `multi-queue-max-queues`.
        max: u32,
    },
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
    attach_back_ring_pages(grants, &[ring_ref])
}

/// Maps the 2^n pages of a multi-page ring (`ring-ref0`.. in order, each
/// writable; they stay mapped while the ring lives) and attaches a back
/// view to them. A refused grant unmaps the ones already mapped.
pub fn attach_back_ring_pages<Req: Pod, Rsp: Pod>(
    grants: &std::sync::Arc<xen_domain::grant_table::GrantTable>,
    ring_refs: &[u32],
) -> Result<ring_buffers::BackRing<RingPage, Req, Rsp>, ConnectError> {
    let mappings = ring_refs.iter().map(|&r| grants.map(r, true)).collect::<Result<Vec<_>, _>>()?;
    let pages = RingPage::granted_pages(mappings)?;
    Ok(ring_buffers::BackRing::attach(pages)?)
}
