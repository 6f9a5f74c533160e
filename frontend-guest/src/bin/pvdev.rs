//! `pvdev`: split-driver plumbing scenarios (event channels, grants, the
//! store and the `echo` sample device). `test=<name>` picks one; results
//! are printed and the exit status is 0 when everything was as expected.
#![no_std]
#![no_main]

use frontend_guest::echo::{self, EchoFront, NotifyVia};
use frontend_guest::xenbus::Store;
use frontend_guest::{cmdline, evtchn, grant, guest_main, hypercall, pages, println};
use pv_abi::echo::*;
use pv_abi::errno::{EINVAL, ESRCH};
use pv_abi::event_channel::{DOMID_SELF, EVTCHNSTAT_INTERDOMAIN};
use pv_abi::grant_table::*;
use pv_abi::start_info::StartInfo;
use ring_buffers::RingMemory;

guest_main!(main);

fn main(si: &'static StartInfo) -> i32 {
    let cmd = si.cmdline_bytes();
    let n = cmdline::get_u64(cmd, "n").unwrap_or(1);
    let mut store = match frontend_guest::xenbus::open_store(si) {
        Ok(s) => s,
        Err(e) => {
            println!("store: cannot open: {:?}", e);
            return 70;
        }
    };
    let via = match cmdline::get(cmd, "via") {
        Some(b"hypercall") => NotifyVia::Hypercall,
        _ => NotifyVia::Doorbell,
    };
    match cmdline::get(cmd, "test").unwrap_or(b"") {
        b"events" => events(&mut store, n, via),
        b"stream" => stream(&mut store, n),
        b"mask" => mask(&mut store),
        b"grants" => grants(&mut store),
        b"store" => store_watch(&mut store),
        b"xstxn" => store_transaction(&mut store),
        b"hostile" => hostile(&mut store),
        b"gntcopy" => gntcopy(),
        b"bindinter" => bind_interdomain(&mut store),
        b"abi" => evtchn_abi(n as u32),
        b"evloop" => event_loop(n),
        other => {
            println!("unknown test {:?}", core::str::from_utf8(other).unwrap_or("?"));
            64
        }
    }
}

fn connect(store: &mut Store, id: u32) -> Option<EchoFront> {
    match echo::connect(store, id) {
        Ok(e) => Some(e),
        Err(err) => {
            println!("echo {}: connect failed: {:?}", id, err);
            None
        }
    }
}

fn req(id: u64, op: u8, gref: u32, len: u16, key: u8) -> EchoRequest {
    EchoRequest { id, gref, offset: 0, len, op, key, _pad: [0; 6] }
}

/// One request at a time, with `rsp_event` armed before each and the guest
/// sleeping until the upcall: exactly `n` notifications each way (an event
/// round trip each), counted here and by the back end. Before each push the
/// guest waits for the back end to go idle (its final check armed
/// `req_event`): otherwise a request pushed while the back end is still in
/// its loop is rightly picked up without a notification, and the count
/// would depend on timing.
fn events(store: &mut Store, n: u64, via: NotifyVia) -> i32 {
    let Some(mut e) = connect(store, 0) else { return 1 };
    e.via = via;
    let (ev0, up0) = (evtchn::events(e.port), evtchn::upcalls());
    let mut bad = 0;
    for i in 0..n {
        let before = evtchn::events(e.port);
        let mut spins = 0u32;
        while i > 0 && !e.back_end_idle() && spins < 10_000_000 {
            frontend_guest::arch::pause();
            spins += 1;
        }
        if e.arm_response_event() != Ok(false) || e.queue(&req(i, ECHO_OP_PING, 0, 0, 0)).is_err() {
            bad += 1;
            break;
        }
        e.push();
        evtchn::wait_until(|| evtchn::events(e.port) != before);
        match e.poll() {
            Ok(Some(r)) if r.id == i && r.status == ECHO_RSP_OKAY => {}
            other => {
                println!("events: bad response {:?}", other);
                bad += 1;
            }
        }
    }
    println!(
        "events: n={} sent={} received={} upcalls={} bad={} abi={}",
        n,
        e.notifies,
        evtchn::events(e.port) - ev0,
        evtchn::upcalls() - up0,
        bad,
        evtchn::abi()
    );
    (bad != 0) as i32
}

