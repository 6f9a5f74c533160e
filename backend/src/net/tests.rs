//! Host-side protocol tests: netback driven by the harness's netfront over
//! real rings in real memory, with the in-process peer as the host side.

mod hostile;

use super::harness::Harness;
use super::peer::{self, PeerHandle};
use super::*;
use pv_abi::grant_table::GTF_PERMIT_ACCESS;

fn harness(pages: u32, sg: bool) -> (Harness, PeerHandle) {
    let (p, h) = peer::pair(true).unwrap();
    (Harness::new(Box::new(p), pages, sg).unwrap(), h)
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    f[12..14].copy_from_slice(&[0x88, 0xb5]); // an experimental EtherType: no checksum to fill
    f
}

/// An IPv4 TCP frame of `len` bytes with a zero checksum field.
fn tcp_frame(len: usize) -> Vec<u8> {
    let mut f = frame(len, 3);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
    f[20..22].copy_from_slice(&[0, 0]);
    f[23] = 6;
    f[46] = 0x50;
    f[50..52].copy_from_slice(&[0, 0]);
    f
}

#[test]
fn frames_of_one_to_seventeen_slots_reach_the_host_intact() {
    let (mut h, peer) = harness(64, true);
    let cases = [(60, 0, 0), (1514, 0, 100), (9014, 1, 0), (MAX_FRAME, 5, 2000), (4096, 40, 0), (4097, 41, 0)];
    let mut id = 0;
    let mut slots = 0;
    for &(len, page, off) in &cases {
        slots += h.front.queue_frame(&frame(len, len as u8), page, off, 0, id);
        id += 20;
    }
    h.front.publish_tx();
    assert!(!h.kick());
    let sent = peer.take_sent();
    assert_eq!(sent.len(), cases.len());
    for (got, &(len, _, _)) in sent.iter().zip(&cases) {
        assert!(got == &frame(len, len as u8), "frame of {len} bytes differs");
    }
    let rsp = h.tx_responses();
    assert_eq!(rsp.len(), slots);
    assert!(rsp.iter().all(|r| r.status == NETIF_RSP_OKAY), "{rsp:?}");
    let c = h.counters();
    assert_eq!((c.tx_packets, c.tx_slots, c.tx_errors), (cases.len() as u64, slots as u64, 0));
    assert_eq!(c.tx_multi_slot, 3);
    assert_eq!(h.front.grants().mapped_refs(), 2, "only the two ring pages stay mapped");
}

#[test]
fn a_blank_checksum_is_filled_in() {
    let (mut h, peer) = harness(8, true);
    let f = tcp_frame(3000);
    assert!(!csum::verify(&f));
    h.front.queue_frame(&f, 0, 0, NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED, 0);
    h.front.publish_tx();
    h.kick();
    let sent = peer.take_sent();
    assert!(csum::verify(&sent[0]), "checksum not filled in");
    assert_eq!(h.counters().tx_csum_filled, 1);
    // A blank checksum on something that is not TCP/UDP is refused.
    h.front.queue_frame(&frame(100, 1), 0, 0, NETTXF_CSUM_BLANK, 1);
    h.front.publish_tx();
    h.kick();
    assert!(peer.take_sent().is_empty());
    assert_eq!(h.tx_responses().last().unwrap().status, NETIF_RSP_ERROR);
}

