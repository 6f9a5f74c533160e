//! The migration stream: a versioned header, then framed records, each
//! with its own CRC-32 (docs/migration.md has the byte layout).
//!
//! ```text
//! header : magic "PVKVMIG\0" (8) | version u32 | page size u32
//! record : kind u32 | length u32 | crc32(kind, length, payload) u32 | reserved u32 | payload
//! ```
//!
//! All integers are little-endian. The source sends `Config`, then
//! `Pages`/`ZeroPages` records (one pre-copy round after another, each
//! round closed by a `Round` record), then `State` and `End`; the
//! destination answers `End` with `Resumed` or `Failed`. A reader refuses
//! another magic or version, an unknown kind, a record longer than
//! [`MAX_RECORD`] (the length is the peer's: it must not size an
//! allocation unchecked) and a checksum mismatch.

use std::io::{Read, Write};

/// The stream's magic.
pub const MAGIC: [u8; 8] = *b"PVKVMIG\0";
/// The stream format version; a stream of another version is refused.
pub const VERSION: u32 = 1;
/// The page size of `Pages` records.
pub const PAGE_SIZE: usize = 4096;
/// The longest record payload accepted.
pub const MAX_RECORD: u32 = 32 << 20;
/// Pages per `Pages` record (1 MiB of data).
pub const PAGES_PER_RECORD: usize = 256;

/// Bytes of the header.
pub const HEADER_LEN: usize = 16;
/// Bytes of a record's frame before its payload.
pub const FRAME_LEN: usize = 16;

/// A record kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// The VM configuration (opaque to this module: the CLI's JSON).
    Config = 1,
    /// Pages: repeated `gpa u64 | 4096 bytes`.
    Pages = 2,
    /// Pages that are all zero: repeated `gpa u64`.
    ZeroPages = 3,
    /// The end of one pre-copy round: `round u32 | pages u64`.
    Round = 4,
    /// The VM state (vCPUs, domain, devices; opaque here).
    State = 5,
    /// The source is done: the destination may run the VM.
    End = 6,
    /// Destination to source: the VM runs here now.
    Resumed = 0x101,
    /// Destination to source: it refused the stream (payload: why, UTF-8).
    Failed = 0x102,
}

impl Kind {
    fn from_u32(v: u32) -> Option<Kind> {
        Some(match v {
            1 => Kind::Config,
            2 => Kind::Pages,
            3 => Kind::ZeroPages,
            4 => Kind::Round,
            5 => Kind::State,
            6 => Kind::End,
            0x101 => Kind::Resumed,
            0x102 => Kind::Failed,
            _ => return None,
        })
    }
}

/// Why a stream was refused.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The peer closed or the connection failed.
    #[error("the migration connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// Not a migration stream.
    #[error("not a migration stream (bad magic {0:02x?})")]
    BadMagic([u8; 8]),
    /// Another format version.
    #[error(
        "migration stream version {got}, this VMM speaks version {VERSION}: use the same VMM version on both ends"
    )]
    Version {
        /// The version the peer sent.
        got: u32,
    },
    /// A page size this VMM does not use.
    #[error("migration stream page size {0}, expected {PAGE_SIZE}")]
    PageSize(u32),
    /// An unknown record kind.
    #[error("corrupt migration stream: unknown record kind {0:#x}")]
    UnknownKind(u32),
    /// A record longer than [`MAX_RECORD`].
    #[error("corrupt migration stream: a record of {0} bytes (at most {MAX_RECORD})")]
    TooLong(u32),
    /// The record does not match its checksum.
    #[error("corrupt migration stream: {kind:?} record checksum {got:#010x}, expected {want:#010x}")]
    Checksum {
        /// The record.
        kind: Kind,
        /// The checksum computed over the payload.
        got: u32,
        /// The checksum in the frame.
        want: u32,
    },
    /// A record that is well framed but makes no sense here.
    #[error("corrupt migration stream: {0}")]
    Malformed(String),
}

/// Writes the header.
pub fn write_header(w: &mut impl Write) -> std::io::Result<()> {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
    w.write_all(&h)
}

/// Reads and checks the header.
pub fn read_header(r: &mut impl Read) -> Result<(), StreamError> {
    let mut h = [0u8; HEADER_LEN];
    r.read_exact(&mut h)?;
    let magic: [u8; 8] = h[..8].try_into().unwrap_or_default();
    if magic != MAGIC {
        return Err(StreamError::BadMagic(magic));
    }
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    if word(8) != VERSION {
        return Err(StreamError::Version { got: word(8) });
    }
    if word(12) != PAGE_SIZE as u32 {
        return Err(StreamError::PageSize(word(12)));
    }
    Ok(())
}

/// Writes one record made of `parts` (one payload, written without
/// copying it together).
pub fn write_record(w: &mut impl Write, kind: Kind, parts: &[&[u8]]) -> std::io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(len).ok().filter(|&l| l <= MAX_RECORD).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("a {kind:?} record of {len} bytes is too long"))
    })?;
    let mut f = [0u8; FRAME_LEN];
    f[..4].copy_from_slice(&(kind as u32).to_le_bytes());
    f[4..8].copy_from_slice(&len.to_le_bytes());
    // The frame's kind and length are covered too: a flipped kind must
    // not turn one valid record into another.
    let mut crc = crc32fast::Hasher::new();
    crc.update(&f[..8]);
    parts.iter().for_each(|p| crc.update(p));
    f[8..12].copy_from_slice(&crc.finalize().to_le_bytes());
    w.write_all(&f)?;
    parts.iter().try_for_each(|p| w.write_all(p))
}

