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

/// `VIRTIO_NET_F_MTU` (virtio 1.x 5.1.3): the config's `mtu` is valid.
const VIRTIO_NET_F_MTU: u64 = 1 << 3;
/// Offset of `mtu` in `struct virtio_net_config` (virtio 1.x 5.1.4).
const NET_CONFIG_MTU: usize = 10;

/// Opens the network device start-info lists in `dev`; also the MTU the
/// device reports, if it offers `VIRTIO_NET_F_MTU`. The field may be read
/// before the features are negotiated (virtio 1.x 2.5.1); `virtio-drivers`
/// does not negotiate the feature, so the value is the host side's advice.
pub fn open_net(dev: &VirtioMmioDevice) -> Result<(Net, Option<u16>), OpenError> {
    if dev.device_id != device_id::NET || dev.size < 0x200 {
        return Err(OpenError::NotNet);
    }
    let header = NonNull::new(dev.base as *mut VirtIOHeader).ok_or(OpenError::NotNet)?;
    // SAFETY: as in `open_blk`: a register block start-info lists, used by
    // nothing else in this guest.
    let mut transport = unsafe { MmioTransport::new(header, dev.size as usize) }.map_err(OpenError::Mmio)?;
    use virtio_drivers::transport::Transport as _;
    let offers_mtu = transport.read_device_features() & VIRTIO_NET_F_MTU != 0;
    let mtu = offers_mtu.then(|| transport.read_config_space::<u16>(NET_CONFIG_MTU).ok()).flatten();
    install_vector(dev.vector);
    Ok((VirtIONetRaw::new(transport).map_err(OpenError::Driver)?, mtu))
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

/// Bytes per receive buffer: the virtio-net header and a 1514-byte frame
/// (no mergeable buffers are negotiated, so a frame must fit one buffer).
const NET_RX_LEN: usize = 2048;
/// Receive buffers kept posted (every descriptor of the receive queue).
const NET_RX_BUFS: usize = NET_QUEUE_SIZE;

/// Counters of a [`NetDevice`].
#[derive(Debug, Default, Clone, Copy)]
pub struct NetDeviceMetrics {
    /// Frames handed to the stack.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Completions the driver refused (bad length or token).
    pub rx_errors: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Frames the driver could not send.
    pub tx_errors: u64,
}

/// A virtio-net device under `smoltcp`: [`Net`] (`virtio-drivers`' raw
/// driver) with every receive descriptor posted to a buffer of its own. A
/// received frame is copied out and its buffer posted again at once, so
/// the stack's receive and transmit tokens need not share the driver; a
/// frame is sent with the driver's blocking `send` (the device completes
/// it on its own thread).
pub struct NetDevice {
    net: Net,
    rx: &'static mut [u8],
    /// The driver's token for each posted receive buffer.
    tokens: [Option<u16>; NET_RX_BUFS],
    frame: &'static mut [u8],
    tx: &'static mut [u8],
    rx_c: NetDeviceMetrics,
    tx_c: NetDeviceMetrics,
    mtu: usize,
}

impl NetDevice {
    /// Takes over `net` and posts its receive buffers.
    pub fn new(net: Net) -> Result<Self, OpenError> {
        let pages = |bytes: usize| {
            let gpa = crate::pages::alloc(bytes.div_ceil(PAGE_SIZE as usize) as u64).ok_or(OpenError::NotNet)?;
            // SAFETY: fresh zeroed pages from the bump allocator, identity
            // mapped and never handed out again: only this slice names them.
            Ok(unsafe { core::slice::from_raw_parts_mut(gpa as *mut u8, bytes) })
        };
        let mut d = NetDevice {
            net,
            rx: pages(NET_RX_BUFS * NET_RX_LEN)?,
            tokens: [None; NET_RX_BUFS],
            frame: pages(NET_RX_LEN)?,
            tx: pages(NET_RX_LEN)?,
            rx_c: NetDeviceMetrics::default(),
            tx_c: NetDeviceMetrics::default(),
            mtu: 1500,
        };
        for i in 0..NET_RX_BUFS {
            d.post(i).map_err(OpenError::Driver)?;
        }
        Ok(d)
    }

    fn post(&mut self, i: usize) -> Result<(), virtio_drivers::Error> {
        let buf = &mut self.rx[i * NET_RX_LEN..(i + 1) * NET_RX_LEN];
        // SAFETY: buffer `i` is not touched again until the driver returns
        // its token from `poll_receive` and `receive_complete` ends the
        // request.
        self.tokens[i] = Some(unsafe { self.net.receive_begin(buf) }?);
        Ok(())
    }

    /// The device's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.net.mac_address()
    }

    /// The MTU: 1500 (what a 2 KiB receive buffer holds), or less if the
    /// device said so ([`NetDevice::set_device_mtu`]).
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Takes the MTU the device reported (`open_net`) into account: the
    /// smaller of it and 1500, at least 576 (IPv4's minimum datagram).
    pub fn set_device_mtu(&mut self, mtu: Option<u16>) -> usize {
        self.mtu = mtu.map_or(1500, |m| usize::from(m).clamp(576, 1500));
        self.mtu
    }

    /// The counters.
    pub fn counters(&self) -> NetDeviceMetrics {
        NetDeviceMetrics {
            tx_packets: self.tx_c.tx_packets,
            tx_bytes: self.tx_c.tx_bytes,
            tx_errors: self.tx_c.tx_errors,
            ..self.rx_c
        }
    }

    /// Whether a received frame is waiting.
    pub fn rx_ready(&self) -> bool {
        self.net.poll_receive().is_some()
    }

    /// Halts until the device interrupts or `deadline_us`
    /// ([`crate::clock::now_us`]) passes; returns at once if a frame waits.
    pub fn wait(&mut self, deadline_us: Option<u64>) {
        let seen = interrupts();
        if self.rx_ready() {
            return;
        }
        // An interrupt between the check above and the halt changes the
        // count, which `wait_until` reads with interrupts off. A wake-up
        // before the deadline re-arms the timer for what is left (it may
        // fire a little early: the TSC scale is calibrated only roughly).
        crate::evtchn::wait_until(|| {
            if interrupts() != seen {
                return true;
            }
            let Some(d) = deadline_us else { return false };
            let now = crate::clock::now_us();
            if now >= d {
                return true;
            }
            crate::clock::arm_wakeup(d - now);
            false
        });
        let _ = self.net.ack_interrupt();
    }

    /// The next received frame, copied into `self.frame`; its length (0 if
    /// the completion was unusable). Its buffer is posted again.
    fn take(&mut self) -> Option<usize> {
        let tok = self.net.poll_receive()?;
        let Some(i) = self.tokens.iter().position(|&t| t == Some(tok)) else {
            // Not a token of ours: nothing can be completed. Count it and
            // report nothing, so the caller goes to sleep.
            self.rx_c.rx_errors += 1;
            return None;
        };
        self.tokens[i] = None;
        let buf = &mut self.rx[i * NET_RX_LEN..(i + 1) * NET_RX_LEN];
        // SAFETY: `buf` is the buffer posted with `tok`.
        let len = match unsafe { self.net.receive_complete(tok, buf) } {
            Ok((hdr, len)) if hdr + len <= NET_RX_LEN => {
                self.frame[..len].copy_from_slice(&buf[hdr..hdr + len]);
                self.rx_c.rx_packets += 1;
                self.rx_c.rx_bytes += len as u64;
                len
            }
            _ => {
                self.rx_c.rx_errors += 1;
                0
            }
        };
        if self.post(i).is_err() {
            self.rx_c.rx_errors += 1;
        }
        Some(len)
    }
}

