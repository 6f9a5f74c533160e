//! `virtio`: virtio-blk and virtio-net through the third-party
//! `virtio-drivers` crate. The guest finds its devices in start-info and
//! runs `test=<name>` (default `patterns`). Results are printed; the exit
//! status is 0 when everything was as expected.
#![no_std]
#![no_main]

use frontend_guest::blkfront::{self, IoBuf};
use frontend_guest::virtio::{self as vio, io_slice, Blk};
use frontend_guest::{cmdline, evtchn, guest_main, println};
use pv_abi::start_info::StartInfo;
use virtio_drivers::device::blk::{BlkReq, BlkResp};

guest_main!(main);

fn main(si: &'static StartInfo) -> i32 {
    let cmd = si.cmdline_bytes();
    let test = cmdline::get(cmd, "test").unwrap_or(b"patterns");
    if test == b"arp" {
        return arp(si, cmd);
    }
    let Some(dev) = si.virtio_devices().first() else {
        println!("virtio: no device in start-info: pass --disk <image>,transport=virtio");
        return 72;
    };
    let mut blk = match vio::open_blk(dev) {
        Ok(b) => b,
        Err(e) => {
            println!("virtio: device at {:#x}: {:?}", dev.base, e);
            return 73;
        }
    };
    if test == b"patterns" || test == b"crash" {
        println!(
            "virtio-blk at {:#x}: {} sectors{}",
            dev.base,
            blk.capacity(),
            if blk.readonly() { " ro" } else { "" }
        );
    }
    match test {
        b"patterns" => patterns(&mut blk, cmdline::get_u64(cmd, "seed").unwrap_or(1)),
        b"crash" => crash(&mut blk),
        b"readonly" => readonly(&mut blk),
        b"both" => both(si, &mut blk),
        b"bench" => bench(&mut blk, cmd),
        other => {
            println!("unknown test {:?}", core::str::from_utf8(other).unwrap_or("?"));
            64
        }
    }
}

/// Writes `nr` sectors of the pattern for (`sector`, `seed`) from byte
/// `at` of `buf`.
fn write(blk: &mut Blk, buf: &IoBuf, at: u64, sector: u64, nr: u64, seed: u64) -> bool {
    buf.fill(at, nr, sector, seed);
    // SAFETY: this part of `buf` is used by nothing else during the call.
    let data = unsafe { io_slice(buf, at, nr * 512) };
    match blk.write_blocks(sector as usize, data) {
        Ok(()) => true,
        Err(e) => {
            println!("virtio: write {}+{}: {:?}", sector, nr, e);
            false
        }
    }
}

/// Many offsets and lengths (disk sectors, and buffer offsets that are not
/// sector or page aligned): write, flush, read back elsewhere, verify;
/// each write is printed so the host can check the image.
fn patterns(blk: &mut Blk, seed0: u64) -> i32 {
    // (sector, sectors, byte offset in the buffer)
    const CASES: [(u64, u64, u64); 10] = [
        (0, 1, 0),
        (3, 1, 8),
        (17, 7, 512),
        (40, 8, 4000),
        (60, 9, 24),
        (100, 16, 0),
        (130, 2, 4088),
        (200, 24, 1000),
        (300, 3, 16),
        (401, 33, 512),
    ];
    let Some(buf) = IoBuf::alloc(12) else { return 2 };
    let mut bad = 0;
    for (i, &(sector, nr, at)) in CASES.iter().enumerate() {
        if !write(blk, &buf, at, sector, nr, seed0 + i as u64) {
            bad += 1;
        }
    }
    if let Err(e) = blk.flush() {
        println!("patterns: flush: {:?}", e);
        bad += 1;
    }
    for (i, &(sector, nr, _)) in CASES.iter().enumerate() {
        println!("wrote sector={} nr={} seed={}", sector, nr, seed0 + i as u64);
    }
    for (i, &(sector, nr, at)) in CASES.iter().enumerate() {
        let at = (at + 520) % 4096;
        buf.set(at, nr, 0);
        // SAFETY: as in `write`.
        let data = unsafe { io_slice(&buf, at, nr * 512) };
        if let Err(e) = blk.read_blocks(sector as usize, data) {
            println!("patterns: read {}: {:?}", i, e);
            bad += 1;
        } else if let Some(off) = buf.check(at, nr, sector, seed0 + i as u64) {
            println!("patterns: case {} differs at byte {}", i, off);
            bad += 1;
        }
    }
    let mut id = [0u8; 20];
    let id_len = blk.device_id(&mut id).unwrap_or(0);
    println!(
        "patterns: cases={} bad={} id={} interrupts={}",
        CASES.len(),
        bad,
        core::str::from_utf8(&id[..id_len]).unwrap_or("?"),
        vio::interrupts()
    );
    (bad != 0) as i32
}

