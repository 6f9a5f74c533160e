//! `net`: the network guest. Runs the `smoltcp` TCP/IP stack over the
//! first network device it is given: netfront on the first `device/vif`
//! in the store, else the first virtio-net device in start-info (driven by
//! `virtio-drivers`).
//!
//! Command line: `ip=<a.b.c.d>/<prefix>` (required), `mtu=<bytes>`
//! (netfront: default the `mtu` the toolstack wrote for the vif, else
//! 1500, and at most that; over virtio-net the device's `mtu`, at most
//! 1500, and `mtu=` is ignored), and
//! for the client mode `send=<a.b.c.d>:<port> bytes=<n>`: stream `n`
//! bytes of the pattern `byte[i] = i % 251` to that address, then close
//! (`n=<k>` instead of `bytes=`: k segments of 1448 bytes;
//! `exit_after_send`: power off then). `hotplug`: start without an
//! interface, wait for one to be attached at run time (`vmm ctl add-net`,
//! noticed through a watch on `device/vif`), serve over it until its back
//! end goes `Closing` (`vmm ctl remove-device vif/<n>`), close it, then
//! wait for `control/shutdown`. `control` (implied by `hotplug`, Xen
//! interface only): also act on `control/shutdown` (poweroff, reboot: stop
//! as `GET /shutdown` does; `suspend`: Xen's cooperative suspend, see
//! `Guest::suspend`). `test=ping` and `test=hostile` are
//! the benchmark's and the hostile test's raw-frame scenarios (netfront
//! only; see their functions).
//!
//! Services: ICMP echo (smoltcp's interface answers it, IPv4 fragments
//! reassembled, two datagrams of up to 8 KiB at a time, and replies
//! fragmented, one at a time: see [`Gate`]), a TCP echo
//! server on port 7 and an HTTP server on port 80 whose page shows the
//! counters (`GET /shutdown` powers the guest off with status 0). Each TCP
//! service keeps a pool of sockets ([`HTTP_POOL`], [`ECHO_POOL`]), of
//! which [`LISTENERS`] listen and the rest wait parked, so that many
//! clients are served at once (one more is refused) and a socket is back
//! in the pool as soon as its connection ends. Limits: a connection that is half open (SYN-RECEIVED
//! toward a peer that never answers) or whose peer vanished is reset after
//! [`TCP_TIMEOUT`] without a segment from it (keep-alive probes every
//! [`KEEP_ALIVE`]); an HTTP client has [`HTTP_IDLE_US`] to send its
//! request and an echo connection may idle [`ECHO_IDLE_US`]; requests are
//! read up to 512 bytes; nothing but `GET /` and `GET /shutdown` exists.
#![no_std]
#![no_main]

use core::fmt::Write as _;
use frontend_guest::hypercall::{self, Resumed};
use frontend_guest::netfront::{self, NetFront};
use frontend_guest::virtio::{self as vio, NetDevice};
use frontend_guest::xenbus::{ShutdownRequest, Store, XenbusState};
use frontend_guest::{clock, cmdline, evtchn, guest_main, println};
use pv_abi::start_info::StartInfo;
use smoltcp::iface::{Config, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet, SocketStorage};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

guest_main!(main);

const ECHO_PORT: u16 = 7;
const HTTP_PORT: u16 = 80;
const CLIENT_PORT: u16 = 49152;
const SOCKET_BUF: usize = 64 * 1024;
/// Buffers of an HTTP socket: a request and one page.
const HTTP_BUF: usize = 4096;
/// Sockets for HTTP clients: smoltcp has no accept queue, so a client
/// finds a socket only if one is listening; a socket whose connection is
/// closing (FIN-WAIT, up to a round trip after its answer) is not. Twice
/// the 16 clients served at once keeps some free through a burst.
const HTTP_POOL: usize = 32;
/// Sockets for echo clients (each with [`SOCKET_BUF`] buffers).
const ECHO_POOL: usize = 8;
/// Sockets of a pool kept listening in the stack's socket set; the rest
/// are parked outside it until a SYN takes a listener. smoltcp visits
/// every socket in the set on every poll (ingress lookup, egress, next
/// deadline) and so does the serving pass: with all 41 in the set a TCP
/// segment cost twice the guest instructions of a one-socket guest.
/// After every received packet the pools are topped up again, so a burst
/// of SYNs still finds a listener for each (the pool is the backlog).
const LISTENERS: usize = 2;
/// A connection is reset when its peer sent nothing for this long (a
/// half-open connection, or a peer that vanished).
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive probes on an idle connection, so a vanished peer is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(4);
/// An HTTP client must have sent its request within this time.
const HTTP_IDLE_US: u64 = 10_000_000;
/// An echo connection that moves no data for this long is closed.
const ECHO_IDLE_US: u64 = 60_000_000;
/// Egress calls per poll at most (each sends at most one segment per
/// socket; the transmit ring holds 256 slots).
const EGRESS_ROUNDS: usize = 64;
/// After deciding to power off, the last answers have this long to leave.
const DRAIN_US: u64 = 2_000_000;

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

