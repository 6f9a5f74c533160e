//! Hostile netfronts while traffic arrives: the in-process peer keeps
//! injecting frames for the guest from another thread while the front end
//! transmits bad grants, slot chains of 1..40 slots, a packet whose
//! `NETTXF_more_data` runs off the published requests, and posts bogus
//! receive grants. netback is driven as its device thread drives it
//! (transmit on a kick, receive when the port is readable), in one thread.
//!
//! Each case checks: no panic, a bounded number of log lines, the vif
//! either keeps serving (bad requests get `NETIF_RSP_ERROR`, Xen's
//! `xen/include/public/io/netif.h`) or stops cleanly where Linux netback
//! disables the interface (`xenvif_fatal_tx_err` in
//! `drivers/net/xen-netback/netback.c`), and a second vif still passes
//! traffic both ways.

use super::*;
use crate::guest_side::AFTER_TABLE;
use crate::net::harness::{RX_RING_REF, TX_RING_REF};
use crate::test_log::{capture, DEVICE_BUDGET};
use pv_abi::grant_table::GTF_READONLY;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Receive buffers are data pages `RX_FIRST..RX_FIRST + RX_PAGES`; transmit
/// data uses pages below.
const RX_FIRST: u32 = 48;
const RX_PAGES: u32 = 16;

/// The host side sending the guest frames of 60..1400 bytes until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Traffic {
    fn start(peer: PeerHandle) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut sent = 0u64;
            while !s.load(Ordering::Relaxed) {
                if peer.inject(&frame(60 + (sent as usize * 37) % 1340, sent as u8), RxMeta::default()) {
                    sent += 1;
                } else {
                    std::thread::yield_now();
                }
            }
            sent
        });
        Traffic { stop, thread: Some(thread) }
    }

    /// Stops the sender; the frames it injected.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().expect("traffic thread"))
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A vif as the guest runs it: keeps receive buffers posted, counts the
/// frames it receives.
struct Vif {
    h: Harness,
    peer: PeerHandle,
    posted: u32,
    next_id: u16,
    received: u64,
    rx_errors: u64,
}

impl Vif {
    fn new() -> Self {
        let (h, peer) = harness(64, true);
        Vif { h, peer, posted: 0, next_id: 0, received: 0, rx_errors: 0 }
    }

    /// One receive round: a frame arrives (besides the traffic thread's,
    /// which the scheduler may not have run yet), the posted buffers are
    /// topped up to 16, netback's receive side runs, the responses are taken.
    fn pump(&mut self) {
        self.peer.inject(&frame(80, 0x80), RxMeta::default());
        while self.posted < RX_PAGES {
            let page = RX_FIRST + u32::from(self.next_id) % RX_PAGES;
            let gref = self.h.front.page_gref(page);
            self.post(gref);
        }
        self.h.front.publish_rx();
        self.h.port_ready();
        self.take_rx();
    }

    fn post(&mut self, gref: u32) {
        self.h.front.post_rx(self.next_id, gref).expect("room on the receive ring");
        self.next_id = self.next_id.wrapping_add(1);
        self.posted += 1;
    }

    fn take_rx(&mut self) {
        for r in self.h.rx_responses() {
            self.posted -= 1;
            if r.status > 0 {
                self.received += u64::from(r.flags & NETRXF_MORE_DATA == 0);
            } else {
                self.rx_errors += 1;
            }
        }
    }

    /// Transmits `reqs` as one batch and kicks netback; the responses.
    fn transmit(&mut self, reqs: &[NetifTxRequest]) -> Vec<NetifTxResponse> {
        for r in reqs {
            self.h.front.push_tx(r).expect("room on the transmit ring");
        }
        self.h.front.publish_tx();
        self.h.kick();
        self.h.tx_responses()
    }

    /// A good frame out and frames in: the vif serves.
    fn serves(&mut self) {
        let before = self.received;
        self.h.front.queue_frame(&frame(300, 0x42), 0, 0, 0, 0x4242);
        self.h.front.publish_tx();
        self.h.kick();
        assert!(self.h.tx_responses().iter().all(|r| r.status == NETIF_RSP_OKAY));
        assert!(self.peer.take_sent().contains(&frame(300, 0x42)), "the good frame reached the host");
        self.peer.inject(&frame(100, 1), RxMeta::default());
        for _ in 0..200 {
            self.pump();
            if self.received > before {
                break;
            }
        }
        assert!(self.received > before, "frames reach the guest");
        assert!(!self.h.stopped());
    }
}

fn req(gref: u32, offset: u16, flags: u16, id: u16, size: u16) -> NetifTxRequest {
    NetifTxRequest { gref, offset, flags, id, size }
}

