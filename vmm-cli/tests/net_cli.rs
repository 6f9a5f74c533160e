//! Net devices end to end: `vmm run --image net --net tap=...` inside a
//! network namespace this test makes and removes itself (no route out of
//! it), driven by host tools (`ping`, `curl`) and host sockets; and the
//! one-line errors for bad `--net` input.
//!
//! Needs root (namespaces, TAP devices), `ip`, `ping` and `curl`
//! (`setup.sh` installs them).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "common/netns.rs"]
mod netns;
use netns::{is_root, Netns};

const HOST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const STREAM_PORT: u16 = 5001;
const STREAM_BYTES: usize = 8 << 20;
const ECHO_BYTES: usize = 1 << 20;

/// Kills the VMM if the test fails half-way.
struct Vmm(Child);

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Vmm {
    /// Waits for the VMM to exit on its own; its output.
    fn wait_with_output(mut self) -> Output {
        let child = std::mem::replace(&mut self.0, Command::new("true").spawn().unwrap());
        child.wait_with_output().unwrap()
    }
}

fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

fn connect_retry(addr: SocketAddr, within: Duration) -> TcpStream {
    let start = Instant::now();
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => return s,
            Err(e) if start.elapsed() < within => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("cannot reach the guest at {addr}: {e}"),
        }
    }
}

/// The guest's counter `name` on its HTTP page.
fn counter(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} on the page: {page}"))
}

#[test]
fn guest_answers_ping_echo_http_and_streams_to_the_host() {
    assert!(is_root(), "this test needs root (network namespace and TAP device)");
    let ns = Netns::new("e2e");
    let tap = "pvtap0";
    // Jumbo frames: the guest's 8 MiB stream then goes out in 3-page
    // multi-slot packets (feature-sg), and echo replies come back in
    // multi-buffer frames. The guest is not told the MTU on its command
    // line: it takes it from the `mtu` key netback writes from the TAP's
    // (netif.h "MTU", libxl_nic.c).
    ns.tap(tap, Some(&format!("{HOST}/24")), Some(9000));
    // The host listener for the guest's stream, before the guest starts.
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = ns.run(move || {
        let l = TcpListener::bind((HOST, STREAM_PORT)).expect("bind the stream listener");
        tx.send(()).unwrap();
        let (mut c, _) = l.accept().expect("the guest's client connects");
        c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut got = Vec::with_capacity(STREAM_BYTES);
        c.read_to_end(&mut got).expect("read the stream");
        got
    });
    rx.recv().unwrap();
    let cmdline = format!("ip={GUEST}/24 send={HOST}:{STREAM_PORT} bytes={STREAM_BYTES}");
    let started = Instant::now();
    let vmm = spawn_net_guest(&ns, &format!("tap={tap},mac=02:00:00:77:00:02"), &cmdline);

    // HTTP: the guest is up once it answers.
    let page = ns
        .run(|| {
            let mut s = connect_retry(SocketAddr::from((GUEST, 80)), Duration::from_secs(60));
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            let mut page = String::new();
            s.read_to_string(&mut page).unwrap();
            page
        })
        .join()
        .unwrap();
    assert!(page.starts_with("HTTP/1.0 200 OK"), "{page}");
    assert!(page.contains("rx_packets"), "{page}");
    let booted = started.elapsed();

    // ping -c 5: five replies.
    let t = Instant::now();
    let out = ns.exec(&["ping", "-c", "5", "-i", "0.2", "-W", "5", &GUEST.to_string()]).output().expect("run ping");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("5 packets transmitted, 5 received"), "{text}");
    let ping_time = t.elapsed();

    // TCP echo: 1 MiB out, the same 1 MiB back.
    let t = Instant::now();
    let echoed = ns
        .run(|| {
            let s = connect_retry(SocketAddr::from((GUEST, 7)), Duration::from_secs(10));
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let data: Vec<u8> = (0..ECHO_BYTES).map(|i| (i.wrapping_mul(7) ^ (i >> 9)) as u8).collect();
            let mut w = s.try_clone().unwrap();
            let d = data.clone();
            let writer = std::thread::spawn(move || w.write_all(&d));
            let mut back = vec![0u8; ECHO_BYTES];
            let mut r = s;
            r.read_exact(&mut back).expect("read the echo");
            writer.join().unwrap().expect("write the data");
            (data, back)
        })
        .join()
        .unwrap();
    assert!(echoed.0 == echoed.1, "echoed bytes differ");
    let echo_time = t.elapsed();

    // The guest's stream: every byte checked.
    let t = Instant::now();
    let got = sink.join().unwrap();
    assert_eq!(got.len(), STREAM_BYTES);
    if let Some(i) = (0..got.len()).find(|&i| got[i] != pattern(i)) {
        panic!("stream byte {i} is {} not {}", got[i], pattern(i));
    }
    let stream_wait = t.elapsed();

    // curl gets the page; the counters show multi-slot traffic both ways.
    let out = ns.exec(&["curl", "-s", "-m", "30", &format!("http://{GUEST}/")]).output().expect("run curl");
    let page = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(page.contains("<h1>PV guest net</h1>"), "curl: {page}");
    assert!(counter(&page, "tx_multi_slot") > 0, "no multi-slot transmit: {page}");
    assert!(counter(&page, "rx_multi_slot") > 0, "no multi-slot receive: {page}");
    assert_eq!(counter(&page, "tx_errors"), 0, "{page}");

    let _ = ns.exec(&["curl", "-s", "-m", "30", &format!("http://{GUEST}/shutdown")]).output();
    let out = vmm.wait_with_output();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("client: sent {STREAM_BYTES} bytes")), "{stdout}");
    assert!(stdout.contains(" mtu 9000 "), "the guest took the TAP's MTU from the store: {stdout}");
    assert!(stderr.contains("backend/vif/") && stderr.contains("tx_multi_slot="), "{stderr}");
    eprintln!(
        "timings: boot+first page {booted:?}, ping {ping_time:?}, 1 MiB echo {echo_time:?}, rest of the 8 MiB stream {stream_wait:?}, total {:?}",
        started.elapsed()
    );
    eprintln!("{stderr}");
}