/// `smoltcp`'s receive token over [`NetDevice`]: one copied frame.
pub struct NetRxToken<'a>(&'a [u8]);

/// `smoltcp`'s transmit token over [`NetDevice`].
pub struct NetTxToken<'a> {
    net: &'a mut Net,
    buf: &'a mut [u8],
    c: &'a mut NetDeviceMetrics,
}

impl smoltcp::phy::RxToken for NetRxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl smoltcp::phy::TxToken for NetTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(self.buf.len());
        let r = f(&mut self.buf[..len]);
        match self.net.send(&self.buf[..len]) {
            Ok(()) => {
                self.c.tx_packets += 1;
                self.c.tx_bytes += len as u64;
            }
            Err(_) => self.c.tx_errors += 1,
        }
        r
    }
}

impl smoltcp::phy::Device for NetDevice {
    type RxToken<'a> = NetRxToken<'a>;
    type TxToken<'a> = NetTxToken<'a>;

    fn receive(&mut self, _now: smoltcp::time::Instant) -> Option<(NetRxToken<'_>, NetTxToken<'_>)> {
        let len = self.take()?;
        let tx = NetTxToken { net: &mut self.net, buf: &mut self.tx[..], c: &mut self.tx_c };
        Some((NetRxToken(&self.frame[..len]), tx))
    }

    fn transmit(&mut self, _now: smoltcp::time::Instant) -> Option<NetTxToken<'_>> {
        if !self.net.can_send() {
            return None;
        }
        Some(NetTxToken { net: &mut self.net, buf: &mut self.tx[..], c: &mut self.tx_c })
    }

    fn capabilities(&self) -> smoltcp::phy::DeviceCapabilities {
        let mut caps = smoltcp::phy::DeviceCapabilities::default();
        caps.medium = smoltcp::phy::Medium::Ethernet;
        caps.max_transmission_unit = self.mtu() + 14;
        caps.max_burst_size = Some(1);
        caps
    }
}
