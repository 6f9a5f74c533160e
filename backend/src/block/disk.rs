//! The file behind a virtual block device: a raw image, addressed in
//! 512-byte sectors.

use pv_abi::blkif::SECTOR_SIZE;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use vm_memory::VolatileSlice;

/// A disk as given on the command line: `<path>[,readonly][,lock=off]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// The raw image file.
    pub path: PathBuf,
    /// Whether the guest may only read.
    pub readonly: bool,
    /// Whether [`Disk::open`] takes the image's OFD lock (`true` unless
    /// `,lock=off`, which is unsafe: like QEMU's `file.locking=off`, it lets
    /// a second writer corrupt the image).
    pub lock: bool,
}

impl DiskSpec {
    /// A locked disk at `path`.
    pub fn new(path: impl Into<PathBuf>, readonly: bool) -> Self {
        DiskSpec { path: path.into(), readonly, lock: true }
    }
}

/// Why a disk could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A `--disk` argument that is not `<path>[,readonly][,lock=off]`.
    #[error("bad disk '{given}': {why} (expected <path>[,readonly][,lock=off])")]
    BadSpec {
        /// The argument.
        given: String,
        /// What is wrong with it.
        why: String,
    },
    /// The image could not be opened.
    #[error("cannot open disk image {}: {source}", path.display())]
    Open {
        /// The image.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Another open of the image holds a lock that conflicts with ours: a
    /// second writer, or a writer and a reader (as QEMU refuses them).
    #[error(
        "disk image {} is in use: another VMM or another --disk of this VM has it open {holder}; \
         stop that user or give the image once (several users may share it only if every one opens it ,readonly; \
         ,lock=off skips the lock, unsafe: concurrent writers corrupt the image)",
        path.display()
    )]
    Locked {
        /// The image.
        path: PathBuf,
        /// How the holder has it open: "for writing" or "read-only".
        holder: &'static str,
    },
    /// The image is not a regular file (or block device) of at least one sector.
    #[error("disk image {} is unusable: {why}", path.display())]
    Unusable {
        /// The image.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

impl std::fmt::Display for DiskSpec {
    /// The `<path>[,readonly][,lock=off]` text [`FromStr`] reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ro = if self.readonly { ",readonly" } else { "" };
        write!(f, "{}{ro}{}", self.path.display(), if self.lock { "" } else { ",lock=off" })
    }
}

impl FromStr for DiskSpec {
    type Err = DiskError;

    fn from_str(s: &str) -> Result<Self, DiskError> {
        let bad = |why: &str| DiskError::BadSpec { given: s.to_string(), why: why.to_string() };
        let mut parts = s.split(',');
        let path = parts.next().unwrap_or_default();
        if path.is_empty() {
            return Err(bad("no path"));
        }
        let (mut readonly, mut lock) = (false, true);
        for opt in parts {
            match opt {
                "readonly" | "ro" => readonly = true,
                "lock=off" => lock = false,
                "lock=on" => lock = true,
                "" => return Err(bad("empty option")),
                other => return Err(bad(&format!("unknown option '{other}'"))),
            }
        }
        Ok(DiskSpec { path: PathBuf::from(path), readonly, lock })
    }
}

/// An open raw image.
#[derive(Debug)]
pub struct Disk {
    /// Shared with the lock registry ([`super::lock_handover`]), which
    /// holds it weakly: the lock still goes with the `Disk`.
    file: std::sync::Arc<File>,
    path: PathBuf,
    sectors: u64,
    readonly: bool,
}

impl Disk {
    /// Opens the image named by `spec` (read-only if the spec says so) and
    /// locks it as QEMU does: an OFD lock over the whole file, shared for a
    /// read-only disk and exclusive for a writable one, so a second writer
    /// (another VMM, or the same image twice in this VM) is refused. The
    /// lock lives as long as the open file: it goes with the `Disk`, and
    /// with the process on any exit. `spec.lock == false` (`,lock=off`)
    /// skips the lock, as QEMU's `file.locking=off` does. Its size in
    /// sectors is fixed now; a trailing partial sector is not used.
    pub fn open(spec: &DiskSpec) -> Result<Disk, DiskError> {
        let path = spec.path.clone();
        let file = OpenOptions::new()
            .read(true)
            .write(!spec.readonly)
            .open(&path)
            .map_err(|source| DiskError::Open { path: path.clone(), source })?;
        if spec.lock {
            let file = std::sync::Arc::new(file);
            // Locked now, or at the switch-over of an incoming migration.
            if !super::lock_handover::register(&file, &path, spec.readonly) {
                lock(&file, &path, spec.readonly)?;
            }
            return Self::from_shared(file, &path, spec.readonly);
        } else {
            tracing::warn!(path = %path.display(), "disk image opened with lock=off: other users are not kept out");
        }
        Self::from_file(file, &path, spec.readonly)
    }