fn tcp_socket<'a>(rx: usize, tx: usize) -> Option<tcp::Socket<'a>> {
    let rx = netfront::static_buf(rx).ok()?;
    let tx = netfront::static_buf(tx).ok()?;
    let mut s = tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx));
    // No delayed ACKs: every wake-up costs emulated instructions here, and
    // an ACK now saves the peer a timer.
    s.set_ack_delay(None);
    s.set_timeout(Some(TCP_TIMEOUT));
    s.set_keep_alive(Some(KEEP_ALIVE));
    Some(s)
}

/// `v` moved to memory of its own for the guest's life (the boot stack
/// is 128 KiB; the interface carries its fragment buffers inline).
fn place<T>(v: T) -> Option<&'static mut T> {
    let gpa = frontend_guest::pages::alloc(core::mem::size_of::<T>().div_ceil(4096).max(1) as u64)?;
    let p = gpa as *mut T;
    // SAFETY: fresh page-aligned pages from the bump allocator, large
    // enough for a `T` and never handed out again: nothing else uses them.
    unsafe { p.write(v) };
    // SAFETY: `p` now holds an initialised `T` that only this reference
    // will name, for the rest of the guest's life.
    Some(unsafe { &mut *p })
}

/// `n` values made by `init`, in memory of their own for the guest's
/// life (socket slots and parked sockets are about a kilobyte each: an
/// array of them would not fit the stack).
fn place_slice<T>(n: usize, init: impl Fn() -> T) -> Option<&'static mut [T]> {
    let bytes = core::mem::size_of::<T>() * n;
    let p = frontend_guest::pages::alloc(bytes.div_ceil(4096).max(1) as u64)? as *mut T;
    for i in 0..n {
        // SAFETY: slot `i` lies in the fresh pages just allocated for `n`
        // values (page aligned, so aligned for the type), used by nothing else.
        let slot = unsafe { p.add(i) };
        // SAFETY: as above.
        unsafe { slot.write(init()) };
    }
    // SAFETY: all `n` values were initialised above; only this slice names
    // them, for the rest of the guest's life.
    Some(unsafe { core::slice::from_raw_parts_mut(p, n) })
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

/// A network device the guest's stack runs over.
trait Nic: smoltcp::phy::Device {
    /// Publishes queued work to the device.
    fn flush(&mut self);
    /// Whether a received frame waits.
    fn rx_ready(&mut self) -> bool;
    /// Halts until the device has news or `deadline_us` passes.
    fn wait(&mut self, deadline_us: Option<u64>);
    /// The counters for the HTTP page (`name value` lines).
    fn write_counters(&self, w: &mut Text<'_>) -> core::fmt::Result;
    /// (received, sent, notifications) for the closing line.
    fn summary(&self) -> (u64, u64, u64);
    /// Closes the device after its back end went away (hot-unplug).
    fn close(&mut self, _store: &mut Store) -> bool {
        false
    }
    /// Connects again after the guest resumed as a new domain.
    fn reconnect(&mut self, _store: &mut Store) -> bool {
        false
    }
}

impl Nic for NetFront {
    fn flush(&mut self) {
        NetFront::flush(self)
    }
    fn rx_ready(&mut self) -> bool {
        NetFront::rx_ready(self)
    }
    fn wait(&mut self, deadline_us: Option<u64>) {
        NetFront::wait(self, deadline_us)
    }
    fn write_counters(&self, w: &mut Text<'_>) -> core::fmt::Result {
        let c = self.counters();
        write!(
            w,
            "rx_packets {}\nrx_bytes {}\ntx_packets {}\ntx_bytes {}\nrx_multi_slot {}\ntx_multi_slot {}\n\
             rx_csum_checked {}\nrx_errors {}\ntx_errors {}\ntx_dropped {}\nnotifies_to_backend {}\n",
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
            c.notifies
        )
    }
    fn summary(&self) -> (u64, u64, u64) {
        let c = self.counters();
        (c.rx_packets, c.tx_packets, c.notifies)
    }
    fn reconnect(&mut self, store: &mut Store) -> bool {
        match NetFront::reconnect(self, store) {
            Ok(()) => true,
            Err(e) => {
                println!("net: vif/{}: reconnect: {:?}", self.id, e);
                false
            }
        }
    }
    fn close(&mut self, store: &mut Store) -> bool {
        match NetFront::close(self, store) {
            Ok(()) => true,
            Err(e) => {
                println!("net: vif/{}: close: {:?}", self.id, e);
                false
            }
        }
    }
}

impl Nic for NetDevice {
    fn flush(&mut self) {}
    fn rx_ready(&mut self) -> bool {
        NetDevice::rx_ready(self)
    }
    fn wait(&mut self, deadline_us: Option<u64>) {
        NetDevice::wait(self, deadline_us)
    }
    fn write_counters(&self, w: &mut Text<'_>) -> core::fmt::Result {
        let c = self.counters();
        write!(
            w,
            "transport virtio\nrx_packets {}\nrx_bytes {}\ntx_packets {}\ntx_bytes {}\nrx_errors {}\ntx_errors {}\n\
             interrupts {}\n",
            c.rx_packets,
            c.rx_bytes,
            c.tx_packets,
            c.tx_bytes,
            c.rx_errors,
            c.tx_errors,
            vio::interrupts()
        )
    }
    fn summary(&self) -> (u64, u64, u64) {
        let c = self.counters();
        // The driver's blocking send notifies the device once per frame.
        (c.rx_packets, c.tx_packets, c.tx_packets)
    }
}

/// A [`Nic`] that holds back received frames while an IPv4 datagram's
/// fragments are going out. smoltcp fragments one outgoing datagram at a
/// time, one fragment per poll, and a second reply made meanwhile (two
/// `ping -s 8000` at once) would overwrite the first one's fragments; the
/// frames held back wait on the device's ring until the last fragment of
/// the first has left.
struct Gate<D> {
    dev: D,
    /// A fragment with more-fragments set went out last.
    fragmenting: bool,
}

/// A transmit token that notes whether its frame leaves a datagram's
/// fragments unfinished.
struct GateTx<'a, T> {
    tx: T,
    fragmenting: &'a mut bool,
}

