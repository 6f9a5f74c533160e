//! `blk`: the block-device demo and test scenarios. The guest finds its
//! disks in the store (`device/vbd/*`), connects blkfront to them and runs
//! `test=<name>` (default `demo`), or the soak mode when `soak=<seconds>`
//! is given (see [`soak`]). Results are printed; the exit status is 0 when
//! everything was as expected (or `exit=<n>` for the demo).
#![no_std]
#![no_main]

use frontend_guest::blkfront::{self, BlkFront, IoBuf};
use frontend_guest::hypercall::{self, Resumed};
use frontend_guest::xenbus::{ShutdownRequest, Store};
use frontend_guest::{clock, cmdline, evtchn, guest_main, print, println};
use pv_abi::blkif::*;
use pv_abi::start_info::StartInfo;

guest_main!(main);

#[path = "blk/smp_queues.rs"]
mod smp_queues;

fn main(si: &'static StartInfo) -> i32 {
    let cmd = si.cmdline_bytes();
    let soak_mode = cmdline::get(cmd, "soak").is_some();
    let test = cmdline::get(cmd, "test").unwrap_or(if soak_mode { b"soak" } else { b"demo" });
    if test == b"demo" {
        println!("Hello from the PV guest ({} MiB RAM)", si.mem_bytes >> 20);
        println!("cmdline: {}", core::str::from_utf8(cmd).unwrap_or("<not utf-8>"));
    }
    let mut store = match frontend_guest::xenbus::open_store(si) {
        Ok(s) => s,
        Err(e) => {
            println!("store: cannot open: {:?}", e);
            return 70;
        }
    };
    if let Some(mode) = cmdline::get(cmd, "hotplug") {
        return hotplug(&mut store, mode, cmdline::get_u64(cmd, "seed").unwrap_or(HOTPLUG_SEED));
    }
    let mut vdevs = [0u32; 8];
    let mut n = 0;
    if let Err(e) = blkfront::list_disks(&mut store, |v| {
        if n < vdevs.len() {
            vdevs[n] = v;
            n += 1;
        }
    }) {
        println!("blk: cannot list disks: {:?}", e);
        return 71;
    }
    if n == 0 {
        println!("blk: no disk (device/vbd is empty): pass --disk <image>");
        return 72;
    }
    if test == b"mq-hostile" {
        return mq_hostile(&mut store, vdevs[0]);
    }
    // The demo with several vCPUs (`vmm run --vcpus N`): one queue per
    // vCPU, each driven by its own vCPU (`smp_queues`).
    let vcpus = if test == b"demo" { frontend_guest::smp::vcpus() } else { 1 };
    if vcpus > 1 || cmdline::get(cmd, "queues").is_some() || cmdline::get(cmd, "ring-order").is_some() {
        return queues_mode(&mut store, vdevs[0], test, vcpus, cmd);
    }
    // Two disks at most (the hostile test's); `BlkFront` is small (its
    // slots live in pages of their own) and lives on the boot stack.
    let mut disks = [const { None }; 2];
    for (d, &v) in disks.iter_mut().zip(&vdevs[..n]) {
        match blkfront::connect(&mut store, v) {
            Ok(f) => *d = Some(f),
            Err(e) => {
                println!("blk: vbd/{}: connect failed: {:?}", v, e);
                return 73;
            }
        }
    }
    if test == b"soak" {
        // A soak ends early, verified, when the VMM asks (`vmm ctl
        // shutdown`, SIGTERM): control/shutdown, as a Xen guest watches it.
        if let Err(e) = frontend_guest::xenbus::watch_shutdown(&mut store) {
            println!("soak: cannot watch control/shutdown: {:?}", e);
        }
        return soak(&mut disks, cmd, &mut store);
    }
    let Some(disk) = disks[0].as_mut() else { return 73 };
    let code = match test {
        b"demo" => demo(disk),
        b"patterns" => patterns(disk, cmdline::get_u64(cmd, "seed").unwrap_or(1)),
        b"crash" => crash(disk),
        b"discard" => discard(disk),
        b"hostile" => {
            let [Some(a), Some(b)] = &mut disks else {
                println!("hostile: needs two disks");
                return 74;
            };
            hostile(a, b)
        }
        b"bench" => bench(disk, cmd),
        other => {
            println!("unknown test {:?}", core::str::from_utf8(other).unwrap_or("?"));
            return 64;
        }
    };
    if test == b"demo" && code == 0 {
        return cmdline::get_u64(cmd, "exit").unwrap_or(0) as i32;
    }
    code
}

/// The multi-queue modes (`queues=N`, `ring-order=K`, or several vCPUs):
/// connect the queues of disk `vdev`, then bench, drive one queue per
/// vCPU, or check each queue.
fn queues_mode(store: &mut Store, vdev: u32, test: &[u8], vcpus: u32, cmd: &[u8]) -> i32 {
    let default = if vcpus > 1 { u64::from(vcpus) } else { 1 };
    let queues = cmdline::get_u64(cmd, "queues").unwrap_or(default).clamp(1, blkfront::MAX_QUEUES as u64) as usize;
    let order = cmdline::get_u64(cmd, "ring-order").unwrap_or(0).min(u64::from(u32::MAX)) as u32;
    let mut qs = [const { None }; blkfront::MAX_QUEUES];
    match blkfront::connect_queues(store, vdev, order, &mut qs[..queues]) {
        Ok(n) if test == b"bench" => bench_queues(&mut qs[..n], cmd),
        Ok(n) if vcpus > 1 => smp_queues::run(&mut qs[..n], vcpus, cmdline::get_u64(cmd, "seed").unwrap_or(MQ_SEED)),
        Ok(n) => multi_queue(&mut qs[..n], cmdline::get_u64(cmd, "seed").unwrap_or(MQ_SEED)),
        Err(e) => {
            println!("blk: vbd/{}: connect with {} queues failed: {:?}", vdev, queues, e);
            73
        }
    }
}