/// Keeps the ring full: notifications are a small fraction of requests.
fn stream(store: &mut Store, n: u64) -> i32 {
    let Some(mut e) = connect(store, 0) else { return 1 };
    let ev0 = evtchn::events(e.port);
    let (mut sent, mut got, mut bad) = (0u64, 0u64, 0u64);
    while got < n {
        while sent < n && e.free_slots() > 0 {
            let _ = e.queue(&req(sent, ECHO_OP_PING, 0, 0, 0));
            sent += 1;
        }
        e.push();
        let mut progressed = false;
        while let Ok(Some(r)) = e.poll() {
            bad += (r.status != ECHO_RSP_OKAY) as u64;
            got += 1;
            progressed = true;
        }
        if !progressed && got < n {
            match e.wait_response() {
                Ok(r) => {
                    bad += (r.status != ECHO_RSP_OKAY) as u64;
                    got += 1;
                }
                Err(_) => return 1,
            }
        }
    }
    println!("stream: requests={} sent={} received={} bad={}", n, e.notifies, evtchn::events(e.port) - ev0, bad);
    (bad != 0) as i32
}

/// A masked port gets no upcall; unmasking delivers exactly one. The
/// device's port is put alone in a bitmap word (ports below 64 are taken
/// by unbound fillers first), so the handler's visits of that word count
/// exactly the upcall-pending edges raised for it: other ports (console,
/// store) may raise upcalls meanwhile without disturbing the count, and a
/// wrong delivery on the masked port still shows.
fn mask(store: &mut Store) -> i32 {
    let word_bits = pv_abi::shared_info::BITS_PER_WORD;
    while let Ok(p) = evtchn::alloc_unbound(pv_abi::event_channel::DOMID_VMM) {
        if p + 1 >= word_bits {
            break;
        }
    }
    let Some(mut e) = connect(store, 0) else { return 1 };
    if e.port / word_bits != 1 {
        println!("mask: port {} is not alone in word 1", e.port);
        return 1;
    }
    evtchn::mask(e.port);
    let (ev0, ws0) = (evtchn::events(e.port), evtchn::word_scans(e.port));
    let _ = e.queue(&req(7, ECHO_OP_PING, 0, 0, 0));
    e.push();
    let mut spins = 0u32;
    let answered = loop {
        if let Ok(Some(r)) = e.poll() {
            break r.id == 7;
        }
        spins += 1;
        if spins > 2_000_000 {
            break false;
        }
        frontend_guest::arch::pause();
    };
    // Give a wrongly delivered upcall time to show up.
    for _ in 0..2000 {
        frontend_guest::arch::pause();
    }
    let silent = evtchn::events(e.port) == ev0 && evtchn::word_scans(e.port) == ws0;
    let pending = evtchn::is_pending(e.port);
    let _ = evtchn::unmask(e.port);
    evtchn::wait_until(|| evtchn::events(e.port) != ev0);
    for _ in 0..2000 {
        frontend_guest::arch::pause();
    }
    let once = evtchn::events(e.port) - ev0;
    println!(
        "mask: answered={} silent-while-masked={} pending={} delivered-on-unmask={} abi={}",
        answered,
        silent,
        pending,
        once,
        evtchn::abi()
    );
    !(answered && silent && pending && once == 1) as i32
}

fn echo_op(e: &mut EchoFront, id: u64, op: u8, gref: u32, len: u16, key: u8) -> (i16, u32) {
    let _ = e.queue(&req(id, op, gref, len, key));
    e.push();
    match e.wait_response() {
        Ok(r) => (r.status, r.value),
        Err(_) => (i16::MIN, 0),
    }
}

