//! `net`: the network guest. Connects netfront to the first `device/vif`
//! and runs the `smoltcp` TCP/IP stack over it.
//!
//! Command line: `ip=<a.b.c.d>/<prefix>` (required), `mtu=<bytes>`
//! (default 1500, at most what the interface carries), and for the client
//! mode `send=<a.b.c.d>:<port> bytes=<n>`: stream `n` bytes of the pattern
//! `byte[i] = i % 251` to that address, then close (`n=<k>` instead of
//! `bytes=`: k segments of 1448 bytes; `exit_after_send`: power off then).
//! `test=ping` and `test=hostile` are the benchmark's and the hostile
//! test's raw-frame scenarios (see their functions).
//!
//! Services: ICMP echo (smoltcp's interface answers it), a TCP echo server
//! on port 7, an HTTP server on port 80 whose page shows the counters
//! (`GET /shutdown` powers the guest off with status 0).
#![no_std]
#![no_main]

use core::fmt::Write as _;
use frontend_guest::netfront::{self, NetFront};
use frontend_guest::{clock, cmdline, evtchn, guest_main, println};
use pv_abi::start_info::StartInfo;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

guest_main!(main);

const ECHO_PORT: u16 = 7;
const HTTP_PORT: u16 = 80;
const CLIENT_PORT: u16 = 49152;
const SOCKET_BUF: usize = 64 * 1024;

fn parse_ipv4(s: &[u8]) -> Option<Ipv4Address> {
    let mut o = [0u8; 4];
    let mut parts = s.split(|&b| b == b'.');
    for b in o.iter_mut() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 {
            return None;
        }
        *b = u8::try_from(cmdline::parse_u64(p)?).ok()?;
    }
    parts.next().is_none().then(|| Ipv4Address::new(o[0], o[1], o[2], o[3]))
}

/// `a.b.c.d/prefix`.
fn parse_cidr(s: &[u8]) -> Option<(Ipv4Address, u8)> {
    let slash = s.iter().position(|&b| b == b'/')?;
    let prefix = u8::try_from(cmdline::parse_u64(&s[slash + 1..])?).ok().filter(|&p| p <= 32)?;
    Some((parse_ipv4(&s[..slash])?, prefix))
}

/// `a.b.c.d:port`.
fn parse_endpoint(s: &[u8]) -> Option<(Ipv4Address, u16)> {
    let colon = s.iter().position(|&b| b == b':')?;
    let port = u16::try_from(cmdline::parse_u64(&s[colon + 1..])?).ok()?;
    Some((parse_ipv4(&s[..colon])?, port))
}

fn now() -> Instant {
    Instant::from_micros(clock::now_us() as i64)
}

fn tcp_socket<'a>() -> Option<tcp::Socket<'a>> {
    let rx = netfront::static_buf(SOCKET_BUF).ok()?;
    let tx = netfront::static_buf(SOCKET_BUF).ok()?;
    let mut s = tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx));
    // No delayed ACKs: every wake-up costs emulated instructions here, and
    // an ACK now saves the peer a timer.
    s.set_ack_delay(None);
    Some(s)
}

/// A formatter into a fixed buffer (no heap).
struct Text<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl core::fmt::Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(core::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The client's byte pattern: `byte[i] = i % 251`.
const PERIOD: usize = 251;
/// Longest chunk copied from the pattern table at once.
const CHUNK: usize = 16 * PERIOD;

struct Client {
    /// `PERIOD + CHUNK` bytes of the pattern, so a chunk starting at any
    /// phase is one copy (each guest instruction costs about a
    /// microsecond here; a copy is one `rep movsb`).
    pattern: &'static [u8],
    handle: SocketHandle,
    total: u64,
    sent: u64,
    done: bool,
}

struct Guest<'a> {
    dev: NetFront,
    iface: Interface,
    sockets: SocketSet<'a>,
    echo: SocketHandle,
    http: SocketHandle,
    http_req: [u8; 512],
    http_len: usize,
    client: Option<Client>,
    echoed: u64,
    shutdown: bool,
    /// Power off once the client's stream is done (`exit_after_send`).
    exit_after_send: bool,
}

