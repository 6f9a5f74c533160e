//! The destination of a live migration (`vmm run --incoming`): the
//! configuration first (the caller builds the VM from it, disks opened
//! with their locks deferred), then the pages straight into the new VM's
//! RAM, the state, the end; then the caller restores the state, takes the
//! image locks and answers.
//!
//! The stream is the peer's: every record is checked (order, sizes,
//! page addresses inside RAM) and anything else refuses the stream with
//! one [`StreamError`], never a panic.

use super::stream::{self, Kind, StreamError, PAGE_SIZE};
use super::Connection;
use crate::memory::GuestRam;
use std::io::{BufReader, Write};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

/// An accepted migration stream.
pub struct Incoming {
    r: BufReader<Connection>,
    buf: Vec<u8>,
}

/// What arrived after the configuration.
#[derive(Debug, Default)]
pub struct Received {
    /// The state record's payload.
    pub state: Vec<u8>,
    /// Pre-copy rounds the source announced.
    pub rounds: u32,
    /// Pages written (data and zero).
    pub pages: u64,
    /// Bytes read.
    pub bytes: u64,
}

impl Incoming {
    /// Reads the header and the configuration record from `conn`.
    pub fn start(conn: Connection) -> Result<(Incoming, Vec<u8>), StreamError> {
        let mut inc = Incoming { r: BufReader::with_capacity(1 << 20, conn), buf: Vec::new() };
        stream::read_header(&mut inc.r)?;
        match stream::read_record(&mut inc.r, &mut inc.buf)? {
            Kind::Config => {
                let config = std::mem::take(&mut inc.buf);
                Ok((inc, config))
            }
            k => Err(StreamError::Malformed(format!("a {k:?} record before the configuration"))),
        }
    }