#[test]
fn malformed_transmit_packets_get_errors_and_the_device_goes_on() {
    let (mut h, peer) = harness(32, true);
    let g = h.front.page_gref(0);
    let req = |gref, offset, flags, id, size| NetifTxRequest { gref, offset, flags, id, size };
    let cases: Vec<Vec<NetifTxRequest>> = vec![
        vec![req(999, 0, 0, 1, 60)],                                     // a grant never given
        vec![req(g, 0, 0, 2, 0)],                                        // size 0
        vec![req(g, 4000, 0, 3, 200)],                                   // past the page
        vec![req(g, 0, 0, 4, 10)],                                       // shorter than Ethernet
        vec![req(g, 0, NETTXF_MORE_DATA, 5, 100), req(g, 0, 0, 6, 0)],   // fragment of size 0
        vec![req(g, 0, NETTXF_MORE_DATA, 7, 100), req(g, 0, 0, 8, 150)], // fragments exceed the total
        vec![
            req(g, 0, NETTXF_EXTRA_INFO, 9, 60),
            req(u32::from_le_bytes([XEN_NETIF_EXTRA_TYPE_GSO, 0, 0, 0]), 0, 0, 10, 0),
        ],
    ];
    // A chain of 19 slots: one more than allowed.
    let long: Vec<NetifTxRequest> = (0..19)
        .map(|i| {
            let more = if i < 18 { NETTXF_MORE_DATA } else { 0 };
            req(h.front.page_gref(i), 0, more, 100 + i as u16, if i == 0 { 19 * 100 } else { 100 })
        })
        .collect();
    let mut all = cases.clone();
    all.push(long);
    for c in &all {
        for r in c {
            h.front.push_tx(r).unwrap();
        }
    }
    h.front.publish_tx();
    h.kick();
    let rsp = h.tx_responses();
    assert_eq!(rsp.len(), all.iter().map(Vec::len).sum::<usize>());
    for r in &rsp {
        let want = if r.id == 10 { NETIF_RSP_NULL } else { NETIF_RSP_ERROR };
        assert_eq!(r.status, want, "slot id {}", r.id);
    }
    assert_eq!(h.counters().tx_errors, all.len() as u64);
    let leaked: Vec<usize> = peer.take_sent().iter().map(Vec::len).collect();
    assert!(leaked.is_empty(), "nothing malformed reaches the host: {leaked:?}");
    assert!(!h.stopped());
    // The device still works.
    h.front.queue_frame(&frame(200, 9), 0, 0, 0, 500);
    h.front.publish_tx();
    h.kick();
    assert_eq!(peer.take_sent(), vec![frame(200, 9)]);
    assert_eq!(h.front.grants().mapped_refs(), 2, "only the two ring pages stay mapped");
}

#[test]
fn a_packet_never_ended_stops_that_device_only() {
    let (mut h, _peer) = harness(8, true);
    let (mut other, other_peer) = harness(8, true);
    let g = h.front.page_gref(0);
    for id in 0..2 {
        h.front.push_tx(&NetifTxRequest { gref: g, offset: 0, flags: NETTXF_MORE_DATA, id, size: 100 }).unwrap();
    }
    h.front.publish_tx();
    assert!(!h.kick());
    assert!(h.stopped());
    assert_eq!(h.counters().stopped, 1);
    // Stopped: nothing more is done, whatever the guest writes.
    h.front.queue_frame(&frame(100, 1), 1, 0, 0, 9);
    h.front.publish_tx();
    h.kick();
    assert_eq!(h.counters().tx_packets, 0);
    other.front.queue_frame(&frame(100, 1), 0, 0, 0, 0);
    other.front.publish_tx();
    other.kick();
    assert_eq!(other_peer.take_sent().len(), 1, "another device keeps working");
}

#[test]
fn corrupt_ring_indices_stop_the_device() {
    let (mut h, peer) = harness(8, true);
    h.front.corrupt_tx_req_prod(0x4000_0000);
    h.kick();
    assert!(h.stopped());
    let (mut h, peer2) = harness(8, true);
    h.front.corrupt_rx_req_prod(0x8000_0000);
    assert!(peer2.inject(&frame(100, 1), RxMeta::default()));
    h.port_ready();
    assert!(h.stopped());
    assert_eq!(peer.queued(), 0);
}