/// For an IPv4 fragment in an Ethernet frame: whether more fragments follow.
fn more_fragments(frame: &[u8]) -> Option<bool> {
    let (Some(&[0x08, 0x00]), Some(&[hi, lo])) = (frame.get(12..14), frame.get(20..22)) else { return None };
    let flags = u16::from_be_bytes([hi, lo]);
    let more = flags & 0x2000 != 0;
    (more || flags & 0x1fff != 0).then_some(more)
}

impl<T: smoltcp::phy::TxToken> smoltcp::phy::TxToken for GateTx<'_, T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let fragmenting = self.fragmenting;
        self.tx.consume(len, |buf| {
            let r = f(buf);
            if let Some(more) = more_fragments(buf) {
                *fragmenting = more;
            }
            r
        })
    }
}

impl<D: smoltcp::phy::Device> smoltcp::phy::Device for Gate<D> {
    type RxToken<'a>
        = D::RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = GateTx<'a, D::TxToken<'a>>
    where
        Self: 'a;

    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if self.fragmenting {
            return None;
        }
        let (rx, tx) = self.dev.receive(now)?;
        Some((rx, GateTx { tx, fragmenting: &mut self.fragmenting }))
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        let tx = self.dev.transmit(now)?;
        Some(GateTx { tx, fragmenting: &mut self.fragmenting })
    }

    fn capabilities(&self) -> smoltcp::phy::DeviceCapabilities {
        self.dev.capabilities()
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

/// One pooled server socket and its connection's state.
struct Conn {
    /// The socket's handle while it is in the stack's set (else it is
    /// parked in `parked`).
    handle: Option<SocketHandle>,
    /// The socket while it is out of the set (in memory of its own: a
    /// socket is about a kilobyte and the connections live on the stack).
    parked: &'static mut Option<tcp::Socket<'static>>,
    /// When the current connection was first seen (0: listening).
    since_us: u64,
    /// Last time it moved data.
    active_us: u64,
    /// The HTTP request so far (in memory of its own: the connections
    /// live on the 128 KiB stack).
    req: &'static mut [u8],
    len: usize,
}

/// A service's sockets: [`LISTENERS`] of them listening in the set, the
/// ones with a connection in the set, the rest parked.
struct Pool<const N: usize> {
    port: u16,
    conns: [Conn; N],
    /// The conns put in the set to listen (until a SYN takes them).
    listening: [Option<usize>; LISTENERS],
    /// Bit `i`: conn `i`'s socket is in the set.
    in_set: u64,
}

const _: () = assert!(HTTP_POOL <= 64 && ECHO_POOL <= 64, "a pool's conns are bits of a u64");

impl<const N: usize> Pool<N> {
    /// Keeps [`LISTENERS`] sockets listening while parked ones remain.
    fn top_up(&mut self, sockets: &mut SocketSet<'static>) {
        for l in 0..LISTENERS {
            let i = self.listening[l];
            let listens = i
                .and_then(|i| self.conns[i].handle)
                .is_some_and(|h| sockets.get::<tcp::Socket>(h).state() == tcp::State::Listen);
            if !listens || self.listening[..l].contains(&i) {
                self.listening[l] = self.unpark(sockets);
            }
        }
    }

    /// Puts a parked socket into the set, listening; its index.
    fn unpark(&mut self, sockets: &mut SocketSet<'static>) -> Option<usize> {
        let i = self.conns.iter().position(|c| c.parked.is_some())?;
        let c = &mut self.conns[i];
        let mut s = c.parked.take()?;
        let _ = s.listen(self.port);
        c.handle = Some(sockets.add(s));
        (c.since_us, c.len) = (0, 0);
        self.in_set |= 1 << i;
        Some(i)
    }

    /// Takes conn `i`'s socket out of the set (its connection is over).
    /// A server socket does not sit out TIME-WAIT: it is closed at once,
    /// ready for the next client.
    fn park(&mut self, i: usize, sockets: &mut SocketSet<'static>) {
        let c = &mut self.conns[i];
        let Some(h) = c.handle.take() else { return };
        self.in_set &= !(1 << i);
        let smoltcp::socket::Socket::Tcp(mut s) = sockets.remove(h);
        s.abort();
        *c.parked = Some(s);
    }
}

struct Guest<'a, D: Nic> {
    dev: Gate<D>,
    iface: &'a mut Interface,
    sockets: SocketSet<'static>,
    echo: Pool<ECHO_POOL>,
    http: Pool<HTTP_POOL>,
    client: Option<Client>,
    echoed: u64,
    served: u64,
    shutdown: bool,
    /// Power off once the client's stream is done (`exit_after_send`).
    exit_after_send: bool,
    /// `hotplug` or `control`: the toolstack's requests, looked at
    /// every [`CONTROL_POLL_US`].
    control: Option<Control>,
}

