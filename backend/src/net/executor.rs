//! The net device logic: frames between a transport and a host port (a
//! TAP device or the in-process peer). It knows nothing of rings, grants
//! or descriptors: the transport hands it checked guest memory
//! ([`TxPacket`]) and takes received frames from it.

use super::csum;
use super::metrics::NetMetrics;
use super::port::{NetPort, RxMeta, TxCsum};
use super::request::{TxError, TxPacket};
use super::{MAX_FRAME, MAX_TX_SLOTS};
use pv_util::ratelimit::LogLimiter;
use std::os::fd::RawFd;
use std::sync::Arc;
use vm_memory::VolatileSlice;

/// Bytes of a blank-checksum frame copied to prepare its checksum field:
/// Ethernet, the longest IPv4 header, a TCP header up to its checksum.
const HEAD: usize = 14 + 60 + 18;

/// Sends and receives frames on one port.
pub struct NetExecutor {
    port: Box<dyn NetPort>,
    tx: Vec<u8>,
    rx: Vec<u8>,
    m: Arc<NetMetrics>,
    log: LogLimiter,
}

impl std::fmt::Debug for NetExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetExecutor").field("port", &self.port.name()).finish_non_exhaustive()
    }
}

impl NetExecutor {
    /// An executor on `port`, counting into `m`.
    pub fn new(port: Box<dyn NetPort>, m: Arc<NetMetrics>) -> Self {
        NetExecutor { port, tx: vec![0; MAX_FRAME], rx: vec![0; MAX_FRAME], m, log: LogLimiter::default() }
    }

    /// The port's MTU, if it has one.
    pub fn port_mtu(&self) -> Option<u32> {
        self.port.mtu()
    }

    /// The port's descriptor (readable while frames wait).
    pub fn port_fd(&self) -> RawFd {
        self.port.wake_fd()
    }

    /// Sends one packet. One whose checksum needs no filling in goes to
    /// the port straight from guest memory if the port can take it so (a
    /// TAP: one `writev`); otherwise it is gathered into one frame, a
    /// blank checksum filled in, and handed over. A frame the port
    /// refuses (a full host queue) is counted, not an error: the packet
    /// was fine.
    pub fn transmit(&mut self, p: &TxPacket<'_, '_>) -> Result<(), TxError> {
        let len = p.len();
        if len > self.tx.len() {
            return Err(TxError::TooLong(len));
        }
        let direct = if p.csum_blank {
            self.send_partial(p)
        } else {
            let csum = if p.data_validated { TxCsum::Validated } else { TxCsum::Complete };
            self.port.send_slices(p.segments, csum)
        };
        if let Some(r) = direct {
            self.account(r, len);
            return Ok(());
        }
        let mut pos = 0;
        for s in p.segments {
            pos += s.copy_to(&mut self.tx[pos..pos + s.len()]);
        }
        let frame = &mut self.tx[..len];
        if p.csum_blank {
            csum::fill(frame)?;
            self.m.tx_csum_filled.inc();
        }
        let r = self.port.send(frame, p.csum_blank || p.data_validated);
        self.account(r, len);
        Ok(())
    }

    /// Sends a blank-checksum packet straight from guest memory with a
    /// partial checksum for the host to complete: its headers are copied
    /// (and parsed from the copy) to hold the pseudo-header sum, the rest
    /// stays in guest memory. `None` if the packet or the port does not
    /// allow it.
    fn send_partial(&mut self, p: &TxPacket<'_, '_>) -> Option<std::io::Result<()>> {
        if p.segments.len() > MAX_TX_SLOTS {
            return None;
        }
        let h = p.len().min(HEAD);
        let head = &mut self.tx[..h];
        let mut pos = 0;
        for s in p.segments {
            if pos == h {
                break;
            }
            pos += s.subslice(0, s.len().min(h - pos)).ok()?.copy_to(&mut head[pos..]);
        }
        let (start, offset) = csum::prepare_partial(head, p.len())?;
        let mut segs = [VolatileSlice::from(&mut [][..]); MAX_TX_SLOTS + 1];
        segs[0] = VolatileSlice::from(head);
        let (mut n, mut skip) = (1, h);
        for s in p.segments {
            if skip >= s.len() {
                skip -= s.len();
                continue;
            }
            segs[n] = s.offset(skip).ok()?;
            (n, skip) = (n + 1, 0);
        }
        let csum = TxCsum::Partial { start: start as u16, offset: offset as u16 };
        let r = self.port.send_slices(&segs[..n], csum)?;
        self.m.tx_csum_filled.inc();
        Some(r)
    }

    /// Counts a send of `len` bytes.
    fn account(&mut self, r: std::io::Result<()>, len: usize) {
        match r {
            Ok(()) => {
                self.m.tx_packets.inc();
                self.m.tx_bytes.add(len as u64);
            }
            Err(e) => {
                self.m.tx_port_errors.inc();
                pv_util::limited_warn!(self.log, "netback: {}: send failed: {e}", self.port.name());
            }
        }
    }

    /// The next frame from the port, if any.
    pub fn receive(&mut self) -> Option<(&[u8], RxMeta)> {
        match self.port.recv(&mut self.rx) {
            Ok(Some((n, meta))) => Some((&self.rx[..n], meta)),
            Ok(None) => None,
            Err(e) => {
                pv_util::limited_warn!(self.log, "netback: {}: receive failed: {e}", self.port.name());
                None
            }
        }
    }
}
