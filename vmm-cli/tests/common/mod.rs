//! Helpers shared by the `vmm` CLI tests (a module, not a test binary).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

/// Whether `nr` sectors at `sector` of `file` hold the guest's pattern
/// for `seed` (the words blkfront's `pattern_word` writes).
pub fn pattern_ok(file: &[u8], sector: u64, nr: u64, seed: u64) -> bool {
    let base = sector * 512;
    (0..nr * 512).step_by(8).all(|w| {
        let at = (base + w) as usize;
        u64::from_le_bytes(file[at..at + 8].try_into().unwrap())
            == frontend_guest::blkfront::pattern_word(seed, base + w)
    })
}

/// Boots `image` with `test=crash` on the disk `disk_arg` (backed by
/// `img`, 1 MiB of zeros made here), SIGKILLs the VMM as soon as the guest
/// reports its flush response, and checks the reopened image holds the
/// flushed data: durability must not depend on the VMM exiting cleanly.
pub fn flushed_data_survives_sigkill(image: &str, disk_arg: &str, img: &Path) {
    std::fs::write(img, vec![0u8; 1 << 20]).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--timeout", "60", "--image", image, "--cmdline", "test=crash", "--disk", disk_arg])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn vmm");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let flushed = lines.by_ref().map_while(Result::ok).find(|l| l.starts_with("flushed "));
    // The flush response has reached the guest: kill the VMM at once.
    child.kill().expect("SIGKILL");
    let status = child.wait().unwrap();
    let line = flushed.expect("the guest reported its flush");
    assert!(!status.success(), "killed, not exited: {status}");
    assert_eq!(line, "flushed sector=64 nr=64 seed=50341");
    assert!(pattern_ok(&std::fs::read(img).unwrap(), 64, 64, 0xc4a5), "the reopened image holds the data");
}