/// The back end reads and writes only what was granted, as granted.
fn grants(store: &mut Store) -> i32 {
    let Some(mut e) = connect(store, 0) else { return 1 };
    let Some(page) = pages::alloc(1) else { return 1 };
    // SAFETY: `page` was just allocated for this test and is never freed.
    let data = unsafe { frontend_guest::arch::shared_page(page) };
    let mut bytes = [0u8; 256];
    bytes.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    data.write_bytes(0, &bytes);
    let expected_sum: u32 = (0..256u32).sum();
    let mut fails = 0;
    let mut check = |what: &str, ok: bool| {
        println!("grant: {}: {}", what, if ok { "ok" } else { "FAILED" });
        fails += (!ok) as i32;
    };
    let ro = grant::grant_page(0, page, true).unwrap_or(0);
    let rw = grant::grant_page(0, page, false).unwrap_or(0);
    let (st, sum) = echo_op(&mut e, 1, ECHO_OP_SUM, ro, 256, 0);
    check("read through a read-only grant", st == ECHO_RSP_OKAY && sum == expected_sum);
    let (st, _) = echo_op(&mut e, 2, ECHO_OP_XOR, ro, 256, 0xff);
    check("write through a read-only grant refused", st == ECHO_RSP_EACCES);
    let (st, _) = echo_op(&mut e, 3, ECHO_OP_XOR, rw, 256, 0xff);
    let mut b = [0u8; 1];
    data.read_bytes(5, &mut b);
    let b = b[0];
    check("write through a writable grant", st == ECHO_RSP_OKAY && b == 5 ^ 0xff);
    check("end access after use", grant::end_access(ro).is_ok());
    let (st, _) = echo_op(&mut e, 4, ECHO_OP_SUM, ro, 256, 0);
    check("revoked grant refused", st == ECHO_RSP_EACCES);
    let (st, _) = echo_op(&mut e, 5, ECHO_OP_SUM, 4000, 16, 0);
    check("reference beyond the table refused", st == ECHO_RSP_EACCES);
    let (st, _) = echo_op(&mut e, 6, ECHO_OP_SUM, 300, 16, 0);
    check("never-granted reference refused", st == ECHO_RSP_EACCES);
    grant::set_raw(301, pv_abi::grant_table::GTF_PERMIT_ACCESS, 5, (page >> 12) as u32);
    let (st, _) = echo_op(&mut e, 7, ECHO_OP_SUM, 301, 16, 0);
    check("grant to another domain refused", st == ECHO_RSP_EACCES);
    grant::set_raw(302, pv_abi::grant_table::GTF_PERMIT_ACCESS, 0, 0x10);
    let (st, _) = echo_op(&mut e, 8, ECHO_OP_SUM, 302, 16, 0);
    check("grant of a reserved frame refused", st == ECHO_RSP_EACCES);
    let busy = grant::end_access(e.ring_ref);
    check("end access refused while the back end maps the ring", busy.map_err(|x| x.0) == Err(pv_abi::errno::EBUSY));
    let (st, _) = echo_op(&mut e, 9, ECHO_OP_XOR, rw, 4000, 1);
    // offset 0 + 4000 fits; now one that does not:
    let _ = st;
    let _ = e.queue(&EchoRequest { id: 10, gref: rw, offset: 4000, len: 200, op: ECHO_OP_SUM, key: 0, _pad: [0; 6] });
    e.push();
    let r = e.wait_response();
    check("range past the page refused", matches!(r, Ok(r) if r.status == ECHO_RSP_EINVAL));
    fails
}