#[test]
fn frames_are_copied_into_posted_buffers_with_flags() {
    let (mut h, peer) = harness(64, true);
    h.front.post_rx_pages(0, 32);
    h.front.publish_rx();
    let frames = [frame(60, 1), frame(1514, 2), frame(9000, 3), frame(MAX_FRAME, 4)];
    let metas = [
        RxMeta::default(),
        RxMeta { data_validated: true, csum_blank: false },
        RxMeta { data_validated: true, csum_blank: true },
        RxMeta::default(),
    ];
    for (f, m) in frames.iter().zip(metas) {
        assert!(peer.inject(f, m));
    }
    h.port_ready();
    let rsp = h.rx_responses();
    // Reassemble each frame from its chain of buffers.
    let mut got = Vec::new();
    let mut cur = Vec::new();
    let mut first_flags = Vec::new();
    for r in &rsp {
        assert!(r.status > 0, "{r:?}");
        if cur.is_empty() {
            first_flags.push(r.flags & !NETRXF_MORE_DATA);
        }
        let mut buf = vec![0u8; r.status as usize];
        h.front.read_page(u32::from(r.id), usize::from(r.offset), &mut buf);
        cur.extend_from_slice(&buf);
        if r.flags & NETRXF_MORE_DATA == 0 {
            got.push(std::mem::take(&mut cur));
        }
    }
    assert_eq!(got, frames.to_vec());
    assert_eq!(first_flags, vec![0, NETRXF_DATA_VALIDATED, NETRXF_DATA_VALIDATED | NETRXF_CSUM_BLANK, 0]);
    assert_eq!(rsp.len(), 1 + 1 + 3 + 16);
    let c = h.counters();
    assert_eq!((c.rx_packets, c.rx_multi_slot, c.rx_slots), (4, 2, 21));
    assert!(h.notify.count() >= 1 && h.notify.count() <= 2, "one batch, not one notification per frame");
}

#[test]
fn without_sg_a_frame_larger_than_a_page_is_dropped() {
    let (mut h, peer) = harness(8, false);
    h.front.post_rx_pages(0, 8);
    h.front.publish_rx();
    peer.inject(&frame(5000, 1), RxMeta::default());
    peer.inject(&frame(1500, 1), RxMeta::default());
    h.port_ready();
    assert_eq!(h.rx_responses().len(), 1);
    assert_eq!(h.counters().rx_dropped_bad_size, 1);
}

#[test]
fn a_guest_without_receive_buffers_has_its_frames_dropped_and_counted() {
    let (mut h, peer) = harness(8, true);
    for i in 0..3000 {
        assert!(peer.inject(&frame(1000, i as u8), RxMeta::default()) || peer.queued() > 0);
        if peer.queued() >= 1000 {
            h.port_ready();
        }
    }
    while peer.queued() > 0 {
        h.port_ready();
    }
    let c = h.counters();
    assert_eq!(c.rx_dropped_no_buffer, 3000, "every frame dropped, none kept");
    assert_eq!(peer.queued(), 0, "nothing queued");
    // Posting buffers makes delivery work again, and the guest was asked to
    // notify netback when it posts (rx-notify): the publish says so.
    h.front.post_rx_pages(0, 1);
    assert!(h.front.publish_rx(), "netback armed req_event on the receive ring");
    peer.inject(&frame(100, 7), RxMeta::default());
    h.port_ready();
    assert_eq!(h.rx_responses().len(), 1);
}

