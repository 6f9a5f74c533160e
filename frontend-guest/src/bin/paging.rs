//! `paging`: the direct-paging image. At boot it builds its own page tables
//! from the pool and switches to them (in every mode), then runs the
//! scenario named by `test=`:
//!
//! - `workload pages=<N>`: map N pages, write and read through them,
//!   protect some, unmap all; prints a checksum that must not depend on
//!   the paging mode.
//! - `pte n=<N> batch=<B>`: N PTE updates (the `vmm bench` operation).
//! - `illegal`: each illegal update is rejected with its code and changes
//!   nothing (`pv` mode).
//! - `illegal-trapped`: the same through trapped writes (`trapped` mode).
//! - `multicall`: Xen's multicall semantics.
//! - `outputs`: every hypercall output aimed at a pinned page-table page
//!   (or the VMM's reserved low pages) fails with `EFAULT` and changes
//!   nothing (`trapped` and `pv` modes).
//! - `flood n=<N> rounds=<R>`: a hostile batch: `multicall` of 256
//!   `mmuext_op` entries, each over the same `N` TLB flushes, `R` times
//!   (0: forever); checks every entry's result and `pdone` (`pv` mode).
//!
//! `batch=<B>` sets the lazy-MMU batch size (default 64).
#![no_std]
#![no_main]

use frontend_guest::hypercall::Errno;
use frontend_guest::mmu::{self, flags, HwOps, Mmu, MmuError, LARGE_PAGE};
use frontend_guest::{arch, cmdline, guest_main, println};
use pv_abi::errno::{E2BIG, EFAULT, EINVAL, ENOSYS};
use pv_abi::event_channel::DOMID_SELF;
use pv_abi::hypercall::{nr, xen_version, ABI_VERSION};
use pv_abi::layout::{PAGE_SHIFT, PAGE_SIZE};
use pv_abi::mmu::{mmu_err, pte, MmuUpdate, MmuextOp, MMUEXT_NEW_BASEPTR, MMUEXT_TLB_FLUSH_LOCAL};
use pv_abi::multicall::MulticallEntry;
use pv_abi::start_info::{paging_mode, StartInfo};

guest_main!(main);

/// Where the workload maps its pages (PML4 slot 1).
const WORK_VA: u64 = 0x80_0000_0000;
/// Where the PTE benchmark maps (PML4 slot 2).
const PTE_VA: u64 = 0x100_0000_0000;
/// Where the illegal-update tests map (PML4 slot 3).
const TEST_VA: u64 = 0x180_0000_0000;

struct Ctx {
    si: &'static StartInfo,
    /// First free data frame (page-aligned, after the image).
    data: u64,
    /// End of the RAM this guest maps writable (below the pool).
    data_end: u64,
}

fn main(si: &'static StartInfo) -> i32 {
    let cmd = si.cmdline_bytes();
    let batch = cmdline::get_u64(cmd, "batch").unwrap_or(64) as usize;
    let mut mmu = mmu::from_start_info(si, batch);
    if let Err(e) = mmu.boot(si.mem_bytes) {
        println!("paging: boot failed: {:?}", e);
        return 3;
    }
    if arch::read_cr3() != mmu.l4() {
        println!("paging: CR3 is not the new L4");
        return 4;
    }
    // The data frames start after what the library allocated at boot
    // (the FIFO event-channel pages): overwriting those broke delivery.
    let (data, _) = frontend_guest::pages::take_rest();
    let ctx = Ctx { si, data, data_end: si.free_end & !(LARGE_PAGE - 1) };
    match cmdline::get(cmd, "test").unwrap_or(b"") {
        b"boot" => 0,
        b"workload" => {
            let pages = cmdline::get_u64(cmd, "pages").unwrap_or(1000);
            report(workload(&mut mmu, &ctx, pages))
        }
        b"pte" => report(pte_bench(&mut mmu, &ctx, cmdline::get_u64(cmd, "n").unwrap_or(1))),
        b"illegal" => illegal(&mut mmu, &ctx),
        b"illegal-trapped" => illegal_trapped(&mut mmu, &ctx),
        b"multicall" => multicall(&mut mmu, &ctx),
        b"outputs" => outputs(&mut mmu, &ctx),
        b"flood" => flood(
            &mut mmu,
            &ctx,
            cmdline::get_u64(cmd, "n").unwrap_or(4096),
            cmdline::get_u64(cmd, "rounds").unwrap_or(1),
        ),
        other => {
            println!("unknown test {:?}", core::str::from_utf8(other).unwrap_or("?"));
            64
        }
    }
}

