//! Guest memory in the snapshot: one file as large as guest RAM, the byte
//! at offset `gpa` holding guest-physical byte `gpa`, written sparsely:
//! only pages holding a non-zero byte are written, the rest stay holes
//! (`SEEK_HOLE`/`SEEK_DATA` find them; `du` shows the real size). Restore
//! drops whatever the builder put in RAM (`MADV_DONTNEED` on the private
//! anonymous mapping reads back as zeros) and copies in the data ranges.

use super::SnapshotError;
use pv_abi::layout::PAGE_SIZE;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use xen_domain::guest_memory::GuestRam;

/// How much RAM is copied at once.
const CHUNK: u64 = 1 << 20;

fn io(path: &Path) -> impl Fn(std::io::Error) -> SnapshotError + '_ {
    move |e| SnapshotError::Io { path: path.to_path_buf(), source: e }
}

/// Whether a page holds only zeros (16 bytes at a time: this runs over
/// every resident page of a 1 GiB guest).
fn is_zero(page: &[u8]) -> bool {
    page.chunks_exact(16).all(|c| u128::from_ne_bytes(c.try_into().unwrap_or([1; 16])) == 0)
}

/// Which pages of each region of `ram` are resident (`mincore`): a page
/// the guest never touched is not, and reads as zeros, so it is skipped
/// without being read. `None` where the kernel cannot say (then every
/// page is looked at).
fn resident(ram: &GuestRam) -> Vec<(u64, Option<Vec<u8>>)> {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
    ram.mem()
        .iter()
        .map(|region| {
            let start = region.start_addr().0;
            let pages = (region.len() / PAGE_SIZE) as usize;
            let Ok(host) = region.get_host_address(MemoryRegionAddress(0)) else { return (start, None) };
            let mut vec = vec![0u8; pages];
            // SAFETY: `host..host + len` is one mapped region of guest
            // RAM, alive for this call; mincore only writes `pages` bytes
            // into `vec`.
            let r = unsafe { libc::mincore(host.cast(), region.len() as usize, vec.as_mut_ptr()) };
            (start, (r == 0).then_some(vec))
        })
        .collect()
}

/// Writes `ram` to `path` (created or truncated); returns the number of
/// bytes written (pages holding data).
pub fn save(ram: &GuestRam, path: &Path) -> Result<u64, SnapshotError> {
    let file = File::create(path).map_err(io(path))?;
    file.set_len(ram.size()).map_err(io(path))?;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut written = 0;
    let page = PAGE_SIZE as usize;
    let regions = resident(ram);
    let is_resident = |gpa: u64| {
        let (start, map) = regions.iter().rev().find(|(s, _)| *s <= gpa).map_or((0, None), |(s, m)| (*s, m.as_ref()));
        map.is_none_or(|m| m.get(((gpa - start) / PAGE_SIZE) as usize).is_none_or(|b| b & 1 != 0))
    };
    let mut gpa = 0;
    while gpa < ram.size() {
        if !is_resident(gpa) {
            gpa += PAGE_SIZE;
            continue;
        }
        // A run of resident pages, at most one chunk.
        let mut len = 0;
        while len < CHUNK && gpa + len < ram.size() && is_resident(gpa + len) {
            len += PAGE_SIZE;
        }
        let len = len as usize;
        ram.read(gpa, &mut buf[..len]).map_err(|e| SnapshotError::Memory(e.to_string()))?;
        let mut p = 0;
        while p < len {
            if is_zero(&buf[p..p + page]) {
                p += page;
                continue;
            }
            let start = p;
            while p < len && !is_zero(&buf[p..p + page]) {
                p += page;
            }
            file.write_all_at(&buf[start..p], gpa + start as u64).map_err(io(path))?;
            written += (p - start) as u64;
        }
        gpa += len as u64;
    }
    file.sync_all().map_err(io(path))?;
    Ok(written)
}

/// Drops every page of `ram` (it reads as zeros afterwards).
fn discard(ram: &GuestRam) -> Result<(), SnapshotError> {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
    for region in ram.mem().iter() {
        let host = region.get_host_address(MemoryRegionAddress(0)).map_err(|e| SnapshotError::Memory(e.to_string()))?;
        // SAFETY: `host..host + len` is exactly one region of the guest's
        // private anonymous mapping, owned by `ram` and alive for this
        // call; MADV_DONTNEED on such a mapping only makes its pages read
        // as zeros again (no vCPU runs while a snapshot is restored).
        let r = unsafe { libc::madvise(host.cast(), region.len() as usize, libc::MADV_DONTNEED) };
        if r != 0 {
            return Err(SnapshotError::Memory(format!("madvise: {}", std::io::Error::last_os_error())));
        }
    }
    Ok(())
}