/// A watch fires when its path is written.
fn store_watch(store: &mut Store) -> i32 {
    let mut path = [0u8; 64];
    let mut token = [0u8; 32];
    if store.watch("data/greeting", "tok1").is_err() {
        return 1;
    }
    // xenstored fires every watch once when it is registered.
    let first = store.wait_watch(&mut path, &mut token);
    if store.write("data/greeting", b"hello").is_err() {
        return 2;
    }
    match store.wait_watch(&mut path, &mut token) {
        Ok((p, t)) => {
            println!(
                "store: watch fired path={} token={} (initial {:?})",
                core::str::from_utf8(&path[..p]).unwrap_or("?"),
                core::str::from_utf8(&token[..t]).unwrap_or("?"),
                first.is_ok()
            );
        }
        Err(e) => {
            println!("store: wait_watch failed {:?}", e);
            return 3;
        }
    }
    let mut buf = [0u8; 16];
    let n = store.read("data/greeting", &mut buf).unwrap_or(0);
    println!("store: read back {}", core::str::from_utf8(&buf[..n]).unwrap_or("?"));
    0
}

/// A store transaction as every Xen blkfront/netfront uses one (Xen's
/// `docs/misc/xenstore.txt`, TRANSACTION_START/END): writes inside it are
/// seen inside and not outside until the commit; a commit after a
/// conflicting change fails `EAGAIN`; an unknown id is `ENOENT`.
fn store_transaction(store: &mut Store) -> i32 {
    use frontend_guest::store::StoreError::Xs;
    use pv_abi::errno::{EAGAIN, ENOENT};
    let mut fails = 0;
    let mut check = |what: &str, ok: bool| {
        println!("xstxn: {}: {}", what, if ok { "ok" } else { "FAILED" });
        fails += (!ok) as i32;
    };
    let mut buf = [0u8; 16];
    let Ok(tx) = store.transaction_start() else {
        println!("xstxn: transaction_start failed");
        return 1;
    };
    check("write inside", store.write_in(tx, "data/txn", b"inside").is_ok());
    let n = store.read_in(tx, "data/txn", &mut buf);
    check("read inside", n.map(|n| &buf[..n]) == Ok(&b"inside"[..]));
    check("not visible outside", store.read("data/txn", &mut buf) == Err(Xs(ENOENT)));
    check("commit", store.transaction_end(tx, true).is_ok());
    let n = store.read("data/txn", &mut buf);
    check("read back after commit", n.map(|n| &buf[..n]) == Ok(&b"inside"[..]));
    let Ok(tx) = store.transaction_start() else { return 2 };
    check("write outside", store.write("data/other", b"x").is_ok());
    check("write inside again", store.write_in(tx, "data/txn", b"lost").is_ok());
    check("conflict is EAGAIN", store.transaction_end(tx, true) == Err(Xs(EAGAIN)));
    check("unknown id is ENOENT", store.transaction_end(tx, false) == Err(Xs(ENOENT)));
    let n = store.read("data/txn", &mut buf);
    check("conflicting write dropped", n.map(|n| &buf[..n]) == Ok(&b"inside"[..]));
    println!("xstxn: {} failed", fails);
    fails
}