/// The toolstack's side of a `hotplug` or `control` guest: its
/// `control/shutdown` requests (poweroff, reboot, Xen's cooperative
/// suspend) and, for a hot-plugged interface, its back end's state (a
/// detach is `Closing`, or the directory gone).
struct Control {
    store: Store,
    id: u32,
    /// `hotplug`: the back end's `state` node.
    be_state: Option<frontend_guest::xenbus::NodePath<160>>,
    next_us: u64,
    detached: bool,
}

/// How often the toolstack's nodes are looked at (a timer wake-up each:
/// only guests started with `hotplug` or `control` pay for it).
const CONTROL_POLL_US: u64 = 100_000;

/// What [`Control::check`] found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Asked {
    Nothing,
    Detached,
    Poweroff,
    Suspend,
}

impl Control {
    /// What the toolstack asks (looked at most every [`CONTROL_POLL_US`]),
    /// and the next time to look.
    fn check(&mut self, now_us: u64) -> (Asked, u64) {
        if self.detached {
            return (Asked::Detached, self.next_us);
        }
        if now_us < self.next_us {
            return (Asked::Nothing, self.next_us);
        }
        self.next_us = now_us + CONTROL_POLL_US;
        if let Some(be_state) = &self.be_state {
            let s = frontend_guest::xenbus::read_state(&mut self.store, be_state.as_str());
            if let Some(s) = s.ok().filter(|s| *s == XenbusState::Unknown || *s >= XenbusState::Closing) {
                println!("net: vif/{}: back end {:?}: closing the interface", self.id, s);
                self.detached = true;
                return (Asked::Detached, self.next_us);
            }
        }
        let asked = match frontend_guest::xenbus::shutdown_requested(&mut self.store) {
            Ok(Some(ShutdownRequest::Suspend)) => Asked::Suspend,
            Ok(Some(r)) => {
                println!("net: control/shutdown: {:?} requested: stopping", r);
                Asked::Poweroff
            }
            _ => Asked::Nothing,
        };
        (asked, self.next_us)
    }
}

/// The toolstack's side of vif `id` ([`Control`]), with its watch on
/// `control/shutdown` and, for a hot-plugged one, its back end's `state`.
fn control(mut store: Store, id: u32, hotplug: bool) -> Result<Control, i32> {
    let be_state = match hotplug.then(|| netfront::backend_state_path(&mut store, id)) {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            println!("net: vif/{}: no back-end state: {:?}", id, e);
            return Err(73);
        }
        None => None,
    };
    if let Err(e) = frontend_guest::xenbus::watch_shutdown(&mut store) {
        println!("net: watch control/shutdown: {:?}", e);
        return Err(70);
    }
    Ok(Control { store, id, be_state, next_us: 0, detached: false })
}

/// The device the guest runs over.
#[allow(clippy::large_enum_variant)] // made once, taken apart at once
enum Link {
    Xen(u32, NetFront),
    Virtio(u64, NetDevice),
}

/// netfront on the first vif the store lists, else the first virtio-net
/// device in start-info; an exit status if there is neither.
fn open_link(si: &'static StartInfo, store: &mut Store, hotplug: bool) -> Result<Link, i32> {
    if hotplug {
        println!("net: waiting for an interface (device/vif)");
        let id = netfront::wait_for_vif(store).map_err(|e| {
            println!("net: watch on device/vif: {:?}", e);
            71
        })?;
        return match netfront::connect(store, id) {
            Ok(d) => Ok(Link::Xen(id, d)),
            Err(e) => {
                println!("net: vif/{}: connect failed: {:?}", id, e);
                Err(73)
            }
        };
    }
    let mut first = None;
    if let Err(e) = netfront::list(store, |id| {
        first.get_or_insert(id);
    }) {
        println!("net: cannot list interfaces: {:?}", e);
        return Err(71);
    }
    if let Some(id) = first {
        return match netfront::connect(store, id) {
            Ok(d) => Ok(Link::Xen(id, d)),
            Err(e) => {
                println!("net: vif/{}: connect failed: {:?}", id, e);
                Err(73)
            }
        };
    }
    let Some(v) = si.virtio_devices().iter().find(|d| d.device_id == pv_abi::virtio::device_id::NET) else {
        println!("net: no interface (no device/vif, no virtio-net device): pass --net tap=<ifname>");
        return Err(72);
    };
    match vio::open_net(v).and_then(|(net, mtu)| Ok((NetDevice::new(net)?, mtu))) {
        Ok((mut d, mtu)) => {
            d.set_device_mtu(mtu);
            Ok(Link::Virtio(v.base, d))
        }
        Err(e) => {
            println!("net: virtio-net at {:#x}: {:?}", v.base, e);
            Err(73)
        }
    }
}