/// A front end without `feature-rx-notify` (`xen/include/public/io/netif.h`:
/// it will not notify when it posts receive buffers) loses nothing while
/// it has none posted: netback keeps the frame, stops reading the port and
/// polls the ring (as older Linux netbacks polled such front ends).
#[test]
fn a_front_end_without_rx_notify_is_polled_and_receives_every_frame() {
    let (p, peer) = peer::pair(true).unwrap();
    let mut h = Harness::with_rx_notify(Box::new(p), 8, true, false).unwrap();
    let frames: Vec<Vec<u8>> = (0..6).map(|i| frame(200 + i * 100, i as u8)).collect();
    for f in &frames {
        assert!(peer.inject(f, RxMeta::default()));
    }
    h.port_ready();
    assert!(h.be.rx_stalled(), "no buffers: the first frame waits");
    assert_eq!(peer.queued(), 5, "the rest stay queued on the host side");
    h.be.poll_rx();
    assert!(h.be.rx_stalled(), "still no buffers");
    let mut got = Vec::new();
    for (first, n) in [(0, 2), (2, 4)] {
        h.front.post_rx_pages(first, n);
        h.front.publish_rx();
        h.be.poll_rx();
        for r in h.rx_responses() {
            let mut buf = vec![0u8; r.status as usize];
            h.front.read_page(u32::from(r.id), usize::from(r.offset), &mut buf);
            got.push(buf);
        }
    }
    assert!(!h.be.rx_stalled());
    assert_eq!(got, frames);
    let c = h.counters();
    assert_eq!((c.rx_packets, c.rx_dropped_no_buffer), (6, 0));
}

#[test]
fn a_bad_receive_grant_gets_an_error_status() {
    let (mut h, peer) = harness(8, true);
    h.front.post_rx(0, 999).unwrap();
    h.front.post_rx(1, h.front.page_gref(1)).unwrap();
    h.front.publish_rx();
    peer.inject(&frame(100, 1), RxMeta::default());
    peer.inject(&frame(100, 2), RxMeta::default());
    h.port_ready();
    let rsp = h.rx_responses();
    assert_eq!(rsp[0].status, NETIF_RSP_ERROR);
    assert_eq!(rsp[1].status, 100);
    assert_eq!(h.counters().rx_errors, 1);
    // A grant revoked after posting is refused too.
    h.front.post_rx(2, h.front.page_gref(2)).unwrap();
    h.front.publish_rx();
    let g = h.front.page_gref(2);
    h.front.set_grant(g, 0, 0);
    peer.inject(&frame(100, 3), RxMeta::default());
    h.port_ready();
    assert_eq!(h.rx_responses()[0].status, NETIF_RSP_ERROR);
    let _ = GTF_PERMIT_ACCESS;
}

#[test]
fn notifications_are_batched_on_the_transmit_ring() {
    let (mut h, peer) = harness(128, true);
    let mut notifies = 0;
    for round in 0..4u16 {
        for i in 0..64u16 {
            h.front.queue_frame(&frame(1514, i as u8), u32::from(i), 0, 0, round * 64 + i);
        }
        notifies += h.front.publish_tx() as u64;
        h.kick();
        assert_eq!(h.tx_responses().len(), 64);
        h.front.final_check_tx().unwrap();
    }
    assert_eq!(peer.sent().0, 256);
    assert!(notifies <= 4, "front end notified {notifies} times for 4 batches");
    assert!(h.notify.count() <= 4, "back end notified {} times for 4 batches", h.notify.count());
    let frames_per_notify = 256 / notifies.max(1);
    assert!(frames_per_notify >= 16);
}

#[test]
fn a_wake_up_handles_at_most_the_budget() {
    let (mut h, _peer) = harness(8, true);
    for i in 0..256u16 {
        h.front.queue_frame(&frame(60, 0), 0, 0, 0, i);
    }
    h.front.publish_tx();
    let dev = h.be.dev.as_mut().unwrap();
    let (p, _ph) = peer::pair(false).unwrap();
    let mut exec = executor::NetExecutor::new(Box::new(p), Default::default());
    assert!(dev.process_tx(&mut exec, 100), "work left after the budget");
    assert!(!dev.process_tx(&mut exec, 1000));
}