fn main(si: &'static StartInfo) -> i32 {
    let cmd = si.cmdline_bytes();
    if cmdline::get(cmd, "test") == Some(b"hostile") {
        return hostile(si, cmd);
    }
    if cmdline::get(cmd, "test") == Some(b"ping") {
        return ping(si, cmd);
    }
    let Some((ip, prefix)) = cmdline::get(cmd, "ip").and_then(parse_cidr) else {
        println!("net: give the guest an address: --cmdline \"ip=<a.b.c.d>/<prefix>\"");
        return 64;
    };
    let timer = clock::init();
    let mut store = match frontend_guest::xenbus::open_store(si) {
        Ok(s) => s,
        Err(e) => {
            println!("net: store: {:?}", e);
            return 70;
        }
    };
    let mut first = None;
    if let Err(e) = netfront::list(&mut store, |id| {
        first.get_or_insert(id);
    }) {
        println!("net: cannot list interfaces: {:?}", e);
        return 71;
    }
    let Some(id) = first else {
        println!("net: no interface (device/vif is empty): pass --net tap=<ifname>");
        return 72;
    };
    let mut dev = match netfront::connect(&mut store, id) {
        Ok(d) => d,
        Err(e) => {
            println!("net: vif/{}: connect failed: {:?}", id, e);
            return 73;
        }
    };
    let mtu = dev.set_mtu(cmdline::get_u64(cmd, "mtu").map_or(1500, |m| m as usize));
    let m = dev.mac;
    println!(
        "net: vif/{} mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} ip {}/{} mtu {} sg {} timer {} tsc/us {}",
        id,
        m[0],
        m[1],
        m[2],
        m[3],
        m[4],
        m[5],
        ip,
        prefix,
        mtu,
        dev.sg,
        timer,
        clock::tsc_per_us()
    );
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(dev.mac)));
    config.random_seed = frontend_guest::arch::rdtsc();
    let mut iface = Interface::new(config, &mut dev, now());
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(IpAddress::Ipv4(ip), prefix));
    });
    let mut storage = [SocketStorage::EMPTY; 4];
    let mut sockets = SocketSet::new(&mut storage[..]);
    let (Some(mut echo), Some(mut http)) = (tcp_socket(), tcp_socket()) else {
        println!("net: out of memory");
        return 2;
    };
    let _ = echo.listen(ECHO_PORT);
    let _ = http.listen(HTTP_PORT);
    let echo = sockets.add(echo);
    let http = sockets.add(http);
    let mut g = Guest {
        dev,
        iface,
        sockets,
        echo,
        http,
        http_req: [0; 512],
        http_len: 0,
        client: None,
        echoed: 0,
        shutdown: false,
        exit_after_send: cmdline::words(cmd).any(|(k, _)| k == b"exit_after_send"),
    };
    if let Some((host, port)) = cmdline::get(cmd, "send").and_then(parse_endpoint) {
        // `n=<packets>` (the benchmark's count) streams that many full
        // 1448-byte segments.
        let total =
            cmdline::get_u64(cmd, "bytes").or_else(|| cmdline::get_u64(cmd, "n").map(|n| n * 1448)).unwrap_or(1 << 20);
        let Some(mut s) = tcp_socket() else { return 2 };
        if let Err(e) = s.connect(g.iface.context(), (IpAddress::Ipv4(host), port), CLIENT_PORT) {
            println!("net: client connect: {:?}", e);
            return 74;
        }
        let Ok(pattern) = netfront::static_buf(PERIOD + CHUNK) else { return 2 };
        for (i, b) in pattern.iter_mut().enumerate() {
            *b = (i % PERIOD) as u8;
        }
        g.client = Some(Client { pattern, handle: g.sockets.add(s), total, sent: 0, done: false });
        println!("net: client: streaming {} bytes to {}:{}", total, host, port);
    }
    println!("net: ready: echo on {}, http on {}", ECHO_PORT, HTTP_PORT);
    g.run();
    let c = g.dev.counters();
    println!(
        "net: shutdown: rx {} tx {} echoed {} notifies {} upcalls {}",
        c.rx_packets,
        c.tx_packets,
        g.echoed,
        c.notifies,
        evtchn::upcalls()
    );
    0
}

