//! Guest image checks and loading.
//!
//! The image is checked by hand first (so every failure has a precise,
//! user-facing message), then copied into guest RAM by `linux-loader`.

use crate::error::VmmError;
use crate::memory::GuestRam;
use linux_loader::loader::{Elf, KernelLoader};
use std::io::Cursor;
use vm_memory::GuestAddress;

const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const MAX_PHDRS: usize = 64;

/// One loadable segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical load address.
    pub paddr: u64,
    /// Size in memory.
    pub memsz: u64,
    /// Size in the file.
    pub filesz: u64,
    /// Executable.
    pub exec: bool,
}

/// What the checks learned about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Entry point (guest-physical; the boot map is an identity map).
    pub entry: u64,
    /// The `PT_LOAD` segments.
    pub segments: Vec<Segment>,
    /// First page-aligned address after the highest segment.
    pub end: u64,
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// Checks that `image` is a 64-bit x86 executable whose segments all lie in
/// `lo..hi` and whose entry point is inside an executable segment.
pub fn check_elf(name: &str, image: &[u8], lo: u64, hi: u64) -> Result<ImageInfo, VmmError> {
    let bad = |why: &str| VmmError::BadElf { name: name.to_string(), why: why.to_string() };
    if image.len() < EHDR_SIZE || &image[..4] != b"\x7fELF" {
        return Err(bad("no ELF magic"));
    }
    if image[4] != 2 || image[5] != 1 {
        return Err(bad("not a 64-bit little-endian ELF"));
    }
    if u16_at(image, 16) != ET_EXEC {
        return Err(bad("not an executable (ET_EXEC); link with a static relocation model"));
    }
    if u16_at(image, 18) != EM_X86_64 {
        return Err(bad("not built for x86_64"));
    }
    let entry = u64_at(image, 24);
    let phoff = u64_at(image, 32);
    let phentsize = u16_at(image, 54) as usize;
    let phnum = u16_at(image, 56) as usize;
    if phentsize != PHDR_SIZE || phnum == 0 || phnum > MAX_PHDRS {
        return Err(bad("bad program header table"));
    }
    let table_end = usize::try_from(phoff)
        .ok()
        .and_then(|o| o.checked_add(phnum * PHDR_SIZE))
        .filter(|&end| end <= image.len())
        .ok_or_else(|| bad("program header table outside the file"))?;
    let table = &image[table_end - phnum * PHDR_SIZE..table_end];
    let mut segments = Vec::new();
    for ph in table.chunks_exact(PHDR_SIZE) {
        if u32_at(ph, 0) != PT_LOAD {
            continue;
        }
        let seg = Segment {
            exec: u32_at(ph, 4) & PF_X != 0,
            paddr: u64_at(ph, 24),
            filesz: u64_at(ph, 32),
            memsz: u64_at(ph, 40),
        };
        let offset = u64_at(ph, 8);
        if seg.filesz > seg.memsz || offset.checked_add(seg.filesz).is_none_or(|e| e > image.len() as u64) {
            return Err(bad("segment data outside the file"));
        }
        let end = seg.paddr.checked_add(seg.memsz).ok_or_else(|| bad("segment address overflows"))?;
        if seg.paddr < lo || end > hi {
            return Err(VmmError::ElfDoesNotFit { name: name.to_string(), start: seg.paddr, end, lo, hi });
        }
        segments.push(seg);
    }
    if segments.is_empty() {
        return Err(bad("no loadable segment"));
    }
    if !segments.iter().any(|s| s.exec && entry >= s.paddr && entry < s.paddr + s.memsz) {
        return Err(bad("entry point is not inside an executable segment"));
    }
    let end = segments.iter().map(|s| s.paddr + s.memsz).max().unwrap_or(lo);
    let end = end.div_ceil(pv_abi::layout::PAGE_SIZE) * pv_abi::layout::PAGE_SIZE;
    Ok(ImageInfo { entry, segments, end })
}

/// Checks `image` and copies it into guest RAM.
pub fn load(ram: &GuestRam, name: &str, image: &[u8], lo: u64, hi: u64) -> Result<ImageInfo, VmmError> {
    let info = check_elf(name, image, lo, hi)?;
    let loaded = Elf::load(ram.mem(), None, &mut Cursor::new(image), Some(GuestAddress(lo)))
        .map_err(|e| VmmError::BadElf { name: name.to_string(), why: format!("loader: {e}") })?;
    if loaded.kernel_load.0 != info.entry {
        return Err(VmmError::BadElf { name: name.to_string(), why: "loader disagrees on the entry point".into() });
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> &'static [u8] {
        frontend_guest::images::HELLO
    }

    #[test]
    fn accepts_the_bundled_image() {
        let info = check_elf("hello", hello(), 0x10_0000, 64 << 20).unwrap();
        assert_eq!(info.entry, 0x10_0000);
        assert!(info.end > info.entry);
    }

    #[test]
    fn rejects_garbage_and_wrong_kinds() {
        let msg = |r: Result<ImageInfo, VmmError>| r.unwrap_err().to_string();
        assert!(msg(check_elf("x", b"#!/bin/sh\n", 0, 1 << 30)).contains("no ELF magic"));
        let mut img = hello().to_vec();
        img[18] = 3; // EM_386
        assert!(msg(check_elf("x", &img, 0x10_0000, 64 << 20)).contains("x86_64"));
        let mut img = hello().to_vec();
        img[16] = 3; // ET_DYN
        assert!(msg(check_elf("x", &img, 0x10_0000, 64 << 20)).contains("ET_EXEC"));
        let mut img = hello().to_vec();
        img[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(msg(check_elf("x", &img, 0x10_0000, 64 << 20)).contains("outside the file"));
        // Truncated: headers claim data past the end.
        assert!(check_elf("x", &hello()[..200], 0x10_0000, 64 << 20).is_err());
    }

    #[test]
    fn rejects_an_image_that_does_not_fit() {
        let err = check_elf("hello", hello(), 0x10_0000, 0x10_1000).unwrap_err();
        assert!(matches!(err, VmmError::ElfDoesNotFit { .. }), "{err}");
        let err = check_elf("hello", hello(), 0x20_0000, 64 << 20).unwrap_err();
        assert!(matches!(err, VmmError::ElfDoesNotFit { .. }), "{err}");
    }

    proptest::proptest! {
        /// A corrupted image is accepted or refused with an error; the
        /// checker never panics or reads out of bounds.
        #[test]
        fn corrupted_images_never_panic(
            flips in proptest::collection::vec((0usize..512, proptest::prelude::any::<u8>()), 1..16),
            cut in 0usize..8192,
        ) {
            let mut img = hello().to_vec();
            for (at, b) in flips {
                let at = at % img.len();
                img[at] = b;
            }
            img.truncate(cut.max(1).min(img.len()));
            let _ = check_elf("fuzz", &img, 0x10_0000, 64 << 20);
        }
    }
}