/// Bad arguments everywhere; every one gets an error and the devices keep
/// working.
fn hostile(store: &mut Store) -> i32 {
    let mut fails = 0;
    let mut expect = |what: &str, got: Result<u64, hypercall::Errno>, want: i64| {
        let ok = got.map_err(|e| e.0) == Err(want);
        println!("hostile: {}: {}", what, if ok { "ok" } else { "FAILED" });
        fails += (!ok) as i32;
    };
    expect("send on port beyond the table", evtchn::send(5000).map(|_| 0), EINVAL);
    expect("send on a free port", evtchn::send(900).map(|_| 0), EINVAL);
    expect("unmask beyond the 2-level limit", evtchn::unmask(70000).map(|_| 0), EINVAL);
    expect("close port 0", evtchn::close(0).map(|_| 0), EINVAL);
    expect("status of a huge port", evtchn::status(u32::MAX).map(|s| s as u64), EINVAL);
    expect("bind to a dom0 port that does not exist", evtchn::bind_interdomain(0, 999).map(|p| p as u64), EINVAL);
    // Xen's `evtchn_alloc_unbound()` does not check `remote_dom`: the port
    // is allocated (for a domain that may never bind it) and closes.
    let ok = evtchn::alloc_unbound(7).is_ok_and(|p| evtchn::close(p).is_ok());
    println!("hostile: alloc_unbound for any remote domain, then close: {}", if ok { "ok" } else { "FAILED" });
    fails += (!ok) as i32;
    // SAFETY: a frame far beyond guest RAM: the VMM refuses it (checked
    // below), so nothing is registered.
    let st = unsafe { grant::setup_frames(&[u64::MAX >> 12]) };
    let ok = st == Ok(pv_abi::grant_table::GNTST_BAD_VIRT_ADDR);
    println!("hostile: grant-table frame outside RAM: {}", if ok { "ok" } else { "FAILED" });
    fails += (!ok) as i32;
    // SAFETY: frame 0x10 lies in the VMM's reserved low memory: refused
    // (checked below), so nothing is registered.
    let st = unsafe { grant::setup_frames(&[0x10]) };
    let ok = st == Ok(pv_abi::grant_table::GNTST_BAD_VIRT_ADDR);
    println!("hostile: grant-table frame in reserved memory: {}", if ok { "ok" } else { "FAILED" });
    fails += (!ok) as i32;
    // Malformed store messages: each gets an error reply, then the store
    // still answers normal requests.
    use pv_abi::errno::{E2BIG, EINVAL as XS_EINVAL, ENOSYS as XS_ENOSYS};
    use pv_abi::xs_wire::{XENSTORE_PAYLOAD_MAX, XS_READ, XS_WRITE};
    let xs = |r: Result<usize, frontend_guest::store::StoreError>| r.err().map(|e| e.errno());
    for (what, got, want) in [
        // A type xenstored has no handler for is ENOSYS (Xen's
        // tools/xenstored/core.c, process_message).
        ("store: unknown message type", xs(store.raw_request(99, 2, b"x\0")), XS_ENOSYS),
        ("store: path without NUL", xs(store.raw_request(XS_READ, 6, b"data/x")), XS_EINVAL),
        ("store: write without a value separator", xs(store.raw_request(XS_WRITE, 0, b"")), XS_EINVAL),
        ("store: length over the payload limit", xs(store.raw_request(XS_READ, XENSTORE_PAYLOAD_MAX + 1, b"")), E2BIG),
    ] {
        let ok = got == Some(want);
        println!("hostile: {}: {}", what, if ok { "ok" } else { "FAILED" });
        fails += (!ok) as i32;
    }
    // Doorbell with a garbage port: an exit the VMM logs and ignores.
    evtchn::notify(0xdead_beef);

    let Some(mut e0) = connect(store, 0) else { return 1 };
    let Some(e1) = connect(store, 1) else { return 1 };
    // Corrupt device 1's ring: its back end must stop, nothing else.
    e1.poke_req_prod(0x8000_0000);
    e1.kick_once();
    for _ in 0..5000 {
        frontend_guest::arch::pause();
    }
    let (st, _) = echo_op(&mut e0, 1, ECHO_OP_PING, 0, 0, 0);
    let alive = st == ECHO_RSP_OKAY;
    println!("hostile: other device still works after a corrupt ring: {}", if alive { "ok" } else { "FAILED" });
    fails += (!alive) as i32;
    let mut buf = [0u8; 8];
    let store_ok = store.write("data/after", b"1").is_ok() && store.read("data/after", &mut buf).is_ok();
    println!("hostile: store still works: {}", if store_ok { "ok" } else { "FAILED" });
    fails += (!store_ok) as i32;
    fails
}

/// One `GNTTABOP_copy` element of `len` bytes.
fn copy_op(src: (u64, u16), dst: (u64, u16), len: u16, flags: u16) -> GnttabCopy {
    let ptr =
        |(u, offset): (u64, u16)| GnttabCopyPtr { u: GnttabCopyPtrU::from_gmfn(u), domid: DOMID_SELF, offset, _pad: 0 };
    GnttabCopy { source: ptr(src), dest: ptr(dst), len, flags, status: 1, _pad: 0 }
}