/// A second vif, connected before the abuse of the first (and served
/// then), still passes traffic both ways afterwards, with no error counted.
fn second_vif_passes_traffic(other: &mut Vif) {
    other.serves();
    let c = other.h.counters();
    assert_eq!((c.tx_errors, c.rx_errors, c.stopped), (0, 0, 0), "{c:?}");
    assert_eq!(other.rx_errors, 0);
}

/// The second vif of a test, connected and serving before the abuse starts.
fn second_vif() -> Vif {
    let mut other = Vif::new();
    other.serves();
    other
}

fn assert_bounded(lines: &[String], what: &str) {
    assert!(lines.len() <= DEVICE_BUDGET, "{what}: {} log lines:\n{}", lines.len(), lines.join("\n"));
}

/// Transmit requests naming grants the guest never gave, gave to nobody,
/// for a frame outside RAM, or past the table: each packet gets
/// `NETIF_RSP_ERROR`, the vif goes on receiving meanwhile.
#[test]
fn bad_transmit_grants_while_traffic_arrives() {
    let mut other = second_vif();
    let mut v = Vif::new();
    let traffic = Traffic::start(v.peer.clone());
    let (unpermitted, outside) = (v.h.front.page_gref(40), v.h.front.page_gref(41));
    v.h.front.set_grant(unpermitted, AFTER_TABLE + 0x10000, 0);
    v.h.front.set_grant(outside, 1 << 40, GTF_PERMIT_ACCESS);
    let bad = [999, u32::MAX, 0, unpermitted, outside, 16 * 512 * 4];
    let ((), lines) = capture(|| {
        for round in 0..300u16 {
            let g = bad[usize::from(round) % bad.len()];
            let rsp = v.transmit(&[req(g, 0, 0, round, 100)]);
            assert_eq!(rsp.len(), 1);
            assert_eq!(rsp[0].status, NETIF_RSP_ERROR, "gref {g:#x}");
            v.pump();
        }
    });
    assert_bounded(&lines, "300 bad transmit grants");
    assert_eq!(v.h.counters().tx_errors, 300);
    assert!(v.peer.take_sent().is_empty(), "nothing from a bad grant reached the host");
    assert!(v.received > 0, "frames kept arriving during the abuse: {:?}", v.h.counters());
    v.serves();
    traffic.finish();
    assert_eq!(v.rx_errors, 0);
    second_vif_passes_traffic(&mut other);
}

/// Packets of 1..40 slots (`NETTXF_more_data` chains): up to
/// `XEN_NETIF_NR_SLOTS_MIN` (18) reach the host intact, longer ones are
/// refused slot by slot (netif.h: a front end must not use more; Linux
/// netback drops them), and the vif goes on.
#[test]
fn slot_chains_of_one_to_forty_while_traffic_arrives() {
    let mut other = second_vif();
    let mut v = Vif::new();
    let traffic = Traffic::start(v.peer.clone());
    let ((), lines) = capture(|| {
        for n in 1..=40u32 {
            let f = frame(100 * n as usize, n as u8);
            let mut reqs = Vec::new();
            for i in 0..n {
                v.h.front.write_page(i, 0, &f[100 * i as usize..100 * (i as usize + 1)]);
                let more = if i + 1 < n { NETTXF_MORE_DATA } else { 0 };
                let size = if i == 0 { f.len() } else { 100 };
                reqs.push(req(v.h.front.page_gref(i), 0, more, i as u16, size as u16));
            }
            let rsp = v.transmit(&reqs);
            assert_eq!(rsp.len(), n as usize, "{n} slots: one response each");
            let want = if n as usize <= MAX_TX_SLOTS { NETIF_RSP_OKAY } else { NETIF_RSP_ERROR };
            assert!(rsp.iter().all(|r| r.status == want), "{n} slots: {rsp:?}");
            let sent = v.peer.take_sent();
            if n as usize <= MAX_TX_SLOTS {
                assert_eq!(sent, vec![f], "{n} slots: the frame reached the host intact");
            } else {
                assert!(sent.is_empty(), "{n} slots: nothing sent");
            }
            v.pump();
        }
    });
    assert_bounded(&lines, "slot chains");
    let c = v.h.counters();
    assert_eq!((c.tx_packets, c.tx_errors), (MAX_TX_SLOTS as u64, 40 - MAX_TX_SLOTS as u64));
    v.serves();
    traffic.finish();
    second_vif_passes_traffic(&mut other);
}

