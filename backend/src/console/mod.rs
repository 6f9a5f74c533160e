//! The PV console back-end: drains the guest's `out` ring (Xen's
//! `xencons_interface`) to a sink whenever the console event channel fires.

mod handler;

use crate::ring_page::{RingPage, RingPageError};
use crate::Notify;
use ring_buffers::{ByteConsumer, ByteRingLayout};
use std::sync::Arc;
use vm_memory::GuestMemoryMmap;

pub use handler::ConsoleHandler;

/// Where console bytes go.
pub type ConsoleSink = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Console device logic.
pub struct Console {
    out: ByteConsumer<RingPage>,
    sink: ConsoleSink,
    notify: Arc<dyn Notify>,
    broken: bool,
    /// Bytes delivered to the sink.
    pub bytes: u64,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").field("bytes", &self.bytes).field("broken", &self.broken).finish_non_exhaustive()
    }
}

impl Console {
    /// A console over the ring page the VMM assigned at `gpa`.
    pub fn new(
        mem: &GuestMemoryMmap,
        gpa: u64,
        sink: ConsoleSink,
        notify: Arc<dyn Notify>,
    ) -> Result<Self, RingPageError> {
        let out = ByteConsumer::new(RingPage::assigned(mem, gpa)?, ByteRingLayout::CONSOLE_OUT)?;
        Ok(Console { out, sink, notify, broken: false, bytes: 0 })
    }

    /// Moves everything the guest has produced to the sink; notifies the
    /// guest if space was freed (it may be waiting for room). Returns the
    /// number of bytes moved. A corrupt ring is logged once and ignored
    /// from then on: the guest loses its console, nothing else breaks.
    pub fn drain(&mut self) -> usize {
        if self.broken {
            return 0;
        }
        let mut buf = [0u8; 2048];
        let mut total = 0;
        loop {
            match self.out.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    (self.sink)(&buf[..n]);
                    total += n;
                }
                Err(e) => {
                    tracing::warn!("console ring corrupt ({e}); console disabled");
                    self.broken = true;
                    break;
                }
            }
        }
        if total > 0 {
            self.bytes += total as u64;
            self.notify.notify();
        }
        total
    }
}
