//! KVM binary statistics (`KVM_GET_STATS_FD`): per-vCPU counters the kernel
//! keeps, such as `exits`, `io_exits` and — on hosts whose KVM emulates
//! guest instructions in software — `insn_emulation`, which counts guest
//! instructions executed.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use vmm_sys_util::ioctl::ioctl;

#[allow(missing_docs)]
mod nr {
    vmm_sys_util::ioctl_io_nr!(KVM_GET_STATS_FD, kvm_bindings::KVMIO, 0xce);
}
use nr::KVM_GET_STATS_FD;

const HEADER_SIZE: usize = 24;
const DESC_FIXED_SIZE: usize = 16;

/// An open binary-stats file of one vCPU (or VM).
#[derive(Debug)]
pub struct KvmStats {
    file: File,
    data_offset: u64,
    /// Name -> (offset into the data block, number of u64 values).
    index: BTreeMap<String, (u64, usize)>,
}

impl KvmStats {
    /// Opens the stats of a KVM fd; `None` where the host lacks the ioctl.
    pub fn open(fd: &impl AsRawFd) -> Option<Self> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd
        // (or -1); it does not touch our memory.
        let raw = unsafe { ioctl(fd, KVM_GET_STATS_FD()) };
        if raw < 0 {
            return None;
        }
        // SAFETY: `raw` is a fresh fd we own exclusively.
        let file = unsafe { File::from_raw_fd(raw) };
        Self::parse(file)
    }

    fn parse(file: File) -> Option<Self> {
        let mut hdr = [0u8; HEADER_SIZE];
        file.read_exact_at(&mut hdr, 0).ok()?;
        let word = |i: usize| u32::from_ne_bytes(hdr[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        let (name_size, num_desc, desc_offset, data_offset) = (word(1) as usize, word(2) as usize, word(4), word(5));
        let desc_size = DESC_FIXED_SIZE + name_size;
        let mut descs = vec![0u8; desc_size.checked_mul(num_desc)?];
        file.read_exact_at(&mut descs, desc_offset as u64).ok()?;
        // An ordered map: no `RandomState` (and so no `getrandom`) on a
        // thread that may already run under its seccomp filter (`vmm bench`).
        let mut index = BTreeMap::new();
        for d in descs.chunks_exact(desc_size) {
            let size = u16::from_ne_bytes([d[6], d[7]]) as usize;
            let offset = u32::from_ne_bytes(d[8..12].try_into().expect("4 bytes")) as u64;
            let name = &d[DESC_FIXED_SIZE..];
            let name = String::from_utf8_lossy(&name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())]);
            index.insert(name.into_owned(), (offset, size));
        }
        Some(KvmStats { file, data_offset: data_offset as u64, index })
    }

    /// The current value of a scalar statistic, if the host has it.
    pub fn get(&self, name: &str) -> Option<u64> {
        let &(offset, size) = self.index.get(name)?;
        if size == 0 {
            return None;
        }
        let mut v = [0u8; 8];
        self.file.read_exact_at(&mut v, self.data_offset + offset).ok()?;
        Some(u64::from_ne_bytes(v))
    }

    /// Names of all statistics the host exposes.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }
}