/// `GNTTABOP_copy` between the guest's own frames and its grants, and
/// every refusal: the host checks the destination page's bytes.
fn gntcopy() -> i32 {
    let (Some(a), Some(b)) = (pages::alloc(1), pages::alloc(1)) else { return 1 };
    // SAFETY: both pages were just allocated for this test and never freed;
    // only the VMM's copies and these views touch them.
    let src = unsafe { frontend_guest::arch::shared_page(a) };
    // SAFETY: as for `src`.
    let dst = unsafe { frontend_guest::arch::shared_page(b) };
    let mut pattern = [0u8; 256];
    pattern.iter_mut().enumerate().for_each(|(i, x)| *x = (i as u8).wrapping_mul(7).wrapping_add(1));
    src.write_bytes(0, &pattern);
    let (fa, fb) = (a >> 12, b >> 12);
    let ro = grant::grant_page(0, a, true).unwrap_or(0);
    let rw = grant::grant_page(0, b, false).unwrap_or(0);
    let dst_ro = grant::grant_page(0, b, true).unwrap_or(0);
    let mut other_dom = copy_op((fa, 0), (fb, 512), 16, 0);
    other_dom.source.domid = 5;
    let cases = [
        // Three copies that fill the first 256 bytes of page `b`:
        ("frame to frame", copy_op((fa, 0), (fb, 0), 64, 0), GNTST_OKAY),
        ("read-only grant to frame", copy_op((ro as u64, 64), (fb, 64), 64, GNTCOPY_SOURCE_GREF), GNTST_OKAY),
        ("frame to writable grant", copy_op((fa, 128), (rw as u64, 128), 128, GNTCOPY_DEST_GREF), GNTST_OKAY),
        // Refusals, each changing nothing:
        (
            "write through a read-only grant refused",
            copy_op((fa, 0), (dst_ro as u64, 512), 16, GNTCOPY_DEST_GREF),
            GNTST_PERMISSION_DENIED,
        ),
        ("range past the page refused", copy_op((fa, 4000), (fb, 512), 200, 0), GNTST_BAD_COPY_ARG),
        (
            "never-granted reference refused",
            copy_op((300, 0), (fb, 512), 16, GNTCOPY_SOURCE_GREF),
            GNTST_PERMISSION_DENIED,
        ),
        (
            "reference beyond the table refused",
            copy_op((4000, 0), (fb, 512), 16, GNTCOPY_SOURCE_GREF),
            GNTST_BAD_GNTREF,
        ),
        ("frame outside RAM refused", copy_op((fa, 0), (u64::MAX >> 12, 0), 16, 0), GNTST_BAD_PAGE),
        ("reserved frame refused", copy_op((fa, 0), (0x10, 0), 16, 0), GNTST_BAD_PAGE),
        ("another domain's page refused", other_dom, GNTST_PERMISSION_DENIED),
    ];
    let mut ops = cases.map(|(_, op, _)| op);
    // SAFETY: every frame destination is page `b`, owned by this test.
    let batch = unsafe { grant::copy(&mut ops) };
    let mut fails = batch.is_err() as i32;
    for (op, (what, _, want)) in ops.iter().zip(cases) {
        let ok = op.status == want;
        println!("gntcopy: {}: {} (status {})", what, if ok { "ok" } else { "FAILED" }, op.status);
        fails += (!ok) as i32;
    }
    // Xen's `do_grant_table_op()` has no element limit (a long batch is
    // continued) but refuses a count that is negative as an `int`.
    let mut too_many = [copy_op((fa, 0), (fb, 0), 1, 0)];
    // SAFETY: the VMM refuses the count before reading anything.
    let ret = unsafe {
        frontend_guest::arch::hypercall(
            pv_abi::hypercall::nr::GRANT_TABLE_OP,
            GNTTABOP_COPY as u64,
            too_many.as_mut_ptr() as u64,
            0x8000_0000,
            0,
            0,
        )
    };
    let ok = ret == -EINVAL && too_many[0].status == 1;
    println!("gntcopy: a count negative as an int refused: {}", if ok { "ok" } else { "FAILED" });
    fails += (!ok) as i32;
    let mut got = [0u8; 256];
    dst.read_bytes(0, &mut got);
    let same = got == pattern;
    println!("gntcopy: guest sees the copied bytes: {}", if same { "ok" } else { "FAILED" });
    println!("gntcopy: dest={} len=256", b);
    fails + (!same) as i32
}

