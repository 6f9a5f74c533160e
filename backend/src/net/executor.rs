//! The net device logic: frames between a transport and a host port (a
//! TAP device or the in-process peer). It knows nothing of rings, grants
//! or descriptors: the transport hands it checked guest memory
//! ([`TxPacket`]) and takes received frames from it.

use super::csum;
use super::metrics::NetMetrics;
use super::port::{NetPort, RxMeta};
use super::request::{TxError, TxPacket};
use super::MAX_FRAME;
use crate::ratelimit::LogLimiter;
use std::os::fd::RawFd;
use std::sync::Arc;

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
        if !p.csum_blank {
            if let Some(r) = self.port.send_slices(p.segments, p.data_validated) {
                self.account(r, len);
                return Ok(());
            }
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

    /// Counts a send of `len` bytes.
    fn account(&mut self, r: std::io::Result<()>, len: usize) {
        match r {
            Ok(()) => {
                self.m.tx_packets.inc();
                self.m.tx_bytes.add(len as u64);
            }
            Err(e) => {
                self.m.tx_port_errors.inc();
                crate::limited_warn!(self.log, "netback: {}: send failed: {e}", self.port.name());
            }
        }
    }

    /// The next frame from the port, if any.
    pub fn receive(&mut self) -> Option<(&[u8], RxMeta)> {
        match self.port.recv(&mut self.rx) {
            Ok(Some((n, meta))) => Some((&self.rx[..n], meta)),
            Ok(None) => None,
            Err(e) => {
                crate::limited_warn!(self.log, "netback: {}: receive failed: {e}", self.port.name());
                None
            }
        }
    }
}