/// The pattern seed `hotplug` checks by default (the host test writes
/// the image with it).
const HOTPLUG_SEED: u64 = 0x407;

/// Sectors `hotplug` reads and checks from the start of each disk.
const HOTPLUG_SECTORS: u64 = 8;

/// `hotplug=<rounds>`: starts with no disk; each round waits for a disk
/// to be attached at run time (`vmm ctl add-disk`), reads its first
/// sectors and checks them against the pattern `seed`, then waits for the
/// detach (`vmm ctl remove-device`) and closes the front end.
/// `hotplug=ignore`: one round whose front end ignores the detach's
/// `Closing`, so the VMM must force the removal (its directories vanish).
fn hotplug(store: &mut frontend_guest::xenbus::Store, mode: &[u8], seed: u64) -> i32 {
    let ignore = mode == b"ignore";
    let busy = mode == b"busy";
    let rounds = if ignore || busy { 1 } else { cmdline::parse_u64(mode).unwrap_or(1) };
    let Some(buf) = IoBuf::alloc(1) else { return 2 };
    for round in 1..=rounds {
        println!("hotplug: round {}: waiting for a disk under device/vbd", round);
        let vdev = match blkfront::wait_for_disk(store) {
            Ok(v) => v,
            Err(e) => {
                println!("hotplug: watch on device/vbd failed: {:?}", e);
                return 75;
            }
        };
        let mut d = match blkfront::connect(store, vdev) {
            Ok(d) => d,
            Err(e) => {
                println!("hotplug: vbd/{}: connect failed: {:?}", vdev, e);
                return 73;
            }
        };
        let nr = HOTPLUG_SECTORS.min(d.info.sectors);
        let good = ok(d.read(0, buf.gpa, nr), "hotplug: read") && buf.check(0, nr, 0, seed).is_none();
        println!(
            "hotplug: vbd/{} attached, {} KiB, read {} sectors: {}",
            vdev,
            d.info.sectors / 2,
            nr,
            if good { "verified" } else { "MISMATCH" }
        );
        if !good {
            // Say what the user must fix: the image, not the VMM.
            println!("hotplug: the disk must hold the pattern of seed={:#x} (docs/api.md, Disk hot-plug)", seed);
            return 1;
        }
        if busy {
            match read_until_detached(store, &mut d, buf, seed) {
                Ok(n) => println!("hotplug: vbd/{}: {} reads until the detach, all verified", vdev, n),
                Err(e) => {
                    println!("hotplug: vbd/{}: {}", vdev, e);
                    return 1;
                }
            }
        }
        match d.wait_backend_leaves(store) {
            Ok(s) => println!("hotplug: vbd/{}: back end {:?}", vdev, s),
            Err(e) => {
                println!("hotplug: vbd/{}: waiting for the detach failed: {:?}", vdev, e);
                return 76;
            }
        }
        if ignore {
            // The VMM forces the removal after its timeout: the back end's
            // directory goes (its state reads as Unknown).
            // A forced detach still unmaps the ring: its grant ends.
            match d.wait_backend_gone(store).and_then(|()| d.release()) {
                Ok(()) => println!("hotplug: vbd/{}: ignored Closing; removed by force; ring released", vdev),
                Err(e) => {
                    println!("hotplug: vbd/{}: {:?}", vdev, e);
                    return 76;
                }
            }
            continue;
        }
        match d.close(store) {
            Ok(()) => println!("hotplug: vbd/{} closed; ring released", vdev),
            Err(e) => {
                println!("hotplug: vbd/{}: close failed: {:?}", vdev, e);
                return 77;
            }
        }
    }
    0
}

/// `hotplug=busy`: reads and checks the disk's first sectors over and
/// over until the back end leaves `Connected` (the detach started while
/// the disk was busy); returns the number of reads.
fn read_until_detached(
    store: &mut frontend_guest::xenbus::Store,
    d: &mut BlkFront,
    buf: IoBuf,
    seed: u64,
) -> Result<u64, &'static str> {
    println!("hotplug: vbd/{}: reading until the detach", d.vdev);
    let nr = HOTPLUG_SECTORS.min(d.info.sectors);
    let mut reads = 0;
    loop {
        if !ok(d.read(0, buf.gpa, nr), "hotplug: busy read") || buf.check(0, nr, 0, seed).is_some() {
            return Err("a read during the detach failed");
        }
        reads += 1;
        match d.backend_state(store) {
            Ok(pv_abi::xenbus::XenbusState::Connected) => {}
            Ok(_) => return Ok(reads),
            Err(_) => return Err("cannot read the back end's state"),
        }
    }
}

fn ok(st: Result<i16, blkfront::BlkError>, what: &str) -> bool {
    match st {
        Ok(BLKIF_RSP_OKAY) => true,
        other => {
            println!("{}: {:?}", what, other);
            false
        }
    }
}

