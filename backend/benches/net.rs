//! netback through the host-side harness (a netfront over real rings in
//! real memory) against raw `write`/`read` on the same TAP device, in the
//! same run: frames of 64 and 1500 bytes, each direction, 64 frames per
//! batch (one notification each way per batch when the peer re-arms).
//!
//! * guest to host: the front end queues 64 frames from granted pages and
//!   kicks netback, which copies each frame out and writes it to the TAP;
//!   raw: 64 `write`s of the same frame from a host buffer.
//! * host to guest: a UDP socket sends 64 datagrams to a neighbour on the
//!   TAP's subnet (static ARP entry), so 64 frames come out of the TAP;
//!   netback reads them and copies them into posted guest buffers; raw:
//!   64 `read`s. Both include the kernel's cost of making the frames.
//!
//! Needs root: the bench moves itself into a private network namespace
//! (`unshare(CLONE_NEWNET)`) and makes the TAP there; nothing leaves it.
//!
//! `cargo bench -p backend --bench net`
#![allow(missing_docs)] // criterion's macros generate undocumented items

use backend::net::harness::Harness;
use backend::net::tap::Tap;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

const BATCH: u16 = 64;
const TAP: &str = "pvbench0";
const GUEST_MAC: &str = "02:00:00:00:00:01";

fn frame(len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| i as u8).collect();
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0x99]); // nobody's MAC: the host drops it early
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

struct Setup {
    h: Harness,
    raw: Tap,
    udp: UdpSocket,
}

fn setup() -> Option<Setup> {
    // SAFETY: unshare with CLONE_NEWNET only changes this process's
    // network namespace (the bench is single-threaded here).
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!("skipped: needs root for a private network namespace ({})", std::io::Error::last_os_error());
        return None;
    }
    let tap = Tap::open(TAP).expect("open the TAP device");
    let raw = tap.try_clone().unwrap();
    ip(&["link", "set", "lo", "up"]);
    ip(&["addr", "add", "10.88.0.1/24", "dev", TAP]);
    ip(&["neigh", "add", "10.88.0.2", "lladdr", GUEST_MAC, "dev", TAP]);
    let h = Harness::new(Box::new(tap), 2 * BATCH as u32, true).unwrap();
    let udp = UdpSocket::bind("10.88.0.1:0").unwrap();
    Some(Setup { h, raw, udp })
}

/// Guest to host through netback: `n` frames in batches.
fn tx_netback(s: &mut Setup, len: usize, n: u64) {
    let f = frame(len);
    for p in 0..BATCH as u32 {
        s.h.front.write_page(p, 0, &f);
    }
    let mut done = 0;
    while done < n {
        for i in 0..BATCH {
            s.h.front
                .push_tx(&pv_abi::netif::NetifTxRequest {
                    gref: s.h.front.page_gref(u32::from(i)),
                    offset: 0,
                    flags: 0,
                    id: i,
                    size: len as u16,
                })
                .unwrap();
        }
        s.h.front.publish_tx();
        s.h.kick();
        let got = s.h.tx_responses();
        assert_eq!(got.len(), BATCH as usize);
        s.h.front.final_check_tx().unwrap();
        done += u64::from(BATCH);
    }
}

fn tx_raw(s: &mut Setup, len: usize, n: u64) {
    let f = frame(len);
    for _ in 0..n {
        s.raw.write_raw(&f).unwrap();
    }
}

fn send_udp(s: &Setup, len: usize) {
    let payload = vec![0x5a; len - 42];
    for _ in 0..BATCH {
        s.udp.send_to(&payload, "10.88.0.2:9").unwrap();
    }
}

/// Host to guest through netback.
fn rx_netback(s: &mut Setup, len: usize, n: u64) {
    let mut done = 0;
    while done < n {
        s.h.front.post_rx_pages(u32::from(BATCH), u32::from(BATCH));
        s.h.front.publish_rx();
        send_udp(s, len);
        s.h.port_ready();
        let got = s.h.rx_responses();
        assert_eq!(got.len(), BATCH as usize, "frames lost");
        done += u64::from(BATCH);
    }
}

fn rx_raw(s: &mut Setup, len: usize, n: u64) {
    let mut buf = vec![0u8; 65536];
    let mut done = 0;
    while done < n {
        send_udp(s, len);
        for _ in 0..BATCH {
            s.raw.read_raw(&mut buf).unwrap();
        }
        done += u64::from(BATCH);
    }
}

type Run = fn(&mut Setup, usize, u64);

fn bench(c: &mut Criterion) {
    let Some(mut s) = setup() else { return };
    let cases: [(&str, Run, Run); 2] = [("guest->host", tx_raw, tx_netback), ("host->guest", rx_raw, rx_netback)];
    for (dir, raw, nb) in cases {
        for len in [64usize, 1500] {
            let mut g = c.benchmark_group(format!("{dir} {len}B"));
            g.throughput(Throughput::Elements(u64::from(BATCH)));
            g.bench_function("raw TAP write/read", |b| b.iter(|| raw(&mut s, len, u64::from(BATCH))));
            g.bench_function("netback (harness)", |b| b.iter(|| nb(&mut s, len, u64::from(BATCH))));
            g.finish();
        }
    }
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    println!("\nsummary (median of 7 interleaved runs of 12800 frames, batches of {BATCH}):");
    println!("{:<12} {:>6} {:>14} {:>16} {:>7}", "direction", "bytes", "raw frames/s", "netback frames/s", "ratio");
    for (dir, raw, nb) in cases {
        for len in [64usize, 1500] {
            let n = 12_800;
            let (mut r, mut b) = (Vec::new(), Vec::new());
            for _ in 0..7 {
                let t = Instant::now();
                raw(&mut s, len, n);
                r.push(t.elapsed());
                let t = Instant::now();
                nb(&mut s, len, n);
                b.push(t.elapsed());
            }
            let med = |v: &mut Vec<Duration>| {
                v.sort();
                n as f64 / v[v.len() / 2].as_secs_f64()
            };
            let (rf, bf) = (med(&mut r), med(&mut b));
            println!("{dir:<12} {len:>6} {rf:>14.0} {bf:>16.0} {:>6.2}x", bf / rf);
        }
    }
    let c = s.h.counters();
    println!(
        "notifications: {:.1} frames per front->back notification, {:.1} frames per back->front notification",
        (c.tx_packets) as f64 / s.h.front.notifies.max(1) as f64,
        (c.tx_packets + c.rx_packets) as f64 / c.notifies.max(1) as f64
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