fn main(si: &'static StartInfo) -> i32 {
    let cmd = si.cmdline_bytes();
    if cmdline::get(cmd, "test") == Some(b"hostile") {
        return hostile(si, cmd);
    }
    if cmdline::get(cmd, "test") == Some(b"ping") {
        return ping(si, cmd);
    }
    let Some(cidr) = cmdline::get(cmd, "ip").and_then(parse_cidr) else {
        println!("net: give the guest an address: --cmdline \"ip=<a.b.c.d>/<prefix>\"");
        return 64;
    };
    let timer = clock::init();
    let want_mtu = cmdline::get_u64(cmd, "mtu").map(|m| m as usize);
    let mut store = match frontend_guest::xenbus::open_store(si) {
        Ok(s) => s,
        Err(e) => {
            println!("net: store: {:?}", e);
            return 70;
        }
    };
    let hotplug = cmdline::words(cmd).any(|(k, _)| k == b"hotplug");
    match open_link(si, &mut store, hotplug) {
        Err(code) => code,
        Ok(Link::Xen(id, mut dev)) => {
            // The toolstack's `mtu` key is the default and the ceiling
            // (netif.h "MTU"); `mtu=` may ask for less.
            let mtu = dev.set_mtu(match (want_mtu, dev.store_mtu) {
                (Some(w), Some(s)) => w.min(s),
                (w, s) => w.or(s).unwrap_or(1500),
            });
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
                cidr.0,
                cidr.1,
                mtu,
                dev.sg,
                timer,
                clock::tsc_per_us()
            );
            let want = hotplug || cmdline::words(cmd).any(|(k, _)| k == b"control");
            match want.then(|| control(store, id, hotplug)).transpose() {
                Ok(control) => serve(dev, m, cidr, cmd, control),
                Err(code) => code,
            }
        }
        Ok(Link::Virtio(base, dev)) => {
            let m = dev.mac();
            println!(
                "net: virtio-net at {:#x} mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} ip {}/{} mtu {} timer {}",
                base,
                m[0],
                m[1],
                m[2],
                m[3],
                m[4],
                m[5],
                cidr.0,
                cidr.1,
                dev.mtu(),
                timer
            );
            serve(dev, m, cidr, cmd, None)
        }
    }
}

/// smoltcp's interface over `dev`, in memory of its own. Not inlined: the
/// interface (its fragment buffers inline, about 24 KiB) is built on this
/// function's stack frame, which is gone again before the serving loop runs.
#[inline(never)]
fn interface<D: Nic>(dev: &mut D, mac: [u8; 6]) -> Option<&'static mut Interface> {
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    config.random_seed = frontend_guest::arch::rdtsc();
    place(Interface::new(config, dev, now()))
}

/// Runs the services (and the client, if asked) over `dev` until told to
/// power off.
fn serve<D: Nic>(
    mut dev: D,
    mac: [u8; 6],
    (ip, prefix): (Ipv4Address, u8),
    cmd: &[u8],
    control: Option<Control>,
) -> i32 {
    let Some(iface) = interface(&mut dev, mac) else { return 2 };
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(IpAddress::Ipv4(ip), prefix));
    });
    let Some(storage) = place_slice(ECHO_POOL + HTTP_POOL + 1, || SocketStorage::EMPTY) else { return 2 };
    let mut sockets = SocketSet::new(&mut storage[..]);
    let echo = pool::<ECHO_POOL>(&mut sockets, ECHO_PORT, SOCKET_BUF, 0);
    let http = pool::<HTTP_POOL>(&mut sockets, HTTP_PORT, HTTP_BUF, 512);
    let (Some(echo), Some(http)) = (echo, http) else {
        println!("net: out of memory");
        return 2;
    };
    let mut g = Guest {
        dev: Gate { dev, fragmenting: false },
        iface,
        sockets,
        echo,
        http,
        client: None,
        echoed: 0,
        served: 0,
        shutdown: false,
        exit_after_send: cmdline::words(cmd).any(|(k, _)| k == b"exit_after_send"),
        control,
    };
    if let Some((host, port)) = cmdline::get(cmd, "send").and_then(parse_endpoint) {
        if let Err(code) = g.start_client(host, port, cmd) {
            return code;
        }
    }
    println!(
        "net: ready: echo on {} ({} sockets), http on {} ({} sockets)",
        ECHO_PORT, ECHO_POOL, HTTP_PORT, HTTP_POOL
    );
    g.run();
    let (rx, tx, notifies) = g.dev.dev.summary();
    println!(
        "net: shutdown: rx {} tx {} echoed {} http {} notifies {} upcalls {}",
        rx,
        tx,
        g.echoed,
        g.served,
        notifies,
        evtchn::upcalls()
    );
    match g.control {
        Some(mut c) if c.detached => detached(&mut g.dev.dev, &mut c),
        _ => 0,
    }
}

/// After a hot-unplug: closes the interface, then waits for the
/// toolstack's `control/shutdown` (the VMM outlives the detach).
fn detached<D: Nic>(dev: &mut D, d: &mut Control) -> i32 {
    if !dev.close(&mut d.store) {
        return 1;
    }
    println!("net: vif/{}: closed; waiting for control/shutdown", d.id);
    match frontend_guest::xenbus::wait_shutdown_request(&mut d.store) {
        Ok(r) => {
            println!("net: control/shutdown: {:?}", r);
            0
        }
        Err(e) => {
            println!("net: control/shutdown: {:?}", e);
            1
        }
    }
}

