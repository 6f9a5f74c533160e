//! Guest console output: `print!`/`println!` over the console hypercall,
//! batching a line (or up to [`BUF_LEN`] bytes) per exit.

use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use ring_buffers::{ByteProducer, ByteRingLayout};

/// Bytes buffered before a flush.
pub const BUF_LEN: usize = 256;

/// A line-buffered writer that flushes through a sink function.
pub struct Console<F: FnMut(&[u8])> {
    buf: [u8; BUF_LEN],
    len: usize,
    sink: F,
}

impl<F: FnMut(&[u8])> Console<F> {
    /// A writer that hands complete lines (or full buffers) to `sink`.
    pub const fn new(sink: F) -> Self {
        Console { buf: [0; BUF_LEN], len: 0, sink }
    }

    /// Hands any buffered bytes to the sink.
    pub fn flush(&mut self) {
        if self.len > 0 {
            (self.sink)(&self.buf[..self.len]);
            self.len = 0;
        }
    }

    fn push(&mut self, byte: u8) {
        if self.len == BUF_LEN {
            self.flush();
        }
        self.buf[self.len] = byte;
        self.len += 1;
        if byte == b'\n' {
            self.flush();
        }
    }
}

impl<F: FnMut(&[u8])> fmt::Write for Console<F> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(|b| self.push(b));
        Ok(())
    }
}

impl<F: FnMut(&[u8])> Drop for Console<F> {
    fn drop(&mut self) {
        self.flush();
    }
}

static RING_GPA: AtomicU64 = AtomicU64::new(0);
static RING_PORT: AtomicU32 = AtomicU32::new(0);
/// Notifications sent for console output.
static RING_NOTIFIES: AtomicU64 = AtomicU64::new(0);

/// Sends console output through the PV console ring at `gpa` (notifying
/// `port`) from now on, instead of one hypercall per line.
pub fn use_ring(gpa: u64, port: u32) {
    RING_GPA.store(gpa, SeqCst);
    RING_PORT.store(port, SeqCst);
}

/// Goes back to the console hypercall (e.g. before a crash report).
pub fn use_hypercall() {
    RING_PORT.store(0, SeqCst);
}

/// Notifications the console ring driver has sent.
pub fn ring_notifies() -> u64 {
    RING_NOTIFIES.load(SeqCst)
}

/// Writes `bytes` to the console ring, waiting for room when it is full.
fn ring_write(gpa: u64, port: u32, mut bytes: &[u8]) {
    // SAFETY: `gpa` is the console ring page from start-info.
    let mem = unsafe { crate::arch::shared_page(gpa) };
    let Ok(mut prod) = ByteProducer::new(mem, ByteRingLayout::CONSOLE_OUT) else { return };
    while !bytes.is_empty() {
        match prod.write(bytes) {
            Ok(0) => {
                // Full: make sure the back-end is awake, then wait for room.
                crate::evtchn::notify(port);
                RING_NOTIFIES.fetch_add(1, SeqCst);
                crate::arch::pause();
            }
            Ok(n) => bytes = &bytes[n..],
            Err(_) => {
                // A corrupt ring: fall back to the hypercall for good.
                use_hypercall();
                let _ = crate::hypercall::console_write(bytes);
                return;
            }
        }
    }
    crate::evtchn::notify(port);
    RING_NOTIFIES.fetch_add(1, SeqCst);
}

/// Writes formatted text to the VMM console (used by the macros).
pub fn print_fmt(args: fmt::Arguments<'_>) {
    let mut con = Console::new(|bytes: &[u8]| {
        let port = RING_PORT.load(SeqCst);
        if port != 0 {
            ring_write(RING_GPA.load(SeqCst), port, bytes);
        } else {
            let _ = crate::hypercall::console_write(bytes);
        }
    });
    let _ = fmt::Write::write_fmt(&mut con, args);
}

/// Writes raw bytes to the console (ring or hypercall, as configured).
pub fn write_bytes(bytes: &[u8]) {
    let port = RING_PORT.load(SeqCst);
    if port != 0 {
        ring_write(RING_GPA.load(SeqCst), port, bytes);
    } else {
        let _ = crate::hypercall::console_write(bytes);
    }
}

/// Prints to the VMM console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print_fmt(format_args!($($arg)*)) };
}

/// Prints a line to the VMM console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::print_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;
    use std::vec::Vec;

    #[test]
    fn flushes_per_line_and_when_full() {
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        {
            let mut con = Console::new(|b: &[u8]| chunks.push(b.to_vec()));
            write!(con, "ab\ncd").unwrap();
            let long = [b'x'; BUF_LEN + 3];
            con.write_str(core::str::from_utf8(&long).unwrap()).unwrap();
        }
        assert_eq!(chunks[0], b"ab\n");
        assert_eq!(chunks[1].len(), BUF_LEN);
        assert_eq!(&chunks[1][..2], b"cd");
        assert_eq!(chunks[2].len(), 5);
        assert_eq!(chunks.concat().len(), 3 + 2 + BUF_LEN + 3);
    }
}
