//! The targets: each takes arbitrary bytes and drives one guest-facing
//! parser with them, as a hostile guest would.
//!
//! - [`blkif`]: raw request slots and indirect segments on a blkif ring,
//!   served by blkback through the host-side harness.
//! - [`store`]: raw bytes on the store ring, served by the store server.
//! - [`paging`]: `mmu_update`, `mmuext_op`, `multicall` (and trapped pool
//!   writes) through the hypercall table on a direct-paging domain, with
//!   continuations followed as the vCPU loop would.
//! - [`gnttab`]: `grant_table_op` (setup, query, copy) and the back-end
//!   mapper over the guest's table.
//! - [`evtchn`]: `event_channel_op` and the host side (bind, notify,
//!   close, doorbell exits).
//! - [`elf`]: the ELF check and loader.
//! - [`netback`]: raw transmit requests, receive posts and injected host
//!   frames on netback's rings, through its host-side harness.
//! - [`virtio`]: virtio-mmio register writes and reads, guest memory
//!   holding the split virtqueue, and queue processing (virtio-blk).
//!
//! Hypercall targets share one domain per thread (a KVM VM is needed for
//! the event channels) and reset its state before each input.

use backend::block::harness::{Harness, RING};
use backend::block::{Disk, DiskSpec};
use backend::grant::GrantTable;
use backend::serve::RingService as _;
use pv_abi::blkif::BlkifRequestSegment;
use pv_abi::event_channel::DOMID_SELF;
use pv_abi::hypercall::nr;
use pv_abi::layout::{KERNEL_BASE, SHARED_INFO};
use pv_abi::start_info::paging_mode;
use std::cell::RefCell;
use std::sync::Arc;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::console::ConsoleOut;
use vmm::domain::Domain;
use vmm::evtchn::{EventChannels, MAX_PORTS};
use vmm::hypercall::HypercallTable;
use vmm::memory::{GuestRam, Slot};
use vmm::paging::PagingState;
use vmm_sys_util::eventfd::EventFd;

/// A target: bytes in, nothing out; must not panic or hang.
pub type Target = fn(&[u8]);

/// Every target by name.
pub const ALL: &[(&str, Target)] = &[
    ("blkif", blkif),
    ("store", store),
    ("paging", paging),
    ("gnttab", gnttab),
    ("evtchn", evtchn),
    ("elf", elf),
    ("netback", netback),
    ("virtio", virtio),
];

