//! The state file's container: a fixed header (magic, format version,
//! payload length, checksum) and a JSON payload (serde). The header is
//! checked before a byte of the payload is parsed, so a file from another
//! format version, a truncated one or a tampered one is refused with an
//! error naming what is wrong, never parsed into a half-state.
//!
//! ```text
//! offset size
//!      0    8  magic "PVSNAPST"
//!      8    4  format version (little endian), FORMAT_VERSION
//!     12    4  header length (32)
//!     16    8  payload length in bytes
//!     24    8  FNV-1a 64 of the payload
//!     32    -  payload: the JSON of `SnapshotState`
//! ```

use super::SnapshotError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;

/// The first eight bytes of every state file.
pub const MAGIC: [u8; 8] = *b"PVSNAPST";

/// The state format this build writes and the only one it reads. Bump it
/// whenever a saved type changes shape. 2: `SnapshotState::suspended`
/// (a cooperative snapshot).
pub const FORMAT_VERSION: u32 = 2;

/// Bytes before the payload.
pub const HEADER_LEN: usize = 32;

/// The largest payload a reader accepts (the state without guest memory is
/// a few hundred KiB even with 32 vCPUs): a tampered length cannot make
/// the reader allocate without bound.
pub const MAX_PAYLOAD: u64 = 64 << 20;

/// FNV-1a, 64 bits: detects accidental corruption and naive tampering of
/// the payload (not an authenticity check: the snapshot directory is as
/// trusted as the disk images next to it).
pub fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// `value` as a complete state file (header and payload).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, SnapshotError> {
    let payload = serde_json::to_vec(value).map_err(|e| SnapshotError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&fnv1a64(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Checks the header of `file` (the whole state file's bytes, read from
/// `path`) and parses the payload.
pub fn decode<T: DeserializeOwned>(path: &Path, file: &[u8]) -> Result<T, SnapshotError> {
    let path = path.to_path_buf();
    if file.len() < HEADER_LEN || file[..8] != MAGIC {
        return Err(SnapshotError::NotASnapshot(path));
    }
    let version = le_u32(file, 8);
    if version != FORMAT_VERSION {
        return Err(SnapshotError::Version { path, found: version, expected: FORMAT_VERSION });
    }
    if le_u32(file, 12) as usize != HEADER_LEN {
        return Err(SnapshotError::Corrupt { path, why: "bad header length".into() });
    }
    let len = le_u64(file, 16);
    let have = (file.len() - HEADER_LEN) as u64;
    if len > MAX_PAYLOAD || len != have {
        return Err(SnapshotError::Truncated {
            path,
            expected: len.saturating_add(HEADER_LEN as u64),
            got: file.len() as u64,
        });
    }
    let payload = &file[HEADER_LEN..];
    if fnv1a64(payload) != le_u64(file, 24) {
        return Err(SnapshotError::Corrupt { path, why: "checksum mismatch".into() });
    }
    serde_json::from_slice(payload).map_err(|e| SnapshotError::Corrupt { path, why: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct S {
        a: u32,
        b: Vec<u8>,
    }

    fn sample() -> Vec<u8> {
        encode(&S { a: 7, b: vec![1, 2, 3] }).unwrap()
    }

    #[test]
    fn round_trip() {
        let s: S = decode(Path::new("x"), &sample()).unwrap();
        assert_eq!(s, S { a: 7, b: vec![1, 2, 3] });
    }

    #[test]
    fn truncated_tampered_and_other_versions_are_refused() {
        let p = Path::new("x");
        let good = sample();
        for cut in [0, 7, HEADER_LEN - 1, HEADER_LEN, good.len() - 1] {
            let e = decode::<S>(p, &good[..cut]).unwrap_err();
            assert!(matches!(e, SnapshotError::NotASnapshot(_) | SnapshotError::Truncated { .. }), "{cut}: {e}");
        }
        let mut v = good.clone();
        for other in [1, FORMAT_VERSION + 1] {
            v[8] = other as u8;
            let e = decode::<S>(p, &v).unwrap_err().to_string();
            assert!(e.contains(&format!("format version {other},")) && e.contains("reads version 2"), "{e}");
        }
        // Every single-byte change of the payload is caught by the checksum.
        for at in HEADER_LEN..good.len() {
            let mut t = good.clone();
            t[at] ^= 0x20;
            assert!(decode::<S>(p, &t).is_err(), "flip at {at} not caught");
        }
        let mut t = good.clone();
        t[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode::<S>(p, &t), Err(SnapshotError::Truncated { .. })));
        let mut t = good;
        t[0] = b'X';
        assert!(matches!(decode::<S>(p, &t), Err(SnapshotError::NotASnapshot(_))));
    }

    /// A state file's payload is user input: whatever bytes (under a
    /// header that matches them) decode to an error or a value, never a
    /// panic; the same for bytes from a real-looking JSON state cut or
    /// spliced anywhere.
    #[test]
    fn any_payload_is_an_error_or_a_state_never_a_panic() {
        use proptest::prelude::*;
        let seal = |payload: &[u8]| {
            let mut f = Vec::from(MAGIC);
            f.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            f.extend_from_slice(&(HEADER_LEN as u32).to_le_bytes());
            f.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            f.extend_from_slice(&fnv1a64(payload).to_le_bytes());
            f.extend_from_slice(payload);
            f
        };
        let json = br#"{"config":{"kernel":{"bundled":"blk"},"mem_bytes":67108864,"cmdline":"","paging":0,"devices":[],"vcpus":1},"vcpus":[],"memory_bytes":0}"#;
        proptest!(ProptestConfig::with_cases(512), |(bytes in proptest::collection::vec(any::<u8>(), 0..512), cut in 0..json.len(), at in 0..json.len(), b in any::<u8>())| {
            let _ = decode::<crate::snapshot::SnapshotState>(Path::new("x"), &seal(&bytes));
            let _ = decode::<crate::snapshot::SnapshotState>(Path::new("x"), &seal(&json[..cut]));
            let mut spliced = json.to_vec();
            spliced[at] = b;
            let _ = decode::<crate::snapshot::SnapshotState>(Path::new("x"), &seal(&spliced));
        });
    }
}