/// Write a pattern (one sector, then 16 pages through an indirect request),
/// flush, read back into another buffer, verify.
fn demo(d: &mut BlkFront) -> i32 {
    let (Some(out), Some(inb)) = (IoBuf::alloc(16), IoBuf::alloc(16)) else { return 2 };
    let seed = 0xb10c;
    let sector = 8u64.min(d.info.sectors.saturating_sub(129));
    out.fill(0, 128, sector, seed);
    let mut good = ok(d.write(sector, out.gpa, 1), "demo: write 1 sector")
        && ok(d.write(sector + 1, out.gpa + 512, 127), "demo: write 127 sectors")
        && ok(d.flush(), "demo: flush")
        && ok(d.read(sector, inb.gpa, 128), "demo: read");
    let verified = good && inb.check(0, 128, sector, seed).is_none();
    good &= verified;
    println!(
        "blk demo: disk vbd/{} {} KiB{}; wrote 64 KiB at sector {} (1 + 127 sectors, indirect), flushed, read back: {}",
        d.vdev,
        d.info.sectors / 2,
        if d.info.readonly() { " read-only" } else { "" },
        sector,
        if verified { "verified" } else { "MISMATCH" }
    );
    (!good) as i32
}

/// Many offsets and lengths, several requests in flight: print each write
/// (the host checks the image), flush, read everything back and verify.
fn patterns(d: &mut BlkFront, seed0: u64) -> i32 {
    // (sector, sectors, first sector within the page)
    const CASES: [(u64, u64, u64); 12] = [
        (0, 1, 0),
        (3, 1, 5),
        (17, 7, 1),
        (40, 8, 0),
        (60, 9, 7),
        (100, 16, 3),
        (200, 88, 0),
        (300, 89, 0),
        (400, 40, 6),
        (600, 97, 2),
        (800, 130, 1),
        (1100, 160, 0),
    ];
    // Room per case for 160 sectors starting at any sector of a page.
    const SLOT_PAGES: u64 = 22;
    let Some(buf) = IoBuf::alloc(SLOT_PAGES * CASES.len() as u64) else { return 2 };
    let slot_bytes = SLOT_PAGES * 4096;
    let mut bad = 0;
    // Writes, four in flight at a time.
    for base in (0..CASES.len()).step_by(4) {
        let chunk = base..(base + 4).min(CASES.len());
        for i in chunk.clone() {
            let (sector, nr, first) = CASES[i];
            let at = i as u64 * slot_bytes + first * 512;
            buf.fill(at, nr, sector, seed0 + i as u64);
            if let Err(e) = d.queue_io(BLKIF_OP_WRITE, sector, buf.gpa + at, nr) {
                println!("patterns: queue write {}: {:?}", i, e);
                return 1;
            }
        }
        d.push();
        for _ in chunk {
            match d.wait() {
                Ok(c) if c.status == BLKIF_RSP_OKAY => {}
                other => {
                    println!("patterns: write failed: {:?}", other);
                    bad += 1;
                }
            }
        }
    }
    if !ok(d.flush(), "patterns: flush") {
        bad += 1;
    }
    for (i, &(sector, nr, _)) in CASES.iter().enumerate() {
        println!("wrote sector={} nr={} seed={}", sector, nr, seed0 + i as u64);
    }
    // Read back into fresh positions (other in-page offsets).
    buf.set(0, SLOT_PAGES * CASES.len() as u64 * 8, 0);
    for (i, &(sector, nr, first)) in CASES.iter().enumerate() {
        let first = (first + 3) % 8;
        let at = i as u64 * slot_bytes + first * 512;
        if !ok(d.read(sector, buf.gpa + at, nr), "patterns: read") {
            bad += 1;
            continue;
        }
        if let Some(off) = buf.check(at, nr, sector, seed0 + i as u64) {
            println!("patterns: case {} differs at byte {}", i, off);
            bad += 1;
        }
    }
    println!("patterns: cases={} bad={} notifies={} leaked={}", CASES.len(), bad, d.notifies, d.leaked_grants);
    (bad != 0) as i32
}

/// Write, flush, say so, then wait forever for the host to kill the VMM.
fn crash(d: &mut BlkFront) -> i32 {
    let Some(buf) = IoBuf::alloc(8) else { return 2 };
    let (sector, nr, seed) = (64, 64, 0xc4a5);
    buf.fill(0, nr, sector, seed);
    if !ok(d.write(sector, buf.gpa, nr), "crash: write") || !ok(d.flush(), "crash: flush") {
        return 1;
    }
    println!("flushed sector={} nr={} seed={}", sector, nr, seed);
    evtchn::wait_until(|| false);
    0
}

/// Write a pattern, discard the middle, read back: zeros in the middle,
/// the pattern around it.
fn discard(d: &mut BlkFront) -> i32 {
    let Some(buf) = IoBuf::alloc(8) else { return 2 };
    let (sector, seed) = (32, 0xd15c);
    buf.fill(0, 64, sector, seed);
    if !ok(d.write(sector, buf.gpa, 64), "discard: write") {
        return 1;
    }
    let st = d.discard(sector + 16, 24);
    buf.set(0, 64, 0x5555_5555_5555_5555);
    if !ok(st, "discard") || !ok(d.read(sector, buf.gpa, 64), "discard: read") {
        return 1;
    }
    let zeros = buf.is_zero(16 * 512, 24);
    let rest = buf.check(0, 16, sector, seed).is_none() && buf.check(40 * 512, 24, sector + 40, seed).is_none();
    println!("discard: feature={} zeros={} rest={}", d.info.discard, zeros, rest);
    (!(zeros && rest)) as i32
}

