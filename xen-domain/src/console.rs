//! Where guest console output goes (`console_io`, the console ring, the
//! UART and the debug port alike).

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// The destination of guest console bytes (hypercall, ring and UART alike).
#[derive(Debug, Clone)]
pub enum ConsoleOut {
    /// The VMM's standard output.
    Stdout,
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
