//! Net devices end to end: `vmm run --image net --net tap=...` inside a
//! network namespace this test makes and removes itself (no route out of
//! it), driven by host tools (`ping`, `curl`) and host sockets; and the
//! one-line errors for bad `--net` input.
//!
//! Needs root (namespaces, TAP devices), `ip`, `ping` and `curl`
//! (`setup.sh` installs them).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const HOST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const STREAM_PORT: u16 = 5001;
const STREAM_BYTES: usize = 8 << 20;
const ECHO_BYTES: usize = 1 << 20;

/// A network namespace, removed (with everything in it) on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("pvnet-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let mut a = vec!["-n", self.0.as_str()];
        a.extend_from_slice(args);
        ip(&a);
    }

    /// Runs `cmd` inside the namespace.
    fn exec(&self, cmd: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(cmd);
        c
    }

    /// Runs `f` on a thread inside the namespace (sockets it makes stay there).
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("namespace file");
            // SAFETY: setns on a valid namespace descriptor changes only this
            // thread's network namespace.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (install iproute2)");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Kills the VMM if the test fails half-way.
struct Vmm(Child);

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
    // multi-buffer frames.
    ns.ip(&["tuntap", "add", "dev", tap, "mode", "tap"]);
    ns.ip(&["link", "set", tap, "mtu", "9000"]);
    ns.ip(&["addr", "add", &format!("{HOST}/24"), "dev", tap]);
    ns.ip(&["link", "set", tap, "up"]);
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
    let cmdline = format!("ip={GUEST}/24 mtu=9000 send={HOST}:{STREAM_PORT} bytes={STREAM_BYTES}");
    let started = Instant::now();
    let child = ns
        .exec(&[
            env!("CARGO_BIN_EXE_vmm"),
            "run",
            "--image",
            "net",
            "--net",
            &format!("tap={tap},mac=02:00:00:77:00:02"),
            "--cmdline",
            &cmdline,
            "--timeout",
            "170",
            "--stats",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vmm");
    let vmm = Vmm(child);

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
    let mut vmm = vmm;
    let out: Output = {
        let child = std::mem::replace(&mut vmm.0, Command::new("true").spawn().unwrap());
        std::mem::forget(vmm);
        child.wait_with_output().unwrap()
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("client: sent {STREAM_BYTES} bytes")), "{stdout}");
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
    for (tap, addr) in [("pvh0", None), ("pvh1", Some("10.77.1.1/24"))] {
        ns.ip(&["tuntap", "add", "dev", tap, "mode", "tap"]);
        if let Some(a) = addr {
            ns.ip(&["addr", "add", a, "dev", tap]);
        }
        ns.ip(&["link", "set", tap, "up"]);
    }
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

/// virtio-net end to end: the `virtio` guest's third-party front end
/// (`virtio-drivers`' `VirtIONetRaw`) sends an ARP request for the host's
/// TAP address through the VMM's virtio-net device and gets the host
/// kernel's reply back; `--stats` shows the frames crossed both ways.
#[test]
fn virtio_net_guest_gets_an_arp_reply_from_the_host() {
    assert!(is_root(), "this test needs root (network namespace and TAP device)");
    let ns = Netns::new("virtio");
    let tap = "pvv0";
    ns.ip(&["tuntap", "add", "dev", tap, "mode", "tap"]);
    ns.ip(&["addr", "add", "10.77.2.1/24", "dev", tap]);
    ns.ip(&["link", "set", tap, "up"]);
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
        eprintln!("skipped: needs root and setpriv to run the VMM as an unprivileged user");
        return;
    }
    let out = Command::new("/usr/bin/setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--image", "net", "--net", "tap=pvnoperm0"])
        .output()
        .expect("run setpriv");
    if String::from_utf8_lossy(&out.stderr).starts_with("setpriv:") {
        eprintln!("skipped: the unprivileged user cannot execute the test binary here");
        return;
    }
    assert_one_line_error(&out, "no permission to create or attach TAP device 'pvnoperm0'");
}