#[test]
fn a_hostile_guest_stops_its_own_vif_while_a_second_vif_and_a_disk_keep_working() {
    assert!(is_root(), "this test needs root (network namespace and TAP devices)");
    let ns = Netns::new("hostile");
    ns.tap("pvh0", None, None);
    ns.tap("pvh1", Some("10.77.1.1/24"), None);
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let out = ns
        .exec(&[
            env!("CARGO_BIN_EXE_vmm"),
            "run",
            "--image",
            "net",
            "--net",
            "tap=pvh0",
            "--net",
            "tap=pvh1",
            "--disk",
            img.to_str().unwrap(),
            "--cmdline",
            "test=hostile ip=10.77.1.2/24 peer=10.77.1.1",
            "--timeout",
            "60",
            "--stats",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("hostile: refused=3/3 vif1-arp=true disk-read=Ok(0)"), "{stdout}\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let line = |id: &str| {
        stderr
            .lines()
            .find(|l| l.contains(&format!("backend/vif/1/{id}:")))
            .unwrap_or_else(|| panic!("{stderr}"))
            .to_string()
    };
    assert!(line("0").contains("tx_errors=3") && line("0").contains("stopped=1"), "{stderr}");
    assert!(line("1").contains("stopped=0"), "{stderr}");
}

/// netif multi-queue end to end: the `net` guest connects its vif with two
/// queues (`netif.h` "Multi-queue": `multi-queue-num-queues`,
/// `queue-N/tx-ring-ref`, `rx-ring-ref`, `event-channel`) and pings the
/// host 8 times, ping `i` sent on queue `i % 2` with an ICMP identifier of
/// its own; netback steers each reply by flow hash (as Linux's
/// `xenvif_select_queue`), so replies arrive on both queues.
#[test]
fn two_queue_netfront_pings_the_host_over_both_queues() {
    assert!(is_root(), "this test needs root (network namespace and TAP devices)");
    let ns = Netns::new("mq");
    ns.tap("pvmq0", Some("10.77.2.1/24"), None);
    let out = ns
        .exec(&[
            env!("CARGO_BIN_EXE_vmm"),
            "run",
            "--image",
            "net",
            "--net",
            "tap=pvmq0",
            "--cmdline",
            "test=ping queues=2 n=8 ip=10.77.2.2/24 peer=10.77.2.1",
            "--timeout",
            "120",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let line = stdout.lines().find(|l| l.starts_with("ping: n=8")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.starts_with("ping: n=8 replies=8 queues=2 tx=4,4 rx="), "{line}");
    let rx: Vec<u64> = line.split("rx=").nth(1).unwrap().split(',').map(|v| v.trim().parse().unwrap()).collect();
    assert_eq!(rx.iter().sum::<u64>(), 8, "{line}");
    assert!(rx.iter().all(|&r| r > 0), "replies on both queues: {line}");
}

/// virtio-net end to end: the `virtio` guest's third-party front end
/// (`virtio-drivers`' `VirtIONetRaw`) sends an ARP request for the host's
/// TAP address through the VMM's virtio-net device and gets the host
/// kernel's reply back; `--stats` shows the frames crossed both ways.
#[test]
fn virtio_net_guest_gets_an_arp_reply_from_the_host() {
    assert!(is_root(), "this test needs root (network namespace and TAP device)");
    let ns = Netns::new("virtio");
    let tap = "pvv0";
    ns.tap(tap, Some("10.77.2.1/24"), None);
    let out = ns
        .exec(&[
            env!("CARGO_BIN_EXE_vmm"),
            "run",
            "--image",
            "virtio",
            "--net",
            &format!("tap={tap},transport=virtio,mac=02:00:00:77:02:02"),
            "--cmdline",
            "test=arp ip=10.77.2.2 peer=10.77.2.1",
            "--timeout",
            "60",
            "--stats",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("arp: reply from"), "{stdout}\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("virtio-net0:")).unwrap_or_else(|| panic!("{stderr}"));
    let count = |k: &str| -> u64 {
        line.split_whitespace().find_map(|kv| kv.strip_prefix(&format!("{k}="))?.parse().ok()).unwrap_or(0)
    };
    assert!(count("tx_packets") >= 1 && count("rx_packets") >= 1, "{line}");
    assert_eq!(count("tx_errors"), 0, "{line}");
}

fn vmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmm")).args(args).output().expect("run vmm")
}

/// Asserts a failed run printed exactly one `error:` line containing `want`.
fn assert_one_line_error(out: &Output, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(want), "expected {want:?} in {stderr}");
}

#[test]
fn bad_net_options_are_one_line_errors() {
    let out = vmm(&["run", "--image", "net", "--net", "tap=pvx0,mac=01:00:00:00:00:01"]);
    assert_one_line_error(&out, "bad MAC '01:00:00:00:00:01'");
    let out = vmm(&["run", "--image", "net", "--net", "tap=pvx0,mac=02:00:00:00:00"]);
    assert_one_line_error(&out, "bad MAC");
    let out = vmm(&["run", "--image", "net", "--net", "mac=02:00:00:00:00:01"]);
    assert_one_line_error(&out, "say which TAP device");
    let out = vmm(&["run", "--image", "net", "--net", "tap=pvx0,speed=10"]);
    assert_one_line_error(&out, "unknown option 'speed=10'");
    let out = vmm(&["run", "--image", "net", "--net", "tap=a-name-far-too-long"]);
    assert_one_line_error(&out, "not a valid interface name");
}

#[test]
fn taken_tap_name_is_a_one_line_error() {
    assert!(is_root(), "this test needs root (network namespace)");
    let ns = Netns::new("taken");
    // A device of that name that is not a TAP (a TUN device).
    ns.ip(&["tuntap", "add", "dev", "pvtaken", "mode", "tun"]);
    let out = ns.exec(&[env!("CARGO_BIN_EXE_vmm"), "run", "--image", "net", "--net", "tap=pvtaken"]).output().unwrap();
    assert_one_line_error(&out, "TAP name 'pvtaken' is taken");
}

#[test]
fn missing_tun_device_is_a_one_line_error() {
    assert!(is_root(), "this test needs root (a private mount namespace)");
    // /dev/net hidden under an empty tmpfs in a private mount namespace.
    let script =
        format!("mount -t tmpfs none /dev/net && exec {} run --image net --net tap=pvx0", env!("CARGO_BIN_EXE_vmm"));
    let out =
        Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &script]).output().unwrap();
    assert_one_line_error(&out, "/dev/net/tun is missing");
}

#[test]
fn no_permission_for_tap_is_a_one_line_error() {
    if !is_root() || !std::path::Path::new("/usr/bin/setpriv").exists() {
        panic!("prerequisite missing: needs root and setpriv to run the VMM as an unprivileged user");
    }
    let out = Command::new("/usr/bin/setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--image", "net", "--net", "tap=pvnoperm0"])
        .output()
        .expect("run setpriv");
    if String::from_utf8_lossy(&out.stderr).starts_with("setpriv:") {
        panic!("prerequisite missing: the unprivileged user cannot execute the test binary here");
    }
    assert_one_line_error(&out, "no permission to create or attach TAP device 'pvnoperm0'");
}

