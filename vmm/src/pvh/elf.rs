//! PVH images: ELF32 (EM_386, or EM_X86_64 in an ELF32 container) and ELF64
//! executables carrying Xen's `XEN_ELFNOTE_PHYS32_ENTRY` note. Segments are
//! loaded at their physical addresses and their BSS zeroed.

use crate::error::VmmError;
use crate::memory::GuestRam;
use pv_abi::hvm::{XEN_ELFNOTE_OWNER, XEN_ELFNOTE_PHYS32_ENTRY};

const ET_EXEC: u16 = 2;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const MAX_PHDRS: usize = 64;

/// One loadable segment of a PVH image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PvhSegment {
    /// Physical load address.
    pub paddr: u64,
    /// Offset of the data in the file.
    pub offset: u64,
    /// Bytes in the file.
    pub filesz: u64,
    /// Bytes in memory (the rest is zeroed).
    pub memsz: u64,
}

/// A checked PVH image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvhImage {
    /// The 32-bit physical entry point from the note.
    pub entry: u32,
    /// `PT_LOAD` segments.
    pub segments: Vec<PvhSegment>,
    /// First page-aligned address after the highest segment.
    pub end: u64,
}

/// A little-endian reader over the image that never panics.
struct Rd<'a>(&'a [u8]);

impl Rd<'_> {
    fn bytes(&self, off: u64, len: u64) -> Option<&[u8]> {
        let s = usize::try_from(off).ok()?;
        let e = s.checked_add(usize::try_from(len).ok()?)?;
        self.0.get(s..e)
    }
    fn u16(&self, off: u64) -> Option<u16> {
        Some(u16::from_le_bytes(self.bytes(off, 2)?.try_into().ok()?))
    }
    fn u32(&self, off: u64) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(off, 4)?.try_into().ok()?))
    }
    fn u64(&self, off: u64) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(off, 8)?.try_into().ok()?))
    }
}

