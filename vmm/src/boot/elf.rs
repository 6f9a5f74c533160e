//! The one ELF reader, for both boot kinds.
//!
//! [`Elf::parse`] reads the headers once (class, machine, type, program and
//! section header tables, Xen notes) and decides how the image boots:
//!
//! - with Xen's `XEN_ELFNOTE_PHYS32_ENTRY` note, ELF32 or ELF64, as a Xen
//!   PVH guest ([`BootKind::Pvh`], `docs/misc/pvh.pandoc`);
//! - without it, an ELF64 x86_64 executable as one of our own guests
//!   ([`BootKind::Own`], entered in 64-bit mode at `e_entry`).
//!
//! The note is looked for the way Xen's libelf does
//! (`xen/common/libelf/libelf-dominfo.c`, `elf_xen_parse`): in `PT_NOTE`
//! program headers (skipping those with `p_offset == 0`, which some
//! binutils emit), and when those hold no note named "Xen", in `SHT_NOTE`
//! sections; at most `ELF_MAX_TOTAL_NOTE_COUNT` notes are read in all
//! (`libelf-private.h`). The header tables must lie inside the file, as
//! libelf's `elf_init` requires. [`Elf::check`] then checks the segments
//! against the loadable range and [`load`] copies them into guest RAM.
//!
//! Every read is bounds-checked: a malformed image gets an [`ElfError`],
//! never a panic.

use crate::error::VmmError;
use crate::memory::GuestRam;
use pv_abi::hvm::{XEN_ELFNOTE_OWNER, XEN_ELFNOTE_PHYS32_ENTRY};
use pv_abi::layout::PAGE_SIZE;

const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const SHT_NOTE: u32 = 7;
const PF_X: u32 = 1;
/// More program headers than any of our or Xen's guests use.
const MAX_PHDRS: u16 = 64;
/// libelf's `ELF_MAX_TOTAL_NOTE_COUNT`: bounds the work overlapping note
/// sections can cause.
const MAX_TOTAL_NOTES: u32 = 65536;
/// A note header: `namesz`, `descsz`, `type`.
const NOTE_HEADER: u64 = 12;

/// Why an image cannot boot. The text is the user-facing reason (the
/// caller names the file, see [`ElfError::for_image`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    /// Not an ELF file at all.
    #[error("no ELF magic")]
    NoMagic,
    /// `EI_CLASS` is neither `ELFCLASS32` nor `ELFCLASS64`.
    #[error("unknown ELF class {0} (EI_CLASS must be 1 for 32-bit or 2 for 64-bit)")]
    BadClass(u8),
    /// `EI_DATA` is not little-endian.
    #[error("not a little-endian ELF (EI_DATA {0}); x86 images are little-endian")]
    NotLittleEndian(u8),
    /// The file ends inside the ELF header.
    #[error("the file ends inside the ELF header")]
    Truncated,
    /// `e_type` is not `ET_EXEC`.
    #[error("not an executable (ET_EXEC); link with a static relocation model")]
    NotExecutable,
    /// Neither `EM_386` nor `EM_X86_64` (or `EM_386` for our own 64-bit entry).
    #[error("not built for x86_64 (e_machine {0})")]
    NotX86(u16),
    /// Program header entry size or count unusable.
    #[error("bad program header table")]
    BadPhdrTable,
    /// The program header table does not lie inside the file.
    #[error("program header table outside the file")]
    PhdrTableOutside,
    /// Section header entry size unusable.
    #[error("bad section header table (e_shentsize {0})")]
    BadShdrTable(u16),
    /// The section header table does not lie inside the file.
    #[error("section header table outside the file")]
    ShdrTableOutside,
    /// A `PT_NOTE` segment or `SHT_NOTE` section, or a note in it, runs
    /// past the end of the file.
    #[error("ELF note data outside the file")]
    NoteOutside,
    /// More notes than libelf reads.
    #[error("more than {MAX_TOTAL_NOTES} ELF notes")]
    TooManyNotes,
    /// A 32-bit image without the PVH note: we have no 32-bit entry of our own.
    #[error(
        "a 32-bit ELF without a Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY in a PT_NOTE segment or SHT_NOTE \
         section); 32-bit images boot only as Xen PVH guests"
    )]
    Elf32WithoutPvhNote,
    /// A segment's file data lies outside the file.
    #[error("segment data outside the file")]
    SegmentOutside,
    /// `p_paddr + p_memsz` overflows.
    #[error("segment address overflows")]
    SegmentOverflow,
    /// No `PT_LOAD` segment with memory.
    #[error("no loadable segment")]
    NoLoadableSegment,
    /// Our own entry point is outside every executable segment.
    #[error("entry point is not inside an executable segment")]
    EntryOutside,
    /// The PVH entry point is outside every loadable segment.
    #[error("PVH entry point is not inside a loadable segment")]
    PvhEntryOutside,
    /// A segment lies outside the loadable range.
    #[error("segment {start:#x}..{end:#x} is outside the loadable range {lo:#x}..{hi:#x}")]
    DoesNotFit {
        /// Segment start.
        start: u64,
        /// Segment end (exclusive).
        end: u64,
        /// Lowest loadable address.
        lo: u64,
        /// End of loadable RAM.
        hi: u64,
    },
}