/// Boots the `net` guest in `ns` with `--net <net>` and address `ip`/24
/// (`extra` appended to its command line); returns once its HTTP server
/// answers.
fn boot_net_guest(ns: &Netns, net: &str, ip: Ipv4Addr, extra: &str) -> Vmm {
    let cmdline = format!("ip={ip}/24 {extra}");
    let vmm = spawn_net_guest(ns, net, &cmdline);
    let up = ns
        .run(move || {
            let mut s = connect_retry(SocketAddr::from((ip, 80)), Duration::from_secs(60));
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            let mut page = String::new();
            let _ = s.read_to_string(&mut page);
            page
        })
        .join()
        .unwrap();
    assert!(up.starts_with("HTTP/1.0 200 OK"), "{up}");
    vmm
}

/// `curl` of `url` from inside `ns`: the page, if the request succeeded.
fn curl(ns: &Netns, url: &str) -> Option<String> {
    let out = ns.exec(&["curl", "-s", "-m", "30", url]).output().expect("run curl");
    let page = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && page.contains("<h1>PV guest net</h1>")).then_some(page)
}

/// Asks the guest to power off and checks it did, with status 0.
fn shut_down(ns: &Netns, ip: Ipv4Addr, vmm: Vmm) -> (String, String) {
    let _ = ns.exec(&["curl", "-s", "-m", "30", &format!("http://{ip}/shutdown")]).output();
    let out = vmm.wait_with_output();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("net: shutdown:"), "{stdout}");
    (stdout, stderr)
}

