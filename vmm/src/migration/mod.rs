//! Live migration (docs/migration.md): pre-copy of guest memory over a
//! stream while the guest runs, then a short pause for the last dirty
//! pages and the VM state, then the destination runs and the source
//! ends.
//!
//! * [`stream`]: the wire format (versioned header, checksummed records);
//! * [`dirty`]: which pages to send again (KVM's dirty log for guest
//!   writes, page hashes for the VMM's own writes);
//! * [`send`]: the source's rounds and switch-over;
//! * [`receive`]: the destination's side.
//!
//! What the VM state record holds (vCPUs, domain, devices) is not this
//! module's business: the source asks a [`VmState`] for it, the
//! destination hands it back to whoever builds the VM.

pub mod dirty;
pub mod receive;
pub mod send;
pub mod stream;
pub mod vm_state;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

pub use send::{MigrationReport, Migrator, MigratorThread};
pub use stream::StreamError;

/// How long connecting to the destination may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one read or write on the stream may block: a destination that
/// stops reading (or dies without closing) fails the migration after this.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a migration goes (`tcp:<ip>:<port>`, `unix:<path>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationUrl {
    /// A TCP address (host and port).
    Tcp(String),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl std::str::FromStr for MigrationUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("bad migration address '{s}': give tcp:<ip>:<port> or unix:<path>");
        if let Some(rest) = s.strip_prefix("tcp:") {
            // An IP address only: resolving a host name reads files and
            // makes system calls the migration thread's seccomp filter
            // forbids (a name would stop the source VMM).
            if rest.parse::<SocketAddr>().is_err() {
                return Err(format!("{}; host names are not resolved: give an IP address", bad()));
            }
            Ok(MigrationUrl::Tcp(rest.to_string()))
        } else if let Some(path) = s.strip_prefix("unix:").filter(|p| !p.is_empty()) {
            Ok(MigrationUrl::Unix(PathBuf::from(path)))
        } else {
            Err(bad())
        }
    }
}

impl std::fmt::Display for MigrationUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MigrationUrl::Tcp(a) => write!(f, "tcp:{a}"),
            MigrationUrl::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// One end of a migration connection.
pub enum Connection {
    /// Over TCP.
    Tcp(TcpStream),
    /// Over a Unix socket.
    Unix(UnixStream),
}

impl Connection {
    /// Connects to `url` (with [`CONNECT_TIMEOUT`]).
    pub fn connect(url: &MigrationUrl) -> std::io::Result<Self> {
        let c = match url {
            MigrationUrl::Tcp(a) => {
                let addr: SocketAddr =
                    a.parse().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
                // Records are written whole; the last ones must not wait.
                s.set_nodelay(true)?;
                Connection::Tcp(s)
            }
            MigrationUrl::Unix(p) => Connection::Unix(UnixStream::connect(p)?),
        };
        c.set_timeouts(Some(IO_TIMEOUT))?;
        Ok(c)
    }

    fn set_timeouts(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Connection::Tcp(s) => s.set_read_timeout(t).and_then(|_| s.set_write_timeout(t)),
            Connection::Unix(s) => s.set_read_timeout(t).and_then(|_| s.set_write_timeout(t)),
        }
    }
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Connection::Tcp(s) => s.read(buf),
            Connection::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Connection::Tcp(s) => s.write(buf),
            Connection::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Connection::Tcp(s) => s.flush(),
            Connection::Unix(s) => s.flush(),
        }
    }
}