    /// Wraps an already open file. A trailing partial sector is not used,
    /// and a warning says so once, with the sectors the guest sees.
    pub fn from_file(file: File, path: &Path, readonly: bool) -> Result<Disk, DiskError> {
        Self::from_shared(std::sync::Arc::new(file), path, readonly)
    }

    fn from_shared(file: std::sync::Arc<File>, path: &Path, readonly: bool) -> Result<Disk, DiskError> {
        let unusable = |why: String| DiskError::Unusable { path: path.to_path_buf(), why };
        let meta = file.metadata().map_err(|e| unusable(e.to_string()))?;
        let bytes = if meta.file_type().is_file() {
            meta.len()
        } else {
            // A block device: its size is where the end is.
            use std::io::Seek;
            (&*file).seek(std::io::SeekFrom::End(0)).map_err(|e| unusable(e.to_string()))?
        };
        let sectors = bytes / SECTOR_SIZE;
        if sectors == 0 {
            return Err(unusable(format!("{bytes} bytes is less than one 512-byte sector")));
        }
        let tail = bytes % SECTOR_SIZE;
        if tail != 0 {
            // Once per open, at start-up: the user chose the file, and its
            // last bytes will never reach the guest.
            tracing::warn!(
                path = %path.display(),
                bytes,
                sectors,
                unused = tail,
                "disk image is not a multiple of 512 bytes: the guest sees {sectors} sectors, the last {tail} bytes are not used"
            );
        }
        Ok(Disk { file, path: path.to_path_buf(), sectors, readonly })
    }

    /// Size in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Whether the guest may only read.
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// The image path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file (for benchmarks comparing against raw I/O).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Whether `nr` sectors from `sector` lie inside the disk.
    pub fn in_range(&self, sector: u64, nr: u64) -> bool {
        sector.checked_add(nr).is_some_and(|end| end <= self.sectors)
    }

    /// Reads `buf.len()` bytes at sector `sector`.
    pub fn read_at(&self, sector: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(buf, sector * SECTOR_SIZE)
    }