/// Write, flush, say so, then wait forever for the host to kill the VMM.
fn crash(blk: &mut Blk) -> i32 {
    let Some(buf) = IoBuf::alloc(8) else { return 2 };
    let (sector, nr, seed) = (64, 64, 0xc4a5);
    if !write(blk, &buf, 0, sector, nr, seed) || blk.flush().is_err() {
        return 1;
    }
    println!("flushed sector={} nr={} seed={}", sector, nr, seed);
    evtchn::wait_until(|| false);
    0
}

/// A read-only disk: the write is refused (`VIRTIO_BLK_S_IOERR`), a read works.
fn readonly(blk: &mut Blk) -> i32 {
    let Some(buf) = IoBuf::alloc(1) else { return 2 };
    buf.fill(0, 8, 0, 7);
    // SAFETY: as in `write`.
    let w = blk.write_blocks(0, unsafe { io_slice(&buf, 0, 4096) });
    // SAFETY: as in `write`.
    let r = blk.read_blocks(0, unsafe { io_slice(&buf, 0, 4096) });
    println!("readonly: feature={} write={:?} read={:?}", blk.readonly(), w, r);
    (!(blk.readonly() && w == Err(virtio_drivers::Error::IoError) && r.is_ok())) as i32
}

/// One Xen disk (blkfront, found in the store) and this virtio disk in the
/// same run: a pattern on each, flushed, read back.
fn both(si: &'static StartInfo, blk: &mut Blk) -> i32 {
    let Ok(mut store) = frontend_guest::xenbus::open_store(si) else { return 70 };
    let mut vdev = None;
    let _ = blkfront::list_disks(&mut store, |v| vdev = vdev.or(Some(v)));
    let Some(vdev) = vdev else {
        println!("both: no Xen disk");
        return 72;
    };
    let Ok(mut xen) = blkfront::connect(&mut store, vdev) else { return 73 };
    let Some(buf) = IoBuf::alloc(2) else { return 2 };
    let (sector, nr) = (16, 8);
    buf.fill(0, nr, sector, 0xa1);
    let xw = xen.write(sector, buf.gpa, nr) == Ok(0) && xen.flush() == Ok(0);
    let vw = write(blk, &buf, 4096, sector, nr, 0xb2) && blk.flush().is_ok();
    buf.set(0, 16, 0);
    let xr = xen.read(sector, buf.gpa, nr) == Ok(0) && buf.check(0, nr, sector, 0xa1).is_none();
    // SAFETY: as in `write`.
    let vr = blk.read_blocks(sector as usize, unsafe { io_slice(&buf, 4096, nr * 512) }).is_ok()
        && buf.check(4096, nr, sector, 0xb2).is_none();
    println!("both: xen vbd/{} write={} read={}; virtio write={} read={}", vdev, xw, xr, vw, vr);
    (!(xw && xr && vw && vr)) as i32
}

/// `n` random 4 KiB requests (`op=read|write`), `depth` in flight.
fn bench(blk: &mut Blk, cmd: &[u8]) -> i32 {
    const SLOTS: usize = 16;
    let n = cmdline::get_u64(cmd, "n").unwrap_or(100);
    let depth = cmdline::get_u64(cmd, "depth").unwrap_or(8).clamp(1, SLOTS as u64) as usize;
    let write = cmdline::get(cmd, "op") == Some(b"write");
    let Some(buf) = IoBuf::alloc(depth as u64) else { return 2 };
    let blocks = (blk.capacity() / 8).max(1);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let (mut sent, mut done, mut bad) = (0u64, 0u64, 0u64);
    let mut reqs: [BlkReq; SLOTS] = core::array::from_fn(|_| BlkReq::default());
    let mut resps: [BlkResp; SLOTS] = core::array::from_fn(|_| BlkResp::default());
    let mut token_slot = [usize::MAX; 256];
    let mut free = [true; SLOTS];
    while done < n {
        while sent < n && free[..depth].iter().filter(|f| !**f).count() < depth {
            let Some(s) = free[..depth].iter().position(|&f| f) else { break };
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let block = ((x % blocks) * 8) as usize;
            // SAFETY: slot `s`'s page, request and response are not touched
            // until its completion below.
            let data = unsafe { io_slice(&buf, s as u64 * 4096, 4096) };
            let token = if write {
                // SAFETY: as above: the buffers stay untouched until completion.
                unsafe { blk.write_blocks_nb(block, &mut reqs[s], data, &mut resps[s]) }
            } else {
                // SAFETY: as above.
                unsafe { blk.read_blocks_nb(block, &mut reqs[s], data, &mut resps[s]) }
            };
            match token {
                Ok(t) => {
                    token_slot[t as usize] = s;
                    free[s] = false;
                    sent += 1;
                }
                Err(_) => break,
            }
        }
        let Some(t) = blk.peek_used() else { continue };
        let s = token_slot[t as usize];
        // SAFETY: the slot's own page, not touched elsewhere.
        let data = unsafe { io_slice(&buf, s as u64 * 4096, 4096) };
        let res = if write {
            // SAFETY: the same buffers the request was queued with.
            unsafe { blk.complete_write_blocks(t, &reqs[s], data, &mut resps[s]) }
        } else {
            // SAFETY: as above.
            unsafe { blk.complete_read_blocks(t, &reqs[s], data, &mut resps[s]) }
        };
        bad += res.is_err() as u64;
        free[s] = true;
        done += 1;
    }
    println!("bench: n={} depth={} bad={} interrupts={}", n, depth, bad, vio::interrupts());
    (bad != 0) as i32
}

