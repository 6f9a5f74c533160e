//! virtio front ends through the third-party `virtio-drivers` crate: the
//! [`Hal`] it needs (DMA pages from the guest's page allocator, addresses
//! through the identity map), the devices start-info lists, and the
//! interrupt vector the devices' MSIs arrive on.
//!
//! The drivers themselves (`MmioTransport`, `VirtIOBlk`) are not ours: the
//! point is that the VMM's virtio devices are checked against a front end
//! their authors did not write.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};
use pv_abi::layout::PAGE_SIZE;
use pv_abi::virtio::{device_id, VirtioMmioDevice};
use virtio_drivers::device::blk::VirtIOBlk;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

/// The `Hal` over this guest: physical = virtual (the boot identity map),
/// DMA pages from [`crate::pages`] (a bump allocator: never returned).
#[derive(Debug)]
pub struct PvHal;

// SAFETY: `dma_alloc` returns fresh zeroed pages no one else owns (the bump
// allocator hands each page out once), page aligned and identity mapped;
// `share` returns the identity-mapped physical address of the caller's own
// buffer; `mmio_phys_to_virt` returns the identity-mapped register block.
unsafe impl Hal for PvHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let gpa = crate::pages::alloc(pages as u64).unwrap_or_else(|| panic!("virtio: out of DMA pages"));
        let ptr = NonNull::new(gpa as *mut u8).unwrap_or_else(|| panic!("virtio: page at 0"));
        (gpa, ptr)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) -> i32 {
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).unwrap_or_else(|| panic!("virtio: MMIO at 0"))
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as u64
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// A virtio-blk device driven by `virtio-drivers`.
pub type Blk = VirtIOBlk<PvHal, MmioTransport<'static>>;

/// Queue size the guest's virtio-net driver uses.
pub const NET_QUEUE_SIZE: usize = 16;

/// A virtio-net device driven by `virtio-drivers` (the raw driver: this
/// guest has no heap, so it posts its own buffers).
pub type Net = VirtIONetRaw<PvHal, MmioTransport<'static>, NET_QUEUE_SIZE>;

/// Why a device could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The start-info entry is not a block device or is too small.
    NotBlock,
    /// The start-info entry is not a network device or is too small.
    NotNet,
    /// The transport refused the register block.
    Mmio(virtio_drivers::transport::mmio::MmioError),
    /// The driver's initialisation failed.
    Driver(virtio_drivers::Error),
}

/// Opens the block device start-info lists in `dev`.
pub fn open_blk(dev: &VirtioMmioDevice) -> Result<Blk, OpenError> {
    if dev.device_id != device_id::BLOCK || dev.size < 0x200 {
        return Err(OpenError::NotBlock);
    }
    let header = NonNull::new(dev.base as *mut VirtIOHeader).ok_or(OpenError::NotBlock)?;
    // SAFETY: the VMM lists this register block in start-info: `base` is a
    // page-aligned MMIO region of `size` bytes in the identity map, used
    // by nothing else in this guest for the rest of its life.
    let transport = unsafe { MmioTransport::new(header, dev.size as usize) }.map_err(OpenError::Mmio)?;
    install_vector(dev.vector);
    VirtIOBlk::new(transport).map_err(OpenError::Driver)
}

/// Opens the network device start-info lists in `dev`.
pub fn open_net(dev: &VirtioMmioDevice) -> Result<Net, OpenError> {
    if dev.device_id != device_id::NET || dev.size < 0x200 {
        return Err(OpenError::NotNet);
    }
    let header = NonNull::new(dev.base as *mut VirtIOHeader).ok_or(OpenError::NotNet)?;
    // SAFETY: as in `open_blk`: a register block start-info lists, used by
    // nothing else in this guest.
    let transport = unsafe { MmioTransport::new(header, dev.size as usize) }.map_err(OpenError::Mmio)?;
    install_vector(dev.vector);
    VirtIONetRaw::new(transport).map_err(OpenError::Driver)
}

/// Interrupts taken on virtio vectors.
static IRQS: AtomicU64 = AtomicU64::new(0);

/// Interrupts taken on virtio vectors so far.
pub fn interrupts() -> u64 {
    IRQS.load(SeqCst)
}

/// The Rust side of the virtio interrupt stub: count, EOI. The drivers
/// poll their used rings, so nothing else is needed.
extern "C" fn pv_virtio_irq_handler() {
    IRQS.fetch_add(1, SeqCst);
    crate::evtchn::eoi();
}

crate::interrupts::interrupt_entry!("pv_virtio_irq_entry", pv_virtio_irq_handler);

extern "C" {
    fn pv_virtio_irq_entry();
}

fn install_vector(vector: u32) {
    if let Ok(v) = u8::try_from(vector) {
        if v >= 32 {
            crate::interrupts::install(v, pv_virtio_irq_entry as *const () as u64);
        }
    }
}

/// `len` bytes at byte `at` of `buf` as a byte slice for a driver call.
///
/// # Safety
/// Nothing else may access that part of the buffer while the slice lives
/// (the device writes it only while a request on it is in flight).
pub unsafe fn io_slice(buf: &crate::blkfront::IoBuf, at: u64, len: u64) -> &'static mut [u8] {
    assert!(at + len <= buf.pages * PAGE_SIZE, "slice outside the buffer");
    // SAFETY: inside the buffer's pages (checked above), which are
    // identity mapped and owned by this guest for its life; exclusivity is
    // the caller's contract.
    unsafe { core::slice::from_raw_parts_mut((buf.gpa + at) as *mut u8, len as usize) }
}