/// A pool of `N` sockets for `port`, each with `buf` bytes per direction
/// and `req` bytes for the request; [`LISTENERS`] of them listening.
fn pool<const N: usize>(sockets: &mut SocketSet<'static>, port: u16, buf: usize, req: usize) -> Option<Pool<N>> {
    let mut parking = place_slice(N, || None)?.iter_mut();
    let mut conns = [const { None }; N];
    for c in conns.iter_mut() {
        let parked = parking.next()?;
        *parked = Some(tcp_socket(buf, buf)?);
        let req = netfront::static_buf(req).ok()?;
        *c = Some(Conn { handle: None, parked, since_us: 0, active_us: 0, req, len: 0 });
    }
    let conns = conns.map(|c| c.unwrap_or_else(|| unreachable!()));
    let mut p = Pool { port, conns, listening: [None; LISTENERS], in_set: 0 };
    p.top_up(sockets);
    Some(p)
}

/// Whether the connection is over (its socket can go back to the pool).
fn over(s: &tcp::Socket) -> bool {
    matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait)
}

/// Resets the connection of `c` once it has been idle longer than
/// `idle_us` (the peer is alive, so TCP's own timeout does not end it).
fn expire(c: &mut Conn, s: &mut tcp::Socket, idle_us: u64, now_us: u64) -> bool {
    if s.state() == tcp::State::Listen {
        c.since_us = 0;
        return false;
    }
    if c.since_us == 0 {
        (c.since_us, c.active_us) = (now_us, now_us);
    }
    if now_us.saturating_sub(c.active_us) > idle_us {
        s.abort();
        return true;
    }
    false
}