/// The destination's listening socket (`vmm run --incoming`).
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix socket (removed when dropped).
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `url`.
    pub fn bind(url: &MigrationUrl) -> std::io::Result<Self> {
        Ok(match url {
            MigrationUrl::Tcp(a) => Listener::Tcp(TcpListener::bind(a.as_str())?),
            MigrationUrl::Unix(p) => Listener::Unix(UnixListener::bind(p)?, p.clone()),
        })
    }

    /// Waits for the source; the stream then has [`IO_TIMEOUT`].
    pub fn accept(&self) -> std::io::Result<Connection> {
        let c = match self {
            Listener::Tcp(l) => {
                let s = l.accept()?.0;
                s.set_nodelay(true)?;
                Connection::Tcp(s)
            }
            Listener::Unix(l, _) => Connection::Unix(l.accept()?.0),
        };
        c.set_timeouts(Some(IO_TIMEOUT))?;
        Ok(c)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The VM state around the switch-over, as the source's owner provides
/// it (the snapshot code, `crate::snapshot`, when built with it).
pub trait VmState: Send {
    /// The vCPUs are paused: stop device work (in-flight requests finish
    /// and answer), so that nothing writes guest memory any more.
    fn quiesce(&mut self) -> Result<(), String>;
    /// The state record's payload.
    fn save(&mut self) -> Result<Vec<u8>, String>;
    /// The migration failed after [`quiesce`](Self::quiesce): the devices
    /// work again (the vCPUs are resumed by the caller).
    fn unquiesce(&mut self);
}

/// Why a migration failed; the source runs on unless
/// [`MigrationError::SourceStopped`].
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The address is bad.
    #[error("{0}")]
    BadUrl(String),
    /// The destination cannot be reached.
    #[error("cannot connect to {url}: {source}: is `vmm run --incoming {url}` waiting there?")]
    Connect {
        /// Where.
        url: MigrationUrl,
        /// Why.
        source: std::io::Error,
    },
    /// The stream failed or the destination refused it.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The destination refused the VM (its message).
    #[error("the destination refused the VM: {0}")]
    Refused(String),
    /// Dirty tracking, pausing, or the VM state failed.
    #[error("{0}")]
    Source(String),
    /// The destination took the disks but did not confirm it runs: the
    /// source cannot take its image locks back and must not run on.
    #[error(
        "the migration failed after the switch-over and the disk images are locked elsewhere: the source stops ({0})"
    )]
    SourceStopped(String),
    /// A migration is under way already, or the VM has ended.
    #[error("{0}")]
    Busy(&'static str),
}

/// The payload of a state record that carries no VM state: what a VMM
/// without the snapshot code sends. A destination refuses it (it cannot
/// run a guest whose vCPUs and devices it does not have), so the source
/// takes its image locks back and runs on.
pub const NO_STATE: &[u8] = b"no-vm-state";

/// A [`VmState`] without device or vCPU state ([`NO_STATE`]): memory
/// pre-copy and the switch-over protocol work, the destination refuses.
pub struct NoVmState;

impl VmState for NoVmState {
    fn quiesce(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn save(&mut self) -> Result<Vec<u8>, String> {
        Ok(NO_STATE.to_vec())
    }
    fn unquiesce(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_take_an_ip_address_or_a_path() {
        assert_eq!("tcp:127.0.0.1:7000".parse(), Ok(MigrationUrl::Tcp("127.0.0.1:7000".into())));
        assert_eq!("tcp:[::1]:7000".parse(), Ok(MigrationUrl::Tcp("[::1]:7000".into())));
        assert_eq!("unix:/run/m.sock".parse(), Ok(MigrationUrl::Unix("/run/m.sock".into())));
        for bad in ["tcp:dst-host:7000", "tcp:127.0.0.1", "tcp:127.0.0.1:70000", "unix:", "http://x"] {
            let e = bad.parse::<MigrationUrl>().unwrap_err();
            assert!(e.contains("give tcp:<ip>:<port>"), "{bad}: {e}");
        }
    }

    /// Connecting under the migration thread's filter makes only allowed
    /// calls: a refused connection is an error, not a stopped process.
    #[test]
    fn connecting_under_the_migration_filter_survives() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let url: MigrationUrl = format!("tcp:{free}").parse().unwrap();
        let r = crate::seccomp::run_confined(crate::seccomp::ThreadKind::Migration, || {
            Connection::connect(&url).map(drop).map_err(|e| e.kind())
        })
        .unwrap();
        assert_eq!(r.unwrap_err(), std::io::ErrorKind::ConnectionRefused);
    }
}