/// The target named `name`.
pub fn by_name(name: &str) -> Option<Target> {
    ALL.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Reads little-endian integers off the front of the input.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u64(&mut self) -> Option<u64> {
        let bytes: [u8; 8] = self.0.get(..8)?.try_into().ok()?;
        self.0 = &self.0[8..];
        Some(u64::from_le_bytes(bytes))
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

// ---- blkif --------------------------------------------------------------

const BLK_SLOT: u64 = 112;
const BLK_SLOTS: u64 = 32;

thread_local! {
    static DISK: (tempfile::TempDir, Arc<Disk>) = {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fuzz.img");
        std::fs::File::create(&path).and_then(|f| f.set_len(1 << 20)).expect("disk image");
        let disk = Disk::open(&DiskSpec { path, readonly: false }).expect("open disk");
        (dir, Arc::new(disk))
    };
}

/// blkif: `[n][pages][n raw request slots][indirect segments...]`.
pub fn blkif(data: &[u8]) {
    let mut input = Input(data);
    let (Some(n), Some(pages)) = (input.u8(), input.u8()) else { return };
    let disk = DISK.with(|d| d.1.clone());
    let Ok(mut h) = Harness::new(disk, u32::from(pages % 8)) else { return };
    let n = u64::from(n) % (BLK_SLOTS + 4);
    for i in 0..n.min(BLK_SLOTS) {
        let raw = input.bytes(BLK_SLOT as usize);
        let _ = h.front.memory().write_slice(raw, GuestAddress(RING + 64 + i * BLK_SLOT));
    }
    let segs: Vec<BlkifRequestSegment> = input
        .0
        .chunks_exact(8)
        .take(512)
        .map(|c| BlkifRequestSegment {
            gref: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            first_sect: c[4],
            last_sect: c[5],
            _pad: u16::from_le_bytes([c[6], c[7]]),
        })
        .collect();
    if !segs.is_empty() {
        h.front.write_indirect(0, &segs);
    }
    h.front.corrupt_req_prod(n as u32);
    for _ in 0..4 {
        if h.back.process() == 0 {
            break;
        }
    }
    let _ = h.front.responses();
}

// ---- store --------------------------------------------------------------

const STORE_PAGE: u64 = 0x1000;
const XS_RING: usize = pv_abi::xs_wire::XENSTORE_RING_SIZE;

/// store: the bytes are the guest's requests, written into the request
/// ring in up to four rounds (the guest consuming replies in between).
pub fn store(data: &[u8]) {
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x3000)]) else { return };
    let Ok(page) = backend::ring_page::RingPage::assigned(&mem, STORE_PAGE) else { return };
    let shared = pv_store::SharedStore::new();
    let Ok(mut server) = pv_store::StoreServer::new(shared, 1, page) else { return };
    let at = |off: usize| GuestAddress(STORE_PAGE + off as u64);
    let mut prod = 0u32;
    for chunk in data.chunks(XS_RING).take(4) {
        for (i, b) in chunk.iter().enumerate() {
            let idx = (prod as usize + i) % XS_RING;
            let _ = mem.write_obj(*b, at(idx));
        }
        prod = prod.wrapping_add(chunk.len() as u32);
        let _ = mem.write_obj(prod, at(2 * XS_RING + 4));
        for _ in 0..8 {
            server.process();
            // The guest reads every reply.
            let rsp_prod: u32 = mem.read_obj(at(2 * XS_RING + 12)).unwrap_or(0);
            let _ = mem.write_obj(rsp_prod, at(2 * XS_RING + 8));
            if !server.more_work() {
                break;
            }
        }
    }
}

// ---- hypercall targets --------------------------------------------------

const RAM: u64 = 2 << 20;
const POOL: u64 = RAM - (256 << 10);
const DATA: u64 = 0x10_0000;
const DATA_LEN: u64 = 0x1_0000;
const CALL_BYTES: usize = 41;
/// Hypercalls per input.
const MAX_CALLS: usize = 24;
/// Continuations followed per call before giving up (a guest would go on).
const MAX_CONTINUATIONS: usize = 64;

struct Hv {
    dom: Domain,
    table: HypercallTable,
}

thread_local! {
    static HV: RefCell<Option<Hv>> = const { RefCell::new(None) };
}

fn new_hv() -> Hv {
    let kvm = vmm::builder::open_kvm().expect("the hypercall fuzz targets need /dev/kvm");
    let vm = Arc::new(kvm.create_vm().expect("create_vm"));
    vm.create_irq_chip().expect("irqchip");
    let ram = GuestRam::new(&[
        Slot { start: 0, len: POOL, readonly: false },
        Slot { start: POOL, len: RAM - POOL, readonly: true },
    ])
    .expect("guest RAM");
    ram.protect_outputs(vec![vmm::guest_out::RESERVED_LOW, POOL..RAM]);
    let evtchn = Arc::new(EventChannels::new(vm, ram.clone(), SHARED_INFO).expect("event channels"));
    let grants = Arc::new(GrantTable::new(ram.mem().clone(), KERNEL_BASE, POOL));
    Hv { dom: Domain::new(ram, ConsoleOut::Null, evtchn, grants), table: HypercallTable::default() }
}