/// Hostile requests on disk `a`; `b` is read-only and must keep working
/// after `a` is stopped by a corrupt ring.
fn hostile(a: &mut BlkFront, b: &mut BlkFront) -> i32 {
    let Some(buf) = IoBuf::alloc(12) else { return 2 };
    let page = frontend_guest::grant::grant_page(pv_abi::event_channel::DOMID_VMM, buf.gpa, false).unwrap_or(0);
    let seg = BlkifRequestSegment::new;
    let req = |id: u64, op: u8, sector: u64, segs: &[BlkifRequestSegment]| {
        let mut r = BlkifRequest::direct(op, id, sector, segs);
        // Hostile: the count as given, even past what the slot holds.
        r.nr_segments = segs.len() as u8;
        r
    };
    let end = a.info.sectors;
    let mut cases = [
        (req(1, BLKIF_OP_READ, 0, &[seg(400, 0, 7)]), BLKIF_RSP_ERROR),
        (req(2, BLKIF_OP_READ, 0, &[seg(page, 5, 2)]), BLKIF_RSP_ERROR),
        (req(3, BLKIF_OP_READ, 0, &[seg(page, 0, 8)]), BLKIF_RSP_ERROR),
        (req(4, BLKIF_OP_READ, 0, &[seg(page, 0, 7); 11]), BLKIF_RSP_ERROR),
        (req(5, BLKIF_OP_READ, end, &[seg(page, 0, 0)]), BLKIF_RSP_ERROR),
        (req(6, BLKIF_OP_WRITE_BARRIER, 0, &[seg(page, 0, 7)]), BLKIF_RSP_EOPNOTSUPP),
        (req(7, BLKIF_OP_READ, 0, &[seg(page, 0, 7)]), BLKIF_RSP_OKAY),
        (req(7, BLKIF_OP_READ, 8, &[seg(page, 0, 7)]), BLKIF_RSP_ERROR),
    ];
    cases[3].0.nr_segments = 12; // more than 11 without indirect
    let mut refused = 0;
    for (r, _) in &cases {
        let _ = a.queue_unchecked(r);
    }
    a.push();
    for (i, (_, want)) in cases.iter().enumerate() {
        match a.wait() {
            Ok(c) if c.status == *want => refused += 1,
            other => println!("hostile: case {}: {:?}, wanted {}", i, other, want),
        }
    }
    // Read-only disk: a write is refused, a read works.
    let ro_write = b.write(0, buf.gpa, 8);
    let ro_read = b.read(0, buf.gpa, 8);
    // Corrupt ring indices stop disk `a` only.
    a.poke_req_prod(0x4000_0000);
    a.kick();
    let stopped = matches!(a.wait_bounded(20_000), Ok(None));
    let second = b.read(8, buf.gpa + 4096, 16);
    println!(
        "hostile: refused={}/{} ro-write={:?} ro-read={:?} corrupt-stopped={} second-disk={:?}",
        refused,
        cases.len(),
        ro_write,
        ro_read,
        stopped,
        second
    );
    let good = refused == cases.len()
        && ro_write == Ok(BLKIF_RSP_ERROR)
        && ro_read == Ok(BLKIF_RSP_OKAY)
        && stopped
        && second == Ok(BLKIF_RSP_OKAY);
    (!good) as i32
}

/// `n` random 4 KiB requests (`op=read|write`), `depth` in flight.
fn bench(d: &mut BlkFront, cmd: &[u8]) -> i32 {
    let n = cmdline::get_u64(cmd, "n").unwrap_or(100);
    let depth = cmdline::get_u64(cmd, "depth").unwrap_or(8).clamp(1, blkfront::SLOTS as u64);
    let op = if cmdline::get(cmd, "op") == Some(b"write") { BLKIF_OP_WRITE } else { BLKIF_OP_READ };
    let Some(buf) = IoBuf::alloc(depth) else { return 2 };
    let blocks = (d.info.sectors / 8).max(1);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let (mut sent, mut done, mut bad) = (0u64, 0u64, 0u64);
    let mut free = [true; blkfront::SLOTS];
    let mut slot_of = [0usize; blkfront::SLOTS];
    while done < n {
        while sent < n && d.in_flight() < depth as usize {
            let Some(s) = free.iter().position(|&f| f) else { break };
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match d.queue_io(op, (x % blocks) * 8, buf.gpa + s as u64 * 4096, 8) {
                Ok(id) => {
                    free[s] = false;
                    slot_of[(id & 0xff) as usize] = s;
                    sent += 1;
                }
                Err(_) => break,
            }
        }
        d.push();
        match d.wait() {
            Ok(c) => {
                bad += (c.status != BLKIF_RSP_OKAY) as u64;
                free[slot_of[(c.id & 0xff) as usize]] = true;
                done += 1;
            }
            Err(e) => {
                println!("bench: {:?}", e);
                return 1;
            }
        }
    }
    println!("bench: n={} depth={} bad={} notifies={}", n, depth, bad, d.notifies);
    (bad != 0) as i32
}