/// Listens again once the last connection is over. A server socket does
/// not sit out TIME-WAIT (one socket per service here; the next client
/// would be refused for its length).
fn relisten(s: &mut tcp::Socket, port: u16) -> bool {
    match s.state() {
        tcp::State::Closed | tcp::State::TimeWait => {
            s.abort();
            let _ = s.listen(port);
            true
        }
        _ => false,
    }
}

impl Guest<'_> {
    fn run(&mut self) {
        while !self.shutdown {
            let t = now();
            self.iface.poll(t, &mut self.dev, &mut self.sockets);
            self.serve_echo();
            self.serve_http();
            self.drive_client();
            if self.exit_after_send && self.client.as_ref().is_some_and(|c| c.done) {
                self.shutdown = true;
            }
            // Send what the services queued before sleeping.
            self.iface.poll(now(), &mut self.dev, &mut self.sockets);
            self.dev.flush();
            if self.dev.rx_ready() {
                continue;
            }
            let t = now();
            let deadline = self.iface.poll_delay(t, &self.sockets).map(|d| clock::now_us() + d.total_micros());
            if deadline.is_some_and(|d| d <= clock::now_us()) {
                continue;
            }
            self.dev.wait(deadline);
        }
        // Let the last answer leave.
        for _ in 0..20 {
            self.iface.poll(now(), &mut self.dev, &mut self.sockets);
            self.dev.flush();
            self.dev.wait(Some(clock::now_us() + 1000));
        }
    }

    fn serve_echo(&mut self) {
        let s = self.sockets.get_mut::<tcp::Socket>(self.echo);
        if relisten(s, ECHO_PORT) {
            return;
        }
        let mut tmp = [0u8; 4096];
        while s.can_recv() && s.send_capacity() > s.send_queue() {
            let room = (s.send_capacity() - s.send_queue()).min(tmp.len());
            let n = s.recv_slice(&mut tmp[..room]).unwrap_or(0);
            if n == 0 {
                break;
            }
            let _ = s.send_slice(&tmp[..n]);
            self.echoed += n as u64;
        }
        if !s.may_recv() && s.recv_queue() == 0 && s.send_queue() == 0 && s.state() == tcp::State::CloseWait {
            s.close();
        }
    }

    fn serve_http(&mut self) {
        let s = self.sockets.get_mut::<tcp::Socket>(self.http);
        if relisten(s, HTTP_PORT) {
            self.http_len = 0;
            return;
        }
        if s.can_recv() {
            let n = s.recv_slice(&mut self.http_req[self.http_len..]).unwrap_or(0);
            self.http_len += n;
        }
        let req = &self.http_req[..self.http_len];
        let complete = req.windows(4).any(|w| w == b"\r\n\r\n") || self.http_len == self.http_req.len();
        if !complete || !s.may_send() {
            return;
        }
        let shutdown = req.starts_with(b"GET /shutdown");
        let mut body = [0u8; 1024];
        let mut b = Text { buf: &mut body, len: 0 };
        let c = self.dev.counters();
        let _ = write!(
            b,
            "<html><body><h1>PV guest net</h1><pre>\nrx_packets {}\nrx_bytes {}\ntx_packets {}\ntx_bytes {}\n\
             rx_multi_slot {}\ntx_multi_slot {}\nrx_csum_checked {}\nrx_errors {}\ntx_errors {}\ntx_dropped {}\n\
             notifies_to_backend {}\nupcalls {}\necho_bytes {}\nuptime_us {}\n</pre></body></html>\n",
            c.rx_packets,
            c.rx_bytes,
            c.tx_packets,
            c.tx_bytes,
            c.rx_multi_slot,
            c.tx_multi_slot,
            c.rx_csum_checked,
            c.rx_errors,
            c.tx_errors,
            c.tx_dropped,
            c.notifies,
            evtchn::upcalls(),
            self.echoed,
            clock::now_us()
        );
        let blen = b.len;
        let mut head = [0u8; 160];
        let mut h = Text { buf: &mut head, len: 0 };
        let _ = write!(
            h,
            "HTTP/1.0 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            blen
        );
        let hlen = h.len;
        let _ = s.send_slice(&head[..hlen]);
        let _ = s.send_slice(&body[..blen]);
        s.close();
        self.http_len = 0;
        if shutdown {
            self.shutdown = true;
        }
    }

    fn drive_client(&mut self) {
        let Some(c) = &mut self.client else { return };
        if c.done {
            return;
        }
        let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
        if s.may_send() && c.sent < c.total {
            let left = c.total - c.sent;
            let (start, pattern) = (c.sent, c.pattern);
            let n = s
                .send(|buf| {
                    let n = (buf.len() as u64).min(left) as usize;
                    let mut at = 0;
                    while at < n {
                        let phase = ((start + at as u64) % PERIOD as u64) as usize;
                        let len = (n - at).min(CHUNK);
                        buf[at..at + len].copy_from_slice(&pattern[phase..phase + len]);
                        at += len;
                    }
                    (n, n)
                })
                .unwrap_or(0);
            c.sent += n as u64;
        }
        if c.sent == c.total && s.may_send() {
            s.close();
        }
        if c.sent == c.total && !s.is_active() {
            c.done = true;
            println!("net: client: sent {} bytes", c.sent);
        } else if !s.is_open() && c.sent < c.total {
            c.done = true;
            println!("net: client: connection failed after {} bytes", c.sent);
        }
    }
}