impl ElfError {
    /// The user-facing error for the image called `name`.
    pub fn for_image(self, name: &str) -> VmmError {
        let name = name.to_string();
        match self {
            ElfError::DoesNotFit { start, end, lo, hi } => VmmError::ElfDoesNotFit { name, start, end, lo, hi },
            e => VmmError::BadElf { name, why: e.to_string() },
        }
    }
}

/// How an image boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootKind {
    /// One of our own 64-bit guests, entered in long mode at `e_entry`.
    Own,
    /// A Xen PVH guest, entered in 32-bit protected mode at this address.
    Pvh(u32),
}

/// One loadable segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical load address.
    pub paddr: u64,
    /// Offset of the data in the file.
    pub offset: u64,
    /// Bytes in the file.
    pub filesz: u64,
    /// Bytes in memory (the rest is zeroed).
    pub memsz: u64,
    /// Executable (`PF_X`).
    pub exec: bool,
}

/// A checked image, ready to [`load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Entry point (guest-physical): `e_entry` for our own guests, the
    /// note's address for PVH guests.
    pub entry: u64,
    /// The `PT_LOAD` segments with memory.
    pub segments: Vec<Segment>,
    /// First page-aligned address after the highest segment.
    pub end: u64,
}

/// A little-endian reader over the image that never panics.
#[derive(Clone, Copy)]
struct Rd<'a>(&'a [u8]);

impl<'a> Rd<'a> {
    fn bytes(self, off: u64, len: u64) -> Option<&'a [u8]> {
        let s = usize::try_from(off).ok()?;
        let e = s.checked_add(usize::try_from(len).ok()?)?;
        self.0.get(s..e)
    }
    fn u16(self, off: u64) -> Option<u16> {
        Some(u16::from_le_bytes(self.bytes(off, 2)?.try_into().ok()?))
    }
    fn u32(self, off: u64) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(off, 4)?.try_into().ok()?))
    }
    fn u64(self, off: u64) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(off, 8)?.try_into().ok()?))
    }
    /// A 32-bit field in ELF32, 64-bit in ELF64.
    fn word(self, off: u64, is64: bool) -> Option<u64> {
        if is64 {
            self.u64(off)
        } else {
            self.u32(off).map(u64::from)
        }
    }
    /// `off..off + len` lies inside the file.
    fn holds(self, off: u64, len: u64) -> bool {
        off.checked_add(len).is_some_and(|end| end <= self.0.len() as u64)
    }
}

