//! `net`: the network guest. Connects netfront to the first `device/vif`
//! and runs the `smoltcp` TCP/IP stack over it.
//!
//! Command line: `ip=<a.b.c.d>/<prefix>` (required), `mtu=<bytes>`
//! (default 1500, at most what the interface carries), and for the client
//! mode `send=<a.b.c.d>:<port> bytes=<n>`: stream `n` bytes of the pattern
//! `byte[i] = i % 251` to that address, then close.
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
}

fn main(si: &'static StartInfo) -> i32 {
    let cmd = si.cmdline_bytes();
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
    };
    if let Some((host, port)) = cmdline::get(cmd, "send").and_then(parse_endpoint) {
        let total = cmdline::get_u64(cmd, "bytes").unwrap_or(1 << 20);
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
            if c.sent == c.total {
                s.close();
            }
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