/// `test=hostile ip=<a.b.c.d>/<n> peer=<a.b.c.d>`, with two interfaces and
/// a disk: malformed transmit requests on vif 0 must be refused, a corrupt
/// ring index must stop vif 0, and afterwards vif 1 must still carry an ARP
/// exchange with `peer` and the disk must still read.
fn hostile(si: &'static StartInfo, cmd: &[u8]) -> i32 {
    use pv_abi::netif::{NetifTxRequest, NetifTxResponse, NETIF_RSP_ERROR};
    let (Some((ip, _)), Some(peer)) =
        (cmdline::get(cmd, "ip").and_then(parse_cidr), cmdline::get(cmd, "peer").and_then(parse_ipv4))
    else {
        println!("hostile: give ip=<a.b.c.d>/<n> peer=<a.b.c.d>");
        return 64;
    };
    clock::init();
    let Ok(mut store) = frontend_guest::xenbus::open_store(si) else { return 70 };
    let (Ok(mut a), Ok(mut b)) = (netfront::connect(&mut store, 0), netfront::connect(&mut store, 1)) else {
        println!("hostile: needs --net twice");
        return 73;
    };
    // Malformed requests on vif 0.
    let Some(page) = frontend_guest::pages::alloc(1) else { return 2 };
    let dom0 = pv_abi::event_channel::DOMID_VMM;
    let gref = frontend_guest::grant::grant_page(dom0, page, true).unwrap_or(0);
    let req = |gref, offset, id, size| NetifTxRequest { gref, offset, flags: 0, id, size };
    let cases = [req(999, 0, 1, 60), req(gref, 0, 2, 0), req(gref, 4000, 3, 200)];
    for r in &cases {
        let _ = a.queue_raw_tx(r);
    }
    a.flush();
    let mut rsp = [NetifTxResponse::default(); 3];
    let (mut n, deadline) = (0, clock::now_us() + 2_000_000);
    while n < rsp.len() && clock::now_us() < deadline {
        n += a.raw_tx_responses(&mut rsp[n..]).unwrap_or(0);
        a.wait(Some(deadline.min(clock::now_us() + 100_000)));
    }
    let refused = rsp[..n].iter().filter(|r| r.status == NETIF_RSP_ERROR).count();
    // A corrupt ring index stops vif 0.
    a.poke_tx_req_prod(0x4000_0000);
    a.kick();
    // vif 1 still works: an ARP request for the peer gets its reply.
    let arp_ok = arp_exchange(&mut b, ip, peer).is_some();
    // The disk still works.
    let mut vdev = None;
    let _ = frontend_guest::blkfront::list_disks(&mut store, |v| {
        vdev.get_or_insert(v);
    });
    let disk = match vdev.map(|v| frontend_guest::blkfront::connect(&mut store, v)) {
        Some(Ok(mut d)) => match frontend_guest::blkfront::IoBuf::alloc(1) {
            Some(buf) => d.read(0, buf.gpa, 8),
            None => return 2,
        },
        _ => {
            println!("hostile: needs a disk");
            return 75;
        }
    };
    println!("hostile: refused={}/{} vif1-arp={} disk-read={:?}", refused, cases.len(), arp_ok, disk);
    let good = refused == cases.len() && arp_ok && disk == Ok(pv_abi::blkif::BLKIF_RSP_OKAY);
    (!good) as i32
}