/// The pattern seed of queue 0 in [`multi_queue`] (queue `q` uses
/// `seed + q`; the host test checks the image with the same).
const MQ_SEED: u64 = 0x3100;
/// Sectors of the disk region each queue writes in [`multi_queue`].
pub const MQ_REGION: u64 = 512;
/// 4 KiB requests each queue has in flight in [`multi_queue`]: more than a
/// one-page ring's 32, so a bigger ring is seen to be used.
const MQ_REQUESTS: u64 = 40;

/// `queues=N ring-order=K`: the disk connected with N queues and rings of
/// 2^K pages (as many as the back end offers). Each queue writes its own
/// region (`MQ_REQUESTS` 4 KiB writes, as many in flight at once as its
/// ring holds), every queue's requests pushed before any is waited for, so
/// the back end's queue threads work at once; then a flush, and each
/// region read back through the *next* queue and verified.
fn multi_queue(qs: &mut [Option<BlkFront>], seed: u64) -> i32 {
    let n = qs.len() as u64;
    let Some(first) = qs.first().and_then(|q| q.as_ref()) else { return 73 };
    if first.info.sectors < n * MQ_REGION {
        println!("blk mq: the disk needs {} sectors for {} queues", n * MQ_REGION, n);
        return 1;
    }
    let pages = first.ring_pages;
    let Some(buf) = IoBuf::alloc(n * MQ_REQUESTS) else { return 2 };
    let mut max_in_flight = [0usize; blkfront::MAX_QUEUES];
    let mut bad = 0u64;
    for q in 0..n {
        buf.fill(q * MQ_REQUESTS * 4096, MQ_REQUESTS * 8, q * MQ_REGION, seed + q);
    }
    // Writes: queue (as many as fit) on every queue, push all, then reap.
    let mut sent = [0u64; blkfront::MAX_QUEUES];
    let mut done = [0u64; blkfront::MAX_QUEUES];
    while done[..qs.len()].iter().any(|&d| d < MQ_REQUESTS) {
        for (q, d) in qs.iter_mut().flatten().enumerate() {
            while sent[q] < MQ_REQUESTS {
                let i = sent[q];
                let at = buf.gpa + (q as u64 * MQ_REQUESTS + i) * 4096;
                match d.queue_io(BLKIF_OP_WRITE, q as u64 * MQ_REGION + i * 8, at, 8) {
                    Ok(_) => sent[q] += 1,
                    Err(_) => break,
                }
            }
            max_in_flight[q] = max_in_flight[q].max(d.in_flight());
            d.push();
        }
        for (q, d) in qs.iter_mut().flatten().enumerate() {
            while done[q] < sent[q] {
                match d.wait() {
                    Ok(c) => bad += (c.status != BLKIF_RSP_OKAY) as u64,
                    Err(e) => {
                        println!("blk mq: queue {}: {:?}", q, e);
                        return 1;
                    }
                }
                done[q] += 1;
            }
        }
    }
    for d in qs.iter_mut().flatten() {
        bad += !ok(d.flush(), "blk mq: flush") as u64;
    }
    // Read each region back through the next queue, into a zeroed buffer.
    buf.set(0, n * MQ_REQUESTS * 8, 0);
    let mut verified = 0;
    for q in 0..qs.len() {
        let reader = (q + 1) % qs.len();
        let Some(d) = qs[reader].as_mut() else { return 73 };
        let at = q as u64 * MQ_REQUESTS * 4096;
        let nr = MQ_REQUESTS * 8;
        // Reads of 32 sectors (4 pages, direct segments).
        let mut good = true;
        for chunk in 0..nr / 32 {
            good &= ok(d.read(q as u64 * MQ_REGION + chunk * 32, buf.gpa + at + chunk * 32 * 512, 32), "blk mq: read");
        }
        if good && buf.check(at, nr, q as u64 * MQ_REGION, seed + q as u64).is_none() {
            verified += 1;
        } else {
            bad += 1;
        }
    }
    print!("blk mq: queues={} ring-pages={} verified={}/{} bad={} in-flight=", n, pages, verified, n, bad);
    for (q, m) in max_in_flight[..qs.len()].iter().enumerate() {
        print!("{}{}", if q == 0 { "" } else { "," }, m);
    }
    println!(" notifies={}", qs.iter().flatten().map(|d| d.notifies).sum::<u64>());
    (bad != 0 || verified != n) as i32
}