fn csum(data: &[u8], mut sum: u32) -> u16 {
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends one TCP SYN to `dst:port` from the forged source `src:sport`
/// (a raw socket, in the calling thread's namespace). Nobody owns `src`,
/// so the guest's SYN-ACK is never answered: a half-open connection.
fn spoofed_syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, port: u16) {
    let mut p = [0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = csum(&p[..20], 0);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&port.to_be_bytes());
    p[24..28].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    p[32] = 0x50;
    p[33] = 0x02; // SYN
    p[34..36].copy_from_slice(&65535u16.to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
    let pre: u32 = pseudo.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    let c = csum(&p[20..], pre);
    p[36..38].copy_from_slice(&c.to_be_bytes());
    // SAFETY: `socket` takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    let to = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(dst.octets()) },
        sin_zero: [0; 8],
    };
    let (buf, addr) = (p.as_ptr().cast(), (&to as *const libc::sockaddr_in).cast());
    let addr_len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sendto` reads `p.len()` bytes of `p` and `addr_len` bytes
    // of `to`, both alive across the call, on the descriptor made above.
    let n = unsafe { libc::sendto(fd, buf, p.len(), 0, addr, addr_len) };
    let err = std::io::Error::last_os_error();
    // SAFETY: closes the descriptor made above, used by nothing else.
    unsafe { libc::close(fd) };
    assert_eq!(n, 40, "sendto: {err}");
}

/// A silent client and one spoofed SYN (its SYN-ACK never answered) do
/// not block other clients; with every pooled HTTP socket half open, HTTP
/// serves again once they time out.
fn half_open_connections_do_not_block_http(ns: &Netns, guest: Ipv4Addr) {
    let url = format!("http://{guest}/");
    // An address on the guest's subnet that nobody owns: ARP for it fails.
    let [a, b, c, _] = guest.octets();
    let nobody = Ipv4Addr::new(a, b, c, 99);
    // A silent client and one spoofed SYN: four other clients are served.
    let silent = ns
        .run(move || {
            spoofed_syn(nobody, 40000, guest, 80);
            TcpStream::connect_timeout(&SocketAddr::from((guest, 80)), Duration::from_secs(5)).unwrap()
        })
        .join()
        .unwrap();
    let served = (0..4).filter(|_| curl(ns, &url).is_some()).count();
    assert_eq!(served, 4, "clients served beside a half-open and a silent connection");
    drop(silent);

    // Every pooled HTTP socket (32) half open: HTTP is back once they time out.
    ns.run(move || {
        for port in 40001..40033 {
            spoofed_syn(nobody, port, guest, 80);
        }
    })
    .join()
    .unwrap();
    let t = Instant::now();
    let back = (0..60).any(|_| {
        let served = curl(ns, &url).is_some();
        if !served {
            std::thread::sleep(Duration::from_millis(500));
        }
        served
    });
    assert!(back, "HTTP serves again after the half-open connections time out");
    eprintln!("HTTP back {:?} after 32 spoofed SYNs", t.elapsed());
}

/// The `net` guest as an endpoint (issue 18): 16 parallel HTTP clients
/// are all served; connect-request-close-reconnect works every time;
/// echo clients that pause 2 ms before sending are answered at once; a
/// silent client and a spoofed SYN nobody answers do not block others,
/// and with every pooled socket taken by half-open connections HTTP
/// serves again once they time out; `ping -s 8000` at MTU 1500 (IPv4
/// fragments both ways) is answered.
#[test]
fn net_guest_serves_many_clients_reconnects_half_open_and_fragments() {
    assert!(is_root(), "this test needs root (network namespace and TAP device)");
    let ns = Netns::new("pool");
    let (host, guest) = (Ipv4Addr::new(10, 77, 3, 1), Ipv4Addr::new(10, 77, 3, 2));
    ns.tap("pvp0", Some(&format!("{host}/24")), None);
    let vmm = boot_net_guest(&ns, "tap=pvp0,mac=02:00:00:77:03:02", guest, "");
    let url = format!("http://{guest}/");

    // 16 curls at once.
    let curls: Vec<_> = (0..16)
        .map(|_| ns.exec(&["curl", "-s", "-m", "30", &url]).stdout(Stdio::piped()).spawn().expect("run curl"))
        .collect();
    let served = curls
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .filter(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("<h1>PV guest net</h1>"))
        .count();
    assert_eq!(served, 16, "parallel HTTP clients served");

    // Reconnect right after each close; echo after a 2 ms pause.
    let (reconnects, echoes) = ns
        .run(move || {
            let mut pages = 0;
            for _ in 0..20 {
                let mut s = TcpStream::connect_timeout(&SocketAddr::from((guest, 80)), Duration::from_secs(5))
                    .expect("reconnect right after a close");
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
                let mut page = String::new();
                s.read_to_string(&mut page).expect("read the page");
                pages += page.starts_with("HTTP/1.0 200 OK") as usize;
            }
            let mut echoes = 0;
            for i in 0..20u8 {
                let mut s = TcpStream::connect_timeout(&SocketAddr::from((guest, 7)), Duration::from_secs(5)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                std::thread::sleep(Duration::from_millis(2));
                let msg = [b'e', i, b'\n'];
                s.write_all(&msg).unwrap();
                let mut back = [0u8; 3];
                echoes += (s.read_exact(&mut back).is_ok() && back == msg) as usize;
            }
            (pages, echoes)
        })
        .join()
        .unwrap();
    assert_eq!((reconnects, echoes), (20, 20), "reconnects served, echoes answered without a stall");

    half_open_connections_do_not_block_http(&ns, guest);

    // IPv4 fragments: 8000-byte pings at MTU 1500 (RFC 791 reassembly;
    // smoltcp's `proto-ipv4-fragmentation`). The guest sees the host
    // first: it answers only a peer whose MAC it knows, as smoltcp drops a
    // datagram it has to ask ARP for.
    let _ = ns.exec(&["ping", "-c", "1", "-W", "5", &guest.to_string()]).output();
    for _ in 0..3 {
        let out =
            ns.exec(&["ping", "-c", "1", "-s", "8000", "-W", "10", &guest.to_string()]).output().expect("run ping");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("1 packets transmitted, 1 received"), "{text}");
    }
    // Two at once, three times: their fragments interleave on the wire, so
    // the guest reassembles two datagrams side by side and fragments two
    // replies one after the other (one reassembly buffer, or a second
    // reply overwriting the first while its fragments go out, loses one).
    for round in 0..3 {
        let pings: Vec<_> = (0..2)
            .map(|_| {
                ns.exec(&["ping", "-c", "1", "-s", "8000", "-W", "10", &guest.to_string()])
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("run ping")
            })
            .collect();
        for p in pings {
            let text = String::from_utf8_lossy(&p.wait_with_output().unwrap().stdout).into_owned();
            assert!(text.contains("1 packets transmitted, 1 received"), "round {round}: {text}");
        }
    }

    shut_down(&ns, guest, vmm);
}

/// The `net` image over virtio-net (`virtio-drivers`' `VirtIONetRaw` under
/// the same smoltcp stack): ping, HTTP and echo answered, `/shutdown`
/// powers it off. The TAP's MTU (1400) reaches the guest as virtio-net's
/// `mtu` (VIRTIO_NET_F_MTU, virtio 1.x 5.1.4).
#[test]
fn net_guest_over_virtio_net_answers_ping_http_and_echo() {
    assert!(is_root(), "this test needs root (network namespace and TAP device)");
    let ns = Netns::new("vnet");
    let (host, guest) = (Ipv4Addr::new(10, 77, 4, 1), Ipv4Addr::new(10, 77, 4, 2));
    ns.tap("pvn0", Some(&format!("{host}/24")), Some(1400));
    let vmm = boot_net_guest(&ns, "tap=pvn0,transport=virtio,mac=02:00:00:77:04:02", guest, "");
    let out = ns.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "5", &guest.to_string()]).output().expect("run ping");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("3 packets transmitted, 3 received"), "{text}");
    let page = curl(&ns, &format!("http://{guest}/")).expect("curl over virtio-net");
    assert!(page.contains("transport virtio"), "{page}");
    let data: Vec<u8> = (0..64 << 10).map(|i: usize| (i * 13 + (i >> 8)) as u8).collect();
    let d = data.clone();
    let back = ns
        .run(move || {
            let s = connect_retry(SocketAddr::from((guest, 7)), Duration::from_secs(10));
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let mut w = s.try_clone().unwrap();
            let writer = std::thread::spawn(move || w.write_all(&d));
            let mut back = vec![0u8; 64 << 10];
            (&s).read_exact(&mut back).expect("read the echo");
            writer.join().unwrap().expect("write the data");
            back
        })
        .join()
        .unwrap();
    assert!(back == data, "echoed bytes differ");
    let (stdout, stderr) = shut_down(&ns, guest, vmm);
    assert!(stdout.contains(" mtu 1400 "), "the guest took the device's MTU: {stdout}");
    let line = stderr.lines().find(|l| l.starts_with("virtio-net0:")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains("tx_errors=0"), "{line}");
}

/// `exit_after_send`: the guest streams to the host over virtio-net and
/// powers off by itself (status 0) once the stream is done.
#[test]
fn exit_after_send_powers_off_after_the_stream() {
    assert!(is_root(), "this test needs root (network namespace and TAP device)");
    let ns = Netns::new("exit");
    let (host, guest) = (Ipv4Addr::new(10, 77, 5, 1), Ipv4Addr::new(10, 77, 5, 2));
    ns.tap("pve0", Some(&format!("{host}/24")), None);
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = ns.run(move || {
        let l = TcpListener::bind((host, 5002)).expect("bind");
        tx.send(()).unwrap();
        let (mut c, _) = l.accept().expect("the guest connects");
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).expect("read the stream");
        got
    });
    rx.recv().unwrap();
    let cmdline = format!("ip={guest}/24 send={host}:5002 bytes=65536 exit_after_send");
    let out = ns
        .exec(&[
            env!("CARGO_BIN_EXE_vmm"),
            "run",
            "--image",
            "net",
            "--net",
            "tap=pve0,transport=virtio",
            "--cmdline",
            &cmdline,
            "--timeout",
            "90",
        ])
        .output()
        .expect("run vmm");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("net: client: sent 65536 bytes") && stdout.contains("net: shutdown:"), "{stdout}");
    let got = sink.join().unwrap();
    assert_eq!(got.len(), 65536);
    assert!(got.iter().enumerate().all(|(i, &b)| b == pattern(i)), "stream bytes");
}

/// Starts the `net` guest in `ns` with `--net <net>` and `cmdline`, output
/// piped, under a 170 s run-time limit, with `--stats`.
fn spawn_net_guest(ns: &Netns, net: &str, cmdline: &str) -> Vmm {
    let child = ns
        .exec(&[
            env!("CARGO_BIN_EXE_vmm"),
            "run",
            "--image",
            "net",
            "--net",
            net,
            "--cmdline",
            cmdline,
            "--timeout",
            "170",
            "--stats",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vmm");
    Vmm(child)
}

/// The guest's count on a `--stats` line `<label>: <n>`.
fn stat(out: &Output, label: &str) -> u64 {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label)?.strip_prefix(':')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{label}:` line in the --stats output: {text}"))
}