fn report(r: Result<i32, MmuError>) -> i32 {
    r.unwrap_or_else(|e| {
        println!("paging: MMU error {:?}", e);
        5
    })
}

fn pattern(i: u64) -> u64 {
    (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Map, write, read, protect, unmap. The printed line is the same in every mode.
fn workload(mmu: &mut Mmu<HwOps>, ctx: &Ctx, pages: u64) -> Result<i32, MmuError> {
    if ctx.data + pages * PAGE_SIZE > ctx.data_end {
        println!("workload: not enough RAM for {} pages", pages);
        return Ok(6);
    }
    let va = |i: u64| WORK_VA + i * PAGE_SIZE;
    let frame = |i: u64| ctx.data + i * PAGE_SIZE;
    for i in 0..pages {
        mmu.map(va(i), frame(i), flags::WRITE | flags::NOEXEC)?;
    }
    mmu.flush()?;
    let off = |i: u64| (i % 512) * 8;
    for i in 0..pages {
        // SAFETY: `va(i)` was just mapped writable to a free data frame.
        unsafe { arch::write_u64(va(i) + off(i), pattern(i)) };
    }
    let (mut sum, mut bad) = (0u64, 0u64);
    for i in 0..pages {
        // SAFETY: mapped above.
        let v = unsafe { arch::read_u64(va(i) + off(i)) };
        let p = read(frame(i) + off(i));
        if v != pattern(i) || p != v {
            bad += 1;
        }
        sum = sum.rotate_left(7) ^ v;
    }
    // Read-only for every tenth page; reads still work, the entry says so.
    for i in (0..pages).step_by(10) {
        mmu.protect(va(i), flags::READ)?;
    }
    mmu.flush_tlb()?;
    let mut ro = 0;
    for i in 0..pages {
        let e = mmu.lookup(va(i));
        // SAFETY: still mapped (readable).
        let v = unsafe { arch::read_u64(va(i) + off(i)) };
        if v != pattern(i) || e & pte::ADDR_MASK != frame(i) {
            bad += 1;
        }
        if e & pte::RW == 0 {
            ro += 1;
        }
    }
    for i in 0..pages {
        mmu.unmap(va(i))?;
    }
    mmu.flush_tlb()?;
    let still = (0..pages).filter(|&i| mmu.lookup(va(i)) != 0).count();
    println!("workload: pages={} checksum={:#018x} bad={} readonly={} still-mapped={}", pages, sum, bad, ro, still);
    Ok(i32::from(bad != 0 || still != 0))
}

/// `n` PTE updates into one existing L1 (the bench operation).
fn pte_bench(mmu: &mut Mmu<HwOps>, ctx: &Ctx, n: u64) -> Result<i32, MmuError> {
    // Build the L1 in both the n=0 and the n=N run, so differencing
    // leaves only the updates.
    mmu.map(PTE_VA, ctx.data, flags::READ)?;
    mmu.flush()?;
    for k in 0..n {
        mmu.map(PTE_VA + (k & 511) * PAGE_SIZE, ctx.data, flags::WRITE)?;
    }
    mmu.flush()?;
    Ok(0)
}

struct Checker {
    failures: i32,
}

impl Checker {
    fn expect(&mut self, what: &str, got: Result<(), Errno>, want: i64, unchanged: bool) {
        let ok = got == Err(Errno(want)) && unchanged;
        let code = match got {
            Ok(()) => 0,
            Err(e) => -e.0,
        };
        println!(
            "{}: {} ({}{})",
            what,
            if ok { "ok" } else { "FAILED" },
            code,
            if unchanged { "" } else { ", tables changed" }
        );
        if !ok {
            self.failures += 1;
        }
    }
}

fn one(ptr: u64, val: u64) -> Result<(), Errno> {
    mmu::mmu_update(&[MmuUpdate { ptr, val }]).map_err(|(_, e)| e)
}

fn read(gpa: u64) -> u64 {
    // SAFETY: callers pass identity-mapped RAM addresses (pool or data).
    unsafe { arch::read_u64(gpa) }
}

/// Sets up one mapped page at TEST_VA; returns (L1, L2) table addresses.
fn test_tables(mmu: &mut Mmu<HwOps>, ctx: &Ctx) -> Result<(u64, u64), MmuError> {
    mmu.map(TEST_VA, ctx.data, flags::WRITE)?;
    mmu.flush()?;
    Ok((mmu.table_for(TEST_VA, 1, false)?, mmu.table_for(TEST_VA, 2, false)?))
}

/// Each illegal update through `mmu_update`/`mmuext_op` gets its code and
/// leaves the tables unchanged; the guest then carries on.
fn illegal(mmu: &mut Mmu<HwOps>, ctx: &Ctx) -> i32 {
    if mmu.mode() == paging_mode::NATIVE {
        let got = one(ctx.si.pt_pool_start, 0);
        let ok = got == Err(Errno(mmu_err::WRONG_MODE));
        println!("mmu_update in native mode: {} ({:?})", if ok { "ok" } else { "FAILED" }, got);
        return i32::from(!ok);
    }
    if mmu.mode() != paging_mode::PV {
        println!("illegal: needs --paging pv");
        return 7;
    }
    let Ok((l1, l2)) = test_tables(mmu, ctx) else {
        println!("illegal: setup failed");
        return 8;
    };
    let si = ctx.si;
    let pool = si.pt_pool_start;
    let data = ctx.data;
    let slot = l1 + 5 * 8;
    let mut c = Checker { failures: 0 };
    let try_one = |c: &mut Checker, what: &str, ptr: u64, watch: u64, val: u64, want: i64| {
        let before = read(watch);
        let got = one(ptr, val);
        c.expect(what, got, want, read(watch) == before);
    };
    try_one(&mut c, "writable mapping of a pool page", slot, slot, pool | pte::P | pte::RW, mmu_err::WRITABLE_POOL);
    try_one(&mut c, "target outside the pool", data, data, 0x1234_5000 | pte::P, mmu_err::NOT_IN_POOL);
    try_one(
        &mut c,
        "target in an unused pool page",
        si.pt_pool_end - PAGE_SIZE,
        si.pt_pool_end - PAGE_SIZE,
        pte::P,
        mmu_err::NOT_IN_POOL,
    );
    try_one(&mut c, "misaligned target", slot + 4, slot, pte::P, mmu_err::MISALIGNED);
    try_one(&mut c, "frame outside RAM", slot, slot, si.mem_bytes | pte::P, mmu_err::FRAME_NOT_RAM);
    try_one(
        &mut c,
        "upper-level entry pointing outside the pool",
        l2 + 7 * 8,
        l2 + 7 * 8,
        data | pte::P | pte::RW,
        mmu_err::UPPER_NOT_POOL,
    );
    try_one(&mut c, "reserved bits", slot, slot, data | pte::P | (1 << 52), mmu_err::BAD_BITS);
    try_one(&mut c, "unknown command bits", slot | 1, slot, data | pte::P, mmu_err::UNKNOWN_CMD);
    // new_baseptr to a table that is not a pinned L4.
    let cr3 = arch::read_cr3();
    for (what, frame) in
        [("new_baseptr to an unpinned table", l2), ("new_baseptr to an unused pool page", si.pt_pool_end - PAGE_SIZE)]
    {
        let got = mmu::mmuext_op(&[MmuextOp::with_mfn(MMUEXT_NEW_BASEPTR, frame >> PAGE_SHIFT)]);
        c.expect(what, got, mmu_err::NOT_PINNED, arch::read_cr3() == cr3);
    }
    let got = mmu::mmuext_op(&[MmuextOp::plain(99)]);
    c.expect("unknown mmuext command", got, mmu_err::UNKNOWN_CMD, true);
    // Xen batch semantics: stop at the first failure, earlier ones applied.
    let good = |i: u64| (data + i * PAGE_SIZE) | pte::P;
    let reqs = [
        MmuUpdate::normal(l1 + 8 * 8, good(1)),
        MmuUpdate::normal(l1 + 9 * 8, pool | pte::P | pte::RW),
        MmuUpdate::normal(l1 + 10 * 8, good(2)),
    ];
    let got = mmu::mmu_update(&reqs);
    let applied = read(l1 + 8 * 8) == good(1) | pte::A;
    let skipped = read(l1 + 9 * 8) == 0 && read(l1 + 10 * 8) == 0;
    let ok = got == Err((1, Errno(mmu_err::WRITABLE_POOL))) && applied && skipped;
    println!(
        "batch stops at the first failure: {} ({:?}, applied={}, rest skipped={})",
        if ok { "ok" } else { "FAILED" },
        got,
        applied,
        skipped
    );
    c.failures += i32::from(!ok);
    // Still running, and a legal update still works.
    let ok = one(slot, good(3)).is_ok() && read(slot) == good(3) | pte::A;
    println!("legal update after the rejections: {}", if ok { "ok" } else { "FAILED" });
    c.failures += i32::from(!ok);
    c.failures
}

/// The same rules through trapped writes: a rejected write is dropped.
fn illegal_trapped(mmu: &mut Mmu<HwOps>, ctx: &Ctx) -> i32 {
    if mmu.mode() != paging_mode::TRAPPED {
        println!("illegal-trapped: needs --paging trapped");
        return 7;
    }
    let Ok((l1, l2)) = test_tables(mmu, ctx) else {
        println!("illegal-trapped: setup failed");
        return 8;
    };
    let si = ctx.si;
    let data = ctx.data;
    let slot = l1 + 5 * 8;
    let mut failures = 0;
    let mut check = |what: &str, addr: u64, val: u64| {
        let before = read(addr);
        // SAFETY: in trapped mode the pool is mapped writable in our tables
        // and read-only to KVM: the write exits and the VMM decides.
        unsafe { arch::write_u64(addr, val) };
        let ok = read(addr) == before;
        println!("trapped {}: {}", what, if ok { "dropped" } else { "FAILED" });
        failures += i32::from(!ok);
    };
    check("frame outside RAM", slot, si.mem_bytes | pte::P);
    check("upper-level entry pointing outside the pool", l2 + 7 * 8, data | pte::P | pte::RW);
    check("reserved bits", slot, data | pte::P | (1 << 52));
    check("2M page over the end of RAM", l2 + 8 * 8, (si.mem_bytes & !(LARGE_PAGE - 1)) | pte::P | pte::PS);
    // A legal full write and a legal partial (high-half) write apply.
    // SAFETY: as above.
    unsafe { arch::write_u64(slot, (data + PAGE_SIZE) | pte::P | pte::RW) };
    let full = read(slot) == (data + PAGE_SIZE) | pte::P | pte::RW | pte::A | pte::D;
    // SAFETY: as above; bit 63 (NX) is in the high half.
    unsafe { arch::write_u32(slot + 4, 0x8000_0000) };
    let partial = read(slot) == (data + PAGE_SIZE) | pte::P | pte::RW | pte::A | pte::D | pte::NX;
    mmu.invlpg(TEST_VA + 5 * PAGE_SIZE).ok();
    // SAFETY: the page at TEST_VA + 5 pages was just mapped to a data frame.
    let through = unsafe { arch::read_u64(TEST_VA + 5 * PAGE_SIZE) } == read(data + PAGE_SIZE);
    let ok = full && partial && through;
    println!("trapped legal writes apply: {}", if ok { "ok" } else { "FAILED" });
    failures + i32::from(!ok)
}

/// Xen multicall semantics: every entry runs and gets its result, failures
/// included; nesting is refused; the call itself returns 0.
fn multicall(mmu: &mut Mmu<HwOps>, ctx: &Ctx) -> i32 {
    if mmu.mode() != paging_mode::PV {
        println!("multicall: needs --paging pv");
        return 7;
    }
    let Ok((l1, _)) = test_tables(mmu, ctx) else {
        println!("multicall: setup failed");
        return 8;
    };
    let data = ctx.data;
    let pool = ctx.si.pt_pool_start;
    let good1 = [MmuUpdate::normal(l1 + 20 * 8, data | pte::P)];
    let bad = [MmuUpdate::normal(l1 + 21 * 8, pool | pte::P | pte::RW)];
    let good2 = [MmuUpdate::normal(l1 + 22 * 8, data | pte::P)];
    let flush = [MmuextOp::plain(MMUEXT_TLB_FLUSH_LOCAL)];
    let upd = |r: &[MmuUpdate; 1]| {
        MulticallEntry::new(nr::MMU_UPDATE, [r.as_ptr() as u64, 1, 0, u64::from(DOMID_SELF), 0, 0])
    };
    let mut inner = [MulticallEntry::new(nr::XEN_VERSION, [0; 6])];
    let mut entries = [
        upd(&good1),
        MulticallEntry::new(nr::XEN_VERSION, [xen_version::VERSION, 0, 0, 0, 0, 0]),
        upd(&bad),
        MulticallEntry::new(999, [0; 6]),
        MulticallEntry::new(nr::MULTICALL, [inner.as_mut_ptr() as u64, 1, 0, 0, 0, 0]),
        MulticallEntry::new(nr::MMUEXT_OP, [flush.as_ptr() as u64, 1, 0, u64::from(DOMID_SELF), 0, 0]),
        upd(&good2),
    ];
    let ret = mmu::multicall(&mut entries);
    let want: [i64; 7] = [0, ABI_VERSION as i64, -mmu_err::WRITABLE_POOL, -ENOSYS, -EINVAL, 0, 0];
    let mut failures = 0;
    for (i, (e, w)) in entries.iter().zip(want).enumerate() {
        let ok = e.result as i64 == w;
        println!("multicall entry {}: {} ({})", i, if ok { "ok" } else { "FAILED" }, e.result as i64);
        failures += i32::from(!ok);
    }
    let applied = read(l1 + 20 * 8) == data | pte::P | pte::A
        && read(l1 + 21 * 8) == 0
        && read(l1 + 22 * 8) == data | pte::P | pte::A;
    let nested_ran = inner[0].result != 0;
    let ok = ret.is_ok() && applied && !nested_ran;
    println!("multicall returns 0 and applies the good entries: {}", if ok { "ok" } else { "FAILED" });
    failures += i32::from(!ok);
    let mut many = [MulticallEntry::new(nr::XEN_VERSION, [0; 6]); 257];
    let too_many = mmu::multicall(&mut many);
    let ok = too_many == Err(Errno(E2BIG)) && many.iter().all(|e| e.result == 0);
    println!("multicall of 257 entries: {} ({:?})", if ok { "ok" } else { "FAILED" }, too_many);
    failures += i32::from(!ok);
    // SAFETY: the entry array straddles the end of RAM, which the VMM
    // refuses with EFAULT (checked below) before writing any result.
    let ret = unsafe { frontend_guest::hypercall::raw(nr::MULTICALL, ctx.si.mem_bytes - 64, 2, 0) };
    let ok = ret == -EFAULT;
    println!("multicall array outside RAM: {} ({})", if ok { "ok" } else { "FAILED" }, ret);
    failures + i32::from(!ok)
}

/// A hypercall with five arguments, for outputs aimed at protected pages.
fn call5(nr: u64, a: [u64; 5]) -> i64 {
    // SAFETY: the outputs are aimed at pages the guest cannot write (the
    // read-only pool, the VMM's low pages): the VMM must refuse them; the
    // inputs it reads are ours or pool contents.
    unsafe { arch::hypercall(nr, a[0], a[1], a[2], a[3], a[4]) }
}

/// Each hypercall output aimed at a pinned table (or a reserved low page)
/// is refused with `EFAULT` and the entry keeps its value.
fn outputs(mmu: &mut Mmu<HwOps>, ctx: &Ctx) -> i32 {
    use pv_abi::event_channel::EVTCHNOP_ALLOC_UNBOUND;
    use pv_abi::grant_table::GNTTABOP_QUERY_SIZE;
    if mmu.mode() == paging_mode::NATIVE {
        println!("outputs: needs --paging trapped or pv");
        return 7;
    }
    let Ok((l1, l2)) = test_tables(mmu, ctx) else {
        println!("outputs: setup failed");
        return 8;
    };
    let mut failures = 0;
    let mut expect = |what: &str, watch: u64, f: &dyn Fn() -> i64| {
        let before = (read(watch), read(watch + 8));
        let got = f();
        let ok = got == -EFAULT && (read(watch), read(watch + 8)) == before;
        println!("output into {}: {} ({})", what, if ok { "ok" } else { "FAILED" }, got);
        failures += i32::from(!ok);
    };
    let self_id = u64::from(DOMID_SELF);
    // pdone = 3 would be P|RW to frame 0: an upper-level entry outside the pool.
    let reqs =
        [MmuUpdate::normal(l1 + 40 * 8, 0), MmuUpdate::normal(l1 + 41 * 8, 0), MmuUpdate::normal(l1 + 42 * 8, 0)];
    let slot = l2 + 9 * 8;
    expect("an L2 entry (mmu_update pdone)", slot, &|| {
        call5(nr::MMU_UPDATE, [reqs.as_ptr() as u64, 3, slot, self_id, 0])
    });
    let flush = [MmuextOp::plain(MMUEXT_TLB_FLUSH_LOCAL); 3];
    expect("an L2 entry (mmuext_op pdone)", slot, &|| {
        call5(nr::MMUEXT_OP, [flush.as_ptr() as u64, 3, slot, self_id, 0])
    });
    expect("an L1 entry (xen_version features)", l1 + 43 * 8, &|| {
        call5(nr::XEN_VERSION, [xen_version::GET_FEATURES, l1 + 43 * 8, 0, 0, 0])
    });
    expect("the L4 (xen_version features)", mmu.l4() + 200 * 8, &|| {
        call5(nr::XEN_VERSION, [xen_version::GET_FEATURES, mmu.l4() + 200 * 8, 0, 0, 0])
    });
    // Non-present entries holding DOMID_SELF make valid evtchn/gnttab
    // inputs; their outputs must still be refused.
    let (ev, gt) = (l1 + 44 * 8, l1 + 46 * 8);
    if one(ev, self_id).is_err() || one(gt, self_id).is_err() {
        println!("outputs: cannot stage the inputs");
        return 9;
    }
    expect("an L1 entry (evtchn alloc_unbound)", ev, &|| {
        call5(nr::EVENT_CHANNEL_OP, [u64::from(EVTCHNOP_ALLOC_UNBOUND), ev, 0, 0, 0])
    });
    expect("an L1 entry (gnttab query_size)", gt, &|| {
        call5(nr::GRANT_TABLE_OP, [u64::from(GNTTABOP_QUERY_SIZE), gt, 1, 0, 0])
    });
    expect("an L1 entry (multicall results)", l1 + 48 * 8, &|| call5(nr::MULTICALL, [l1 + 48 * 8, 1, 0, 0, 0]));
    expect("the boot page tables (xen_version features)", 0x2000, &|| {
        call5(nr::XEN_VERSION, [xen_version::GET_FEATURES, 0x2000, 0, 0, 0])
    });
    failures
}

/// A multicall of 256 `mmuext_op`s, each over `n` flushes, `rounds` times
/// (0: until the VMM stops us). Every entry must report 0 and `pdone = n`
/// however the VMM splits the work.
fn flood(mmu: &mut Mmu<HwOps>, ctx: &Ctx, n: u64, rounds: u64) -> i32 {
    const ENTRIES: usize = 256;
    if mmu.mode() != paging_mode::PV {
        println!("flood: needs --paging pv");
        return 7;
    }
    let ops_bytes = n * core::mem::size_of::<MmuextOp>() as u64;
    let done_at = (ctx.data + ops_bytes + 63) & !63;
    let entries_at = done_at + 4 * ENTRIES as u64;
    if entries_at + (ENTRIES * core::mem::size_of::<MulticallEntry>()) as u64 > ctx.data_end {
        println!("flood: n={} does not fit", n);
        return 8;
    }
    // SAFETY: `data..data_end` is identity-mapped free RAM
    // of ours, and the three arrays are disjoint, aligned and inside it
    // (checked above); nothing else refers to them.
    let ops = unsafe { core::slice::from_raw_parts_mut(ctx.data as *mut MmuextOp, n as usize) };
    // SAFETY: as above.
    let done = unsafe { core::slice::from_raw_parts_mut(done_at as *mut u32, ENTRIES) };
    // SAFETY: as above.
    let entries = unsafe { core::slice::from_raw_parts_mut(entries_at as *mut MulticallEntry, ENTRIES) };
    ops.fill(MmuextOp::plain(MMUEXT_TLB_FLUSH_LOCAL));
    // The same batch as one direct call: continued, `pdone` accumulated.
    done[0] = u32::MAX;
    let ret = call5(nr::MMUEXT_OP, [ops.as_ptr() as u64, n, &mut done[0] as *mut u32 as u64, u64::from(DOMID_SELF), 0]);
    if ret != 0 || u64::from(done[0]) != n {
        println!("flood: direct mmuext_op FAILED ({}, done={})", ret, done[0]);
        return 1;
    }
    let mut round = 0;
    while rounds == 0 || round < rounds {
        for (e, d) in entries.iter_mut().zip(done.iter_mut()) {
            *d = u32::MAX;
            let args = [ops.as_ptr() as u64, n, d as *mut u32 as u64, u64::from(DOMID_SELF), 0, 0];
            *e = MulticallEntry::new(nr::MMUEXT_OP, args);
        }
        let ret = mmu::multicall(entries);
        let ok = ret.is_ok() && entries.iter().all(|e| e.result == 0) && done.iter().all(|&d| u64::from(d) == n);
        if !ok {
            println!("flood: round {} FAILED ({:?}, done[0]={}, result[0]={})", round, ret, done[0], entries[0].result);
            return 1;
        }
        round += 1;
    }
    println!("flood: rounds={} entries={} n={} ok", round, ENTRIES, n);
    0
}