/// `test=bench queues=N`: `n` random 4 KiB requests (`op=read|write`)
/// spread over the queues in turn, `depth` in flight on each.
fn bench_queues(qs: &mut [Option<BlkFront>], cmd: &[u8]) -> i32 {
    let n = cmdline::get_u64(cmd, "n").unwrap_or(100);
    let nq = qs.len();
    let Some(slots) = qs.first().and_then(|q| q.as_ref()).map(|d| d.slots()) else { return 73 };
    let depth = cmdline::get_u64(cmd, "depth").unwrap_or(8).clamp(1, slots.min(64) as u64) as usize;
    let op = if cmdline::get(cmd, "op") == Some(b"write") { BLKIF_OP_WRITE } else { BLKIF_OP_READ };
    // One page per request slot of every queue; slot `s` of queue `q` is
    // page `q * depth + s`.
    let Some(buf) = IoBuf::alloc((nq * depth) as u64) else { return 2 };
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let (mut sent, mut done, mut bad) = (0u64, 0u64, 0u64);
    let mut free = [[true; 64]; blkfront::MAX_QUEUES];
    // The buffer slot of each request, by its ring slot (`id & 0xff`).
    let mut page_of = [[0u8; blkfront::MAX_SLOTS]; blkfront::MAX_QUEUES];
    while done < n {
        for (q, d) in qs.iter_mut().flatten().enumerate() {
            let blocks = (d.info.sectors / 8).max(1);
            while sent < n && d.in_flight() < depth {
                let Some(s) = free[q][..depth].iter().position(|&f| f) else { break };
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let page = buf.gpa + (q * depth + s) as u64 * 4096;
                let Ok(id) = d.queue_io(op, (x % blocks) * 8, page, 8) else { break };
                free[q][s] = false;
                page_of[q][(id & 0xff) as usize] = s as u8;
                sent += 1;
            }
            d.push();
        }
        for (q, d) in qs.iter_mut().flatten().enumerate() {
            while let Ok(Some(c)) = d.poll() {
                bad += (c.status != BLKIF_RSP_OKAY) as u64;
                free[q][usize::from(page_of[q][(c.id & 0xff) as usize])] = true;
                done += 1;
            }
        }
        if done < n {
            // Sleep until some queue answers (the first with requests out).
            if let Some(d) = qs.iter_mut().flatten().find(|d| d.in_flight() > 0) {
                match d.wait() {
                    Ok(c) => {
                        let q = d.queue as usize;
                        bad += (c.status != BLKIF_RSP_OKAY) as u64;
                        free[q][usize::from(page_of[q][(c.id & 0xff) as usize])] = true;
                        done += 1;
                    }
                    Err(e) => {
                        println!("bench: {:?}", e);
                        return 1;
                    }
                }
            }
        }
    }
    let notifies: u64 = qs.iter().flatten().map(|d| d.notifies).sum();
    println!("bench: n={} queues={} depth={} bad={} notifies={}", n, nq, depth, bad, notifies);
    (bad != 0) as i32
}

/// One hostile set of multi-queue keys: its name, `multi-queue-num-queues`
/// (if written), whether queue 1's `event-channel` and `ring-ref` are
/// written, and `ring-page-order` (if written).
type MqCase = (&'static str, Option<&'static [u8]>, bool, bool, Option<u32>);

/// `test=mq-hostile`: multi-queue keys a back end must refuse (no queue,
/// more queues than offered, a missing `queue-1/...` key, an order above
/// the maximum): for each, the back end must go `Closing` and say why in
/// `error`; the front end then closes and starts again (`Closed`,
/// `Initialising`, as after a failed Linux blkfront probe). Last, a good
/// two-queue connection reads the disk: the device and the VM run on.
fn mq_hostile(store: &mut frontend_guest::xenbus::Store, vdev: u32) -> i32 {
    use frontend_guest::xenbus::{self as xbus, NodePath};
    use pv_abi::xenbus::keys as xb;
    const CASES: [MqCase; 5] = [
        ("zero-queues", Some(b"0"), true, true, None),
        ("too-many", Some(b"99"), true, true, None),
        ("no-queue-1-event-channel", Some(b"2"), false, true, None),
        ("no-queue-1-ring-ref", Some(b"2"), true, false, None),
        ("order-too-big", None, true, true, Some(9)),
    ];
    let (Ok(mut dir), Some(ring)) = (NodePath::<64>::new("device"), IoBuf::alloc(2)) else { return 2 };
    if dir.push("vbd").and_then(|d| d.push_u32(vdev)).is_err() {
        return 2;
    }
    let mut be = [0u8; 128];
    let Ok(be) = xbus::read_backend_path(store, dir.as_str(), &mut be) else { return 70 };
    let Ok(mut be_dir) = NodePath::<160>::new(be) else { return 70 };
    let be_state = {
        let mut p = be_dir;
        if p.push(xb::STATE).is_err() {
            return 70;
        }
        p
    };
    if be_dir.push(xb::ERROR).is_err() {
        return 70;
    }
    let dom0 = pv_abi::event_channel::DOMID_VMM;
    let grefs = [0u64, 1].map(|i| frontend_guest::grant::grant_page(dom0, ring.gpa + i * 4096, false).unwrap_or(0));
    let mut refused = 0;
    for case in CASES {
        match mq_case(store, &MqKeys { dir, be_state, be_error: be_dir }, grefs, case) {
            Some(closing) => refused += closing as u32,
            None => return 1,
        }
    }
    for g in grefs {
        let _ = frontend_guest::grant::end_access(g);
    }
    let mut qs = [const { None }; 2];
    let good = match blkfront::connect_queues(store, vdev, 0, &mut qs) {
        Ok(2) => {
            let Some(buf) = IoBuf::alloc(1) else { return 2 };
            qs.iter_mut().flatten().all(|d| ok(d.read(0, buf.gpa, 8), "mq-hostile: read"))
        }
        other => {
            println!("mq-hostile: reconnect: {:?}", other.map(|_| ()));
            false
        }
    };
    println!(
        "mq-hostile: refused={}/{} then two queues read: {}",
        refused,
        CASES.len(),
        if good { "ok" } else { "FAILED" }
    );
    (refused != CASES.len() as u32 || !good) as i32
}

/// Where `mq_hostile` writes and watches: the front end's directory, the
/// back end's `state` and `error` nodes.
struct MqKeys {
    dir: frontend_guest::xenbus::NodePath<64>,
    be_state: frontend_guest::xenbus::NodePath<160>,
    be_error: frontend_guest::xenbus::NodePath<160>,
}