    /// Reads from sector `sector` straight into `bufs`, in order (guest
    /// pages; one `preadv`, repeated only on a short read).
    pub fn read_vectored(&self, sector: u64, bufs: &[VolatileSlice<'_>]) -> std::io::Result<()> {
        self.vectored(sector, bufs, false)
    }

    /// Writes `bufs`, in order, from sector `sector` (one `pwritev`,
    /// repeated only on a short write).
    pub fn write_vectored(&self, sector: u64, bufs: &[VolatileSlice<'_>]) -> std::io::Result<()> {
        self.vectored(sector, bufs, true)
    }

    fn vectored(&self, sector: u64, bufs: &[VolatileSlice<'_>], write: bool) -> std::io::Result<()> {
        if let [one] = bufs {
            return self.single(sector, one, write);
        }
        // The guards keep the slices' pointers valid across the system call.
        let guards: Vec<_> = bufs.iter().map(|b| b.ptr_guard_mut()).collect();
        let mut iov: Vec<libc::iovec> = guards
            .iter()
            .zip(bufs)
            .map(|(g, b)| libc::iovec { iov_base: g.as_ptr().cast(), iov_len: b.len() })
            .collect();
        let mut off = sector * SECTOR_SIZE;
        let mut first = 0;
        while first < iov.len() {
            if iov[first].iov_len == 0 {
                first += 1;
                continue;
            }
            let cnt = (iov.len() - first).min(1024) as libc::c_int;
            let at = file_offset(off)?;
            let (fd, p) = (self.file.as_raw_fd(), iov[first..].as_ptr());
            let rc = if write {
                // SAFETY: `p` points at `cnt` initialised iovecs, each naming
                // a range of a `VolatileSlice` of mapped guest memory that
                // stays mapped while `bufs` is borrowed; the kernel only
                // reads them. Guest memory is never behind a Rust reference.
                unsafe { libc::pwritev(fd, p, cnt, at) }
            } else {
                // SAFETY: as above; the kernel writes into those ranges,
                // which are guest memory only ever accessed volatilely.
                unsafe { libc::preadv(fd, p, cnt, at) }
            };
            let Some(mut n) = transferred(rc)? else { continue };
            off += n as u64;
            while n > 0 {
                let v = &mut iov[first];
                if n >= v.iov_len {
                    n -= v.iov_len;
                    first += 1;
                } else {
                    v.iov_base = v.iov_base.cast::<u8>().wrapping_add(n).cast();
                    v.iov_len -= n;
                    n = 0;
                }
            }
        }
        Ok(())
    }

    /// One buffer (the common 4 KiB case): plain `pread`/`pwrite`, which
    /// the kernel serves with less work than the vectored calls.
    fn single(&self, sector: u64, buf: &VolatileSlice<'_>, write: bool) -> std::io::Result<()> {
        let guard = buf.ptr_guard_mut();
        let mut off = sector * SECTOR_SIZE;
        let mut done = 0;
        while done < buf.len() {
            let (fd, p, len, at) =
                (self.file.as_raw_fd(), guard.as_ptr().wrapping_add(done), buf.len() - done, file_offset(off)?);
            let rc = if write {
                // SAFETY: `p..p+len` lies in a `VolatileSlice` of mapped guest
                // memory that stays mapped while `buf` is borrowed; the
                // kernel only reads it.
                unsafe { libc::pwrite(fd, p.cast(), len, at) }
            } else {
                // SAFETY: as above; the kernel writes into the range, which is
                // guest memory never behind a Rust reference.
                unsafe { libc::pread(fd, p.cast(), len, at) }
            };
            let Some(n) = transferred(rc)? else { continue };
            done += n;
            off += n as u64;
        }
        Ok(())
    }

    /// Makes every completed write durable (`fdatasync`).
    pub fn flush(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Discards `nr` sectors from `sector`: they read back as zeros. Punches
    /// a hole where the filesystem can, writes zeros where it cannot.
    pub fn discard(&self, sector: u64, nr: u64) -> std::io::Result<()> {
        let (off, len) = (sector * SECTOR_SIZE, nr * SECTOR_SIZE);
        if len == 0 {
            return Ok(());
        }
        let (Ok(off_i), Ok(len_i)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) else {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        };
        // SAFETY: `fallocate` on a file descriptor we own; it takes no
        // pointers and only changes the file's contents.
        let rc = unsafe {
            libc::fallocate(self.file.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, off_i, len_i)
        };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if !matches!(err.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)) {
            return Err(err);
        }
        let zeros = vec![0u8; 64 << 10];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            self.file.write_all_at(&zeros[..n], off + done)?;
            done += n as u64;
        }
        Ok(())
    }
}

/// Takes the whole-file OFD lock for `file` (`F_RDLCK` if `readonly`,
/// else `F_WRLCK`). OFD locks belong to the open file, not the process, so
/// two opens in one VMM conflict just as two VMMs do. A filesystem without
/// locks (some network filesystems) is used unlocked, with a warning.
pub(super) fn lock(file: &File, path: &Path, readonly: bool) -> Result<(), DiskError> {
    let want = if readonly { libc::F_RDLCK } else { libc::F_WRLCK };
    let mut fl = whole_file(want);
    // SAFETY: `fcntl(F_OFD_SETLK)` on a file descriptor we own, reading the
    // `flock` we pass, which lives across the call.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if !matches!(err.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) {
        tracing::warn!(path = %path.display(), error = %err, "disk image used without a lock");
        return Ok(());
    }
    // Ask who is in the way, to say how it has the image open.
    // SAFETY: `fcntl(F_OFD_GETLK)` on our descriptor; it writes the
    // conflicting lock into `fl`, which we own.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    let holder = if rc == 0 && fl.l_type == libc::F_RDLCK as i16 { "read-only" } else { "for writing" };
    Err(DiskError::Locked { path: path.to_path_buf(), holder })
}

pub(super) fn whole_file(l_type: libc::c_int) -> libc::flock {
    // SAFETY: `flock` is plain integers, for which all-zero is valid (and
    // `l_pid` must be 0 for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = l_type as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl
}

fn file_offset(off: u64) -> std::io::Result<libc::off_t> {
    libc::off_t::try_from(off).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// Bytes moved by a read/write system call; `None` to retry (`EINTR`).
fn transferred(rc: isize) -> std::io::Result<Option<usize>> {
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::Interrupted { Ok(None) } else { Err(e) };
    }
    if rc == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(rc as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!("a.img".parse::<DiskSpec>().unwrap(), DiskSpec::new("a.img", false));
        assert_eq!("/x/b.img,readonly".parse::<DiskSpec>().unwrap(), DiskSpec::new("/x/b.img", true));
        for bad in ["", ",readonly", "a.img,rw", "a.img,"] {
            let e = bad.parse::<DiskSpec>().unwrap_err().to_string();
            assert!(e.starts_with("bad disk"), "{bad}: {e}");
        }
    }

    #[test]
    fn open_errors_are_one_line() {
        let e = Disk::open(&"/nonexistent/x.img".parse().unwrap()).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/x.img") && !e.contains('\n'), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tiny.img");
        std::fs::write(&p, [0u8; 100]).unwrap();
        let e = Disk::open(&DiskSpec::new(p, false)).unwrap_err().to_string();
        assert!(e.contains("less than one 512-byte sector"), "{e}");
    }