/// Parses a dotted IPv4 address.
fn parse_ipv4(s: &[u8]) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = s.split(|&b| b == b'.');
    for o in &mut out {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.iter().all(u8::is_ascii_digit) {
            return None;
        }
        *o = u8::try_from(p.iter().fold(0u32, |a, &d| a * 10 + u32::from(d - b'0'))).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// An ARP request from (`mac`, `ip`) for `target` (the driver adds the
/// virtio-net header); returns its length.
fn arp_request(buf: &mut [u8], mac: [u8; 6], ip: [u8; 4], target: [u8; 4]) -> usize {
    let f = &mut buf[..42];
    f[0..6].fill(0xff);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip);
    f[32..38].fill(0);
    f[38..42].copy_from_slice(&target);
    42
}

/// `test=arp ip=<guest> peer=<host>`: sends an ARP request for the host
/// through `virtio-drivers`' `VirtIONetRaw` and waits for the reply (frames
/// that are not it are skipped; the request is repeated a few times).
fn arp(si: &'static StartInfo, cmd: &[u8]) -> i32 {
    let (Some(ip), Some(peer)) =
        (cmdline::get(cmd, "ip").and_then(parse_ipv4), cmdline::get(cmd, "peer").and_then(parse_ipv4))
    else {
        println!("arp: pass ip=<a.b.c.d> peer=<a.b.c.d>");
        return 64;
    };
    let Some(dev) = si.virtio_devices().iter().find(|d| d.device_id == pv_abi::virtio::device_id::NET) else {
        println!("arp: no virtio-net device: pass --net tap=<if>,transport=virtio");
        return 72;
    };
    let mut net = match vio::open_net(dev) {
        Ok((n, _)) => n,
        Err(e) => {
            println!("arp: device at {:#x}: {:?}", dev.base, e);
            return 73;
        }
    };
    let mac = net.mac_address();
    const RX: usize = 4;
    const LEN: u64 = 2048;
    let Some(gpa) = frontend_guest::pages::alloc(RX as u64 * LEN / 4096 + 1) else { return 2 };
    // SAFETY: fresh identity-mapped pages this guest owns: the last page
    // holds the transmit buffer, the others one receive buffer per 2 KiB;
    // each is used by one driver request at a time.
    let buf = |i: usize| unsafe { core::slice::from_raw_parts_mut((gpa + i as u64 * LEN) as *mut u8, LEN as usize) };
    let mut tokens = [0u16; RX];
    for (i, t) in tokens.iter_mut().enumerate() {
        // SAFETY: buffer `i` is not touched until its request completes.
        match unsafe { net.receive_begin(buf(i)) } {
            Ok(tok) => *t = tok,
            Err(e) => {
                println!("arp: receive_begin: {:?}", e);
                return 74;
            }
        }
    }
    let tx = buf(RX);
    let n = arp_request(tx, mac, ip, peer);
    let (mut frames, mut skipped) = (0u32, 0u32);
    for attempt in 0..5 {
        if let Err(e) = net.send(&tx[..n]) {
            println!("arp: send: {:?}", e);
            return 75;
        }
        for _ in 0..20_000 {
            let Some(tok) = net.poll_receive() else { continue };
            let Some(i) = tokens.iter().position(|&t| t == tok) else { return 76 };
            // SAFETY: buffer `i` is the one posted with this token.
            let Ok((hdr, len)) = (unsafe { net.receive_complete(tok, buf(i)) }) else { return 77 };
            if hdr + len > LEN as usize {
                return 77;
            }
            frames += 1;
            let f = &buf(i)[hdr..hdr + len];
            let is_reply = len >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2] && f[28..32] == peer;
            if is_reply && f[32..38] == mac && f[38..42] == ip {
                println!(
                    "arp: reply from {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} after {} request(s), {} other frame(s)",
                    f[22],
                    f[23],
                    f[24],
                    f[25],
                    f[26],
                    f[27],
                    attempt + 1,
                    skipped
                );
                return 0;
            }
            skipped += 1;
            // SAFETY: as above; the buffer is posted again untouched.
            match unsafe { net.receive_begin(buf(i)) } {
                Ok(t) => tokens[i] = t,
                Err(_) => return 78,
            }
        }
    }
    println!("arp: no reply ({} frames received, interrupts={})", frames, vio::interrupts());
    1
}