/// Runs `f` on the thread's domain, reset, with `data` in its data area.
fn with_domain(data: &[u8], mode: u32, f: impl FnOnce(&mut Hv)) {
    HV.with(|cell| {
        let mut slot = cell.borrow_mut();
        let hv = slot.get_or_insert_with(new_hv);
        let ram = hv.dom.ram.clone();
        let _ = ram.write(DATA, &vec![0u8; DATA_LEN as usize]);
        let _ = ram.write(POOL, &vec![0u8; (RAM - POOL) as usize]);
        let _ = ram.write(SHARED_INFO, &[0u8; 4096]);
        let _ = ram.write(DATA, &data[..data.len().min(DATA_LEN as usize)]);
        hv.dom.paging = PagingState::new(mode, POOL, RAM, RAM);
        hv.dom.grants = Arc::new(GrantTable::new(ram.mem().clone(), KERNEL_BASE, POOL));
        hv.dom.shutdown = None;
        for port in 1..MAX_PORTS {
            let _ = hv.dom.evtchn.close(port);
        }
        f(hv);
    });
}

/// A pointer argument: mostly inside the data area or the pool, so the
/// handlers get past their range checks; sometimes raw.
fn ptr(raw: u64) -> u64 {
    match raw >> 62 {
        0 | 1 => DATA + (raw % DATA_LEN),
        2 => POOL + (raw % (RAM - POOL)),
        _ => raw,
    }
}

/// A count argument: mostly small, sometimes raw.
fn count(raw: u64, max: u64) -> u64 {
    if raw >> 63 == 0 {
        raw % max
    } else {
        raw
    }
}

/// Dispatches one hypercall and follows its continuations.
fn call(hv: &mut Hv, nr: u64, mut args: [u64; 5]) {
    for _ in 0..MAX_CONTINUATIONS {
        hv.dom.start_exit();
        hv.table.dispatch(&mut hv.dom, nr, &args);
        match hv.dom.continuation.take() {
            Some(next) => args = next,
            None => return,
        }
    }
}

/// Splits an input into `[len u16][data][calls of 41 bytes]`.
fn split(data: &[u8]) -> (&[u8], Vec<(u8, [u64; 5])>) {
    let mut input = Input(data);
    let len = input.u8().map_or(0, usize::from) | (input.u8().map_or(0, usize::from) << 8);
    let area = input.bytes(len);
    let calls = input
        .0
        .chunks_exact(CALL_BYTES)
        .take(MAX_CALLS)
        .map(|c| {
            let mut i = Input(c);
            let sel = i.u8().unwrap_or(0);
            let a = [(); 5].map(|_| i.u64().unwrap_or(0));
            (sel, a)
        })
        .collect();
    (area, calls)
}

/// paging: `mmu_update`, `mmuext_op`, `multicall` and trapped writes.
pub fn paging(data: &[u8]) {
    let (area, calls) = split(data);
    let mode = if data.first().is_some_and(|b| b & 1 == 1) { paging_mode::TRAPPED } else { paging_mode::PV };
    with_domain(area, mode, |hv| {
        for (sel, a) in calls {
            let domid = if a[3] & 1 == 0 { u64::from(DOMID_SELF) } else { a[3] };
            let pdone = if a[2] & 1 == 0 { 0 } else { ptr(a[2]) };
            match sel % 4 {
                0 => call(hv, nr::MMU_UPDATE, [ptr(a[0]), count(a[1], 600), pdone, domid, 0]),
                1 => call(hv, nr::MMUEXT_OP, [ptr(a[0]), count(a[1], 600), pdone, domid, 0]),
                2 => call(hv, nr::MULTICALL, [ptr(a[0]), count(a[1], 300), 0, 0, 0]),
                _ => {
                    let addr = POOL + (a[0] % (RAM - POOL));
                    let len = [1usize, 2, 4, 8][(a[1] % 4) as usize];
                    vmm::paging::trapped_write(&mut hv.dom, addr, &a[2].to_le_bytes()[..len]);
                }
            }
        }
    });
}

