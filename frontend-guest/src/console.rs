//! Guest console output: `print!`/`println!` over the console hypercall,
//! batching a line (or up to [`BUF_LEN`] bytes) per exit.

use core::fmt;

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

/// Writes formatted text to the VMM console (used by the macros).
pub fn print_fmt(args: fmt::Arguments<'_>) {
    let mut con = Console::new(|bytes: &[u8]| {
        let _ = crate::hypercall::console_write(bytes);
    });
    let _ = fmt::Write::write_fmt(&mut con, args);
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