/// One program header, widened to 64 bits.
#[derive(Debug, Clone, Copy)]
struct Phdr {
    kind: u32,
    flags: u32,
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

/// A table of fixed-size entries (program or section headers).
#[derive(Debug, Clone, Copy)]
struct Table {
    offset: u64,
    entsize: u64,
    count: u64,
}

impl Table {
    fn entry(&self, i: u64) -> u64 {
        self.offset + i * self.entsize
    }
}

/// A parsed ELF executable for x86 (32- or 64-bit).
#[derive(Debug, Clone)]
pub struct Elf<'a> {
    image: &'a [u8],
    /// `ELFCLASS64`.
    pub is64: bool,
    /// `e_machine`.
    pub machine: u16,
    /// `e_entry`.
    pub entry: u64,
    phdrs: Vec<Phdr>,
    /// The `XEN_ELFNOTE_PHYS32_ENTRY` value, if the image has the note.
    pub pvh_entry: Option<u32>,
}

impl<'a> Elf<'a> {
    /// Reads the headers and the Xen notes of `image`.
    pub fn parse(image: &'a [u8]) -> Result<Elf<'a>, ElfError> {
        let r = Rd(image);
        if r.bytes(0, 4) != Some(b"\x7fELF") {
            return Err(ElfError::NoMagic);
        }
        let is64 = match image.get(4) {
            Some(&ELFCLASS32) => false,
            Some(&ELFCLASS64) => true,
            other => return Err(ElfError::BadClass(other.copied().unwrap_or(0))),
        };
        match image.get(5) {
            Some(&ELFDATA2LSB) => {}
            other => return Err(ElfError::NotLittleEndian(other.copied().unwrap_or(0))),
        }
        if image.len() < if is64 { 64 } else { 52 } {
            return Err(ElfError::Truncated);
        }
        let field = |off32: u64, off64: u64| if is64 { off64 } else { off32 };
        let half = |off32, off64| r.u16(field(off32, off64)).ok_or(ElfError::Truncated);
        let word = |off32, off64| r.word(field(off32, off64), is64).ok_or(ElfError::Truncated);
        if half(16, 16)? != ET_EXEC {
            return Err(ElfError::NotExecutable);
        }
        let machine = half(18, 18)?;
        if !matches!(machine, EM_386 | EM_X86_64) {
            return Err(ElfError::NotX86(machine));
        }
        let entry = word(24, 24)?;
        let ph = Table { offset: word(28, 32)?, entsize: half(42, 54)?.into(), count: half(44, 56)?.into() };
        let sh = Table { offset: word(32, 40)?, entsize: half(46, 58)?.into(), count: half(48, 60)?.into() };
        let phdrs = read_phdrs(r, ph, is64)?;
        let sections = section_table(r, sh, is64)?;
        let pvh_entry = find_pvh_note(r, &phdrs, sections, is64)?;
        Ok(Elf { image, is64, machine, entry, phdrs, pvh_entry })
    }

    /// How the image boots: PVH if it carries the note, else our own
    /// 64-bit entry (a 32-bit image without the note has none).
    pub fn boot_kind(&self) -> Result<BootKind, ElfError> {
        match self.pvh_entry {
            Some(entry) => Ok(BootKind::Pvh(entry)),
            None if self.is64 => Ok(BootKind::Own),
            None => Err(ElfError::Elf32WithoutPvhNote),
        }
    }

    /// Checks the image for its boot kind: every segment inside `lo..hi`
    /// and the file, the entry inside a segment (an executable one for our
    /// own guests, which must be x86_64).
    pub fn check(&self, lo: u64, hi: u64) -> Result<ImageInfo, ElfError> {
        let kind = self.boot_kind()?;
        if kind == BootKind::Own && self.machine != EM_X86_64 {
            return Err(ElfError::NotX86(self.machine));
        }
        let segments = self.segments(lo, hi)?;
        let (entry, inside): (u64, fn(&Segment) -> bool) = match kind {
            BootKind::Own => (self.entry, |s| s.exec),
            BootKind::Pvh(e) => (e.into(), |_| true),
        };
        if !segments.iter().any(|s| inside(s) && entry >= s.paddr && entry - s.paddr < s.memsz) {
            return Err(match kind {
                BootKind::Own => ElfError::EntryOutside,
                BootKind::Pvh(_) => ElfError::PvhEntryOutside,
            });
        }
        let end = segments.iter().map(|s| s.paddr + s.memsz).max().unwrap_or(lo);
        Ok(ImageInfo { entry, segments, end: end.div_ceil(PAGE_SIZE) * PAGE_SIZE })
    }

    /// The `PT_LOAD` segments with memory, each checked against the file
    /// and `lo..hi`.
    fn segments(&self, lo: u64, hi: u64) -> Result<Vec<Segment>, ElfError> {
        let mut segments = Vec::new();
        for h in self.phdrs.iter().filter(|h| h.kind == PT_LOAD && h.memsz > 0) {
            if h.filesz > h.memsz || !Rd(self.image).holds(h.offset, h.filesz) {
                return Err(ElfError::SegmentOutside);
            }
            let end = h.paddr.checked_add(h.memsz).ok_or(ElfError::SegmentOverflow)?;
            if h.paddr < lo || end > hi {
                return Err(ElfError::DoesNotFit { start: h.paddr, end, lo, hi });
            }
            let exec = h.flags & PF_X != 0;
            segments.push(Segment { paddr: h.paddr, offset: h.offset, filesz: h.filesz, memsz: h.memsz, exec });
        }
        if segments.is_empty() {
            return Err(ElfError::NoLoadableSegment);
        }
        Ok(segments)
    }
}

/// The program headers; the table must lie inside the file.
fn read_phdrs(r: Rd, t: Table, is64: bool) -> Result<Vec<Phdr>, ElfError> {
    if t.entsize != if is64 { 56 } else { 32 } || t.count == 0 || t.count > MAX_PHDRS.into() {
        return Err(ElfError::BadPhdrTable);
    }
    if !r.holds(t.offset, t.count * t.entsize) {
        return Err(ElfError::PhdrTableOutside);
    }
    let read = |at: u64| -> Option<Phdr> {
        Some(if is64 {
            Phdr {
                kind: r.u32(at)?,
                flags: r.u32(at + 4)?,
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
                flags: r.u32(at + 24)?,
            }
        })
    };
    (0..t.count).map(|i| read(t.entry(i)).ok_or(ElfError::PhdrTableOutside)).collect()
}

/// The section header table, `None` when the image has none (`e_shoff`
/// or `e_shnum` zero); when present it must lie inside the file.
fn section_table(r: Rd, t: Table, is64: bool) -> Result<Option<Table>, ElfError> {
    if t.offset == 0 || t.count == 0 {
        return Ok(None);
    }
    if t.entsize != if is64 { 64 } else { 40 } {
        return Err(ElfError::BadShdrTable(t.entsize as u16));
    }
    if !r.holds(t.offset, t.count * t.entsize) {
        return Err(ElfError::ShdrTableOutside);
    }
    Ok(Some(t))
}

/// What the notes seen so far said.
#[derive(Default)]
struct Notes {
    /// Notes read, any owner (libelf's `total_note_count`).
    total: u32,
    /// Notes owned by "Xen".
    xen: u32,
    /// The last `XEN_ELFNOTE_PHYS32_ENTRY` value (later notes win, as in libelf).
    phys32_entry: Option<u32>,
}

/// Xen's note search (`elf_xen_parse`): `PT_NOTE` segments, then, if they
/// hold no Xen note, `SHT_NOTE` sections (from index 1).
fn find_pvh_note(r: Rd, phdrs: &[Phdr], sections: Option<Table>, is64: bool) -> Result<Option<u32>, ElfError> {
    let mut notes = Notes::default();
    for h in phdrs.iter().filter(|h| h.kind == PT_NOTE && h.offset != 0) {
        read_notes(r, h.offset, h.filesz, &mut notes)?;
    }
    // Sections only when the segments hold no Xen note at all.
    let Some(table) = sections.filter(|_| notes.xen == 0) else { return Ok(notes.phys32_entry) };
    for at in (1..table.count).map(|i| table.entry(i)) {
        let (kind, offset, size) = if is64 {
            (r.u32(at + 4), r.u64(at + 24), r.u64(at + 32))
        } else {
            (r.u32(at + 4), r.u32(at + 16).map(u64::from), r.u32(at + 20).map(u64::from))
        };
        let (Some(kind), Some(offset), Some(size)) = (kind, offset, size) else {
            return Err(ElfError::ShdrTableOutside);
        };
        if kind == SHT_NOTE {
            read_notes(r, offset, size, &mut notes)?;
        }
    }
    Ok(notes.phys32_entry)
}

/// Reads the notes in `offset..offset + size` (libelf's
/// `elf_xen_parse_notes`; note fields are 4-byte aligned in both classes).
fn read_notes(r: Rd, offset: u64, size: u64, notes: &mut Notes) -> Result<(), ElfError> {
    if !r.holds(offset, size) {
        return Err(ElfError::NoteOutside);
    }
    let end = offset + size;
    let mut at = offset;
    while at < end {
        if notes.total >= MAX_TOTAL_NOTES {
            return Err(ElfError::TooManyNotes);
        }
        notes.total += 1;
        let header = r.bytes(at, NOTE_HEADER).ok_or(ElfError::NoteOutside)?;
        let field = |i: usize| u64::from(u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]));
        let (namesz, descsz, kind) = (field(0), field(4), field(8));
        let name_at = at + NOTE_HEADER;
        let desc_at = name_at + namesz.next_multiple_of(4);
        let name = r.bytes(name_at, namesz).ok_or(ElfError::NoteOutside)?;
        let desc = r.bytes(desc_at, descsz).ok_or(ElfError::NoteOutside)?;
        // libelf compares the name with strcmp: up to the first NUL.
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        if namesz > 0 && name == XEN_ELFNOTE_OWNER {
            notes.xen += 1;
            if kind == u64::from(XEN_ELFNOTE_PHYS32_ENTRY) {
                notes.phys32_entry = Some(numeric(desc) as u32);
            }
        }
        at = desc_at + descsz.next_multiple_of(4);
    }
    Ok(())
}

/// A numeric note's value (libelf's `elf_note_numeric`): 1, 2, 4 or 8
/// bytes, anything else reads as 0.
fn numeric(desc: &[u8]) -> u64 {
    match desc.len() {
        1 | 2 | 4 | 8 => desc.iter().rev().fold(0, |v, &b| v << 8 | u64::from(b)),
        _ => 0,
    }
}

/// Copies a checked image's segments into RAM and zeroes their BSS.
pub fn load(ram: &GuestRam, image: &[u8], info: &ImageInfo) -> Result<(), VmmError> {
    const ZEROS: [u8; 4096] = [0; 4096];
    let w = |e: crate::memory::BadGuestRange| VmmError::BootWrite(e.to_string());
    for s in &info.segments {
        let data = Rd(image).bytes(s.offset, s.filesz).ok_or_else(|| VmmError::BootWrite("segment data".into()))?;
        ram.write(s.paddr, data).map_err(w)?;
        let mut at = s.paddr + s.filesz;
        let end = s.paddr + s.memsz;
        while at < end {
            let n = (end - at).min(ZEROS.len() as u64);
            ram.write(at, &ZEROS[..n as usize]).map_err(w)?;
            at += n;
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "elf_tests.rs"]
mod tests;