#[test]
fn net_spec_parsing() {
    let s: NetSpec = "tap=tap0,mac=02:aa:00:00:00:01".parse().unwrap();
    assert_eq!(s, NetSpec { tap: "tap0".into(), mac: Some([2, 0xaa, 0, 0, 0, 1]) });
    assert_eq!("tap=t".parse::<NetSpec>().unwrap().mac_for(2), [2, 0, 0, 0, 0, 3]);
    assert!(matches!("tap=t,mac=03:00:00:00:00:01".parse::<NetSpec>(), Err(NetSpecError::BadMac(_))));
    assert!(matches!("mac=02:00:00:00:00:01".parse::<NetSpec>(), Err(NetSpecError::NoTap(_))));
    assert!(matches!("tap=t,x=1".parse::<NetSpec>(), Err(NetSpecError::UnknownKey(..))));
}

/// Frames netback writes to a real TAP device, as a packet socket on the
/// interface sees them arrive: 1-, 2- and 3-slot frames written straight
/// from guest memory, and a blank-checksum frame with its headers copied
/// and its checksum left for the kernel (`NEEDS_CSUM`).
/// Runs in a network namespace of its own thread; fails with the reason unless root.
#[test]
fn frames_reach_a_tap_device_intact_from_guest_memory() {
    std::thread::spawn(|| {
        // SAFETY: unshare(CLONE_NEWNET) moves only this thread into a new
        // network namespace; it has nothing else to disturb.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            panic!("prerequisite missing: needs root for a network namespace");
        }
        let tap = super::tap::Tap::open("pvtest0").expect("open a TAP device");
        let sock = packet_socket("pvtest0");
        let mut h = Harness::new(Box::new(tap), 16, true).unwrap();
        let mut blank = tcp_frame(200);
        let cases = [(frame(60, 1), 0, 0), (frame(1514, 2), 0, 3000), (frame(5000, 3), 0, 4000), (blank.clone(), 0, 0)];
        for (i, (f, page, off)) in cases.iter().enumerate() {
            let flags = if i == 3 { NETTXF_CSUM_BLANK } else { NETTXF_DATA_VALIDATED };
            h.front.queue_frame(f, 4 * i as u32 + page, *off, flags, 20 * i as u16);
        }
        h.front.publish_tx();
        h.kick();
        assert!(h.tx_responses().iter().all(|r| r.status == NETIF_RSP_OKAY));
        // Sent as NEEDS_CSUM: the field holds the pseudo-header sum, which
        // the kernel completes (a packet socket sees it before that).
        let pseudo = csum::add(0, &blank[26..34]) + 6 + (200 - 34);
        blank[50..52].copy_from_slice(&csum::fold(pseudo).to_be_bytes());
        let want: Vec<Vec<u8>> = cases.iter().take(3).map(|c| c.0.clone()).chain([blank]).collect();
        let mut buf = vec![0u8; MAX_FRAME];
        for w in &want {
            let n = recv_incoming(sock, &mut buf);
            assert!(&buf[..n] == w.as_slice(), "frame of {} bytes differs", w.len());
        }
        assert_eq!((h.counters().tx_packets, h.counters().tx_csum_filled), (4, 1));
        // SAFETY: `sock` is ours.
        unsafe { libc::close(sock) };
    })
    .join()
    .unwrap();
}

/// A packet socket receiving every frame that arrives on `ifname`, with a
/// receive timeout.
fn packet_socket(ifname: &str) -> i32 {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket creation.
    let s = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(proto)) };
    assert!(s >= 0, "packet socket: {}", std::io::Error::last_os_error());
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    // SAFETY: an all-zero sockaddr_ll is valid.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = proto;
    sa.sll_ifindex = ifindex as i32;
    let len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
    // SAFETY: `sa` is a valid sockaddr_ll of `len` bytes.
    assert_eq!(unsafe { libc::bind(s, (&raw const sa).cast(), len) }, 0);
    let tv = libc::timeval { tv_sec: 2, tv_usec: 0 };
    let tl = std::mem::size_of::<libc::timeval>() as u32;
    // SAFETY: SO_RCVTIMEO reads one timeval.
    unsafe { libc::setsockopt(s, libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&raw const tv).cast(), tl) };
    s
}

