//! Where guest console output goes: [`ConsoleOut`] for the guest's console
//! (the console ring, the UART, and `console_io` from our own guests), and
//! [`HvConsole`] for a Xen guest's `console_io` and debug port 0xE9, which
//! Xen prints on its own (hypervisor) console.

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// The destination of guest console bytes (hypercall, ring and UART alike).
#[derive(Debug, Clone)]
pub enum ConsoleOut {
    /// The VMM's standard output.
    Stdout,
    /// The VMM's standard error (the hypervisor console, [`HvConsole`]).
    Stderr,
    /// A file.
    File(Arc<Mutex<File>>),
    /// An in-memory buffer (tests, benchmarks).
    Capture(Arc<Mutex<Vec<u8>>>),
    /// Dropped.
    Null,
}

impl ConsoleOut {
    /// A capturing sink and the buffer it fills.
    pub fn capture() -> (Self, Arc<Mutex<Vec<u8>>>) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        (ConsoleOut::Capture(buf.clone()), buf)
    }

    /// Writes guest bytes. Output errors are logged, never passed to the
    /// guest: a closed stdout must not crash the VM.
    pub fn write(&self, bytes: &[u8]) {
        let res = match self {
            ConsoleOut::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes).and_then(|_| out.flush())
            }
            ConsoleOut::Stderr => {
                let mut out = std::io::stderr().lock();
                out.write_all(bytes).and_then(|_| out.flush())
            }
            ConsoleOut::File(f) => f.lock().map_or(Ok(()), |mut f| f.write_all(bytes)),
            ConsoleOut::Capture(buf) => {
                if let Ok(mut b) = buf.lock() {
                    b.extend_from_slice(bytes);
                }
                Ok(())
            }
            ConsoleOut::Null => Ok(()),
        };
        if let Err(e) = res {
            tracing::warn!("console output failed: {e}");
        }
    }
}

/// The hypervisor console a Xen guest reaches through `console_io`
/// (`CONSOLEIO_write`) and the debug port 0xE9: not the guest's console
/// (that is the console ring), but Xen's own log, where each guest line
/// appears as `(d1) <line>` (`guest_console_write()` in
/// `xen/drivers/char/console.c`, `hvm_print_line()` in
/// `xen/arch/x86/hvm/hvm.c`). Only printable bytes are kept, lines are
/// bounded at [`HvConsole::MAX_LINE`] bytes, and at most
/// [`HvConsole::BURST`] lines per [`HvConsole::WINDOW`] are printed, so a
/// guest cannot flood the VMM's log.
#[derive(Debug)]
pub struct HvConsole {
    sink: ConsoleOut,
    domid: u16,
    line: Vec<u8>,
    limiter: pv_util::ratelimit::LogLimiter,
}

impl HvConsole {
    /// Longest line kept before it is printed anyway (Xen prints at most
    /// 127 bytes per `printk` chunk).
    pub const MAX_LINE: usize = 127;
    /// Lines admitted per [`WINDOW`](Self::WINDOW).
    pub const BURST: u32 = 200;
    /// The rate-limit window.
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

    /// A hypervisor console for domain `domid` printing to `sink`.
    pub fn new(sink: ConsoleOut, domid: u16) -> Self {
        HvConsole {
            sink,
            domid,
            line: Vec::with_capacity(Self::MAX_LINE),
            limiter: pv_util::ratelimit::LogLimiter::new(Self::BURST, Self::WINDOW),
        }
    }

    /// Takes guest bytes: printable ones (and tabs) are buffered, a newline
    /// or a full line prints the line.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.flush();
            } else if b == b'\t' || (0x20..0x7f).contains(&b) {
                self.line.push(b);
                if self.line.len() == Self::MAX_LINE {
                    self.flush();
                }
            }
        }
    }

    /// The part line buffered so far (a snapshot keeps it).
    pub fn pending_line(&self) -> &[u8] {
        &self.line
    }

    /// A restore: buffers `line` (at most [`MAX_LINE`](Self::MAX_LINE)
    /// bytes, printable ones only, as [`write`](Self::write) keeps them).
    pub fn restore_line(&mut self, line: &[u8]) {
        self.line.clear();
        let keep = line.iter().filter(|&&b| b == b'\t' || (0x20..0x7f).contains(&b));
        self.line.extend(keep.take(Self::MAX_LINE - 1));
    }

    /// Prints the buffered part line, if any (at shutdown: a last line
    /// without a newline is not lost).
    pub fn flush(&mut self) {
        if self.line.is_empty() {
            return;
        }
        if let Some(suppressed) = self.limiter.check() {
            let mut out = Vec::with_capacity(self.line.len() + 48);
            if suppressed > 0 {
                out.extend_from_slice(format!("(d{}) [{suppressed} lines suppressed]\n", self.domid).as_bytes());
            }
            out.extend_from_slice(format!("(d{}) ", self.domid).as_bytes());
            out.extend_from_slice(&self.line);
            out.push(b'\n');
            self.sink.write(&out);
        }
        self.line.clear();
    }
}

/// Against `hvm_print_line()` (`xen/arch/x86/hvm/hvm.c`) and
/// `guest_console_write()` (`xen/drivers/char/console.c`): printable bytes
/// only, line-buffered, `(d<id>) ` prefix.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_prefixed_printable_and_bounded() {
        let (out, buf) = ConsoleOut::capture();
        let mut c = HvConsole::new(out, 1);
        c.write(b"hel\x1b[1mlo\r\n");
        c.write(b"part");
        assert_eq!(&buf.lock().unwrap()[..], b"(d1) hel[1mlo\n");
        c.write(&[b'x'; 130]);
        c.flush();
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], format!("(d1) part{}", "x".repeat(HvConsole::MAX_LINE - 4)));
        assert_eq!(lines[2], "(d1) xxxxxxx");
    }

    #[test]
    fn a_flood_is_rate_limited() {
        let (out, buf) = ConsoleOut::capture();
        let mut c = HvConsole::new(out, 1);
        for _ in 0..10 * HvConsole::BURST {
            c.write(b"spam\n");
        }
        let n = buf.lock().unwrap().split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
        assert_eq!(n, HvConsole::BURST as usize);
    }
}