/// gnttab: `grant_table_op` and the back-end mapper.
pub fn gnttab(data: &[u8]) {
    let (area, calls) = split(data);
    with_domain(area, paging_mode::NATIVE, |hv| {
        for (sel, a) in calls {
            match sel % 5 {
                0 => call(hv, nr::GRANT_TABLE_OP, [0, ptr(a[1]), count(a[2], 3), 0, 0]),
                1 => call(hv, nr::GRANT_TABLE_OP, [6, ptr(a[1]), count(a[2], 3), 0, 0]),
                2 => call(hv, nr::GRANT_TABLE_OP, [5, ptr(a[1]), count(a[2], 600), 0, 0]),
                3 => call(hv, nr::GRANT_TABLE_OP, [a[0], ptr(a[1]), count(a[2], 600), a[3], a[4]]),
                _ => {
                    // A back end mapping a guest-named reference.
                    if let Ok(m) = hv.dom.grants.map((a[0] % 4096) as u32, a[1] & 1 == 1) {
                        let mut buf = [0u8; 64];
                        let _ = m.read(a[2] % 4096, &mut buf);
                        let _ = m.write(a[3] % 4096, &buf);
                    }
                }
            }
        }
    });
}

/// evtchn: `event_channel_op` and the host side of the channels.
pub fn evtchn(data: &[u8]) {
    let (area, calls) = split(data);
    with_domain(area, paging_mode::NATIVE, |hv| {
        let mut bindings = Vec::new();
        for (sel, a) in calls {
            let ev = hv.dom.evtchn.clone();
            let port = (a[0] % u64::from(MAX_PORTS + 8)) as u32;
            match sel % 6 {
                0 | 1 => call(hv, nr::EVENT_CHANNEL_OP, [a[0] % 16, ptr(a[1]), 0, 0, 0]),
                2 => {
                    if bindings.len() < 8 {
                        if let Ok(wake) = EventFd::new(libc_nonblock()) {
                            if let Ok(b) = ev.bind_guest_port(port, Arc::new(wake)) {
                                bindings.push(b);
                            }
                        }
                    }
                }
                3 => {
                    if !bindings.is_empty() {
                        let b = bindings.swap_remove((a[1] % bindings.len() as u64) as usize);
                        let _ = ev.close_binding(b);
                    }
                }
                4 => {
                    let _ = ev.notify_guest(port);
                    if let Some(b) = bindings.first() {
                        let _ = ev.notify_binding(*b);
                    }
                }
                _ => ev.doorbell_exit(&a[1].to_le_bytes()[..(a[2] % 9) as usize]),
            }
        }
    });
}

fn libc_nonblock() -> i32 {
    0o4000 // EFD_NONBLOCK
}

// ---- ELF ----------------------------------------------------------------

thread_local! {
    static ELF_RAM: GuestRam =
        GuestRam::new(&[Slot { start: 0, len: 8 << 20, readonly: false }]).expect("guest RAM");
}

/// elf: the image checks and the loader, into an 8 MiB guest.
pub fn elf(data: &[u8]) {
    let (lo, hi) = vmm::boot::MemoryPlan::new(8 << 20).loadable();
    if vmm::loader::check_elf("fuzz", data, lo, hi).is_ok() {
        ELF_RAM.with(|ram| {
            let _ = vmm::loader::load(ram, "fuzz", data, lo, hi);
        });
    }
}

// ---- netback ------------------------------------------------------------

