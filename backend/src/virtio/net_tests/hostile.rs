//! A hostile virtio-net driver while frames keep arriving from the host:
//! bad receive buffers (device-readable, too small, outside RAM), bad
//! transmit chains and notification storms on both queues. No panic, a
//! bounded log, good buffers still get frames (virtio 1.x 5.1.6.3: the
//! device fills device-writable receive buffers), and a second device
//! still passes traffic.

use super::*;
use crate::test_log::{capture, DEVICE_BUDGET};

/// One round of receive work as the device thread does it when the port
/// is readable; returns whether any receive chain came back.
fn rx_round(d: &mut NetDriver) -> bool {
    let before = d.used_idx(RX_QUEUE);
    d.peer.inject(&frame(100, 3), RxMeta::default());
    while d.t.process_event() {}
    d.used_idx(RX_QUEUE) != before
}

#[test]
fn hostile_buffers_and_storms_while_frames_arrive() {
    let mut d = NetDriver::new(V1);
    let data = BUF + 0x1000;
    type Case = (u16, Vec<(u64, u32, bool)>);
    let cases: Vec<Case> = vec![
        (RX_QUEUE, vec![(data, 2048, false)]),
        (RX_QUEUE, vec![(data, 4, true)]),
        (RX_QUEUE, vec![(MEM - 0x10, 2048, true)]),
        (RX_QUEUE, vec![(data, 0, true)]),
        (RX_QUEUE, vec![(data, 2048, true), (data, 12, false)]),
        (TX_QUEUE, vec![(BUF, 4, false)]),
        (TX_QUEUE, vec![(BUF, 12, false), (data, u32::MAX, false)]),
        (TX_QUEUE, vec![(BUF, 12, false), (data, 60, true)]),
    ];
    let ((), lines) = capture(|| {
        for round in 0..400 {
            let (q, bufs) = &cases[round % cases.len()];
            d.add_chain(*q, bufs);
            if *q == TX_QUEUE {
                d.kick(TX_QUEUE);
            } else {
                d.kick(RX_QUEUE);
                assert!(rx_round(&mut d), "the bad receive buffer came back");
            }
            assert!(!d.needs_reset());
        }
    });
    assert_bounded(&lines, "400 bad chains");
    assert!(d.peer.take_sent().is_empty(), "nothing bad reached the host");
    let m = d.t.device().metrics().snapshot();
    assert_eq!((m.rx_packets, m.tx_packets), (0, 0));
    // Notification storms with nothing new: no work, no interrupt, no line.
    let irqs_before_storm = d.t.counters().notifies.get();
    let ((), lines) = capture(|| {
        for _ in 0..50_000 {
            d.kick(TX_QUEUE);
            d.kick(RX_QUEUE);
        }
    });
    assert!(lines.is_empty(), "{lines:?}");
    assert_eq!(d.t.counters().notifies.get(), irqs_before_storm, "no interrupt for nothing");
    // Good buffers still work both ways.
    d.add_chain(RX_QUEUE, &[(BUF + 0x4000, 2048, true)]);
    assert!(rx_round(&mut d));
    let last = d.used_idx(RX_QUEUE).wrapping_sub(1);
    assert_eq!(d.used(RX_QUEUE, last).1 as usize, HDR_LEN + 100);
    let f = frame(60, 9);
    d.send(&f, Some(20));
    assert_eq!(d.peer.take_sent(), vec![f]);
    assert!(!d.needs_reset());
    let mut other = NetDriver::new(V1);
    let f = frame(70, 1);
    other.send(&f, None);
    assert_eq!(other.peer.take_sent(), vec![f], "a second device passes traffic");
}

fn assert_bounded(lines: &[String], what: &str) {
    assert!(lines.len() <= DEVICE_BUDGET, "{what}: {} log lines:\n{}", lines.len(), lines.join("\n"));
}
