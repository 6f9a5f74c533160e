//! The in-process host side of a network device, for host-side tests and
//! benchmarks: frames injected through a [`PeerHandle`] reach the guest;
//! frames the guest sends are kept (bounded) or only counted.

use super::port::{NetPort, RxMeta};
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use vmm_sys_util::eventfd::EventFd;

/// Frames kept from the guest at most; later ones are only counted.
pub const MAX_KEPT: usize = 4096;
/// Frames waiting for the guest at most; [`PeerHandle::inject`] refuses more.
pub const MAX_QUEUED: usize = 4096;

struct Shared {
    to_guest: Mutex<VecDeque<(Vec<u8>, RxMeta)>>,
    from_guest: Mutex<Vec<Vec<u8>>>,
    keep: bool,
    sent_frames: AtomicU64,
    sent_bytes: AtomicU64,
    wake: EventFd,
}

/// The port netback uses.
pub struct Peer {
    s: Arc<Shared>,
    mtu: Option<u32>,
}

impl Peer {
    /// This peer with an MTU (as a TAP has one), for the MTU tests.
    pub fn with_mtu(self, mtu: u32) -> Peer {
        Peer { mtu: Some(mtu), ..self }
    }
}

/// The test's end.
#[derive(Clone)]
pub struct PeerHandle {
    s: Arc<Shared>,
}

impl std::fmt::Debug for PeerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerHandle").finish_non_exhaustive()
    }
}

/// A connected pair. `keep`: keep the frames the guest sends (else only
/// count them, for benchmarks).
pub fn pair(keep: bool) -> std::io::Result<(Peer, PeerHandle)> {
    let s = Arc::new(Shared {
        to_guest: Mutex::new(VecDeque::new()),
        from_guest: Mutex::new(Vec::new()),
        keep,
        sent_frames: AtomicU64::new(0),
        sent_bytes: AtomicU64::new(0),
        wake: EventFd::new(libc::EFD_NONBLOCK)?,
    });
    Ok((Peer { s: s.clone(), mtu: None }, PeerHandle { s }))
}

impl PeerHandle {
    /// Queues a frame for the guest; `false` if the queue is full.
    pub fn inject(&self, frame: &[u8], meta: RxMeta) -> bool {
        let mut q = self.s.to_guest.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= MAX_QUEUED {
            return false;
        }
        q.push_back((frame.to_vec(), meta));
        let _ = self.s.wake.write(1);
        true
    }

    /// Frames waiting for the guest.
    pub fn queued(&self) -> usize {
        self.s.to_guest.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Takes the frames the guest sent (kept ones).
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.s.from_guest.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// (frames, bytes) the guest sent.
    pub fn sent(&self) -> (u64, u64) {
        (self.s.sent_frames.load(Ordering::Relaxed), self.s.sent_bytes.load(Ordering::Relaxed))
    }
}

impl NetPort for Peer {
    fn send(&mut self, frame: &[u8], _data_validated: bool) -> std::io::Result<()> {
        self.s.sent_frames.fetch_add(1, Ordering::Relaxed);
        self.s.sent_bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
        if self.s.keep {
            let mut v = self.s.from_guest.lock().unwrap_or_else(|p| p.into_inner());
            if v.len() < MAX_KEPT {
                v.push(frame.to_vec());
            }
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<Option<(usize, RxMeta)>> {
        let mut q = self.s.to_guest.lock().unwrap_or_else(|p| p.into_inner());
        let Some((f, meta)) = q.pop_front() else {
            let _ = self.s.wake.read();
            return Ok(None);
        };
        if q.is_empty() {
            let _ = self.s.wake.read();
        }
        let n = f.len().min(buf.len());
        buf[..n].copy_from_slice(&f[..n]);
        Ok(Some((n, meta)))
    }

    fn wake_fd(&self) -> RawFd {
        self.s.wake.as_raw_fd()
    }

    fn name(&self) -> &str {
        "peer"
    }

    fn mtu(&self) -> Option<u32> {
        self.mtu
    }
}
