//! The PV console back-end: drains the guest's `out` ring (Xen's
//! `xencons_interface`) to a sink whenever the console event channel fires.

mod handler;

use crate::ring_page::{RingPage, RingPageError};
use crate::Notify;
use ring_buffers::{ByteConsumer, ByteProducer, ByteRingLayout};
use std::collections::VecDeque;
use std::sync::Arc;
use vm_memory::GuestMemoryMmap;

pub use handler::ConsoleHandler;

/// Most console input bytes kept while the guest's ring is full.
pub const MAX_PENDING_INPUT: usize = 4096;

/// Where console bytes go.
pub type ConsoleSink = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Console device logic.
pub struct Console {
    out: ByteConsumer<RingPage>,
    /// The guest's `in` ring (console input).
    input: ByteProducer<RingPage>,
    /// Input not yet taken by the guest (bounded by [`MAX_PENDING_INPUT`]).
    pending_in: VecDeque<u8>,
    sink: ConsoleSink,
    notify: Arc<dyn Notify>,
    broken: bool,
    /// Bytes delivered to the sink.
    pub bytes: u64,
    /// Where the ring page is (for [`Console::reattach`]).
    page: (GuestMemoryMmap, u64),
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
        let input = ByteProducer::new(RingPage::assigned(mem, gpa)?, ByteRingLayout::CONSOLE_IN)?;
        let page = (mem.clone(), gpa);
        Ok(Console { out, input, pending_in: VecDeque::new(), sink, notify, broken: false, bytes: 0, page })
    }

    /// Continues from the ring indices now in guest memory (after a
    /// snapshot's memory was loaded under the console: its own indices
    /// are the fresh VM's, not the guest's), notifying through `notify`
    /// (the event channel's binding after the restore).
    pub fn reattach(&mut self, notify: Arc<dyn Notify>) {
        self.notify = notify;
        self.broken = false;
        let (mem, gpa) = &self.page;
        let page = || RingPage::assigned(mem, *gpa).ok();
        let out = page().and_then(|p| ByteConsumer::new(p, ByteRingLayout::CONSOLE_OUT).ok());
        let input = page().and_then(|p| ByteProducer::new(p, ByteRingLayout::CONSOLE_IN).ok());
        match (out, input) {
            (Some(o), Some(i)) => (self.out, self.input) = (o, i),
            _ => self.broken = true,
        }
        self.flush_input();
    }

    /// Takes back the input written to the `in` ring that the guest has
    /// not read, to be written again after [`Console::reattach`] (the VM
    /// was built for a restore and has not run: input typed meanwhile
    /// must reach the restored guest, not the memory about to be
    /// replaced).
    pub fn reclaim_input(&mut self) {
        let (mem, gpa) = &self.page;
        let Some(mut ring) =
            RingPage::assigned(mem, *gpa).ok().and_then(|p| ByteConsumer::new(p, ByteRingLayout::CONSOLE_IN).ok())
        else {
            return;
        };
        let mut buf = [0u8; 1024];
        let mut taken = Vec::new();
        while let Ok(n @ 1..) = ring.read(&mut buf) {
            taken.extend_from_slice(&buf[..n]);
        }
        for b in taken.into_iter().rev() {
            self.pending_in.push_front(b);
        }
        self.pending_in.truncate(MAX_PENDING_INPUT);
    }

    /// Queues console input for the guest (bytes beyond
    /// [`MAX_PENDING_INPUT`] waiting are dropped) and moves what fits into
    /// its `in` ring.
    pub fn feed(&mut self, bytes: &[u8]) {
        let room = MAX_PENDING_INPUT.saturating_sub(self.pending_in.len());
        self.pending_in.extend(&bytes[..bytes.len().min(room)]);
        self.flush_input();
    }

    /// Moves pending input into the `in` ring; notifies the guest if any moved.
    fn flush_input(&mut self) {
        if self.broken || self.pending_in.is_empty() {
            return;
        }
        let (a, b) = self.pending_in.as_slices();
        let chunk: Vec<u8> = a.iter().chain(b).copied().collect();
        match self.input.write(&chunk) {
            Ok(0) => {}
            Ok(n) => {
                self.pending_in.drain(..n);
                self.notify.notify();
            }
            Err(e) => {
                tracing::warn!("console ring corrupt ({e}); console disabled");
                self.broken = true;
            }
        }
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
        // The guest notifies after taking input too: refill its ring.
        self.flush_input();
        total
    }
}