/// One `mq_hostile` case: write its keys, see how the back end answers,
/// start again. `Some(true)`: the back end refused it (`Closing`);
/// `None`: the device could not be brought back to `InitWait`.
fn mq_case(store: &mut Store, keys: &MqKeys, grefs: [u32; 2], case: MqCase) -> Option<bool> {
    use frontend_guest::xenbus as xbus;
    use pv_abi::xenbus::{keys as xb, XenbusState};
    let (name, num, q1_port, q1_ref, order) = case;
    let (dir, be_state, be_dir) = (keys.dir, keys.be_state, keys.be_error);
    let dom0 = pv_abi::event_channel::DOMID_VMM;
    let wait = |store: &mut frontend_guest::xenbus::Store, want: fn(XenbusState) -> bool| {
        xbus::wait_for_state(store, be_state.as_str(), want)
    };
    let key = |k: &str| {
        let mut p = dir;
        p.push(k)?;
        Ok::<_, frontend_guest::store::StoreError>(p)
    };
    let write = |store: &mut frontend_guest::xenbus::Store, k: &str, v: u32| match key(k) {
        Ok(p) => store.write_u32(p.as_str(), v),
        Err(e) => Err(e),
    };
    let ports = [evtchn::alloc_unbound(dom0).unwrap_or(0), evtchn::alloc_unbound(dom0).unwrap_or(0)];
    let mut r = Ok(());
    if let Some(n) = num {
        r = r.and_then(|()| key(xb::MULTI_QUEUE_NUM_QUEUES).and_then(|p| store.write(p.as_str(), n)));
    }
    match order {
        Some(o) => {
            r = r.and_then(|()| write(store, xb::RING_PAGE_ORDER, o));
            r = r.and_then(|()| write(store, "ring-ref0", grefs[0]));
            r = r.and_then(|()| write(store, xb::EVENT_CHANNEL, ports[0]));
        }
        None => {
            r = r.and_then(|()| write(store, "queue-0/ring-ref", grefs[0]));
            r = r.and_then(|()| write(store, "queue-0/event-channel", ports[0]));
            if q1_ref {
                r = r.and_then(|()| write(store, "queue-1/ring-ref", grefs[1]));
            }
            if q1_port {
                r = r.and_then(|()| write(store, "queue-1/event-channel", ports[1]));
            }
        }
    }
    r = r.and_then(|()| xbus::switch_state(store, dir.as_str(), XenbusState::Initialised));
    let state = r.and_then(|()| wait(store, |s| s >= XenbusState::Connected));
    let mut err = [0u8; 96];
    let n = store.read(be_dir.as_str(), &mut err).unwrap_or(0);
    let err = core::str::from_utf8(&err[..n]).unwrap_or("?");
    println!("mq-hostile: {}: back end {:?}: {}", name, state, err);
    // Start again, as a front end does after a failed connection.
    let again = xbus::switch_state(store, dir.as_str(), XenbusState::Closed)
        .and_then(|()| wait(store, |s| s == XenbusState::Closed))
        .and_then(|_| {
            for k in
                [xb::MULTI_QUEUE_NUM_QUEUES, xb::RING_PAGE_ORDER, "ring-ref0", xb::EVENT_CHANNEL, "queue-0", "queue-1"]
            {
                let _ = key(k).map(|p| store.rm(p.as_str()));
            }
            xbus::switch_state(store, dir.as_str(), XenbusState::Initialising)
        })
        .and_then(|()| wait(store, |s| s == XenbusState::InitWait));
    for p in ports {
        let _ = evtchn::close(p);
    }
    if let Err(e) = again {
        println!("mq-hostile: {}: cannot start again: {:?}", name, e);
        return None;
    }
    Some(state == Ok(XenbusState::Closing))
}

/// What a soak run has done so far.
#[derive(Default)]
struct SoakCounts {
    rounds: u64,
    requests: u64,
    verify_errors: u64,
    io_errors: u64,
}

impl SoakCounts {
    fn print(&self, what: &str, start_us: u64) {
        println!(
            "soak: {} rounds={} requests={} verify_errors={} io_errors={} secs={}",
            what,
            self.rounds,
            self.requests,
            self.verify_errors,
            self.io_errors,
            (clock::now_us() - start_us) / 1_000_000
        );
    }
}

/// Verify errors reported one by one; past this only the counts say more
/// (a broken disk must not turn the console into a flood).
const SOAK_REPORTED_ERRORS: u64 = 10;