/// netback: `[flags][n_tx][n_tx * 12-byte tx requests][n_rx * (id u16, gref u32)][frames...]`.
pub fn netback(data: &[u8]) {
    use backend::net::harness::Harness as NetHarness;
    use pv_abi::netif::NetifTxRequest;
    let mut input = Input(data);
    let (Some(flags), Some(n_tx)) = (input.u8(), input.u8()) else { return };
    let Ok((peer, handle)) = backend::net::peer::pair(false) else { return };
    let Ok(mut h) = NetHarness::new(Box::new(peer), 8, flags & 1 == 1) else { return };
    for _ in 0..n_tx % 40 {
        let c = input.bytes(12);
        if c.len() < 12 {
            break;
        }
        let u16_at = |i: usize| u16::from_le_bytes([c[i], c[i + 1]]);
        let req = NetifTxRequest {
            gref: u32::from_le_bytes([c[0], c[1], c[2], c[3]]) % 64,
            offset: u16_at(4),
            flags: u16_at(6),
            id: u16_at(8),
            size: u16_at(10),
        };
        if h.front.push_tx(&req).is_err() {
            break;
        }
    }
    h.front.publish_tx();
    if flags & 2 == 2 {
        h.front.corrupt_tx_req_prod(u32::from(flags) << 4);
    }
    for _ in 0..4 {
        if !h.kick() {
            break;
        }
    }
    let n_rx = input.u8().unwrap_or(0) % 40;
    for _ in 0..n_rx {
        let c = input.bytes(6);
        if c.len() < 6 {
            break;
        }
        let id = u16::from_le_bytes([c[0], c[1]]);
        let gref = u32::from_le_bytes([c[2], c[3], c[4], c[5]]) % 64;
        if h.front.post_rx(id, gref).is_err() {
            break;
        }
    }
    h.front.publish_rx();
    if flags & 4 == 4 {
        h.front.corrupt_rx_req_prod(u32::from(flags));
    }
    for frame in input.0.chunks(1600).take(4) {
        let meta = backend::net::port::RxMeta { csum_blank: flags & 8 == 8, data_validated: flags & 16 == 16 };
        handle.inject(frame, meta);
    }
    h.port_ready();
    let _ = h.rx_responses();
    let _ = h.tx_responses();
}

// ---- virtio -------------------------------------------------------------

struct NoIrq;

impl backend::Notify for NoIrq {
    fn notify(&self) {}
}

const VQ_MEM: u64 = 0x20_0000;
const VQ_AREA: u64 = 0x1_0000;

/// virtio: `[area len u16][area: guest memory at 64 KiB][7-byte register ops]`.
pub fn virtio(data: &[u8]) {
    use backend::virtio::blk::VirtioBlk;
    use backend::virtio::mmio::MmioTransport;
    let mut input = Input(data);
    let len = input.u8().map_or(0, usize::from) | (input.u8().map_or(0, usize::from) << 8);
    let area = input.bytes(len);
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), VQ_MEM as usize)]) else { return };
    let _ = mem.write_slice(&area[..area.len().min(0x4_0000)], GuestAddress(VQ_AREA));
    let disk = DISK.with(|d| d.1.clone());
    let dev = VirtioBlk::new(disk, "fuzz", Arc::new(backend::block::BlockMetrics::default()));
    let mut t = MmioTransport::new(dev, mem, 0x1000..VQ_MEM, Arc::new(NoIrq));
    for c in input.0.chunks_exact(7).take(64) {
        let offset = u64::from(u16::from_le_bytes([c[1], c[2]]) % 0x200) & !3;
        let mut value = u32::from_le_bytes([c[3], c[4], c[5], c[6]]);
        // Queue addresses: mostly inside the data area.
        if matches!(offset, 0x80 | 0x90 | 0xa0) && value >> 31 == 0 {
            value = (VQ_AREA as u32 + value % 0x3_0000) & !0xf;
        } else if matches!(offset, 0x84 | 0x94 | 0xa4) && value >> 31 == 0 {
            value = 0;
        }
        match c[0] % 4 {
            0 | 1 => {
                let _ = t.write(offset, &value.to_le_bytes());
            }
            2 => {
                let mut buf = [0u8; 4];
                t.read(offset, &mut buf);
            }
            _ => {
                let _ = t.process_queue((value % 2) as u16);
            }
        }
    }
}