/// `NETTXF_more_data` on the last published request: the packet never
/// ends. Linux netback's `xenvif_count_requests` treats a packet running
/// past the requests the front end published as fatal and disables the
/// vif; so does ours: every slot answered, the device stopped, then
/// silence however hard the guest kicks and however much traffic arrives.
#[test]
fn unterminated_more_data_stops_the_vif_cleanly() {
    let mut other = second_vif();
    for slots in [1u32, 2, 17, 40] {
        let mut v = Vif::new();
        let traffic = Traffic::start(v.peer.clone());
        v.pump();
        let ((), lines) = capture(|| {
            let reqs: Vec<_> =
                (0..slots).map(|i| req(v.h.front.page_gref(i), 0, NETTXF_MORE_DATA, i as u16, 200)).collect();
            let rsp = v.transmit(&reqs);
            assert!(v.h.stopped(), "{slots} slots: the vif is stopped");
            assert!(rsp.len() <= slots as usize);
            v.h.front.queue_frame(&frame(100, 1), 0, 0, 0, 7);
            v.h.front.publish_tx();
            for _ in 0..1000 {
                v.h.kick();
                assert!(v.h.tx_responses().is_empty(), "a stopped vif answers nothing more");
                v.pump();
            }
        });
        assert_bounded(&lines, "a stopped vif kicked 1000 times");
        let c = v.h.counters();
        assert_eq!((c.stopped, c.tx_packets), (1, 0), "{slots} slots");
        assert!(v.peer.take_sent().is_empty());
        traffic.finish();
        assert!(c.rx_dropped_not_connected >= 1000, "arriving frames are dropped and counted: {c:?}");
        second_vif_passes_traffic(&mut other);
    }
}

/// Receive requests with grants never given, read-only, for a frame
/// outside RAM: each frame that lands on one gets `NETIF_RSP_ERROR`
/// (netif.h: a negative status is an error), good buffers still get
/// frames, the vif goes on.
#[test]
fn bogus_receive_grants_while_traffic_arrives() {
    let mut other = second_vif();
    let mut v = Vif::new();
    let (ro, outside) = (v.h.front.page_gref(40), v.h.front.page_gref(41));
    v.h.front.set_grant(ro, AFTER_TABLE + 0x10000, GTF_PERMIT_ACCESS | GTF_READONLY);
    v.h.front.set_grant(outside, 1 << 40, GTF_PERMIT_ACCESS);
    let traffic = Traffic::start(v.peer.clone());
    let bogus = [999, u32::MAX, ro, outside];
    let ((), lines) = capture(|| {
        for round in 0..300usize {
            v.post(bogus[round % bogus.len()]);
            v.pump();
        }
    });
    assert_bounded(&lines, "300 bogus receive grants");
    assert!(v.rx_errors > 0 && v.received > 0, "errors {} received {}", v.rx_errors, v.received);
    assert_eq!(v.h.counters().rx_errors, v.rx_errors);
    v.serves();
    traffic.finish();
    second_vif_passes_traffic(&mut other);
}

/// A receive buffer that is one of the vif's own ring pages: netback
/// copies a frame over the ring's indices. The guest broke its own rings;
/// netback must stop (corrupt ring) or go on, and never panic or flood.
#[test]
fn a_ring_page_posted_as_a_receive_buffer() {
    let mut other = second_vif();
    for ring in [RX_RING_REF, TX_RING_REF] {
        let mut v = Vif::new();
        let traffic = Traffic::start(v.peer.clone());
        let ((), lines) = capture(|| {
            v.post(ring);
            v.h.front.write_page(0, 0, &frame(100, 1));
            for _ in 0..500 {
                v.pump();
                // The front end's view of its rings may be garbage by now
                // too: a full ring is the guest's problem, not a test failure.
                let _ = v.h.front.push_tx(&req(v.h.front.page_gref(0), 0, 0, 7, 100));
                v.h.front.publish_tx();
                v.h.kick();
                v.h.tx_responses();
            }
        });
        assert_bounded(&lines, "a ring page as a receive buffer");
        // Today the front end's next publish rewrites the indices and the
        // vif goes on; a stop would be as good, a hang or panic would not.
        if !v.h.stopped() {
            v.serves();
        }
        traffic.finish();
        second_vif_passes_traffic(&mut other);
    }
}

