//! Handing disk image locks over between two VMMs, as QEMU does at the
//! switch-over of a live migration (`bdrv_inactivate_all()` on the
//! source, `bdrv_activate_all()` on the destination).
//!
//! Every locked [`Disk`](super::Disk) registers its open file here
//! (weakly: the lock still lives and dies with the `Disk`). The source of
//! a migration [`release`]s every lock just before it sends the final
//! state and [`take`]s them back if the migration fails; the destination
//! opens its disks with [`defer`] set (the source still holds the locks)
//! and [`take`]s them at the switch-over. OFD locks belong to the open
//! file description, so a lock can be dropped and taken again on the
//! same open file without reopening it.

use super::disk::{lock, whole_file, DiskError};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// One locked (or to-be-locked) image.
struct Entry {
    file: Weak<File>,
    path: PathBuf,
    readonly: bool,
    locked: bool,
}

static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
static DEFER: AtomicBool = AtomicBool::new(false);

fn registry() -> std::sync::MutexGuard<'static, Vec<Entry>> {
    let mut r = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    // Disks closed since: their locks went with them.
    r.retain(|e| e.file.strong_count() > 0);
    r
}

/// While `on`, disks opened with a lock register without taking it
/// (an incoming migration: the source holds the locks until it hands
/// them over); [`take`] takes them.
pub fn defer(on: bool) {
    DEFER.store(on, Ordering::SeqCst);
}

/// Registers `file`; returns `true` if its lock is deferred (not taken
/// yet), `false` if the caller must take it now.
pub(super) fn register(file: &Arc<File>, path: &Path, readonly: bool) -> bool {
    let deferred = DEFER.load(Ordering::SeqCst) || tests_defer();
    registry().push(Entry { file: Arc::downgrade(file), path: path.to_path_buf(), readonly, locked: !deferred });
    deferred
}

/// Drops the lock of every registered image this process holds; returns
/// how many it dropped. The images stay open.
pub fn release() -> usize {
    release_where(|_| true)
}

fn release_where(pick: impl Fn(&Path) -> bool) -> usize {
    let mut n = 0;
    for e in registry().iter_mut().filter(|e| e.locked && pick(&e.path)) {
        let Some(file) = e.file.upgrade() else { continue };
        let fl = whole_file(libc::F_UNLCK);
        // SAFETY: `fcntl(F_OFD_SETLK)` on a descriptor kept open by the
        // `Arc` we hold, reading `fl`, which lives across the call.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) } == 0 {
            e.locked = false;
            n += 1;
        } else {
            let err = std::io::Error::last_os_error();
            tracing::warn!(path = %e.path.display(), error = %err, "cannot drop the disk image lock");
        }
    }
    n
}

/// Takes the lock of every registered image that does not hold it (after
/// [`release`], or deferred); returns how many it took. The first image
/// someone else holds stops it with that image's [`DiskError::Locked`]
/// (those taken before it stay taken).
pub fn take() -> Result<usize, DiskError> {
    take_where(|_| true)
}

fn take_where(pick: impl Fn(&Path) -> bool) -> Result<usize, DiskError> {
    let mut n = 0;
    for e in registry().iter_mut().filter(|e| !e.locked && pick(&e.path)) {
        let Some(file) = e.file.upgrade() else { continue };
        lock(&file, &e.path, e.readonly)?;
        e.locked = true;
        n += 1;
    }
    Ok(n)
}

#[cfg(not(test))]
fn tests_defer() -> bool {
    false
}

#[cfg(test)]
thread_local! {
    /// [`defer`] for this test thread only (tests run in parallel).
    static DEFER_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
fn tests_defer() -> bool {
    DEFER_HERE.with(|d| d.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{Disk, DiskSpec};

    /// One test for the process-wide registry; it touches only its own
    /// image (other tests lock theirs in parallel).
    #[test]
    fn locks_are_released_taken_back_and_deferred() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.img");
        let mine = |q: &Path| q == p;
        let release = || release_where(mine);
        let take = || take_where(mine);
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let a = Disk::open(&DiskSpec::new(&p, false)).unwrap();
        assert!(Disk::open(&DiskSpec::new(&p, false)).is_err(), "locked by a");
        assert_eq!(release(), 1);
        // Released: another open file (another VMM) may lock it now.
        let b = Disk::open(&DiskSpec::new(&p, false)).expect("released");
        assert!(matches!(take(), Err(DiskError::Locked { .. })), "b holds it: a cannot take it back");
        drop(b);
        assert_eq!(take().unwrap(), 1, "a takes its lock back once b is gone");
        assert!(Disk::open(&DiskSpec::new(&p, true)).is_err(), "a holds it again");
        drop(a);
        // A deferred disk opens beside a holder and locks at `take`.
        let holder = Disk::open(&DiskSpec::new(&p, false)).unwrap();
        DEFER_HERE.with(|d| d.set(true));
        let c = Disk::open(&DiskSpec::new(&p, false)).expect("deferred: no lock yet");
        DEFER_HERE.with(|d| d.set(false));
        assert!(take().is_err(), "the holder still has it");
        drop(holder);
        take().unwrap();
        assert!(Disk::open(&DiskSpec::new(&p, false)).is_err(), "c locked it at take");
        drop(c);
    }
}