/// One raw program header.
struct Phdr {
    kind: u32,
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

fn phdr(r: &Rd, at: u64, is64: bool) -> Option<Phdr> {
    Some(if is64 {
        Phdr {
            kind: r.u32(at)?,
            offset: r.u64(at + 8)?,
            paddr: r.u64(at + 24)?,
            filesz: r.u64(at + 32)?,
            memsz: r.u64(at + 40)?,
        }
    } else {
        Phdr {
            kind: r.u32(at)?,
            offset: r.u32(at + 4)?.into(),
            paddr: r.u32(at + 12)?.into(),
            filesz: r.u32(at + 16)?.into(),
            memsz: r.u32(at + 20)?.into(),
        }
    })
}

/// The program headers of an x86 ELF executable (32- or 64-bit), or `None`
/// when `image` is not one.
fn phdrs(image: &[u8]) -> Option<Vec<Phdr>> {
    let r = Rd(image);
    if r.bytes(0, 4)? != b"\x7fELF" || image.get(5)? != &1 || r.u16(16)? != ET_EXEC {
        return None;
    }
    let is64 = match image.get(4)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    if !matches!(r.u16(18)?, EM_386 | EM_X86_64) {
        return None;
    }
    let (phoff, phentsize, phnum) =
        if is64 { (r.u64(32)?, r.u16(54)?, r.u16(56)?) } else { (r.u32(28)?.into(), r.u16(42)?, r.u16(44)?) };
    let want = if is64 { 56 } else { 32 };
    if phentsize != want || phnum as usize > MAX_PHDRS {
        return None;
    }
    (0..u64::from(phnum)).map(|i| phdr(&r, phoff.checked_add(i * u64::from(want))?, is64)).collect()
}

/// The PVH entry point from a `PT_NOTE` segment, if the image has one.
fn note_entry(image: &[u8], notes: &[&Phdr]) -> Option<u32> {
    let r = Rd(image);
    for n in notes {
        let mut at = n.offset;
        let end = n.offset.checked_add(n.filesz)?;
        while at + 12 <= end {
            let (namesz, descsz, kind) = (r.u32(at)? as u64, r.u32(at + 4)? as u64, r.u32(at + 8)?);
            let name_at = at + 12;
            let desc_at = name_at + namesz.div_ceil(4) * 4;
            let next = desc_at.checked_add(descsz.div_ceil(4) * 4)?;
            let name = r.bytes(name_at, namesz)?;
            if kind == XEN_ELFNOTE_PHYS32_ENTRY && name.strip_suffix(b"\0").unwrap_or(name) == XEN_ELFNOTE_OWNER {
                return r.u32(desc_at).filter(|_| descsz >= 4);
            }
            at = next;
        }
    }
    None
}

/// Whether `image` is an ELF executable with a Xen PVH entry note.
pub fn is_pvh(image: &[u8]) -> bool {
    phdrs(image)
        .is_some_and(|p| note_entry(image, &p.iter().filter(|h| h.kind == PT_NOTE).collect::<Vec<_>>()).is_some())
}

/// Checks a PVH image: every segment inside `lo..hi` and the file, the
/// entry inside a segment.
pub fn check(name: &str, image: &[u8], lo: u64, hi: u64) -> Result<PvhImage, VmmError> {
    let bad = |why: &str| VmmError::BadElf { name: name.to_string(), why: why.to_string() };
    let headers = phdrs(image).ok_or_else(|| bad("not an x86 ELF executable with a readable program header table"))?;
    let notes: Vec<&Phdr> = headers.iter().filter(|h| h.kind == PT_NOTE).collect();
    let entry = note_entry(image, &notes).ok_or_else(|| bad("no XEN_ELFNOTE_PHYS32_ENTRY note"))?;
    let mut segments = Vec::new();
    for h in headers.iter().filter(|h| h.kind == PT_LOAD && h.memsz > 0) {
        if h.filesz > h.memsz || h.offset.checked_add(h.filesz).is_none_or(|e| e > image.len() as u64) {
            return Err(bad("segment data outside the file"));
        }
        let end = h.paddr.checked_add(h.memsz).ok_or_else(|| bad("segment address overflows"))?;
        if h.paddr < lo || end > hi {
            return Err(VmmError::ElfDoesNotFit { name: name.to_string(), start: h.paddr, end, lo, hi });
        }
        segments.push(PvhSegment { paddr: h.paddr, offset: h.offset, filesz: h.filesz, memsz: h.memsz });
    }
    if segments.is_empty() {
        return Err(bad("no loadable segment"));
    }
    let e = u64::from(entry);
    if !segments.iter().any(|s| e >= s.paddr && e < s.paddr + s.memsz) {
        return Err(bad("PVH entry point is not inside a loadable segment"));
    }
    let end = segments.iter().map(|s| s.paddr + s.memsz).max().unwrap_or(lo).div_ceil(4096) * 4096;
    Ok(PvhImage { entry, segments, end })
}

/// Copies the checked image's segments into RAM and zeroes their BSS.
pub fn load(ram: &GuestRam, image: &[u8], pvh: &PvhImage) -> Result<(), VmmError> {
    let w = |e: crate::memory::BadGuestRange| VmmError::BootWrite(e.to_string());
    for s in &pvh.segments {
        let data = &image[s.offset as usize..(s.offset + s.filesz) as usize];
        ram.write(s.paddr, data).map_err(w)?;
        let zeros = vec![0u8; (s.memsz - s.filesz) as usize];
        ram.write(s.paddr + s.filesz, &zeros).map_err(w)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF32 with one PT_LOAD at `paddr` and a Xen note.
    pub(crate) fn elf32(paddr: u32, entry: u32, with_note: bool) -> Vec<u8> {
        let mut f = vec![0u8; 0x200];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 1;
        f[5] = 1;
        f[6] = 1;
        f[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        f[18..20].copy_from_slice(&EM_386.to_le_bytes());
        f[24..28].copy_from_slice(&entry.to_le_bytes());
        f[28..32].copy_from_slice(&52u32.to_le_bytes());
        f[42..44].copy_from_slice(&32u16.to_le_bytes());
        f[44..46].copy_from_slice(&2u16.to_le_bytes());
        let ph = |f: &mut Vec<u8>, at: usize, kind: u32, off: u32, pa: u32, fsz: u32, msz: u32| {
            for (i, v) in [kind, off, pa, pa, fsz, msz, 7, 4].iter().enumerate() {
                f[at + i * 4..at + i * 4 + 4].copy_from_slice(&v.to_le_bytes());
            }
        };
        ph(&mut f, 52, PT_LOAD, 0x100, paddr, 0x10, 0x1000);
        ph(&mut f, 84, PT_NOTE, 0x180, 0, 20, 0);
        f[0x100] = 0xf4; // hlt
        if with_note {
            for (i, v) in [4u32, 4, XEN_ELFNOTE_PHYS32_ENTRY].iter().enumerate() {
                f[0x180 + i * 4..0x184 + i * 4].copy_from_slice(&v.to_le_bytes());
            }
            f[0x18c..0x190].copy_from_slice(b"Xen\0");
            f[0x190..0x194].copy_from_slice(&entry.to_le_bytes());
        }
        f
    }

    #[test]
    fn finds_the_note_and_checks_segments() {
        let img = elf32(0x10_0000, 0x10_0000, true);
        assert!(is_pvh(&img));
        let info = check("t", &img, 0, 64 << 20).unwrap();
        assert_eq!(info.entry, 0x10_0000);
        assert_eq!(info.end, 0x10_1000);
        assert!(!is_pvh(&elf32(0x10_0000, 0x10_0000, false)));
        // Entry outside every segment.
        assert!(check("t", &elf32(0x10_0000, 0x20_0000, true), 0, 64 << 20).is_err());
        // Segment beyond the allowed range.
        assert!(matches!(
            check("t", &elf32(0x10_0000, 0x10_0000, true), 0, 0x10_0800),
            Err(VmmError::ElfDoesNotFit { .. })
        ));
        // Low memory is fine for PVH guests.
        assert!(check("t", &elf32(0x1000, 0x1000, true), 0, 64 << 20).is_ok());
    }

    #[test]
    fn the_bundled_64_bit_images_are_not_pvh() {
        assert!(!is_pvh(frontend_guest::images::HELLO));
    }

    proptest::proptest! {
        /// Corrupted PVH images are refused or accepted, never a panic.
        #[test]
        fn corrupted_images_never_panic(flips in proptest::collection::vec((0usize..0x200, proptest::prelude::any::<u8>()), 1..12)) {
            let mut img = elf32(0x10_0000, 0x10_0000, true);
            for (at, b) in flips { img[at] = b; }
            let _ = is_pvh(&img);
            let _ = check("fuzz", &img, 0, 64 << 20);
        }
    }
}