/// Sends ARP requests for `peer` from `dev` (once a second, 5 s at most)
/// until its reply arrives; returns the peer's MAC.
fn arp_exchange(dev: &mut NetFront, ip: Ipv4Address, peer: Ipv4Address) -> Option<[u8; 6]> {
    let mut f = [0u8; 42];
    f[..6].fill(0xff);
    f[6..12].copy_from_slice(&dev.mac);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&dev.mac);
    f[28..32].copy_from_slice(&ip.octets());
    f[38..42].copy_from_slice(&peer.octets());
    let end = clock::now_us() + 5_000_000;
    while clock::now_us() < end {
        dev.send_frame(&f);
        let resend = clock::now_us() + 1_000_000;
        while clock::now_us() < resend.min(end) {
            let mut got = None;
            while dev.recv_frame(|r| {
                if r.len() >= 42 && r[12..14] == [0x08, 0x06] && r[20..22] == [0, 2] && r[28..32] == peer.octets() {
                    got = Some([r[22], r[23], r[24], r[25], r[26], r[27]]);
                }
            }) {}
            if got.is_some() {
                return got;
            }
            dev.flush();
            dev.wait(Some(resend.min(end)));
        }
    }
    None
}

/// `test=ping ip=<a.b.c.d>/<n> peer=<a.b.c.d> n=<count>`: resolves the
/// peer's MAC, then sends `n` ICMP echo requests one at a time, each
/// waiting for its reply (2 s at most): the benchmark's round trip.
fn ping(si: &'static StartInfo, cmd: &[u8]) -> i32 {
    let (Some((ip, _)), Some(peer)) =
        (cmdline::get(cmd, "ip").and_then(parse_cidr), cmdline::get(cmd, "peer").and_then(parse_ipv4))
    else {
        println!("ping: give ip=<a.b.c.d>/<n> peer=<a.b.c.d>");
        return 64;
    };
    let n = cmdline::get_u64(cmd, "n").unwrap_or(1);
    clock::init();
    let Ok(mut store) = frontend_guest::xenbus::open_store(si) else { return 70 };
    let Ok(mut dev) = netfront::connect(&mut store, 0) else { return 73 };
    let Some(peer_mac) = arp_exchange(&mut dev, ip, peer) else {
        println!("ping: no ARP reply from {}", peer);
        return 1;
    };
    let mut ok = 0;
    for seq in 0..n {
        let f = icmp_echo(&dev.mac, &peer_mac, ip, peer, seq as u16);
        if !dev.send_frame(&f) {
            continue;
        }
        let end = clock::now_us() + 2_000_000;
        let mut got = false;
        while !got && clock::now_us() < end {
            while dev.recv_frame(|r| {
                got |= r.len() >= 42 && r[23] == 1 && r[34] == 0 && r[40..42] == (seq as u16).to_be_bytes();
            }) {}
            if !got {
                dev.flush();
                dev.wait(Some(end));
            }
        }
        ok += got as u64;
    }
    println!("ping: n={} replies={}", n, ok);
    (ok != n) as i32
}

/// An Ethernet + IPv4 + ICMP echo request (8 bytes of data).
fn icmp_echo(src: &[u8; 6], dst: &[u8; 6], ip: Ipv4Address, peer: Ipv4Address, seq: u16) -> [u8; 50] {
    let mut f = [0u8; 50];
    f[..6].copy_from_slice(dst);
    f[6..12].copy_from_slice(src);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14..24].copy_from_slice(&[0x45, 0, 0, 36, 0, 0, 0x40, 0, 64, 1]);
    f[26..30].copy_from_slice(&ip.octets());
    f[30..34].copy_from_slice(&peer.octets());
    let c = !netfront::csum_fold(netfront::csum_add(0, &f[14..34]));
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f[34] = 8; // echo request
    f[38..40].copy_from_slice(&0x7076u16.to_be_bytes());
    f[40..42].copy_from_slice(&seq.to_be_bytes());
    f[42..50].copy_from_slice(b"pv-ping!");
    let c = !netfront::csum_fold(netfront::csum_add(0, &f[34..50]));
    f[36..38].copy_from_slice(&c.to_be_bytes());
    f
}