/// Reads one record into `buf` (reused between records); returns its kind.
pub fn read_record(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<Kind, StreamError> {
    let mut f = [0u8; FRAME_LEN];
    r.read_exact(&mut f)?;
    let word = |i: usize| u32::from_le_bytes([f[i], f[i + 1], f[i + 2], f[i + 3]]);
    let kind = Kind::from_u32(word(0)).ok_or(StreamError::UnknownKind(word(0)))?;
    let len = word(4);
    if len > MAX_RECORD {
        return Err(StreamError::TooLong(len));
    }
    buf.clear();
    buf.resize(len as usize, 0);
    r.read_exact(buf)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&f[..8]);
    crc.update(buf);
    let got = crc.finalize();
    if got != word(8) {
        return Err(StreamError::Checksum { kind, got, want: word(8) });
    }
    Ok(kind)
}

/// The pages of a `Pages` payload: `(gpa, data)`.
pub fn pages(payload: &[u8]) -> Result<impl Iterator<Item = (u64, &[u8])>, StreamError> {
    const ONE: usize = 8 + PAGE_SIZE;
    if payload.len() % ONE != 0 {
        return Err(StreamError::Malformed(format!("a Pages record of {} bytes", payload.len())));
    }
    Ok(payload.chunks_exact(ONE).map(|c| (u64::from_le_bytes(c[..8].try_into().unwrap_or_default()), &c[8..])))
}

/// The addresses of a `ZeroPages` payload.
pub fn zero_pages(payload: &[u8]) -> Result<impl Iterator<Item = u64> + '_, StreamError> {
    if payload.len() % 8 != 0 {
        return Err(StreamError::Malformed(format!("a ZeroPages record of {} bytes", payload.len())));
    }
    Ok(payload.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(records: &[(Kind, &[u8])]) -> Vec<u8> {
        let mut s = Vec::new();
        write_header(&mut s).unwrap();
        for (k, p) in records {
            write_record(&mut s, *k, &[p]).unwrap();
        }
        s
    }

    #[test]
    fn records_round_trip() {
        let page = vec![7u8; PAGE_SIZE];
        let payload = [&0x5000u64.to_le_bytes()[..], &page].concat();
        let s = stream(&[(Kind::Config, b"{}"), (Kind::Pages, &payload), (Kind::End, b"")]);
        let mut r = &s[..];
        read_header(&mut r).unwrap();
        let mut buf = Vec::new();
        assert_eq!(read_record(&mut r, &mut buf).unwrap(), Kind::Config);
        assert_eq!(buf, b"{}");
        assert_eq!(read_record(&mut r, &mut buf).unwrap(), Kind::Pages);
        let got: Vec<_> = pages(&buf).unwrap().collect();
        assert_eq!(got, [(0x5000, &page[..])]);
        assert_eq!(read_record(&mut r, &mut buf).unwrap(), Kind::End);
        assert!(matches!(read_record(&mut r, &mut buf), Err(StreamError::Io(_))), "end of stream");
    }

    #[test]
    fn another_version_or_magic_is_refused() {
        let mut s = stream(&[]);
        s[8] = 2;
        let e = read_header(&mut &s[..]).unwrap_err();
        assert!(matches!(e, StreamError::Version { got: 2 }), "{e}");
        assert!(e.to_string().contains("version 2"), "{e}");
        assert!(matches!(read_header(&mut &b"GET / HTTP/1.1\r\n\r\n"[..]), Err(StreamError::BadMagic(_))));
        assert!(matches!(read_header(&mut &b"PVK"[..]), Err(StreamError::Io(_))), "truncated");
    }

    /// Every single-bit flip in a record is caught (frame or payload),
    /// never a panic or an allocation the peer sized.
    #[test]
    fn every_bit_flip_in_a_record_is_refused() {
        let s = stream(&[(Kind::Config, b"{\"mem\":\"64M\"}")]);
        for bit in HEADER_LEN * 8..s.len() * 8 {
            let mut t = s.clone();
            t[bit / 8] ^= 1 << (bit % 8);
            let mut r = &t[HEADER_LEN..];
            let mut buf = Vec::new();
            match read_record(&mut r, &mut buf) {
                Err(_) => {}
                // The reserved word is not checked.
                Ok(_) => assert!((12..16).contains(&(bit / 8 - HEADER_LEN)), "bit {bit} flipped unnoticed"),
            }
        }
    }

    #[test]
    fn oversized_lengths_and_odd_payloads_are_refused() {
        let mut f = [0u8; FRAME_LEN];
        f[..4].copy_from_slice(&(Kind::Pages as u32).to_le_bytes());
        f[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(read_record(&mut &f[..], &mut Vec::new()), Err(StreamError::TooLong(_))));
        f[..4].copy_from_slice(&77u32.to_le_bytes());
        assert!(matches!(read_record(&mut &f[..], &mut Vec::new()), Err(StreamError::UnknownKind(77))));
        assert!(pages(&[0u8; 9]).is_err());
        assert!(zero_pages(&[0u8; 9]).is_err());
        assert_eq!(zero_pages(&[1, 0, 0, 0, 0, 0, 0, 0]).unwrap().collect::<Vec<_>>(), [1]);
    }
}