    fn img(dir: &tempfile::TempDir) -> PathBuf {
        let p = dir.path().join("d.img");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        p
    }

    fn open(path: &Path, readonly: bool) -> Result<Disk, DiskError> {
        Disk::open(&DiskSpec::new(path, readonly))
    }

    #[test]
    fn a_second_writer_is_refused_with_the_holders_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = img(&dir);
        let a = open(&p, false).unwrap();
        for readonly in [false, true] {
            let e = open(&p, readonly).unwrap_err();
            assert!(matches!(e, DiskError::Locked { holder: "for writing", .. }), "{e}");
            let msg = e.to_string();
            assert!(msg.contains(&*p.to_string_lossy()) && msg.contains("in use") && !msg.contains('\n'), "{msg}");
        }
        drop(a);
        open(&p, false).expect("the lock goes with the disk");
    }

    #[test]
    fn readers_share_and_keep_writers_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = img(&dir);
        let (r1, r2) = (open(&p, true).unwrap(), open(&p, true).unwrap());
        let e = open(&p, false).unwrap_err();
        assert!(matches!(e, DiskError::Locked { holder: "read-only", .. }), "{e}");
        drop((r1, r2));
        open(&p, false).expect("free again");
    }

    #[test]
    fn lock_off_opens_alongside_a_writer_and_takes_no_lock() {
        let dir = tempfile::tempdir().unwrap();
        let p = img(&dir);
        let spec: DiskSpec = format!("{},lock=off", p.display()).parse().unwrap();
        assert!(!spec.lock);
        assert_eq!(spec.to_string(), format!("{},lock=off", p.display()), "round trip (Xen disks pass it as text)");
        let a = open(&p, false).unwrap();
        let e = open(&p, false).unwrap_err().to_string();
        assert!(e.contains(",lock=off") && !e.contains('\n'), "the error names the override: {e}");
        // Both an unlocked writer and an unlocked reader get past A's lock...
        let b = Disk::open(&spec).expect("lock=off skips the lock");
        let c = Disk::open(&DiskSpec { readonly: true, ..spec.clone() }).expect("lock=off read-only");
        drop(a);
        // ...and hold none: a locked writer gets the image while they run.
        open(&p, false).expect("an unlocked open holds no lock");
        drop((b, c));
    }

    #[test]
    fn an_unlocked_open_of_the_file_is_not_affected() {
        // The lock is advisory: it stops other lock takers (VMMs, QEMU),
        // not plain readers such as a test checking the data.
        let dir = tempfile::tempdir().unwrap();
        let p = img(&dir);
        let _d = open(&p, false).unwrap();
        assert_eq!(std::fs::read(&p).unwrap().len(), 4096);
    }

    #[test]
    fn discard_reads_back_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.img");
        std::fs::write(&p, vec![0xabu8; 64 << 10]).unwrap();
        let d = Disk::open(&DiskSpec::new(p, false)).unwrap();
        assert_eq!(d.sectors(), 128);
        d.discard(3, 17).unwrap();
        let mut b = vec![0u8; 64 << 10];
        d.read_at(0, &mut b).unwrap();
        assert!(b[..3 * 512].iter().all(|&x| x == 0xab));
        assert!(b[3 * 512..20 * 512].iter().all(|&x| x == 0));
        assert!(b[20 * 512..].iter().all(|&x| x == 0xab));
        assert_eq!(std::fs::metadata(d.path()).unwrap().len(), 64 << 10, "size kept");
    }

    #[test]
    fn an_odd_size_is_logged_once_with_the_sectors_exposed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("odd.img");
        std::fs::write(&p, vec![0x5au8; 3 * 512 + 100]).unwrap();
        let (d, lines) = crate::test_log::capture(|| {
            let d = Disk::open(&DiskSpec::new(p.clone(), true)).unwrap();
            let mut b = [0u8; 512];
            for s in 0..3 {
                d.read_at(s, &mut b).unwrap();
            }
            d
        });
        assert_eq!(d.sectors(), 3);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("sectors=3") && lines[0].contains("unused=100"), "{}", lines[0]);
        std::fs::write(&p, vec![0u8; 4 * 512]).unwrap();
        let (d, lines) = crate::test_log::capture(|| Disk::open(&DiskSpec::new(p, true)).unwrap());
        assert_eq!((d.sectors(), lines.len()), (4, 0), "{lines:?}");
    }
}