/// Xen's other direction of a connection: domain 0 allocated a port
/// unbound for this guest and published it at `data/dom0-port`; the guest
/// binds it, sends, and waits for domain 0's answer.
fn bind_interdomain(store: &mut Store) -> i32 {
    let mut buf = [0u8; 16];
    let n = store.read("data/dom0-port", &mut buf).unwrap_or(0);
    let Some(remote) = core::str::from_utf8(&buf[..n]).ok().and_then(|s| s.parse::<u32>().ok()) else {
        println!("bindinter: no data/dom0-port");
        return 1;
    };
    let mut fails = 0;
    let mut check = |what: &str, ok: bool| {
        println!("bindinter: {}: {}", what, if ok { "ok" } else { "FAILED" });
        fails += (!ok) as i32;
    };
    let port = match evtchn::bind_interdomain(0, remote) {
        Ok(p) => p,
        Err(e) => {
            println!("bindinter: bind refused: {}", e.name());
            return 1;
        }
    };
    check("status interdomain", evtchn::status(port) == Ok(EVTCHNSTAT_INTERDOMAIN));
    check("second bind refused", evtchn::bind_interdomain(0, remote).map_err(|e| e.0) == Err(EINVAL));
    check("bind to another domain refused", evtchn::bind_interdomain(3, remote).map_err(|e| e.0) == Err(ESRCH));
    let before = evtchn::events(port);
    check("send", evtchn::send(port).is_ok());
    evtchn::wait_until(|| evtchn::events(port) != before);
    check("event from domain 0", evtchn::events(port) == before + 1);
    println!("bindinter: local-port={} remote-port={}", port, remote);
    check("close", evtchn::close(port).is_ok());
    fails
}