/// What a streamed TCP segment costs the guest stays near the one-socket
/// guest the pools replaced (about 3,000 guest instructions on this
/// project's instruction-emulating KVM; with every pooled socket in
/// smoltcp's set it was 6,620, issue 18). Counted as `vmm bench` counts:
/// a run streaming 200 segments against one streaming none. On a host
/// whose KVM runs guest code natively the count is near 0 and the bound
/// holds trivially.
#[test]
fn streaming_cost_per_segment_stays_near_the_one_socket_guest() {
    assert!(is_root(), "this test needs root (network namespace and TAP device)");
    let ns = Netns::new("cost");
    let (host, guest) = (Ipv4Addr::new(10, 77, 6, 1), Ipv4Addr::new(10, 77, 6, 2));
    ns.tap("pvc0", Some(&format!("{host}/24")), None);
    let (tx, rx) = std::sync::mpsc::channel();
    // The sink; not joined (it waits for more connections until the test ends).
    let _sink = ns.run(move || {
        let l = TcpListener::bind((host, 5003)).expect("bind");
        tx.send(()).unwrap();
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let _ = std::io::copy(&mut c, &mut std::io::sink());
        }
    });
    rx.recv().unwrap();
    let insns = |n: u32| {
        let cmdline = format!("ip={guest}/24 send={host}:5003 n={n} exit_after_send");
        let vmm = env!("CARGO_BIN_EXE_vmm");
        let args = ["run", "--image", "net", "--net", "tap=pvc0", "--cmdline", &cmdline, "--timeout", "120", "--stats"];
        let out = ns.exec(&[&[vmm][..], &args[..]].concat()).output().expect("run vmm");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(&format!("client: sent {} bytes", n * 1448)), "{stdout}");
        stat(&out, "guest instructions (insn_emulation)")
    };
    let (base, full) = (insns(0), insns(200));
    let per_segment = full.saturating_sub(base) / 200;
    eprintln!("{per_segment} guest instructions per 1448-byte segment");
    assert!(per_segment < 4500, "{per_segment} guest instructions per segment");
}