/// The guest stomps on the grant entries of the pages it transmits from
/// (permit, revoke, permit...) from another vCPU while packets are in
/// flight, as Xen's grant-table rules forbid (a revocation must fail
/// against `GTF_reading`): every packet is sent intact or refused, no
/// mapping is left behind, the log stays bounded.
#[test]
fn grants_revoked_under_transmission() {
    let mut other = second_vif();
    use pv_abi::event_channel::DOMID_VMM;
    use pv_abi::grant_table::GrantEntryV1;
    use vm_memory::{Bytes, GuestAddress};
    let mut v = Vif::new();
    let mem = v.h.front.grants().memory().clone();
    let g = v.h.front.page_gref(0);
    // Data page 0 follows the two ring pages.
    let frame_no = ((AFTER_TABLE + 2 * 4096) / 4096) as u32;
    let at = GuestAddress(crate::guest_side::TABLE + 8 * u64::from(g));
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let stomper = std::thread::spawn(move || {
        let mut flips = 0u64;
        while !s.load(Ordering::Relaxed) || flips < 1000 {
            let flags = if flips % 2 == 0 { 0 } else { GTF_PERMIT_ACCESS };
            mem.write_obj(GrantEntryV1 { flags, domid: DOMID_VMM, frame: frame_no }.to_word(), at).unwrap();
            flips += 1;
        }
        mem.write_obj(GrantEntryV1 { flags: GTF_PERMIT_ACCESS, domid: DOMID_VMM, frame: frame_no }.to_word(), at)
            .unwrap();
    });
    let f = frame(600, 6);
    v.h.front.write_page(0, 0, &f);
    let ((), lines) = capture(|| {
        for id in 0..2000u16 {
            let rsp = v.transmit(&[req(g, 0, 0, id, 600)]);
            assert!(rsp.len() == 1 && (rsp[0].status == NETIF_RSP_OKAY || rsp[0].status == NETIF_RSP_ERROR));
            if id % 16 == 0 {
                v.pump();
            }
        }
    });
    stop.store(true, Ordering::Relaxed);
    stomper.join().unwrap();
    assert_bounded(&lines, "2000 packets under grant stomping");
    let c = v.h.counters();
    assert_eq!(c.tx_packets + c.tx_errors, 2000);
    assert!(v.peer.take_sent().iter().all(|s| s == &f), "every frame sent is intact");
    assert_eq!(v.h.front.grants().mapped_refs(), 2, "only the two ring pages stay mapped");
    v.serves();
    second_vif_passes_traffic(&mut other);
}

/// Front-end store keys for a hand-made connection.
struct RingKeys(u32, u32);

impl crate::xenbus::FrontendKeys for RingKeys {
    fn read(&self, key: &str) -> Option<String> {
        Some(match key {
            keys::TX_RING_REF => self.0.to_string(),
            keys::RX_RING_REF => self.1.to_string(),
            keys::REQUEST_RX_COPY | keys::FEATURE_RX_NOTIFY | keys::FEATURE_SG => "1".into(),
            _ => return None,
        })
    }
}

/// Ring references that are bad at connect time: never granted, read-only
/// (a ring must be writable), outside RAM, and one page given as both the
/// transmit and the receive ring. The bad ones are refused with a message
/// (the xenbus device then stays unconnected); the shared page connects
/// (each grant is valid), and then whatever the two rings read of each
/// other's slots is refused or stops the vif, with a bounded log.
#[test]
fn bad_ring_grants_at_connect_and_one_page_for_both_rings() {
    let mut other = second_vif();
    use super::super::harness::HostNetFront;
    use crate::xenbus::SplitBackend as _;
    let mut front = HostNetFront::new(8).unwrap();
    let (ro, outside) = (front.page_gref(0), front.page_gref(1));
    front.set_grant(ro, AFTER_TABLE + 0x10000, GTF_PERMIT_ACCESS | GTF_READONLY);
    front.set_grant(outside, 1 << 40, GTF_PERMIT_ACCESS);
    let log = pv_util::ratelimit::SharedLogLimiter::default();
    let notify: Arc<dyn crate::Notify> = Arc::new(super::super::harness::CountNotify::default());
    for (tx, rx) in [(999, RX_RING_REF), (TX_RING_REF, u32::MAX), (ro, RX_RING_REF), (TX_RING_REF, outside)] {
        let (p, _h) = peer::pair(true).unwrap();
        let mut be = NetBackend::new(Box::new(p), [2, 0, 0, 0, 0, 9]);
        let e = be.connect(&RingKeys(tx, rx), front.grants(), notify.clone(), &log).unwrap_err().to_string();
        assert!(!e.is_empty() && !e.contains('\n'), "{e}");
        assert!(be.dev.is_none());
    }
    let (p, peer) = peer::pair(true).unwrap();
    let mut be = NetBackend::new(Box::new(p), [2, 0, 0, 0, 0, 9]);
    be.connect(&RingKeys(TX_RING_REF, TX_RING_REF), front.grants(), notify.clone(), &log).unwrap();
    let traffic = Traffic::start(peer.clone());
    let g = front.page_gref(2);
    front.write_page(2, 0, &frame(100, 2));
    let ((), lines) = capture(|| {
        for id in 0..500u16 {
            let _ = front.push_tx(&req(g, 0, 0, id, 100));
            front.publish_tx();
            be.process();
            peer.inject(&frame(90, 9), RxMeta::default());
            be.port_ready();
            while front.pop_tx().ok().flatten().is_some() {}
        }
    });
    traffic.finish();
    assert_bounded(&lines, "one page for both rings");
    second_vif_passes_traffic(&mut other);
}
