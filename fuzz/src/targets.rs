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
//! - [`virtio`]: virtio-mmio register writes and the split virtqueue's
//!   descriptor table, available ring and buffers, served by virtio-blk.
//! - [`netif`]: raw transmit and receive slots on netif rings and frames
//!   from the host side, served by netback through its harness.
//!
//! Hypercall targets share one domain per thread (over `xen-domain`'s
//! `FakePlatform`: no `/dev/kvm` needed) and reset its state before each
//! input.

use backend::block::harness::{Harness, RING};
use backend::block::{Disk, DiskSpec};
use backend::serve::RingService as _;
use pv_abi::blkif::BlkifRequestSegment;
use pv_abi::event_channel::DOMID_SELF;
use pv_abi::event_channel::MAX_PORTS;
use pv_abi::hypercall::nr;
use pv_abi::layout::{KERNEL_BASE, SHARED_INFO};
use pv_abi::start_info::paging_mode;
use std::cell::RefCell;
use std::sync::Arc;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;
use xen_domain::console::ConsoleOut;
use xen_domain::domain::Domain;
use xen_domain::event_channel::EventChannels;
use xen_domain::fake::FakePlatform;
use xen_domain::grant_table::GrantTable;
use xen_domain::guest_memory::{GuestRam, Slot};
use xen_domain::hypercall::HypercallTable;
use xen_domain::mmu::PagingState;

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
    ("virtio", virtio),
    ("netif", netif),
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
        let disk = Disk::open(&DiskSpec::new(path, false)).expect("open disk");
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

// ---- netif --------------------------------------------------------------