/// The event-channel ABI in use (FIFO unless `evtchn=2l`), checked over a
/// loopback channel (two ports of this guest, `bind_interdomain` to
/// `DOMID_SELF`): `n` events each way, each counted once; a masked port
/// stays silent but pending and gets one event on unmask; `set_priority`
/// as Xen answers per ABI (`xen/common/event_channel.h`:
/// `evtchn_port_set_priority()`, `ENOSYS` on 2-level); close leaves the
/// other end unbound and drops its pending event.
fn evtchn_abi(n: u32) -> i32 {
    use pv_abi::errno::ENOSYS;
    use pv_abi::event_channel::{EVTCHNSTAT_CLOSED, EVTCHNSTAT_UNBOUND};
    let fifo = evtchn::abi() == "fifo";
    println!("abi: evtchn={}", evtchn::abi());
    let mut fails = 0;
    let mut check = |what: &str, ok: bool| {
        println!("abi: {}: {}", what, if ok { "ok" } else { "FAILED" });
        fails += (!ok) as i32;
    };
    let Some((a, b)) = loopback("abi") else { return 1 };
    // "EVTCHNOP_bind_interdomain always sets the local event channel pending".
    evtchn::wait_until(|| evtchn::events(b) == 1);
    let (ea, eb, up0) = (evtchn::events(a), evtchn::events(b), evtchn::upcalls());
    for _ in 0..n {
        let (before_a, before_b) = (evtchn::events(a), evtchn::events(b));
        let _ = evtchn::send(a);
        evtchn::wait_until(|| evtchn::events(b) != before_b);
        let _ = evtchn::send(b);
        evtchn::wait_until(|| evtchn::events(a) != before_a);
    }
    let (got_a, got_b) = (evtchn::events(a) - ea, evtchn::events(b) - eb);
    println!("abi: n={} a-received={} b-received={} upcalls={}", n, got_a, got_b, evtchn::upcalls() - up0);
    check("events both ways counted once", got_a == n && got_b == n);
    evtchn::mask(a);
    let (ev0, ws0) = (evtchn::events(a), evtchn::word_scans(a));
    let _ = evtchn::send(b);
    for _ in 0..2000 {
        frontend_guest::arch::pause();
    }
    // On FIFO a masked event is never linked, so never dequeued; on
    // 2-level the port shares its bitmap word (and selector visits) with
    // the console's and the store's ports, so only its count is checked.
    check("masked: silent", evtchn::events(a) == ev0 && (!fifo || evtchn::word_scans(a) == ws0));
    check("masked: pending", evtchn::is_pending(a));
    check("unmask delivers", evtchn::unmask(a).is_ok());
    evtchn::wait_until(|| evtchn::events(a) != ev0);
    check("unmask delivers once", evtchn::events(a) == ev0 + 1 && !evtchn::is_pending(a));
    let prio = frontend_guest::evtchn_fifo::set_priority(a, 0).map_err(|e| e.0);
    check("set_priority", if fifo { prio == Ok(()) } else { prio == Err(ENOSYS) });
    check("set_priority 16 refused", frontend_guest::evtchn_fifo::set_priority(a, 16).is_err());
    evtchn::mask(a);
    let _ = evtchn::send(b);
    check("close", evtchn::close(b).is_ok());
    check("peer unbound", evtchn::status(a) == Ok(EVTCHNSTAT_UNBOUND));
    check("second close refused", evtchn::close(b).map_err(|e| e.0) == Err(EINVAL));
    check("send on unbound dropped", evtchn::send(a).is_ok());
    check("pending before close", evtchn::is_pending(a));
    check("close peer", evtchn::close(a).is_ok());
    check("close clears pending", !evtchn::is_pending(a));
    check("status closed", evtchn::status(a) == Ok(EVTCHNSTAT_CLOSED));
    let _ = evtchn::unmask(a);
    fails
}

/// A loopback channel: `a` unbound for ourselves, `b` bound to it
/// (`EVTCHNOP_alloc_unbound` then `bind_interdomain`); on refusal, says so
/// behind `tag` and returns `None`.
fn loopback(tag: &str) -> Option<(u32, u32)> {
    match evtchn::alloc_unbound(DOMID_SELF).and_then(|a| Ok((a, evtchn::bind_interdomain(DOMID_SELF, a)?))) {
        Ok(ab) => Some(ab),
        Err(e) => {
            println!("{}: loopback refused: {}", tag, e.name());
            None
        }
    }
}

/// `vmm bench`'s event-delivery rows: `n` events over a loopback channel,
/// one at a time (send hypercall, set-pending in the VMM, upcall, the
/// handler of the ABI in use: FIFO, or 2-level with `evtchn=2l`). The
/// channel is set up for `n=0` too, so differencing leaves the events.
fn event_loop(n: u64) -> i32 {
    let Some((a, b)) = loopback("evloop") else { return 1 };
    evtchn::wait_until(|| evtchn::events(b) == 1);
    let e0 = evtchn::events(b);
    for _ in 0..n {
        let before = evtchn::events(b);
        if evtchn::send(a).is_err() {
            return 1;
        }
        evtchn::wait_until(|| evtchn::events(b) != before);
    }
    println!("evloop: abi={} n={} received={}", evtchn::abi(), n, evtchn::events(b) - e0);
    (u64::from(evtchn::events(b) - e0) != n) as i32
}