/// The next frame arriving on the packet socket (those the host sends out
/// on the interface, such as IPv6 neighbour discovery, are skipped).
fn recv_incoming(sock: i32, buf: &mut [u8]) -> usize {
    loop {
        // SAFETY: an all-zero sockaddr_ll is valid.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: `buf` is writable for its length; `sa` for `len` bytes.
        let n = unsafe { libc::recvfrom(sock, buf.as_mut_ptr().cast(), buf.len(), 0, (&raw mut sa).cast(), &mut len) };
        assert!(n >= 0, "recv: {}", std::io::Error::last_os_error());
        if sa.sll_pkttype != libc::PACKET_OUTGOING {
            return n as usize;
        }
    }
}

/// The TAP's MTU reaches the front end: read when the TAP is opened and
/// published as `mtu` in the back-end directory (libxl_nic.c writes it
/// there and in the front end's; netif.h "MTU": absent means 1500); a
/// port without an MTU publishes none. Runs in a network namespace of its
/// own thread; fails with the reason unless root.
#[test]
fn the_tap_mtu_is_published_as_the_mtu_key() {
    let (p, _h) = peer::pair(false).unwrap();
    let keys = crate::xenbus::SplitBackend::features(&NetBackend::new(Box::new(p), [2, 0, 0, 0, 0, 1]));
    assert!(!keys.iter().any(|(k, _)| k == "mtu"), "no MTU without one: {keys:?}");
    std::thread::spawn(|| {
        // SAFETY: unshare(CLONE_NEWNET) moves only this thread into a new
        // network namespace; it has nothing else to disturb.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            panic!("prerequisite missing: needs root for a network namespace");
        }
        // `ip` forked from this thread runs in its namespace.
        for args in [&["tuntap", "add", "dev", "pvmtu0", "mode", "tap"][..], &["link", "set", "pvmtu0", "mtu", "1280"]]
        {
            let out = std::process::Command::new("ip").args(args).output().expect("run ip (install iproute2)");
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let tap = super::tap::Tap::open("pvmtu0").expect("open a TAP device");
        assert_eq!(NetPort::mtu(&tap), Some(1280));
        let keys = crate::xenbus::SplitBackend::features(&NetBackend::new(Box::new(tap), [2, 0, 0, 0, 0, 1]));
        assert!(keys.contains(&("mtu".to_string(), "1280".to_string())), "{keys:?}");
    })
    .join()
    .unwrap();
}

#[test]
fn received_frames_are_steered_by_flow() {
    use super::xen::select_queue;
    // An IPv4 ICMP echo reply 10.0.0.1 -> 10.0.0.2 with identifier `id`.
    let icmp = |id: u16| {
        let mut f = vec![0u8; 50];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = 1;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[38..40].copy_from_slice(&id.to_be_bytes());
        f
    };
    // One flow, one queue; every queue number in range; one queue: 0.
    for id in 0..64u16 {
        let q = select_queue(&icmp(id), 4);
        assert!(q < 4);
        assert_eq!(q, select_queue(&icmp(id), 4), "deterministic");
        assert_eq!(select_queue(&icmp(id), 1), 0);
    }
    // Different flows spread over the queues (xenvif_select_queue: hash
    // modulo the queues).
    let used: std::collections::BTreeSet<_> = (0..64u16).map(|id| select_queue(&icmp(id), 4)).collect();
    assert_eq!(used.len(), 4, "{used:?}");
    // ARP, runts and IPv6 go to queue 0.
    let mut arp = icmp(1);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(select_queue(&arp, 4), 0);
    assert_eq!(select_queue(&[0u8; 20], 4), 0);
    let mut v6 = icmp(1);
    v6[12..14].copy_from_slice(&[0x86, 0xdd]);
    assert_eq!(select_queue(&v6, 4), 0);
    // A header length past the frame: no ports read, no panic.
    let mut bad = icmp(1);
    bad[14] = 0x4f;
    bad[23] = 6;
    assert!(select_queue(&bad, 4) < 4);
}