/// netif: `[flags][ntx][nrx][ntx raw 12-byte transmit slots][nrx raw 8-byte
/// receive slots]` then frames from the host side as `[len lo][len hi]
/// [bytes]` (at most 16). `flags` bit 0: the front end offers
/// `feature-sg`; bit 1: a corrupt (huge) transmit `req_prod`.
pub fn netif(data: &[u8]) {
    let mut input = Input(data);
    let (Some(flags), Some(ntx), Some(nrx)) = (input.u8(), input.u8(), input.u8()) else { return };
    let Ok((port, peer)) = backend::net::peer::pair(false) else { return };
    let Ok(mut h) = backend::net::harness::Harness::new(Box::new(port), 8, flags & 1 != 0) else { return };
    for i in 0..u32::from(ntx) {
        h.front.write_raw_tx_slot(i, input.bytes(12));
    }
    for i in 0..u32::from(nrx) {
        h.front.write_raw_rx_slot(i, input.bytes(8));
    }
    h.front.corrupt_rx_req_prod(u32::from(nrx));
    h.front.corrupt_tx_req_prod(if flags & 2 != 0 { 0x8000_0000 } else { u32::from(ntx) });
    for _ in 0..16 {
        let (Some(lo), Some(hi)) = (input.u8(), input.u8()) else { break };
        let frame = input.bytes(usize::from(u16::from_le_bytes([lo, hi])));
        let meta = backend::net::RxMeta { csum_blank: lo & 1 != 0, data_validated: hi & 1 != 0 };
        peer.inject(frame, meta);
    }
    for _ in 0..4 {
        h.kick();
        h.port_ready();
    }
    let _ = h.tx_responses();
    let _ = h.rx_responses();
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
    let ram = GuestRam::new(&[
        Slot { start: 0, len: POOL, readonly: false },
        Slot { start: POOL, len: RAM - POOL, readonly: true },
    ])
    .expect("guest RAM");
    ram.protect_outputs(vec![xen_domain::guest_memory::RESERVED_LOW, POOL..RAM]);
    let evtchn = Arc::new(
        EventChannels::new(Arc::new(FakePlatform::default()), ram.clone(), SHARED_INFO).expect("event channels"),
    );
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
        hv.dom.evtchn.reset();
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
                    xen_domain::mmu::trapped_write(&mut hv.dom, addr, &a[2].to_le_bytes()[..len]);
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

/// elf: the one ELF reader (headers, PVH note from `PT_NOTE` segments or
/// `SHT_NOTE` sections), the checks of both boot kinds and the loader,
/// into an 8 MiB guest.
pub fn elf(data: &[u8]) {
    use vmm::boot::elf::{BootKind, Elf};
    let Ok(elf) = Elf::parse(data) else { return };
    let (lo, hi) = vmm::boot::MemoryPlan::new(8 << 20).loadable();
    let (lo, hi) = match elf.boot_kind() {
        Ok(BootKind::Own) => (lo, hi),
        Ok(BootKind::Pvh(_)) => (0, hi),
        Err(_) => return,
    };
    if let Ok(info) = elf.check(lo, hi) {
        ELF_RAM.with(|ram| {
            let _ = vmm::boot::elf::load(ram, data, &info);
        });
    }
}

/// Seeds of the `elf` target: the bundled 64-bit guest, and small PVH
/// images (ELF32 and ELF64) with the entry note in a `PT_NOTE` segment or
/// only in a `SHT_NOTE` section, so mutations reach both note paths.
pub fn elf_seeds() -> Vec<Vec<u8>> {
    let mut seeds = vec![frontend_guest::images::by_name("hello").map(<[u8]>::to_vec).unwrap_or_default()];
    for is64 in [false, true] {
        for in_section in [false, true] {
            seeds.push(pvh_seed(is64, in_section));
        }
    }
    seeds
}

/// A PVH image: one PT_LOAD of a `hlt` at 1 MiB and the Xen
/// `XEN_ELFNOTE_PHYS32_ENTRY` note at 0x180 (layout as in the ELF spec).
fn pvh_seed(is64: bool, in_section: bool) -> Vec<u8> {
    let mut f = vec![0u8; 0x300];
    let mut put = |at: usize, v: &[u8]| f[at..at + v.len()].copy_from_slice(v);
    let word = |v: u64| if is64 { v.to_le_bytes().to_vec() } else { (v as u32).to_le_bytes().to_vec() };
    put(0, &[0x7f, b'E', b'L', b'F', if is64 { 2 } else { 1 }, 1, 1]);
    put(16, &2u16.to_le_bytes()); // ET_EXEC
    put(18, &(if is64 { 62u16 } else { 3 }).to_le_bytes());
    let (phoff_at, shoff_at, sizes_at, phent, shent) = if is64 { (32, 40, 54, 56, 64) } else { (28, 32, 42, 32, 40) };
    put(phoff_at, &word(0x40));
    put(sizes_at, &(phent as u16).to_le_bytes());
    put(sizes_at + 2, &(if in_section { 1u16 } else { 2 }).to_le_bytes());
    put(sizes_at + 4, &(shent as u16).to_le_bytes());
    // p_type, p_flags/offset..., in the class's field order.
    let phdr = |kind: u32, off: u64, paddr: u64, filesz: u64, memsz: u64| -> Vec<u8> {
        let mut h = kind.to_le_bytes().to_vec();
        if is64 {
            h.extend(5u32.to_le_bytes());
            [off, paddr, paddr, filesz, memsz, 0x1000].iter().for_each(|v| h.extend(v.to_le_bytes()));
        } else {
            [off, paddr, paddr, filesz, memsz, 5, 0x1000].iter().for_each(|&v| h.extend((v as u32).to_le_bytes()));
        }
        h
    };
    put(0x40, &phdr(1, 0x100, 0x10_0000, 0x10, 0x1000));
    put(0x100, &[0xf4]);
    let note =
        [&4u32.to_le_bytes()[..], &4u32.to_le_bytes(), &18u32.to_le_bytes(), b"Xen\0", &0x10_0000u32.to_le_bytes()];
    put(0x180, &note.concat());
    if in_section {
        put(shoff_at, &word(0x200));
        put(sizes_at + 6, &2u16.to_le_bytes());
        let (kind_at, off_at, size_at) = if is64 { (0x244, 0x258, 0x260) } else { (0x22c, 0x238, 0x23c) };
        put(kind_at, &7u32.to_le_bytes()); // SHT_NOTE
        put(off_at, &word(0x180));
        put(size_at, &word(20));
    } else {
        put(0x40 + phent, &phdr(4, 0x180, 0, 20, 0));
    }
    f
}

// ---- virtio -------------------------------------------------------------

/// Guest RAM of the virtio target, and where the device may reach.
const VIO_RAM: u64 = 1 << 20;
const VIO_USABLE: u64 = 0x10000;
/// The queue the target sets up when asked: descriptor table, available
/// ring, used ring (16 entries), then request memory.
const VIO_DESC: u64 = 0x20000;
const VIO_AVAIL: u64 = 0x21000;
const VIO_USED: u64 = 0x22000;
const VIO_QSIZE: u32 = 16;

struct NoIrq;
impl backend::Notify for NoIrq {
    fn notify(&self) {}
}

/// virtio: `[flags][n][n register writes (offset u8 * 4, value u64 low 32
/// bits)][guest memory from the descriptor table on]`. Flag bit 0: first
/// negotiate `VERSION_1` (and bit 1 `EVENT_IDX`) and set up queue 0 the
/// way a driver does, so the fuzzed writes and memory hit a live queue.
/// Then the queue is notified twice.
pub fn virtio(data: &[u8]) {
    use backend::virtio::blk::VirtioBlk;
    use backend::virtio::MmioTransport;
    let mut input = Input(data);
    let (Some(flags), Some(n)) = (input.u8(), input.u8()) else { return };
    let Ok(mem) = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), VIO_RAM as usize)]) else { return };
    let disk = DISK.with(|d| d.1.clone());
    let dev = VirtioBlk::new(disk, "fuzz", Arc::default());
    let mut t = MmioTransport::new(dev, mem.clone(), VIO_USABLE..VIO_RAM, Arc::new(NoIrq));
    let wr = |t: &mut MmioTransport<VirtioBlk>, off: u32, v: u32| {
        let _ = t.write(u64::from(off), &v.to_le_bytes());
    };
    if flags & 1 != 0 {
        let features = 1u64 << 32 | if flags & 2 != 0 { 1 << 29 } else { 0 };
        for (off, v) in [(0x70, 1), (0x70, 3), (0x24, 0), (0x20, features as u32), (0x24, 1), (0x20, 1), (0x70, 11)] {
            wr(&mut t, off, v);
        }
        for (off, v) in
            [(0x30, 0), (0x38, VIO_QSIZE), (0x80, VIO_DESC as u32), (0x90, VIO_AVAIL as u32), (0xa0, VIO_USED as u32)]
        {
            wr(&mut t, off, v);
        }
        wr(&mut t, 0x44, 1);
        wr(&mut t, 0x70, 15);
    }
    for _ in 0..usize::from(n % 32) {
        let (Some(off), Some(v)) = (input.u8(), input.u64()) else { break };
        wr(&mut t, u32::from(off) * 4, v as u32);
        let mut back = [0u8; 4];
        t.read(u64::from(off) * 4, &mut back);
    }
    let _ = mem.write_slice(input.bytes((VIO_RAM - VIO_DESC) as usize), GuestAddress(VIO_DESC));
    for _ in 0..2 {
        if !t.process_queue(0) {
            break;
        }
    }
    let _ = t.process_queue(0);
}