    /// Reads pages into `ram` until the end of the stream; returns the
    /// state. `ram` must be zero where no page arrives ([`zero_ram`]).
    pub fn receive(&mut self, ram: &GuestRam) -> Result<Received, StreamError> {
        let mut got = Received::default();
        loop {
            let kind = stream::read_record(&mut self.r, &mut self.buf)?;
            got.bytes += (stream::FRAME_LEN + self.buf.len()) as u64;
            match kind {
                Kind::Pages => {
                    for (gpa, data) in stream::pages(&self.buf)? {
                        write_page(ram, gpa, data)?;
                        got.pages += 1;
                    }
                }
                Kind::ZeroPages => {
                    for gpa in stream::zero_pages(&self.buf)? {
                        write_page(ram, gpa, &[0u8; PAGE_SIZE])?;
                        got.pages += 1;
                    }
                }
                Kind::Round => {
                    let n = self.buf.get(..4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
                    got.rounds = n.ok_or_else(|| StreamError::Malformed("a short Round record".into()))?;
                }
                Kind::State if got.state.is_empty() => got.state = std::mem::take(&mut self.buf),
                Kind::End if !got.state.is_empty() => return Ok(got),
                k => return Err(StreamError::Malformed(format!("an unexpected {k:?} record"))),
            }
        }
    }

    /// Tells the source how it ended: `Ok` = the VM runs here now.
    pub fn answer(&mut self, r: Result<(), &str>) -> std::io::Result<()> {
        let w = self.r.get_mut();
        match r {
            Ok(()) => stream::write_record(w, Kind::Resumed, &[])?,
            Err(why) => stream::write_record(w, Kind::Failed, &[why.as_bytes()])?,
        }
        w.flush()
    }
}

fn write_page(ram: &GuestRam, gpa: u64, data: &[u8]) -> Result<(), StreamError> {
    if gpa % PAGE_SIZE as u64 != 0 {
        return Err(StreamError::Malformed(format!("page address {gpa:#x} is not page-aligned")));
    }
    ram.write(gpa, data).map_err(|_| {
        StreamError::Malformed(format!("page {gpa:#x} lies outside this VM's {} bytes of RAM", ram.size()))
    })
}

/// Zeroes all of guest RAM (the builder's boot pages included): the
/// source sends only the pages that hold data.
pub fn zero_ram(ram: &GuestRam) {
    for region in ram.mem().iter() {
        let len = region.len() as usize;
        let Ok(host) = region.get_host_address(MemoryRegionAddress(0)) else { continue };
        // SAFETY: `host..host+len` is this region's private anonymous
        // mapping, owned by the guest memory that outlives the call;
        // MADV_DONTNEED only replaces its pages with zero-fill ones (KVM
        // drops its own mappings through the MMU notifier).
        let rc = unsafe { libc::madvise(host.cast(), len, libc::MADV_DONTNEED) };
        if rc != 0 {
            // Not anonymous after all: zero it by hand.
            let zeros = vec![0u8; PAGE_SIZE];
            let start = region.start_addr().0;
            for off in (0..len as u64).step_by(PAGE_SIZE) {
                let _ = ram.write(start + off, &zeros);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Slot;

    fn ram() -> GuestRam {
        GuestRam::new(&[Slot { start: 0, len: 16 * PAGE_SIZE as u64, readonly: false }]).unwrap()
    }

    /// A source's stream, from a byte vector through a Unix socket pair.
    fn incoming(bytes: Vec<u8>) -> Connection {
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let _ = b.write_all(&bytes);
            // The source is done writing: a reader wanting more sees EOF.
            let _ = b.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut b, &mut sink);
        });
        Connection::Unix(a)
    }

    fn stream_of(records: &[(Kind, Vec<u8>)]) -> Vec<u8> {
        let mut s = Vec::new();
        stream::write_header(&mut s).unwrap();
        for (k, p) in records {
            stream::write_record(&mut s, *k, &[p]).unwrap();
        }
        s
    }

    fn page_record(gpa: u64, fill: u8) -> Vec<u8> {
        [&gpa.to_le_bytes()[..], &[fill; PAGE_SIZE]].concat()
    }

    #[test]
    fn pages_land_and_zero_pages_clear() {
        let ram = ram();
        ram.write(0x3000, &[9; 8]).unwrap();
        let s = stream_of(&[
            (Kind::Config, b"cfg".to_vec()),
            (Kind::Pages, page_record(0x2000, 0xab)),
            (Kind::ZeroPages, 0x3000u64.to_le_bytes().to_vec()),
            (Kind::Round, [1u32.to_le_bytes(), 0u32.to_le_bytes()].concat()),
            (Kind::State, b"state".to_vec()),
            (Kind::End, vec![]),
        ]);
        let (mut inc, cfg) = Incoming::start(incoming(s)).unwrap();
        assert_eq!(cfg, b"cfg");
        let got = inc.receive(&ram).unwrap();
        assert_eq!((got.state.as_slice(), got.rounds, got.pages), (&b"state"[..], 1, 2));
        assert_eq!(ram.read_vec(0x2000, 2).unwrap(), [0xab, 0xab]);
        assert_eq!(ram.read_vec(0x3000, 8).unwrap(), [0; 8]);
    }

    /// Pages outside RAM or unaligned, records out of order, an end
    /// without a state: refused, RAM untouched beyond.
    #[test]
    fn hostile_streams_are_refused() {
        let cases: Vec<Vec<(Kind, Vec<u8>)>> = vec![
            vec![(Kind::Pages, page_record(0, 1))],
            vec![(Kind::Config, vec![]), (Kind::Pages, page_record(16 * PAGE_SIZE as u64, 1))],
            vec![(Kind::Config, vec![]), (Kind::Pages, page_record(u64::MAX - 10, 1))],
            vec![(Kind::Config, vec![]), (Kind::Pages, page_record(0x801, 1))],
            vec![(Kind::Config, vec![]), (Kind::End, vec![])],
            vec![(Kind::Config, vec![]), (Kind::State, b"s".to_vec()), (Kind::State, b"s".to_vec())],
            vec![(Kind::Config, vec![]), (Kind::Config, vec![])],
            vec![(Kind::Config, vec![]), (Kind::Round, vec![1])],
            vec![(Kind::Config, vec![]), (Kind::Resumed, vec![])],
            vec![(Kind::Config, vec![]), (Kind::Pages, page_record(0, 1))],
        ];
        for (i, c) in cases.into_iter().enumerate() {
            let ram = ram();
            let r = Incoming::start(incoming(stream_of(&c))).and_then(|(mut inc, _)| inc.receive(&ram));
            assert!(r.is_err(), "case {i} accepted");
        }
    }

    #[test]
    fn zero_ram_clears_everything() {
        let ram = ram();
        ram.write(0x5000, &[1; 100]).unwrap();
        zero_ram(&ram);
        assert!(ram.read_vec(0, 16 * PAGE_SIZE as u64).unwrap().iter().all(|&b| b == 0));
    }
}
