//! A network namespace for the network tests (a module, included with
//! `#[path]` by the tests that use it): the tests' TAP devices and the
//! host-side addresses live in it, with no route out; it is removed, with
//! everything in it, on drop.

use std::os::fd::AsRawFd;
use std::process::Command;

/// A network namespace, removed (with everything in it) on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("pv-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// A TAP device `name` in the namespace, up, with the host's address
    /// `addr` (`a.b.c.d/n`) and MTU `mtu` if given.
    pub fn tap(&self, name: &str, addr: Option<&str>, mtu: Option<u32>) {
        self.ip(&["tuntap", "add", "dev", name, "mode", "tap"]);
        if let Some(m) = mtu {
            self.ip(&["link", "set", name, "mtu", &m.to_string()]);
        }
        if let Some(a) = addr {
            self.ip(&["addr", "add", a, "dev", name]);
        }
        self.ip(&["link", "set", name, "up"]);
    }

    pub fn ip(&self, args: &[&str]) {
        let mut a = vec!["-n", self.0.as_str()];
        a.extend_from_slice(args);
        ip(&a);
    }

    /// Runs `cmd` inside the namespace.
    pub fn exec(&self, cmd: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(cmd);
        c
    }

    /// Runs `f` on a thread inside the namespace (sockets it makes stay there).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
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

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (install iproute2)");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Whether the tests run as root (namespaces and TAP devices need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