/// `lseek(fd, at, whence)`, `None` past the last data (`ENXIO`).
fn seek(file: &File, at: u64, whence: libc::c_int) -> Option<u64> {
    // SAFETY: lseek on an open fd has no memory effects.
    let r = unsafe { libc::lseek(file.as_raw_fd(), at as libc::off_t, whence) };
    (r >= 0).then_some(r as u64)
}

/// Loads `path` (written by [`save`]) into `ram`, which must be as large
/// as the file; returns the bytes copied.
pub fn restore(ram: &GuestRam, path: &Path) -> Result<u64, SnapshotError> {
    let file = File::open(path).map_err(io(path))?;
    let len = file.metadata().map_err(io(path))?.len();
    if len != ram.size() {
        return Err(SnapshotError::Corrupt {
            path: path.to_path_buf(),
            why: format!("{len} bytes of memory for a guest of {} bytes", ram.size()),
        });
    }
    discard(ram)?;
    let mut buf = vec![0u8; CHUNK as usize];
    let (mut at, mut copied) = (0, 0);
    while at < len {
        // A file system without SEEK_DATA reports all of it as data.
        let Some(start) = seek(&file, at, libc::SEEK_DATA) else { break };
        let end = seek(&file, start, libc::SEEK_HOLE).unwrap_or(len).min(len);
        let mut pos = start;
        while pos < end {
            let n = CHUNK.min(end - pos) as usize;
            file.read_exact_at(&mut buf[..n], pos).map_err(io(path))?;
            ram.write(pos, &buf[..n]).map_err(|e| SnapshotError::Memory(e.to_string()))?;
            pos += n as u64;
            copied += n as u64;
        }
        at = end;
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use xen_domain::guest_memory::Slot;

    fn ram(mib: u64) -> GuestRam {
        GuestRam::new(&[
            Slot { start: 0, len: (mib / 2) << 20, readonly: false },
            Slot { start: (mib / 2) << 20, len: (mib / 2) << 20, readonly: false },
        ])
        .unwrap()
    }

    /// Data pages (in both slots, across a chunk boundary) come back; a
    /// page that was zero at the snapshot is zero after the restore even
    /// where the restoring VM had written something (the builder's
    /// image); the file is sparse.
    #[test]
    fn sparse_round_trip_drops_what_the_target_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory");
        let src = ram(8);
        let marks = [(0u64, 0x11u8), (CHUNK - PAGE_SIZE, 0x22), (CHUNK + 123, 0x33), ((6 << 20) + 7, 0x44)];
        for (gpa, v) in marks {
            src.write(gpa, &[v; 100]).unwrap();
        }
        // A page touched but zero again: not written.
        src.write(5 << 20, &[9; 8]).unwrap();
        src.write(5 << 20, &[0; 8]).unwrap();
        let written = save(&src, &path).unwrap();
        assert_eq!(written, 4 * PAGE_SIZE, "the four data pages only");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 8 << 20);
        assert!(meta.blocks() * 512 < 1 << 20, "sparse: {} blocks", meta.blocks());

        let dst = ram(8);
        dst.write(3 << 20, &[0x55; 4096]).unwrap();
        let copied = restore(&dst, &path).unwrap();
        assert!(copied >= written, "{copied} < {written}");
        for (gpa, v) in marks {
            let mut b = [0u8; 100];
            dst.read(gpa, &mut b).unwrap();
            assert_eq!(b, [v; 100], "at {gpa:#x}");
        }
        let mut b = vec![0u8; 4096];
        dst.read(3 << 20, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 0), "the restoring VM's own data is dropped");
    }

    #[test]
    fn a_memory_file_of_another_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory");
        save(&ram(8), &path).unwrap();
        let e = restore(&ram(16), &path).unwrap_err().to_string();
        assert!(e.contains("8388608 bytes of memory for a guest of 16777216 bytes"), "{e}");
    }
}