/// `soak=<seconds>` (0: until the VMM stops the guest): rounds of a write
/// of 1..8 sectors at a random sector and in-page offset, a read-back into
/// another buffer at another offset and a verify, on every writable disk
/// in turn; a flush every `every=<rounds>` (default 500) rounds, with one
/// progress line. Each write carries a fresh pattern seed, so a read that
/// returns stale data fails the verify. The pieces are small on purpose:
/// on an emulating host each guest instruction costs about a microsecond.
/// A shutdown request (`control/shutdown`) ends it after the round in
/// flight, with the same final flush, line and status.
/// Exit status 0 when no request failed and nothing differed.
fn soak(disks: &mut [Option<BlkFront>], cmd: &[u8], store: &mut frontend_guest::xenbus::Store) -> i32 {
    let secs = cmdline::get_u64(cmd, "soak").unwrap_or(0);
    // `suspend=ignore`: a guest that does not cooperate in a suspend.
    let ignore_suspend = cmdline::get(cmd, "suspend") == Some(b"ignore");
    let every = cmdline::get_u64(cmd, "every").unwrap_or(500).max(1);
    let mut x = cmdline::get_u64(cmd, "seed").unwrap_or(1).max(1);
    let (Some(out), Some(inb)) = (IoBuf::alloc(2), IoBuf::alloc(2)) else { return 2 };
    if !disks.iter().flatten().any(|d| !d.info.readonly() && d.info.sectors >= 8) {
        println!("soak: no writable disk of at least 8 sectors");
        return 1;
    }
    clock::init();
    let start = clock::now_us();
    let deadline = start.saturating_add(secs.saturating_mul(1_000_000));
    println!("soak: {} s (0: until stopped), progress every {} rounds", secs, every);
    let mut c = SoakCounts::default();
    loop {
        for d in disks.iter_mut().flatten().filter(|d| !d.info.readonly() && d.info.sectors >= 8) {
            soak_round(d, out, inb, &mut x, &mut c);
        }
        c.rounds += 1;
        if c.rounds % every == 0 {
            soak_flush(disks, &mut c);
            c.print("progress", start);
        }
        if secs != 0 && clock::now_us() >= deadline {
            break;
        }
        // Cheap: a look at the store's response ring for the watch event.
        match frontend_guest::xenbus::shutdown_requested(store) {
            Ok(Some(ShutdownRequest::Suspend)) if ignore_suspend => println!("soak: suspend requested: ignored"),
            Ok(Some(ShutdownRequest::Suspend)) if soak_suspend(disks, store, &mut c, start) != 0 => return 1,
            Ok(Some(ShutdownRequest::Suspend)) => {}
            Ok(Some(req)) => {
                println!("soak: control/shutdown: {:?} requested: stopping", req);
                break;
            }
            _ => {}
        }
    }
    soak_flush(disks, &mut c);
    c.print("done", start);
    (c.verify_errors + c.io_errors != 0) as i32
}

/// Xen's cooperative suspend (`control/shutdown = suspend`): quiesces the
/// disks (no request is in flight between rounds; a flush makes the
/// written data durable), calls `SHUTDOWN_suspend`, and after the resume
/// goes on with the same connections (cancelled) or reconnects every disk
/// (a new domain), as Linux's `xenbus_dev_resume()` makes its front ends.
/// Non-zero if a disk could not reconnect.
fn soak_suspend(disks: &mut [Option<BlkFront>], store: &mut Store, c: &mut SoakCounts, start: u64) -> i32 {
    soak_flush(disks, c);
    c.print("suspending", start);
    let how = match hypercall::suspend() {
        Ok(how) => how,
        Err(e) => {
            println!("soak: SHUTDOWN_suspend failed: {:?}", e);
            return 0;
        }
    };
    if how == Resumed::NewDomain {
        for slot in disks.iter_mut() {
            let Some(d) = slot.take() else { continue };
            let vdev = d.vdev;
            match d.reconnect(store) {
                Ok(d) => *slot = Some(d),
                Err(e) => {
                    println!("soak: vbd/{}: reconnect failed: {:?}", vdev, e);
                    return 1;
                }
            }
        }
    }
    c.print(if how == Resumed::NewDomain { "resumed as a new domain" } else { "resumed (suspend cancelled)" }, start);
    0
}

/// One write, read-back and verify on `d`.
fn soak_round(d: &mut BlkFront, out: IoBuf, inb: IoBuf, x: &mut u64, c: &mut SoakCounts) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    let r = *x;
    let nr = 1 + (r & 7);
    let sector = (r >> 3) % (d.info.sectors - nr + 1);
    // Start anywhere in the first page, so some requests cross into the
    // second one (two segments).
    let (w_at, r_at) = (((r >> 40) & 7) * 512, ((r >> 43) & 7) * 512);
    let seed = r;
    out.fill(w_at, nr, sector, seed);
    c.requests += 2;
    let io = [d.write(sector, out.gpa + w_at, nr), d.read(sector, inb.gpa + r_at, nr)];
    if io.iter().any(|st| *st != Ok(BLKIF_RSP_OKAY)) {
        c.io_errors += 1;
        if c.io_errors <= SOAK_REPORTED_ERRORS {
            println!("soak: vbd/{} sector={} nr={}: write {:?}, read {:?}", d.vdev, sector, nr, io[0], io[1]);
        }
    } else if let Some(off) = inb.check(r_at, nr, sector, seed) {
        c.verify_errors += 1;
        if c.verify_errors <= SOAK_REPORTED_ERRORS {
            println!("soak: vbd/{} sector={} nr={}: read back differs at byte {}", d.vdev, sector, nr, off);
        }
    }
}

/// Flushes every writable disk that offers flushes, counting a failure as
/// an I/O error.
fn soak_flush(disks: &mut [Option<BlkFront>], c: &mut SoakCounts) {
    for d in disks.iter_mut().flatten().filter(|d| !d.info.readonly() && d.info.flush) {
        c.requests += 1;
        let st = d.flush();
        if st != Ok(BLKIF_RSP_OKAY) {
            c.io_errors += 1;
            if c.io_errors <= SOAK_REPORTED_ERRORS {
                println!("soak: vbd/{}: flush {:?}", d.vdev, st);
            }
        }
    }
}
