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

/// Writes `ram` to `path` (created or truncated); returns the number of
/// bytes written (pages holding data).
pub fn save(ram: &GuestRam, path: &Path) -> Result<u64, SnapshotError> {
    let file = File::create(path).map_err(io(path))?;
    file.set_len(ram.size()).map_err(io(path))?;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut written = 0;
    let mut gpa = 0;
    while gpa < ram.size() {
        let len = CHUNK.min(ram.size() - gpa) as usize;
        ram.read(gpa, &mut buf[..len]).map_err(|e| SnapshotError::Memory(e.to_string()))?;
        // Runs of pages with data, each one write.
        let mut page = 0;
        while page < len {
            let has_data = |p: usize| buf[p..p + PAGE_SIZE as usize].iter().any(|&b| b != 0);
            if !has_data(page) {
                page += PAGE_SIZE as usize;
                continue;
            }
            let start = page;
            while page < len && has_data(page) {
                page += PAGE_SIZE as usize;
            }
            file.write_all_at(&buf[start..page], gpa + start as u64).map_err(io(path))?;
            written += (page - start) as u64;
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