impl<D: Nic> Guest<'_, D> {
    fn start_client(&mut self, host: Ipv4Address, port: u16, cmd: &[u8]) -> Result<(), i32> {
        // `n=<packets>` (the benchmark's count) streams that many full
        // 1448-byte segments.
        let total =
            cmdline::get_u64(cmd, "bytes").or_else(|| cmdline::get_u64(cmd, "n").map(|n| n * 1448)).unwrap_or(1 << 20);
        let Some(mut s) = tcp_socket(SOCKET_BUF, SOCKET_BUF) else { return Err(2) };
        if let Err(e) = s.connect(self.iface.context(), (IpAddress::Ipv4(host), port), CLIENT_PORT) {
            println!("net: client connect: {:?}", e);
            return Err(74);
        }
        let Ok(pattern) = netfront::static_buf(PERIOD + CHUNK) else { return Err(2) };
        for (i, b) in pattern.iter_mut().enumerate() {
            *b = (i % PERIOD) as u8;
        }
        self.client = Some(Client { pattern, handle: self.sockets.add(s), total, sent: 0, done: false });
        println!("net: client: streaming {} bytes to {}:{}", total, host, port);
        Ok(())
    }

    /// Polls the stack and serves until nothing moves, then sleeps until
    /// the device has news or smoltcp's next timer; once told to power
    /// off, keeps going only until the last answers have left (or
    /// [`DRAIN_US`] passed).
    fn run(&mut self) {
        let mut power_off_at = None;
        loop {
            loop {
                // A state change `poll` made was already served by this
                // pass; only what serving queued needs another poll (work
                // smoltcp still has, e.g. the next fragment, shows as a
                // deadline of now below). Each pass costs guest
                // instructions.
                self.poll();
                let served = self.serve_all();
                self.dev.dev.flush();
                if !served && !self.dev.dev.rx_ready() {
                    break;
                }
            }
            if self.exit_after_send && self.client.as_ref().is_some_and(|c| c.done) {
                self.shutdown = true;
            }
            let now_us = clock::now_us();
            // A hot-plugged interface being detached: stop serving at once
            // (the back end no longer moves frames).
            let control_at = match self.control.as_mut().map(|c| c.check(now_us)) {
                Some((Asked::Detached, _)) => return,
                Some((Asked::Poweroff, next)) => {
                    self.shutdown = true;
                    Some(next)
                }
                Some((Asked::Suspend, _)) => {
                    self.suspend();
                    continue;
                }
                Some((Asked::Nothing, next)) => Some(next),
                None => None,
            };
            if self.shutdown {
                let end = *power_off_at.get_or_insert(now_us + DRAIN_US);
                if now_us >= end || self.drained() {
                    return;
                }
            }
            let timer = self.iface.poll_delay(now(), &self.sockets).map(|d| now_us + d.total_micros());
            let wake = [timer, power_off_at, control_at].into_iter().flatten().min();
            if wake.is_some_and(|w| w <= clock::now_us()) {
                continue;
            }
            self.dev.dev.wait(wake);
        }
    }

    /// Xen's cooperative suspend (`control/shutdown = suspend`): what is
    /// queued goes out, then `SHUTDOWN_suspend`; a cancelled suspend goes
    /// on as it was, a new domain reconnects the interface (frames in
    /// flight on the old rings are lost: TCP sends them again). smoltcp's
    /// sockets are untouched either way.
    fn suspend(&mut self) {
        self.dev.dev.flush();
        println!("net: suspending");
        let how = match hypercall::suspend() {
            Ok(how) => how,
            Err(e) => {
                println!("net: SHUTDOWN_suspend failed: {:?}", e);
                return;
            }
        };
        let Some(c) = self.control.as_mut() else { return };
        if how == Resumed::NewDomain {
            if self.dev.dev.reconnect(&mut c.store) {
                println!("net: resumed as a new domain: vif/{} reconnected", c.id);
            } else {
                println!("net: resumed as a new domain: vif/{} did not reconnect: stopping", c.id);
                self.shutdown = true;
            }
        } else {
            println!("net: resumed (suspend cancelled)");
        }
    }

    /// smoltcp's `poll`, one received packet at a time: after each, the
    /// pools are topped up, as a SYN may have taken a listener and smoltcp
    /// answers the next SYN with a reset if none is left. Egress is
    /// repeated while it sends (smoltcp sends at most one segment per
    /// socket per call), up to [`EGRESS_ROUNDS`]: a round here is cheaper
    /// than a pass of the serving loop per segment.
    fn poll(&mut self) {
        let t = now();
        while self.iface.poll_ingress_single(t, &mut self.dev, &mut self.sockets) != PollIngressSingleResult::None {
            self.echo.top_up(&mut self.sockets);
            self.http.top_up(&mut self.sockets);
        }
        for _ in 0..EGRESS_ROUNDS {
            if self.iface.poll_egress(t, &mut self.dev, &mut self.sockets) != PollResult::SocketStateChanged {
                break;
            }
        }
    }

    /// Whether every answer has been sent and acknowledged.
    fn drained(&mut self) -> bool {
        self.sockets.iter().all(|(_, s)| match s {
            smoltcp::socket::Socket::Tcp(t) => t.send_queue() == 0,
            #[allow(unreachable_patterns)]
            _ => true,
        })
    }

    /// One pass over every service; whether anything moved.
    fn serve_all(&mut self) -> bool {
        let now_us = clock::now_us();
        let mut moved = false;
        // Only the conns in the set (a bit each): visiting every one on
        // every pass cost guest instructions per segment.
        let mut m = self.echo.in_set;
        while m != 0 {
            moved |= self.serve_echo(m.trailing_zeros() as usize, now_us);
            m &= m - 1;
        }
        let mut m = self.http.in_set;
        while m != 0 {
            moved |= self.serve_http(m.trailing_zeros() as usize, now_us);
            m &= m - 1;
        }
        // A socket parked above may be one a flood had left the pool without.
        self.echo.top_up(&mut self.sockets);
        self.http.top_up(&mut self.sockets);
        moved | self.drive_client()
    }

    fn serve_echo(&mut self, i: usize, now_us: u64) -> bool {
        let Some(h) = self.echo.conns[i].handle else { return false };
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        if over(s) {
            self.echo.park(i, &mut self.sockets);
            return true;
        }
        let c = &mut self.echo.conns[i];
        if expire(c, s, ECHO_IDLE_US, now_us) {
            return true;
        }
        let mut moved = false;
        if s.can_recv() {
            // Only here: zeroing the buffer costs guest instructions.
            let mut tmp = [0u8; 4096];
            while s.can_recv() && s.send_capacity() > s.send_queue() {
                let room = (s.send_capacity() - s.send_queue()).min(tmp.len());
                let n = s.recv_slice(&mut tmp[..room]).unwrap_or(0);
                if n == 0 {
                    break;
                }
                let _ = s.send_slice(&tmp[..n]);
                self.echoed += n as u64;
                moved = true;
            }
        }
        if moved || s.send_queue() > 0 {
            c.active_us = now_us;
        }
        if !s.may_recv() && s.recv_queue() == 0 && s.send_queue() == 0 && s.state() == tcp::State::CloseWait {
            s.close();
            moved = true;
        }
        moved
    }

    fn serve_http(&mut self, i: usize, now_us: u64) -> bool {
        let Some(h) = self.http.conns[i].handle else { return false };
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        if over(s) {
            self.http.park(i, &mut self.sockets);
            return true;
        }
        let c = &mut self.http.conns[i];
        if c.len < c.req.len() {
            // A request still being read: the client has its idle time.
            if expire(c, s, HTTP_IDLE_US, now_us) {
                c.len = 0;
                return true;
            }
        }
        let mut moved = false;
        if s.can_recv() && c.len < c.req.len() {
            let n = s.recv_slice(&mut c.req[c.len..]).unwrap_or(0);
            c.len += n;
            moved = n > 0;
        }
        let req = &c.req[..c.len];
        let complete = req.windows(4).any(|w| w == b"\r\n\r\n") || c.len == c.req.len();
        if !complete || !s.may_send() {
            return moved;
        }
        let shutdown = req.starts_with(b"GET /shutdown");
        let mut body = [0u8; 1024];
        let mut b = Text { buf: &mut body, len: 0 };
        let _ = writeln!(b, "<html><body><h1>PV guest net</h1><pre>");
        let _ = self.dev.dev.write_counters(&mut b);
        let _ = write!(
            b,
            "upcalls {}\necho_bytes {}\nhttp_served {}\nuptime_us {}\n</pre></body></html>\n",
            evtchn::upcalls(),
            self.echoed,
            self.served,
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
        // Nothing more is read on this connection (`len` = the buffer,
        // which also stops the idle check; the socket no longer sends).
        c.len = c.req.len();
        self.served += 1;
        if shutdown {
            self.shutdown = true;
        }
        true
    }

    fn drive_client(&mut self) -> bool {
        let Some(c) = &mut self.client else { return false };
        if c.done {
            return false;
        }
        let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
        let mut moved = false;
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
            moved = n > 0;
        }
        if c.sent == c.total && s.may_send() {
            s.close();
            moved = true;
        }
        if c.sent == c.total && !s.is_active() {
            c.done = true;
            println!("net: client: sent {} bytes", c.sent);
        } else if !s.is_open() && c.sent < c.total {
            c.done = true;
            println!("net: client: connection failed after {} bytes", c.sent);
        }
        moved
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
    if let Some(q) = cmdline::get_u64(cmd, "queues") {
        return ping_queues(&mut store, ip, peer, n, q);
    }
    let Ok(mut dev) = netfront::connect(&mut store, 0) else { return 73 };
    let Some(peer_mac) = arp_exchange(&mut dev, ip, peer) else {
        println!("ping: no ARP reply from {}", peer);
        return 1;
    };
    let mut ok = 0;
    for seq in 0..n {
        let f = icmp_echo(&dev.mac, &peer_mac, ip, peer, ICMP_ID, seq as u16);
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

/// The ICMP echo identifier of `test=ping`.
const ICMP_ID: u16 = 0x7076;

/// `test=ping queues=N`: the interface connected with N queues
/// (`multi-queue-num-queues`); ping `i` goes out on queue `i % N` with
/// identifier `ICMP_ID + i` (a flow of its own, so the back end's flow
/// hash spreads the replies over the queues); replies are taken from
/// whichever queue they arrive on. Prints the frames sent and received per
/// queue.
fn ping_queues(store: &mut frontend_guest::xenbus::Store, ip: Ipv4Address, peer: Ipv4Address, n: u64, q: u64) -> i32 {
    let mut qs = [const { None }; netfront::MAX_QUEUES];
    let want = q.clamp(1, netfront::MAX_QUEUES as u64) as usize;
    let nq = match netfront::connect_queues(store, 0, &mut qs[..want]) {
        Ok(n) => n,
        Err(e) => {
            println!("ping: connect with {} queues: {:?}", want, e);
            return 73;
        }
    };
    let Some(first) = qs[0].as_mut() else { return 73 };
    let Some(peer_mac) = arp_exchange(first, ip, peer) else {
        println!("ping: no ARP reply from {}", peer);
        return 1;
    };
    let (mut tx, mut rx) = ([0u64; netfront::MAX_QUEUES], [0u64; netfront::MAX_QUEUES]);
    let mut ok = 0;
    for seq in 0..n {
        let id = ICMP_ID.wrapping_add(seq as u16);
        let q = seq as usize % nq;
        let Some(dev) = qs[q].as_mut() else { return 73 };
        if !dev.send_frame(&icmp_echo(&dev.mac, &peer_mac, ip, peer, id, seq as u16)) {
            continue;
        }
        tx[q] += 1;
        let end = clock::now_us() + 2_000_000;
        let mut got = false;
        while !got && clock::now_us() < end {
            for (rq, dev) in qs[..nq].iter_mut().enumerate() {
                let Some(dev) = dev.as_mut() else { continue };
                while dev.recv_frame(|r| {
                    let reply = r.len() >= 42 && r[23] == 1 && r[34] == 0;
                    if reply && r[38..40] == id.to_be_bytes() && r[40..42] == (seq as u16).to_be_bytes() {
                        got = true;
                        rx[rq] += 1;
                    }
                }) {}
                dev.flush();
            }
            if !got {
                // Sleep briefly on the queue that sent (the reply may come
                // on another; the short deadline brings us back to look).
                let wake = (clock::now_us() + 2_000).min(end);
                dev_wait(&mut qs[q], wake);
            }
        }
        ok += got as u64;
    }
    let list = |v: &[u64]| {
        let mut s = [0u8; 64];
        let mut len = 0;
        for (i, x) in v.iter().enumerate() {
            let mut d = [0u8; 10];
            let d = frontend_guest::store::fmt_u32(*x as u32, &mut d);
            if i > 0 {
                s[len] = b',';
                len += 1;
            }
            s[len..len + d.len()].copy_from_slice(d);
            len += d.len();
        }
        (s, len)
    };
    let ((t, tl), (r, rl)) = (list(&tx[..nq]), list(&rx[..nq]));
    println!(
        "ping: n={} replies={} queues={} tx={} rx={}",
        n,
        ok,
        nq,
        core::str::from_utf8(&t[..tl]).unwrap_or("?"),
        core::str::from_utf8(&r[..rl]).unwrap_or("?")
    );
    (ok != n) as i32
}

fn dev_wait(dev: &mut Option<NetFront>, deadline_us: u64) {
    if let Some(d) = dev.as_mut() {
        d.wait(Some(deadline_us));
    }
}

/// An Ethernet + IPv4 + ICMP echo request (8 bytes of data).
fn icmp_echo(src: &[u8; 6], dst: &[u8; 6], ip: Ipv4Address, peer: Ipv4Address, id: u16, seq: u16) -> [u8; 50] {
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
    f[38..40].copy_from_slice(&id.to_be_bytes());
    f[40..42].copy_from_slice(&seq.to_be_bytes());
    f[42..50].copy_from_slice(b"pv-ping!");
    let c = !netfront::csum_fold(netfront::csum_add(0, &f[34..50]));
    f[36..38].copy_from_slice(&c.to_be_bytes());
    f
}
